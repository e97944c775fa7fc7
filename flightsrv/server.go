package flightsrv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/flightsrv/middleware"
	"github.com/arrowquant/arrowquant/store"
)

// ServerConfig is everything `arrowquant serve` sets.
type ServerConfig struct {
	Addr            string
	DataDir         string
	Defaults        config.DiffusionQuantConfig
	KeepSource      bool
	MaxUploadBytes  int64
	MaxMessageBytes int
	TLSCertFile     string
	TLSKeyFile      string
	AuthBasicFile   string
	AuthToken       string
	MetricsAddr     string
	ShutdownTimeout time.Duration
	Logger          zerolog.Logger
	// Ready, when set, receives the listening address once serving.
	Ready func(addr net.Addr)
}

// Serve runs the Flight server until ctx ends, then shuts down gracefully:
// new calls get Unavailable, running calls get ShutdownTimeout to finish.
func Serve(ctx context.Context, c ServerConfig) error {
	st, err := store.OpenLocal(c.DataDir, c.Logger)
	if err != nil {
		return err
	}
	defer st.Close()
	reg := prometheus.NewRegistry()
	metrics := middleware.NewMetrics(reg)
	mw := middleware.Config{
		MaxMessageBytes: c.MaxMessageBytes, TLSCertFile: c.TLSCertFile, TLSKeyFile: c.TLSKeyFile,
		AuthBasicFile: c.AuthBasicFile, AuthToken: c.AuthToken, Logger: c.Logger, Metrics: metrics,
	}
	if err := mw.Validate(); err != nil {
		return err
	}
	svc, err := New(Options{
		Store: st, Defaults: c.Defaults, KeepSource: c.KeepSource, MaxUploadBytes: c.MaxUploadBytes,
		Logger: c.Logger, Hooks: Hooks{
			Quantized:   metrics.ObserveQuantization,
			ModelsTotal: metrics.SetModelsStored,
			SetModel:    middleware.SetModel,
		},
	})
	if err != nil {
		return err
	}
	srv, health, err := middleware.NewServer(mw)
	if err != nil {
		return err
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
	c.Logger.Info().Str("addr", lis.Addr().String()).Str("data", c.DataDir).Msg("serving Arrow Flight")
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
