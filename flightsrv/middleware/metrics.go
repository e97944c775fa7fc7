package middleware

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
)

// Metrics are the Prometheus metrics of the server. A nil *Metrics is valid
// and records nothing.
type Metrics struct {
	requests     *prometheus.CounterVec   // arrowquant_requests_total{method,code}
	duration     *prometheus.HistogramVec // arrowquant_request_duration_seconds{method}
	bytesIn      prometheus.Counter       // arrowquant_bytes_received_total
	bytesOut     prometheus.Counter       // arrowquant_bytes_sent_total
	quantization prometheus.Histogram     // arrowquant_quantization_seconds
	fallbacks    prometheus.Counter       // arrowquant_fallbacks_total
	models       prometheus.Gauge         // arrowquant_models_stored
	panics       *prometheus.CounterVec   // arrowquant_panics_total{where}
	refused      *prometheus.CounterVec   // arrowquant_limit_refusals_total{limit}
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered). Registering twice with the same registry reuses the metrics
// already there.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arrowquant_requests_total",
			Help: "Flight and health RPCs by method and gRPC status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "arrowquant_request_duration_seconds",
			Help:    "RPC duration by method.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 11), // 1 ms .. ~17 min
		}, []string{"method"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arrowquant_bytes_received_total",
			Help: "Bytes of gRPC messages received (protobuf sizes).",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arrowquant_bytes_sent_total",
			Help: "Bytes of gRPC messages sent (protobuf sizes).",
		}),
		quantization: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "arrowquant_quantization_seconds",
			Help:    "Duration of model quantizations.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 12), // 10 ms .. ~30 min
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arrowquant_fallbacks_total",
			Help: "Tensors stored with a fallback format during quantization.",
		}),
		models: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arrowquant_models_stored",
			Help: "Models in the store.",
		}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arrowquant_panics_total",
			Help: "Panics contained in request handlers and their goroutines (each failed its call with Internal).",
		}, []string{"where"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arrowquant_limit_refusals_total",
			Help: "Calls refused with ResourceExhausted or ended by a server limit, by limit.",
		}, []string{"limit"}),
	}
	if reg != nil {
		m.requests = register(reg, m.requests)
		m.duration = register(reg, m.duration)
		m.bytesIn = register(reg, m.bytesIn)
		m.bytesOut = register(reg, m.bytesOut)
		m.quantization = register(reg, m.quantization)
		m.fallbacks = register(reg, m.fallbacks)
		m.models = register(reg, m.models)
		m.panics = register(reg, m.panics)
		m.refused = register(reg, m.refused)
	}
	return m
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("middleware: register metric: %v", err))
	}
	return c
}

// ObserveQuantization records one quantization run and the number of tensors
// that fell back to another format.
func (m *Metrics) ObserveQuantization(d time.Duration, fallbacks int) {
	if m == nil {
		return
	}
	m.quantization.Observe(d.Seconds())
	if fallbacks > 0 {
		m.fallbacks.Add(float64(fallbacks))
	}
}

// ObservePanic counts a contained panic; where is "handler" for one caught
// by the RPC interceptor, or what the goroutine was doing.
func (m *Metrics) ObservePanic(where string) {
	if m == nil {
		return
	}
	if i := strings.IndexAny(where, " \""); i > 0 { // a label per kind of work, not per tensor
		where = where[:i]
	}
	m.panics.WithLabelValues(where).Inc()
}

// ObserveRefusal counts a call refused or ended by a server limit.
func (m *Metrics) ObserveRefusal(limit string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(limit).Inc()
}

// SetModelsStored sets the number of models in the store.
func (m *Metrics) SetModelsStored(n int) {
	if m == nil {
		return
	}
	m.models.Set(float64(n))
}

func (m *Metrics) observeRequest(method string, code codes.Code, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(method, code.String()).Inc()
	m.duration.WithLabelValues(method).Observe(d.Seconds())
}

func (m *Metrics) addReceived(n int64) {
	if m != nil && n > 0 {
		m.bytesIn.Add(float64(n))
	}
}

func (m *Metrics) addSent(n int64) {
	if m != nil && n > 0 {
		m.bytesOut.Add(float64(n))
	}
}

// ServeMetrics serves GET /metrics (Prometheus text format from reg) and
// GET /healthz ("ok") on addr with its own http.Server, until ctx ends. It
// returns the listener (its Addr is the bound address, useful with port 0).
func ServeMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log zerolog.Logger) (net.Listener, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil registry")
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Str("addr", lis.Addr().String()).Msg("metrics server stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			_ = hs.Close()
		}
	}()
	log.Info().Str("addr", lis.Addr().String()).Msg("serving metrics on /metrics and /healthz")
	return lis, nil
}
