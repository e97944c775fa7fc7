package middleware

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/arrowquant/arrowquant/internal/flightcodec"
)

// callInfo is the per-RPC mutable record the logging interceptor puts in the
// context: the auth interceptor sets the identity, the handler the model
// (SetModel), the stream wrapper the byte counts.
type callInfo struct {
	mu    sync.Mutex
	user  string
	model string
	in    atomic.Int64
	out   atomic.Int64
}

type callInfoKey struct{}

func callInfoFrom(ctx context.Context) *callInfo {
	ci, _ := ctx.Value(callInfoKey{}).(*callInfo)
	return ci
}

// SetModel records the model a call works on, for its request log line.
// It may be called from inside any handler (and from other goroutines);
// outside an RPC served by NewServer it does nothing.
func SetModel(ctx context.Context, name string) {
	if ci := callInfoFrom(ctx); ci != nil {
		ci.mu.Lock()
		ci.model = name
		ci.mu.Unlock()
	}
}

func setIdentity(ctx context.Context, user string) {
	if ci := callInfoFrom(ctx); ci != nil {
		ci.mu.Lock()
		ci.user = user
		ci.mu.Unlock()
	}
}

// Identity returns the authenticated user of the RPC: the user name for basic
// authentication, TokenIdentity ("token") for the static token, "" without
// authentication (or for calls exempt from it).
func Identity(ctx context.Context) string {
	if ci := callInfoFrom(ctx); ci != nil {
		ci.mu.Lock()
		defer ci.mu.Unlock()
		return ci.user
	}
	return ""
}

// PeerAddr returns the remote address of the RPC for logs ("" if unknown).
func PeerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// ShortMethod returns the method name of a gRPC full method
// ("/arrow.flight.protocol.FlightService/DoPut" -> "DoPut").
func ShortMethod(fullMethod string) string {
	if i := strings.LastIndexByte(fullMethod, '/'); i >= 0 {
		return fullMethod[i+1:]
	}
	return fullMethod
}

func msgSize(m any) int64 {
	if d, ok := m.(*flightcodec.OutgoingData); ok {
		return int64(d.WireSize())
	}
	if pm, ok := m.(proto.Message); ok {
		return int64(proto.Size(pm))
	}
	return 0
}

// observer writes the request log lines and metrics.
type observer struct {
	log     zerolog.Logger
	metrics *Metrics
	limit   int
}

func (o *observer) addIn(ci *callInfo, n int64) {
	ci.in.Add(n)
	o.metrics.addReceived(n)
}

func (o *observer) addOut(ci *callInfo, n int64) {
	ci.out.Add(n)
	o.metrics.addSent(n)
}

func (o *observer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	ci := &callInfo{}
	ctx = context.WithValue(ctx, callInfoKey{}, ci)
	o.addIn(ci, msgSize(req))
	start := time.Now()
	returned := false
	defer func() {
		if !returned { // panicking: the recover interceptor turns it into Internal
			o.finish(ctx, info.FullMethod, ci, start, status.Error(codes.Internal, "panic"))
		}
	}()
	resp, err = handler(ctx, req)
	returned = true
	if err == nil {
		o.addOut(ci, msgSize(resp))
	}
	o.finish(ctx, info.FullMethod, ci, start, err)
	return resp, err
}

func (o *observer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	ci := &callInfo{}
	ctx := context.WithValue(ss.Context(), callInfoKey{}, ci)
	ws := &serverStream{ServerStream: ss, ctx: ctx, ci: ci, o: o}
	start := time.Now()
	returned := false
	defer func() {
		if !returned {
			o.finish(ctx, info.FullMethod, ci, start, status.Error(codes.Internal, "panic"))
		}
	}()
	err = handler(srv, ws)
	returned = true
	o.finish(ctx, info.FullMethod, ci, start, err)
	return err
}

func (o *observer) finish(ctx context.Context, fullMethod string, ci *callInfo, start time.Time, err error) {
	d := time.Since(start)
	method := ShortMethod(fullMethod)
	st := status.Convert(err)
	code := st.Code()
	o.metrics.observeRequest(method, code, d)

	level := zerolog.InfoLevel
	if strings.HasPrefix(fullMethod, healthPrefix) {
		level = zerolog.DebugLevel // probes would drown the log
	}
	ev := o.log.WithLevel(level)
	if ev == nil {
		return
	}
	ci.mu.Lock()
	user, model := ci.user, ci.model
	ci.mu.Unlock()
	ev = ev.Str("method", method).
		Str("code", code.String()).
		Float64("duration_ms", float64(d.Microseconds())/1000).
		Str("peer", PeerAddr(ctx))
	if user != "" {
		ev = ev.Str("user", user)
	}
	if model != "" {
		ev = ev.Str("model", model)
	}
	ev = ev.Int64("bytes_in", ci.in.Load()).Int64("bytes_out", ci.out.Load())
	if err != nil {
		ev = ev.Str("error", st.Message())
	}
	ev.Msg("rpc")
}

// serverStream carries the call context and counts message bytes.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
	ci  *callInfo
	o   *observer
}

func (s *serverStream) Context() context.Context { return s.ctx }

func (s *serverStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err != nil {
		return s.o.explainLimit(err, "receive")
	}
	s.o.addIn(s.ci, msgSize(m))
	return nil
}

func (s *serverStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err != nil {
		return s.o.explainLimit(err, "send")
	}
	s.o.addOut(s.ci, msgSize(m))
	return nil
}

// explainLimit rewrites grpc's "message larger than max (X vs. Y)" into a
// message that names the configured limit and how to change it.
func (o *observer) explainLimit(err error, dir string) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "larger than max") {
		return err
	}
	return status.Errorf(codes.ResourceExhausted,
		"message exceeds the server's %s limit of %d bytes (%s; server --max-message-bytes; send smaller record batches): %s",
		dir, o.limit, humanBytes(o.limit), st.Message())
}

func humanBytes(n int) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.4g MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.4g KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// recoverer turns a handler panic into codes.Internal and logs the stack,
// and keeps error messages fit for the client: server paths replaced,
// length capped (gRPC C++ clients such as pyarrow refuse trailers over
// 8 KiB, which turns a long message into a transport error).
type recoverer struct {
	log       zerolog.Logger
	metrics   *Metrics
	hidePaths []string // server directories never shown to clients
}

// maxStatusMessage caps the bytes of an error message sent to a client.
const maxStatusMessage = 4096

// sanitize rewrites err's status message (the code is kept).
func (r *recoverer) sanitize(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	msg := st.Message()
	for _, p := range r.hidePaths {
		if p != "" && p != "/" && p != "." {
			msg = strings.ReplaceAll(msg, p, "<server>")
		}
	}
	if len(msg) > maxStatusMessage {
		cut := maxStatusMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "… (truncated)"
	}
	if msg == st.Message() && ok {
		return err
	}
	return status.Error(st.Code(), msg)
}

func (r *recoverer) report(ctx context.Context, fullMethod string, p any) error {
	r.log.Error().
		Str("method", ShortMethod(fullMethod)).
		Str("peer", PeerAddr(ctx)).
		Str("panic", fmt.Sprint(p)).
		Str("stack", string(debug.Stack())).
		Msg("panic in RPC handler")
	r.metrics.ObservePanic("handler")
	return status.Error(codes.Internal, "internal error (logged on the server)")
}

func (r *recoverer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, r.report(ctx, info.FullMethod, p)
		}
		err = r.sanitize(err)
	}()
	return handler(ctx, req)
}

func (r *recoverer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = r.report(ss.Context(), info.FullMethod, p)
		}
		err = r.sanitize(err)
	}()
	return handler(srv, ss)
}
