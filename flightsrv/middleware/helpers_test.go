package middleware

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/status"
)

// testSvc is a minimal Flight service: ListActions returns one action,
// DoAction echoes the body (and has a few test actions), GetFlightInfo is a
// unary call.
type testSvc struct {
	flight.BaseFlightServer
	started chan struct{} // "block" signals here once running
}

func newTestSvc() *testSvc { return &testSvc{started: make(chan struct{}, 16)} }

func (s *testSvc) ListActions(_ *flight.Empty, st flight.FlightService_ListActionsServer) error {
	return st.Send(&flight.ActionType{Type: "echo", Description: "returns the body"})
}

func (s *testSvc) DoAction(a *flight.Action, st flight.FlightService_DoActionServer) error {
	ctx := st.Context()
	switch a.Type {
	case "echo":
		SetModel(ctx, "model-"+string(a.Body[:min(len(a.Body), 8)]))
		return st.Send(&flight.Result{Body: a.Body})
	case "whoami":
		return st.Send(&flight.Result{Body: []byte(Identity(ctx))})
	case "panic":
		panic("test panic in DoAction")
	case "block":
		s.started <- struct{}{}
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Errorf(codes.InvalidArgument, "unknown action %q", a.Type)
}

func (s *testSvc) GetFlightInfo(ctx context.Context, d *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	if len(d.Path) > 0 && d.Path[0] == "panic" {
		panic("test panic in GetFlightInfo")
	}
	return &flight.FlightInfo{FlightDescriptor: d, TotalRecords: -1, TotalBytes: -1}, nil
}

type testServer struct {
	addr string
	srv  *grpc.Server
	h    *health.Server
	svc  *testSvc
}

// startServer serves NewServer(c) with testSvc on 127.0.0.1:0.
func startServer(t *testing.T, c Config) *testServer {
	t.Helper()
	srv, h, err := NewServer(c)
	if err != nil {
		t.Fatal(err)
	}
	svc := newTestSvc()
	flight.RegisterFlightServiceServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { GracefulStop(srv, h, 2*time.Second) })
	return &testServer{addr: lis.Addr().String(), srv: srv, h: h, svc: svc}
}

func dialFlight(t *testing.T, addr string, opts ...grpc.DialOption) flight.Client {
	t.Helper()
	if len(opts) == 0 {
		var err error
		if opts, err = ClientDialOptions(0, "", false); err != nil {
			t.Fatal(err)
		}
	}
	c, err := flight.NewClientWithMiddleware(addr, nil, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func listActions(ctx context.Context, c flight.Client) ([]string, error) {
	st, err := c.ListActions(ctx, &flight.Empty{})
	if err != nil {
		return nil, err
	}
	var out []string
	for {
		a, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, a.Type)
	}
}

func doAction(ctx context.Context, c flight.Client, typ string, body []byte) ([]byte, error) {
	st, err := c.DoAction(ctx, &flight.Action{Type: typ, Body: body})
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r.Body...)
	}
}

// wantCode fails unless err has the code and its message contains want.
func wantCode(t *testing.T, err error, code codes.Code, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %v error containing %q, got success", code, want)
	}
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), want) {
		t.Fatalf("want %v containing %q, got %v: %q", code, want, st.Code(), st.Message())
	}
}

// writeUsers writes a users file with cheap bcrypt hashes (MinCost) so the
// tests stay fast under -race; AddUser itself is tested in users_test.go.
func writeUsers(t *testing.T, users ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users")
	for i := 0; i+1 < len(users); i += 2 {
		h, err := hashPassword(users[i+1], bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		if err := addUserHash(path, users[i], h); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// syncBuffer collects log output written from server goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(buf *syncBuffer) zerolog.Logger {
	return zerolog.New(buf).Level(zerolog.DebugLevel)
}
