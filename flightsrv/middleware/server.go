package middleware

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/arrowquant/arrowquant/internal/bufpool"
	"github.com/arrowquant/arrowquant/internal/flightcodec"
)

// writeBufferBytes is the per-connection transport write buffer.
const writeBufferBytes = 1 << 20

// NewServer validates c and builds the grpc.Server: MaxRecvMsgSize and
// MaxSendMsgSize, TLS credentials if configured, the chained interceptors
// (recover -> logging/metrics -> auth) and the gRPC health service
// (grpc.health.v1, SERVING for "" and FlightServiceName). The users file is
// read here, once. The caller registers the Flight service with
// flight.RegisterFlightServiceServer(srv, svc), serves it, and stops it with
// GracefulStop.
func NewServer(c Config) (*grpc.Server, *health.Server, error) {
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	auth, err := newAuthenticator(c)
	if err != nil {
		return nil, nil, err
	}
	limit := c.maxMessageBytes()
	hide := slices.Clone(c.HidePaths)
	slices.SortFunc(hide, func(a, b string) int { return len(b) - len(a) }) // longest first: /tmp/x before /tmp
	rec := &recoverer{log: c.Logger, metrics: c.Metrics, hidePaths: hide}
	obs := &observer{log: c.Logger, metrics: c.Metrics, limit: limit}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(limit),
		grpc.MaxSendMsgSize(limit),
		// DoGet streams stored batches as OutgoingData, without copying
		// their bodies into a marshal buffer.
		grpc.ForceServerCodecV2(flightcodec.New()),
		// Frames are copied into this buffer and written when it fills:
		// 1 MiB instead of 32 KiB: a push and ten pulls of its 0.29 GB
		// artifact made 6,564 write calls instead of 89,130 (DoGet +20%
		// on loopback; docs/PERF.md). gRPC returns it to a pool between
		// writes, so idle connections do not hold it.
		grpc.WriteBufferSize(writeBufferBytes),
		experimental.BufferPool(bufpool.Transport),
		grpc.ChainUnaryInterceptor(rec.unary, obs.unary, auth.unary),
		grpc.ChainStreamInterceptor(rec.stream, obs.stream, auth.stream),
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("TLS certificate %s / key %s: %w", c.TLSCertFile, c.TLSKeyFile, err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
		})))
	}
	srv := grpc.NewServer(opts...)
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(FlightServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, h)
	return srv, h, nil
}

// GracefulStop marks health NOT_SERVING, stops accepting connections and
// waits up to timeout for running RPCs to finish; then it forces Stop(),
// which cancels the contexts of the calls still running. It returns true if
// everything finished in time. It never waits much longer than timeout
// (handlers that ignore their cancelled context are left behind).
//
// Note that an open health Watch stream counts as a running RPC.
func GracefulStop(srv *grpc.Server, h *health.Server, timeout time.Duration) bool {
	if h != nil {
		h.Shutdown()
	}
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(max(timeout, 0))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	}
	srv.Stop()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	return false
}

// ClientDialOptions returns the dial options a Go client needs: send and
// receive limits of maxMessageBytes (DefaultMaxMessageBytes when 0; grpc-go
// clients otherwise refuse responses over 4 MiB) and transport credentials:
// TLS verified against the PEM CA bundle tlsCAFile when given, TLS without
// verification when insecureSkipVerify (tests only), plaintext when neither.
func ClientDialOptions(maxMessageBytes int, tlsCAFile string, insecureSkipVerify bool) ([]grpc.DialOption, error) {
	if maxMessageBytes < 0 {
		return nil, fmt.Errorf("max message bytes must be positive, got %d", maxMessageBytes)
	}
	if maxMessageBytes == 0 {
		maxMessageBytes = DefaultMaxMessageBytes
	}
	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(maxMessageBytes),
		grpc.MaxCallSendMsgSize(maxMessageBytes),
	), experimental.WithBufferPool(bufpool.Transport)}
	switch {
	case tlsCAFile != "":
		pem, err := os.ReadFile(tlsCAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA %s: no PEM certificates found", tlsCAFile)
		}
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecureSkipVerify} //nolint:gosec // caller's choice
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	case insecureSkipVerify:
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true} //nolint:gosec // caller's choice
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	default:
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	return opts, nil
}
