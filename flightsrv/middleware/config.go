// Package middleware assembles the gRPC server that carries the ArrowQuant
// Flight service: message size limits, TLS, authentication (pyarrow-compatible
// basic auth with bearer tokens, or a static bearer token), one request log
// line per RPC, Prometheus metrics, panic recovery, the gRPC health service
// and a bounded graceful shutdown.
//
// The package owns the *grpc.Server instead of using
// flight.NewServerWithMiddleware because arrow-go's Server.Shutdown waits
// without a deadline while a stream is open; GracefulStop here is bounded.
package middleware

import (
	"errors"
	"fmt"
	"os"

	"github.com/rs/zerolog"
)

// DefaultMaxMessageBytes is the gRPC send and receive limit used when
// Config.MaxMessageBytes is 0. grpc-go's own default receive limit (4 MiB)
// rejects ordinary pyarrow do_put batches.
const DefaultMaxMessageBytes = 256 << 20

// Config configures NewServer.
type Config struct {
	// MaxMessageBytes is the gRPC MaxRecvMsgSize and MaxSendMsgSize;
	// DefaultMaxMessageBytes (256 MiB) when 0.
	MaxMessageBytes int
	// TLSCertFile and TLSKeyFile (PEM) enable TLS; both or neither.
	TLSCertFile, TLSKeyFile string
	// AuthBasicFile is a users file (one "user:bcrypt-hash" a line) and
	// enables basic authentication with bearer tokens (pyarrow
	// FlightClient.authenticate_basic_token).
	AuthBasicFile string
	// AuthToken is a static bearer token every call must carry as
	// "authorization: Bearer TOKEN". Mutually exclusive with AuthBasicFile.
	AuthToken string
	// Logger receives one Info line per RPC (Debug for the health service),
	// panics at Error level. The caller sets the level.
	Logger zerolog.Logger
	// Metrics, when not nil, is updated for every RPC.
	Metrics *Metrics
	// HidePaths are server directories (the store, the temp dir) that
	// error messages must not show to clients: they read "<server>".
	HidePaths []string
}

func (c Config) maxMessageBytes() int {
	if c.MaxMessageBytes == 0 {
		return DefaultMaxMessageBytes
	}
	return c.MaxMessageBytes
}

// Validate checks the configuration without starting anything: TLS files
// both or neither and readable, at most one authentication mode, the users
// file readable, a positive message limit.
func (c Config) Validate() error {
	var errs []error
	if c.MaxMessageBytes < 0 {
		errs = append(errs, fmt.Errorf("max message bytes must be positive (0 = default %d), got %d", DefaultMaxMessageBytes, c.MaxMessageBytes))
	}
	switch {
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		errs = append(errs, fmt.Errorf("TLS certificate %s given without a key file: set both or neither", c.TLSCertFile))
	case c.TLSCertFile == "" && c.TLSKeyFile != "":
		errs = append(errs, fmt.Errorf("TLS key %s given without a certificate file: set both or neither", c.TLSKeyFile))
	case c.TLSCertFile != "":
		if err := readable(c.TLSCertFile, "TLS certificate"); err != nil {
			errs = append(errs, err)
		}
		if err := readable(c.TLSKeyFile, "TLS key"); err != nil {
			errs = append(errs, err)
		}
	}
	if c.AuthBasicFile != "" && c.AuthToken != "" {
		errs = append(errs, errors.New("basic authentication (users file) and a static auth token are mutually exclusive: choose one"))
	} else if c.AuthBasicFile != "" {
		if err := readable(c.AuthBasicFile, "users file"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func readable(path, what string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if st.IsDir() {
		return fmt.Errorf("%s %s is a directory", what, path)
	}
	return nil
}
