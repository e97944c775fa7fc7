package middleware

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

func healthCheck(t *testing.T, addr, service string, opts ...grpc.DialOption) (healthpb.HealthCheckResponse_ServingStatus, error) {
	t.Helper()
	if len(opts) == 0 {
		opts, _ = ClientDialOptions(0, "", false)
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(testCtx(t), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return 0, err
	}
	return resp.Status, nil
}

func TestNoAuth(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{})
	c := dialFlight(t, ts.addr)
	ctx := testCtx(t)
	acts, err := listActions(ctx, c)
	if err != nil || len(acts) != 1 || acts[0] != "echo" {
		t.Fatalf("ListActions = %v, %v", acts, err)
	}
	who, err := doAction(ctx, c, "whoami", nil)
	if err != nil || string(who) != "" {
		t.Fatalf("whoami without auth = %q, %v", who, err)
	}
	for _, svc := range []string{"", FlightServiceName} {
		st, err := healthCheck(t, ts.addr, svc)
		if err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q = %v, %v", svc, st, err)
		}
	}
	// Without auth, Handshake goes to the service: BaseFlightServer's returns
	// OK with no token, which arrow-go's client reports.
	_, err = c.AuthenticateBasicToken(ctx, "alice", "pw")
	wantCode(t, err, codes.Unknown, "no authorization header on the response")
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	ts := startServer(t, Config{AuthBasicFile: writeUsers(t, "alice", "s3cret", "bob", "hunter2"), Logger: testLogger(&logs)})
	c := dialFlight(t, ts.addr)
	ctx := testCtx(t)

	_, err := listActions(ctx, c)
	wantCode(t, err, codes.Unauthenticated, "missing authorization header: call authenticate_basic_token first")
	_, err = c.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"x"}})
	wantCode(t, err, codes.Unauthenticated, "call authenticate_basic_token first")

	_, err = c.AuthenticateBasicToken(ctx, "alice", "wrong")
	wantCode(t, err, codes.Unauthenticated, "invalid username or password")
	_, err = c.AuthenticateBasicToken(ctx, "mallory", "s3cret")
	wantCode(t, err, codes.Unauthenticated, "invalid username or password")

	actx, err := c.AuthenticateBasicToken(ctx, "alice", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	bearer := metadata.ValueFromIncomingContext(outgoingAsIncoming(actx), "authorization")
	if len(bearer) != 1 || !strings.HasPrefix(bearer[0], "Bearer ") || len(strings.TrimPrefix(bearer[0], "Bearer ")) != 64 {
		t.Fatalf("bearer header = %q, want Bearer + 64 hex digits", bearer)
	}
	if acts, err := listActions(actx, c); err != nil || len(acts) != 1 {
		t.Fatalf("authenticated ListActions = %v, %v", acts, err)
	}
	if who, err := doAction(actx, c, "whoami", nil); err != nil || string(who) != "alice" {
		t.Fatalf("whoami = %q, %v", who, err)
	}
	if body, err := doAction(actx, c, "echo", []byte("dream7b")); err != nil || string(body) != "dream7b" {
		t.Fatalf("echo = %q, %v", body, err)
	}
	if _, err := c.GetFlightInfo(actx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"x"}}); err != nil {
		t.Fatalf("authenticated unary GetFlightInfo: %v", err)
	}
	bctx, err := c.AuthenticateBasicToken(ctx, "bob", "hunter2")
	if err != nil {
		t.Fatal(err)
	}
	if who, err := doAction(bctx, c, "whoami", nil); err != nil || string(who) != "bob" {
		t.Fatalf("whoami bob = %q, %v", who, err)
	}

	forged := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.Repeat("ab", 32))
	_, err = listActions(forged, c)
	wantCode(t, err, codes.Unauthenticated, "invalid or expired bearer token")
	basicOnCall := metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:s3cret")))
	_, err = listActions(basicOnCall, c)
	wantCode(t, err, codes.Unauthenticated, "accepted only by Handshake")
	_, err = handshake(ctx, c, nil)
	wantCode(t, err, codes.Unauthenticated, "handshake needs an \"authorization: Basic")

	// The health service needs no credentials.
	if st, err := healthCheck(t, ts.addr, ""); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without credentials = %v, %v", st, err)
	}

	// Request log: one line per RPC with user, model and byte counts.
	var echo map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["method"] == "DoAction" && m["model"] != nil {
			echo = m
		}
	}
	if echo == nil {
		t.Fatalf("no DoAction log line with a model in:\n%s", logs.String())
	}
	if echo["level"] != "info" || echo["code"] != "OK" || echo["user"] != "alice" || echo["model"] != "model-dream7b" ||
		echo["bytes_in"].(float64) < 7 || echo["bytes_out"].(float64) < 7 || echo["peer"] == "" || echo["duration_ms"] == nil {
		t.Fatalf("DoAction log line = %v", echo)
	}
	if !strings.Contains(logs.String(), `"code":"Unauthenticated"`) {
		t.Fatalf("no Unauthenticated log line in:\n%s", logs.String())
	}
}

func outgoingAsIncoming(ctx context.Context) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	return metadata.NewIncomingContext(ctx, md)
}

// handshake sends req (if not nil) on a raw Handshake stream and returns the
// response payloads.
func handshake(ctx context.Context, c flight.Client, req []byte) ([][]byte, error) {
	st, err := c.Handshake(ctx)
	if err != nil {
		return nil, err
	}
	if req != nil {
		if err := st.Send(&flight.HandshakeRequest{Payload: req}); err != nil {
			return nil, err
		}
	}
	if err := st.CloseSend(); err != nil {
		return nil, err
	}
	var out [][]byte
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r.Payload)
	}
}

// Not parallel: it counts the process's goroutines, which the package's
// parallel tests would change under it (CI saw 15 -> 41 once).
func TestBasicAuthHandshakePayload(t *testing.T) {
	ts := startServer(t, Config{AuthBasicFile: writeUsers(t, "alice", "s3cret")})
	c := dialFlight(t, ts.addr)
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:s3cret")))
	// A client that sends a HandshakeRequest gets the token as payload too.
	out, err := handshake(ctx, c, []byte("hello"))
	if err != nil || len(out) != 1 || len(out[0]) != 64 {
		t.Fatalf("handshake with request = %q, %v", out, err)
	}
	tctx := metadata.AppendToOutgoingContext(testCtx(t), "authorization", "Bearer "+string(out[0]))
	if who, err := doAction(tctx, c, "whoami", nil); err != nil || string(who) != "alice" {
		t.Fatalf("whoami with payload token = %q, %v", who, err)
	}
	// Clients that send nothing (pyarrow, arrow-go) get no message: arrow-go's
	// AuthenticateBasicToken would otherwise leave its stream open.
	out, err = handshake(ctx, c, nil)
	if err != nil || len(out) != 0 {
		t.Fatalf("handshake without request = %q, %v", out, err)
	}
	before := runtime.NumGoroutine()
	for range 40 {
		if _, err := c.AuthenticateBasicToken(testCtx(t), "alice", "s3cret"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if after := runtime.NumGoroutine(); after-before > 20 {
		t.Fatalf("goroutines grew from %d to %d over 40 AuthenticateBasicToken calls", before, after)
	}
}

func TestTokenStoreExpiry(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	s := newTokenStore(TokenTTL)
	s.now = func() time.Time { return now }
	tok, err := s.issue("alice")
	if err != nil || len(tok) != 64 {
		t.Fatalf("issue = %q, %v", tok, err)
	}
	tok2, _ := s.issue("alice")
	if tok2 == tok {
		t.Fatal("two issued tokens are equal")
	}
	now = now.Add(TokenTTL - time.Second)
	if u, ok := s.lookup(tok); !ok || u != "alice" {
		t.Fatalf("lookup before expiry = %q, %v", u, ok)
	}
	now = now.Add(2 * time.Second)
	if _, ok := s.lookup(tok); ok {
		t.Fatal("token valid after 24 h")
	}
	if _, ok := s.lookup(strings.ToUpper(tok2)); ok {
		t.Fatal("a different token string was accepted")
	}
	// Expired tokens are purged when new ones are issued.
	now = now.Add(2 * time.Minute)
	if _, err := s.issue("bob"); err != nil {
		t.Fatal(err)
	}
	if n := len(s.m); n != 1 {
		t.Fatalf("%d tokens kept after purge, want 1", n)
	}
}

func TestTokenAuth(t *testing.T) {
	t.Parallel()
	const token = "tok-3f9a1c"
	ts := startServer(t, Config{AuthToken: token})
	c := dialFlight(t, ts.addr)
	ctx := testCtx(t)

	_, err := listActions(ctx, c)
	wantCode(t, err, codes.Unauthenticated, "missing authorization header")
	bad := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token+"x")
	_, err = listActions(bad, c)
	wantCode(t, err, codes.Unauthenticated, "invalid bearer token")
	_, err = c.GetFlightInfo(bad, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"x"}})
	wantCode(t, err, codes.Unauthenticated, "invalid bearer token")
	wrongScheme := metadata.AppendToOutgoingContext(ctx, "authorization", "Token "+token)
	_, err = listActions(wrongScheme, c)
	wantCode(t, err, codes.Unauthenticated, "unsupported authorization scheme")

	good := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	if acts, err := listActions(good, c); err != nil || len(acts) != 1 {
		t.Fatalf("ListActions with token = %v, %v", acts, err)
	}
	if who, err := doAction(good, c, "whoami", nil); err != nil || string(who) != TokenIdentity {
		t.Fatalf("whoami = %q, %v", who, err)
	}
	if _, err := c.GetFlightInfo(good, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	// Handshake succeeds without credentials and returns nothing ...
	if out, err := handshake(ctx, c, nil); err != nil || len(out) != 0 {
		t.Fatalf("token-mode handshake = %q, %v", out, err)
	}
	// ... but a basic login is refused with a pointer to the token.
	_, err = c.AuthenticateBasicToken(ctx, "alice", "pw")
	wantCode(t, err, codes.Unauthenticated, "static bearer token")
	if st, err := healthCheck(t, ts.addr, ""); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without token = %v, %v", st, err)
	}
}

const pyarrowScript = `
import sys
import pyarrow.flight as fl

addr, user, pw = sys.argv[1:4]
client = fl.FlightClient("grpc://" + addr)
try:
    list(client.list_actions())
    sys.exit("list_actions without authentication succeeded")
except fl.FlightUnauthenticatedError as e:
    print("unauthenticated ok:", e)

pair = client.authenticate_basic_token(user, pw)
print("pair:", pair)
assert pair[0] == b"authorization", pair
assert pair[1].startswith(b"Bearer "), pair
opts = fl.FlightCallOptions(headers=[pair])
actions = list(client.list_actions(options=opts))
assert [a.type for a in actions] == ["echo"], actions
res = list(client.do_action(fl.Action("whoami", b""), options=opts))
assert res[0].body.to_pybytes() == user.encode(), res
res = list(client.do_action(fl.Action("echo", b"x" * (6 << 20)), options=opts))
assert res[0].body.size == 6 << 20, res[0].body.size

try:
    client.authenticate_basic_token(user, pw + "-wrong")
    sys.exit("wrong password accepted")
except fl.FlightUnauthenticatedError as e:
    assert "invalid username or password" in str(e), str(e)
    print("wrong password ok:", e)
try:
    list(client.list_actions(options=fl.FlightCallOptions(headers=[(b"authorization", b"Bearer " + b"0" * 64)])))
    sys.exit("forged bearer accepted")
except fl.FlightUnauthenticatedError as e:
    print("forged bearer ok:", e)
print("PYARROW OK")
`

func TestPyarrowBasicAuth(t *testing.T) {
	t.Parallel()
	if err := exec.Command("python3", "-c", "import pyarrow.flight").Run(); err != nil {
		t.Skipf("pyarrow.flight not available: %v", err)
	}
	ts := startServer(t, Config{AuthBasicFile: writeUsers(t, "alice", "s3cret")})
	script := filepath.Join(t.TempDir(), "auth.py")
	if err := os.WriteFile(script, []byte(pyarrowScript), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", script, ts.addr, "alice", "s3cret").CombinedOutput()
	t.Logf("python output:\n%s", out)
	if err != nil || !strings.Contains(string(out), "PYARROW OK") {
		t.Fatalf("pyarrow client failed: %v", err)
	}
}
