package middleware

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestMessageLimit(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte("q"), 5<<20)
	ctx := testCtx(t)

	def := startServer(t, Config{})
	got, err := doAction(ctx, dialFlight(t, def.addr), "echo", body)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("5 MiB echo with the default limit: %d bytes, %v", len(got), err)
	}
	// The same call against grpc-go's default 4 MiB receive limit fails: the
	// default is what makes it pass.
	plain, err := ClientDialOptions(4<<20, "", false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = doAction(ctx, dialFlight(t, def.addr, plain...), "echo", body)
	wantCode(t, err, codes.ResourceExhausted, "larger than max")

	var logs syncBuffer
	small := startServer(t, Config{MaxMessageBytes: 1 << 20, Logger: testLogger(&logs)})
	c := dialFlight(t, small.addr)
	_, err = doAction(ctx, c, "echo", body)
	// grpc-go writes this status itself, before the handler returns.
	wantCode(t, err, codes.ResourceExhausted, "larger than max (5242")
	wantCode(t, err, codes.ResourceExhausted, "vs. 1048576)")
	// The request log (and the error the handler sees) explain it. The
	// client has its status before the handler returns and logs: wait.
	const explained = "receive limit of 1048576 bytes (1 MiB; server --max-message-bytes"
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), explained); {
		if time.Now().After(deadline) {
			t.Fatalf("log does not explain the limit:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The server still works for small messages.
	if got, err := doAction(ctx, c, "echo", []byte("ok")); err != nil || string(got) != "ok" {
		t.Fatalf("small echo after the limit error = %q, %v", got, err)
	}
}

// selfSigned writes a self-signed CA certificate for 127.0.0.1/localhost.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "arrowquant test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestTLS(t *testing.T) {
	t.Parallel()
	cert, key := selfSigned(t, t.TempDir())
	ts := startServer(t, Config{TLSCertFile: cert, TLSKeyFile: key})
	ctx := testCtx(t)

	withCA, err := ClientDialOptions(0, cert, false)
	if err != nil {
		t.Fatal(err)
	}
	if acts, err := listActions(ctx, dialFlight(t, ts.addr, withCA...)); err != nil || len(acts) != 1 {
		t.Fatalf("TLS client with the CA: %v, %v", acts, err)
	}
	if st, err := healthCheck(t, ts.addr, "", withCA...); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over TLS = %v, %v", st, err)
	}
	skip, _ := ClientDialOptions(0, "", true)
	if _, err := listActions(ctx, dialFlight(t, ts.addr, skip...)); err != nil {
		t.Fatalf("TLS client without verification: %v", err)
	}

	plaintext, _ := ClientDialOptions(0, "", false)
	_, err = listActions(ctx, dialFlight(t, ts.addr, plaintext...))
	wantCode(t, err, codes.Unavailable, "")
	// System roots do not trust the self-signed certificate.
	sys := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}))
	_, err = listActions(ctx, dialFlight(t, ts.addr, sys))
	wantCode(t, err, codes.Unavailable, "certificate")

	if _, err := ClientDialOptions(0, key, false); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Fatalf("CA file without certificates: %v", err)
	}
	if _, _, err := NewServer(Config{TLSCertFile: key, TLSKeyFile: cert}); err == nil || !strings.Contains(err.Error(), "TLS certificate") {
		t.Fatalf("swapped cert/key: %v", err)
	}
}

var metricLine = regexp.MustCompile(`(?m)^(\w+)(\{[^}]*\})? (\S+)$`)

func scrape(t *testing.T, url string) (string, map[string]float64) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	vals := map[string]float64{}
	for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
		v, err := strconv.ParseFloat(m[3], 64)
		if err == nil {
			vals[m[1]+m[2]] = v
		}
	}
	return string(b), vals
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	if again := NewMetrics(reg); again.requests != m.requests {
		t.Fatal("registering twice did not reuse the collectors")
	}
	const token = "metrics-token"
	ts := startServer(t, Config{AuthToken: token, Metrics: m})
	c := dialFlight(t, ts.addr)
	ctx := testCtx(t)
	_, err := listActions(ctx, c)
	wantCode(t, err, codes.Unauthenticated, "")
	good := metadataCtx(ctx, "Bearer "+token)
	for range 2 {
		if _, err := listActions(good, c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := doAction(good, c, "echo", bytes.Repeat([]byte("z"), 1000)); err != nil {
		t.Fatal(err)
	}
	_, err = doAction(good, c, "nope", nil)
	wantCode(t, err, codes.InvalidArgument, "unknown action")
	if _, err := healthCheck(t, ts.addr, ""); err != nil {
		t.Fatal(err)
	}
	m.ObserveQuantization(1500*time.Millisecond, 3)
	m.ObserveQuantization(time.Second, 0)
	m.SetModelsStored(4)
	var nilMetrics *Metrics
	nilMetrics.ObserveQuantization(time.Second, 1) // must not panic
	nilMetrics.SetModelsStored(1)

	mctx, stop := context.WithCancel(context.Background())
	lis, err := ServeMetrics(mctx, "127.0.0.1:0", reg, zerolog.Nop())
	if err != nil {
		stop()
		t.Fatal(err)
	}
	base := "http://" + lis.Addr().String()
	text, vals := scrape(t, base+"/metrics")
	want := map[string]float64{
		`arrowquant_requests_total{code="OK",method="ListActions"}`:              2,
		`arrowquant_requests_total{code="Unauthenticated",method="ListActions"}`: 1,
		`arrowquant_requests_total{code="OK",method="DoAction"}`:                 1,
		`arrowquant_requests_total{code="InvalidArgument",method="DoAction"}`:    1,
		`arrowquant_requests_total{code="OK",method="Check"}`:                    1,
		`arrowquant_request_duration_seconds_count{method="ListActions"}`:        3,
		`arrowquant_quantization_seconds_count`:                                  2,
		`arrowquant_quantization_seconds_sum`:                                    2.5,
		`arrowquant_fallbacks_total`:                                             3,
		`arrowquant_models_stored`:                                               4,
	}
	for k, v := range want {
		if got, ok := vals[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if vals["arrowquant_bytes_received_total"] < 1000 || vals["arrowquant_bytes_sent_total"] < 1000 {
		t.Errorf("byte counters: received %v sent %v, want >= 1000 each", vals["arrowquant_bytes_received_total"], vals["arrowquant_bytes_sent_total"])
	}
	if t.Failed() {
		t.Logf("scraped:\n%s", text)
	}
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "ok\n" {
		t.Fatalf("/healthz = %d %q", resp.StatusCode, b)
	}
	stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", lis.Addr().String(), time.Second)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("metrics server still accepting after ctx ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRecover(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	ts := startServer(t, Config{Logger: testLogger(&logs), Metrics: NewMetrics(reg)})
	c := dialFlight(t, ts.addr)
	ctx := testCtx(t)
	_, err := doAction(ctx, c, "panic", nil)
	wantCode(t, err, codes.Internal, "internal error")
	_, err = c.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"panic"}})
	wantCode(t, err, codes.Internal, "internal error")
	if acts, err := listActions(ctx, c); err != nil || len(acts) != 1 {
		t.Fatalf("call after panics = %v, %v", acts, err)
	}
	if _, err := c.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"x"}}); err != nil {
		t.Fatalf("unary call after panics: %v", err)
	}
	out := logs.String()
	for _, want := range []string{"panic in RPC handler", "test panic in DoAction", "test panic in GetFlightInfo", "(*testSvc).DoAction", `"method":"DoAction","code":"Internal"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}

func TestGracefulStopOpenStream(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{})
	c := dialFlight(t, ts.addr)
	callErr := make(chan error, 1)
	go func() {
		_, err := doAction(testCtx(t), c, "block", nil)
		callErr <- err
	}()
	select {
	case <-ts.svc.started:
	case <-time.After(5 * time.Second):
		t.Fatal("blocking action did not start")
	}
	start := time.Now()
	if GracefulStop(ts.srv, ts.h, 300*time.Millisecond) {
		t.Fatal("GracefulStop reported success with a stream open")
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("GracefulStop took %v, want about 300ms", d)
	}
	select {
	case err := <-callErr:
		if err == nil {
			t.Fatal("blocked call succeeded")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("blocked call still running after the forced stop")
	}
	if resp, err := ts.h.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after stop = %v, %v", resp, err)
	}
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = listActions(testCtx(t), flight.NewClientFromConn(conn, nil))
	wantCode(t, err, codes.Unavailable, "")
}

func TestGracefulStopIdle(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{})
	if _, err := listActions(testCtx(t), dialFlight(t, ts.addr)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !GracefulStop(ts.srv, ts.h, 10*time.Second) {
		t.Fatal("GracefulStop without open calls reported a timeout")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("idle GracefulStop took %v", d)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	users := writeUsers(t, "alice", "pw")
	cases := []struct {
		name string
		c    Config
		want string // "" = valid
	}{
		{"empty", Config{}, ""},
		{"tls", Config{TLSCertFile: cert, TLSKeyFile: key}, ""},
		{"basic", Config{AuthBasicFile: users}, ""},
		{"token", Config{AuthToken: "t"}, ""},
		{"cert only", Config{TLSCertFile: cert}, "without a key file"},
		{"key only", Config{TLSKeyFile: key}, "without a certificate file"},
		{"missing cert", Config{TLSCertFile: filepath.Join(dir, "nope.pem"), TLSKeyFile: key}, "nope.pem"},
		{"both auth", Config{AuthBasicFile: users, AuthToken: "t"}, "mutually exclusive"},
		{"missing users", Config{AuthBasicFile: filepath.Join(dir, "nousers")}, "users file"},
		{"users dir", Config{AuthBasicFile: dir}, "is a directory"},
		{"negative limit", Config{MaxMessageBytes: -1}, "max message bytes"},
	}
	for _, tc := range cases {
		err := tc.c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
		if tc.want != "" {
			if _, _, err := NewServer(tc.c); err == nil {
				t.Errorf("%s: NewServer accepted an invalid config", tc.name)
			}
		}
	}
}
