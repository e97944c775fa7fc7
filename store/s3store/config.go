// Package s3store is a store.Store on an S3-compatible object store
// (AWS S3, SeaweedFS, Ceph RGW, GCS through its S3 interoperability), shared
// by any number of servers. docs/STORE.md describes the layout, the commit
// protocol and what a reader sees.
//
// Objects under the store's prefix P:
//
//	P/catalog/<name>     the catalog entry of a committed model (JSON), written
//	                     last: If-None-Match: * on create, If-Match: <ETag> on
//	                     overwrite; <name> with '/' as '~'
//	P/data/<id>/<file>   the files of one committed version, never changed
//	P/uploads/<id>       heartbeat of an upload in progress
//	P/locks/<name>       reservation of a name by a non-overwrite upload
//	P/retired/<id>       when version <id> stopped being current (overwrite,
//	                     delete): its data stays readable for the grace period
//	P/servers/<loc>.<id> heartbeat of a live server advertising a location
package s3store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rs/zerolog"
)

// Defaults of Config.
const (
	DefaultPartSize    = 16 << 20
	DefaultConcurrency = 4
	DefaultReadChunk   = 8 << 20
	DefaultReadAhead   = 4
	DefaultHeartbeat   = 10 * time.Second
	DefaultGCGrace     = time.Hour
	minPartSize        = 5 << 20 // S3's smallest part (but the last)
	maxParts           = 10000   // S3's most parts per upload
)

// Config says where the store is and how to reach it. Credentials and the
// region come the AWS way (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN, AWS_REGION, AWS_PROFILE, web identity, instance
// roles) unless AccessKey is set.
type Config struct {
	Bucket string
	Prefix string // "" or a key prefix without leading or trailing '/'
	// Endpoint of a non-AWS server (http://127.0.0.1:8333); empty: the
	// SDK's (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS).
	Endpoint  string
	Region    string // empty: AWS_REGION etc., else us-east-1
	PathStyle bool   // path-style URLs (most non-AWS servers)
	// AccessKey and SecretKey override the AWS credential chain (tests).
	AccessKey, SecretKey string

	// Advertise is this server's Flight location (grpc://HOST:PORT),
	// registered in the bucket so every server's FlightInfo lists it.
	Advertise string
	// ScratchDir holds the Staging directories (default: the system's
	// temporary directory).
	ScratchDir string

	PartSize    int64 // multipart part size (DefaultPartSize)
	Concurrency int   // parallel part uploads per commit (DefaultConcurrency)
	ReadChunk   int64 // ranged GET size of sequential reads (DefaultReadChunk)
	ReadAhead   int   // chunks fetched ahead of a sequential reader (DefaultReadAhead)
	// RangeReads: sequential reads fetch their chunks with ReadAhead ranged
	// GETs in flight at once, instead of one streaming GET from the
	// reader's position (for servers whose per-connection throughput is
	// the bound, like AWS S3; SeaweedFS serves partial ranges slowly).
	RangeReads bool
	// Heartbeat is how often uploads and servers refresh their heartbeat
	// objects (DefaultHeartbeat). An upload or a server silent for
	// LeaseTTL (6 heartbeats) is dead.
	Heartbeat time.Duration
	// StartupGC > 0 runs one GC pass in the background at Open, collecting
	// what is older than this (serve's default: DefaultGCGrace); 0: none.
	StartupGC time.Duration
	// MaxAttempts per S3 request, retries included (default 3).
	MaxAttempts int

	Logger zerolog.Logger
}

// LeaseTTL is how long an upload or server may go without a heartbeat
// before others treat it as dead: 6 heartbeats.
func (c Config) LeaseTTL() time.Duration { return 6 * c.heartbeat() }

func (c Config) heartbeat() time.Duration {
	if c.Heartbeat > 0 {
		return c.Heartbeat
	}
	return DefaultHeartbeat
}

// MinGCAge is the youngest garbage GC may collect: a live upload is never
// that silent (LeaseTTL).
func (c Config) MinGCAge() time.Duration { return c.LeaseTTL() }

// ParseURL splits s3://BUCKET[/PREFIX] into a bucket and a prefix.
func ParseURL(s string) (bucket, prefix string, err error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "s3" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", "", fmt.Errorf("store URL %q: want s3://BUCKET or s3://BUCKET/PREFIX", s)
	}
	prefix = strings.Trim(u.Path, "/")
	if strings.Contains(prefix, "//") {
		return "", "", fmt.Errorf("store URL %q: the prefix must not contain \"//\"", s)
	}
	return u.Host, prefix, nil
}

// IsURL says whether s names an S3 store (s3://...).
func IsURL(s string) bool { return strings.HasPrefix(s, "s3://") }

func (c *Config) setDefaults() error {
	if c.Bucket == "" {
		return errors.New("no bucket")
	}
	if strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/") {
		return fmt.Errorf("prefix %q must not start or end with '/'", c.Prefix)
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.PartSize < minPartSize {
		return fmt.Errorf("part size %d: S3 needs at least %d bytes", c.PartSize, minPartSize)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.ReadChunk <= 0 {
		c.ReadChunk = DefaultReadChunk
	}
	if c.ReadAhead <= 0 {
		c.ReadAhead = DefaultReadAhead
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.StartupGC > 0 && c.StartupGC < c.LeaseTTL() {
		return fmt.Errorf("startup GC threshold %s is under the %s lease of live uploads (6 heartbeats)", c.StartupGC, c.LeaseTTL())
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.ScratchDir == "" {
		c.ScratchDir = os.TempDir()
	}
	if c.Advertise != "" {
		u, err := url.Parse(c.Advertise)
		if err != nil || (u.Scheme != "grpc" && u.Scheme != "grpc+tls" && u.Scheme != "grpc+tcp") || u.Host == "" || u.Path != "" {
			return fmt.Errorf("advertise %q: want grpc://HOST:PORT or grpc+tls://HOST:PORT", c.Advertise)
		}
	}
	return nil
}

// newClient builds the S3 client: the AWS configuration chain, then the
// Config's overrides.
func newClient(ctx context.Context, c Config) (*s3.Client, error) {
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = c.MaxAttempts
				o.MaxBackoff = 2 * time.Second
			})
		}),
	}
	if c.AccessKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, "")))
	}
	if c.Region != "" {
		opts = append(opts, awsconfig.WithRegion(c.Region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // non-AWS servers accept any; AWS needs one
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
		// Checksums only where S3 requires them: S3-compatible servers
		// differ in their support of the SDK's default CRC trailers.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}), nil
}

// Validate checks the configuration (bucket, prefix, sizes, advertised
// location) without connecting.
func (c Config) Validate() error {
	if err := c.setDefaults(); err != nil {
		return fmt.Errorf("store: s3: %w", err)
	}
	return nil
}
