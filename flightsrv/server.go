package flightsrv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/flightsrv/middleware"
	"github.com/arrowquant/arrowquant/internal/outdir"
	"github.com/arrowquant/arrowquant/modelio"
)

// ServerConfig is everything `arrowquant serve` sets.
type ServerConfig struct {
	Addr             string
	DataDir          string
	Defaults         config.DiffusionQuantConfig
	KeepSource       bool
	MaxUploadBytes   int64
	MaxMessageBytes  int
	SpoolMemoryBytes int64 // Options.SpoolMemoryBytes
	// Upload limits and the idle timeout (Options; 0 = defaults).
	MaxUploads, MaxUploadsPerClient int
	IdleTimeout                     time.Duration
	TLSCertFile                     string
	TLSKeyFile                      string
	AuthBasicFile                   string
	AuthToken                       string
	MetricsAddr                     string
	ShutdownTimeout                 time.Duration
	Logger                          zerolog.Logger
	Store                           StoreConfig // --store s3://... (storeopen.go); default: the local DataDir
	// Ready, when set, receives the listening address once serving.
	Ready func(addr net.Addr)
}

// ConfigError is a server configuration that cannot start (exit code 2).
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// checkDataDir refuses a --data directory that holds a model or an
// ArrowQuant output: the store would write its own layout into it.
func checkDataDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &ConfigError{fmt.Errorf("--data %s: %w", dir, err)}
	}
	for _, e := range ents {
		n := e.Name()
		if n == outdir.MarkerFile || n == artifact.FileName || n == modelio.ConfigFile || strings.HasSuffix(n, ".safetensors") || strings.HasSuffix(n, ".safetensors.index.json") {
			return &ConfigError{fmt.Errorf("--data %s holds %s: it is a model or output directory, not a store; give the server its own directory (e.g. ./data)", dir, n)}
		}
	}
	return nil
}

// Serve runs the Flight server until ctx ends, then shuts down gracefully:
// new calls get Unavailable, running calls get ShutdownTimeout to finish.
// Configuration problems (bad TLS or auth files, a --data directory that
// is not a store) are *ConfigError.
func Serve(ctx context.Context, c ServerConfig) error {
	st, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer st.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := middleware.NewMetrics(reg)
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	mw := middleware.Config{
		MaxMessageBytes: c.MaxMessageBytes, TLSCertFile: c.TLSCertFile, TLSKeyFile: c.TLSKeyFile,
		AuthBasicFile: c.AuthBasicFile, AuthToken: c.AuthToken, Logger: c.Logger, Metrics: metrics,
		HidePaths: []string{dataDir, os.TempDir()},
	}
	if err := mw.Validate(); err != nil {
		return &ConfigError{err}
	}
	svc, err := New(Options{
		Store: st, Defaults: c.Defaults, KeepSource: c.KeepSource, MaxUploadBytes: c.MaxUploadBytes,
		Logger: c.Logger, Hooks: Hooks{
			Quantized:   metrics.ObserveQuantization,
			ModelsTotal: metrics.SetModelsStored,
			SetModel:    middleware.SetModel,
			Panic:       metrics.ObservePanic,
			Refused:     metrics.ObserveRefusal,
			Identity:    middleware.Identity,
		},
		MaxUploads: c.MaxUploads, MaxUploadsPerClient: c.MaxUploadsPerClient, IdleTimeout: c.IdleTimeout,
		SpoolMemoryBytes: c.SpoolMemoryBytes,
	})
	if err != nil {
		return err
	}
	srv, health, err := middleware.NewServer(mw)
	if err != nil {
		return &ConfigError{err}
	}
	flight.RegisterFlightServiceServer(srv, svc)
	lis, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.Addr, err)
	}
	if c.MetricsAddr != "" {
		if _, err := middleware.ServeMetrics(ctx, c.MetricsAddr, reg, c.Logger); err != nil {
			lis.Close()
			return err
		}
	}
	c.Logger.Info().Str("addr", lis.Addr().String()).Str("store", c.Describe()).Msg("serving Arrow Flight")
	if c.Ready != nil {
		c.Ready(lis.Addr())
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	c.Logger.Info().Msg("shutting down: new calls get Unavailable, running calls may finish")
	svc.BeginShutdown()
	timeout := c.ShutdownTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	if !middleware.GracefulStop(srv, health, timeout) {
		c.Logger.Warn().Dur("timeout", timeout).Msg("calls still running at the shutdown deadline were cancelled")
	}
	if err := <-served; err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	c.Logger.Info().Msg("stopped")
	return nil
}
