package flightsrv_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/client"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/flightsrv"
	"github.com/arrowquant/arrowquant/flightsrv/middleware"
	"github.com/arrowquant/arrowquant/local"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/wire"
)

var tinyDir string

func TestMain(m *testing.M) {
	if dir := os.Getenv("ARROWQUANT_SERVE_CHILD"); dir != "" {
		serveChild(dir)
		return
	}
	tmp, err := os.MkdirTemp("", "aq-flight-")
	if err != nil {
		panic(err)
	}
	tinyDir = filepath.Join(tmp, "tiny")
	if err := modelio.Generate(context.Background(), modelio.GenOptions{Preset: "tiny", Out: tinyDir, Seed: 11}); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// serveChild runs a real server in this (re-exec'd) process, printing its
// address, until SIGTERM.
func serveChild(dir string) {
	ctx, stop := signalContext()
	defer stop()
	err := flightsrv.Serve(ctx, flightsrv.ServerConfig{
		Addr: "127.0.0.1:0", DataDir: dir, Defaults: config.Default(), Logger: zerolog.Nop(),
		ShutdownTimeout: 5 * time.Second,
		Ready:           func(a net.Addr) { fmt.Println("ADDR", a.String()) },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type testServer struct {
	addr  string
	store store.Store
	svc   *flightsrv.Service
	stop  func()
}

// startServer runs the service in-process on 127.0.0.1:0.
func startServer(t *testing.T, mw middleware.Config, o flightsrv.Options) *testServer {
	t.Helper()
	st, err := store.OpenLocal(t.TempDir(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if o.Defaults.BitWidth == 0 {
		o.Defaults = config.Default()
	}
	o.Store = st
	svc, err := flightsrv.New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv, health, err := middleware.NewServer(mw)
	if err != nil {
		t.Fatal(err)
	}
	flight.RegisterFlightServiceServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	ts := &testServer{addr: lis.Addr().String(), store: st, svc: svc}
	ts.stop = func() {
		middleware.GracefulStop(srv, health, 5*time.Second)
		st.Close()
	}
	t.Cleanup(ts.stop)
	return ts
}

func dial(t *testing.T, addr string, o client.Options) *client.Client {
	t.Helper()
	o.Server = "grpc://" + addr
	c, err := client.Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func code(err error) codes.Code { return status.Code(err) }

// artifactRows reads every batch of an artifact as (name, chunk, codes, scales, mins) strings.
func artifactRows(t *testing.T, path string) ([]string, map[string]string) {
	t.Helper()
	r, err := artifact.Open(path, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var rows []string
	for i := 0; i < r.NumBatches(); i++ {
		rec, err := r.Batch(i)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		for c := 0; c < int(rec.NumCols()); c++ {
			fmt.Fprintf(&buf, "%v|", rec.Column(c))
		}
		rows = append(rows, buf.String())
		rec.Release()
	}
	md := map[string]string{}
	for _, k := range []string{schema.MetaConfig, schema.MetaIndex, schema.MetaModality, schema.MetaTimeGroups, schema.MetaFormatVersion} {
		md[k] = r.Meta(k)
	}
	return rows, md
}

// push -> pull gives the same artifact rows and metadata as a local
// quantize, whether the server spools to files, to memory, or to memory
// too small for a tensor (which spills).
func TestPushPullEqualsLocalQuantize(t *testing.T) {
	for _, spoolMemory := range []int64{0, 256 << 20, 16 << 10} {
		t.Run(fmt.Sprintf("spool memory %d", spoolMemory), func(t *testing.T) {
			testPushPullEqualsLocalQuantize(t, spoolMemory)
		})
	}
}

func testPushPullEqualsLocalQuantize(t *testing.T, spoolMemory int64) {
	ts := startServer(t, middleware.Config{}, flightsrv.Options{SpoolMemoryBytes: spoolMemory})
	c := dial(t, ts.addr, client.Options{})
	ctx := context.Background()
	cfg := config.FromProfile(config.Edge)
	var cfgMap map[string]any
	b, _ := json.Marshal(cfg)
	json.Unmarshal(b, &cfgMap)

	res, err := c.Push(ctx, tinyDir, client.PushOptions{Name: "tiny-edge", Config: cfgMap, ChunkElems: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pulled := filepath.Join(dir, "pulled")
	if err := c.Pull(ctx, "tiny-edge", pulled, client.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	localOut := filepath.Join(dir, "local")
	lres, err := local.Quantize(ctx, local.QuantizeOptions{ModelDir: tinyDir, OutputDir: localOut, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	pr, pm := artifactRows(t, filepath.Join(pulled, artifact.FileName))
	lr, lm := artifactRows(t, filepath.Join(localOut, artifact.FileName))
	if len(pr) != len(lr) || len(pr) == 0 {
		t.Fatalf("%d pulled batches vs %d local", len(pr), len(lr))
	}
	for i := range pr {
		if pr[i] != lr[i] {
			t.Fatalf("batch %d differs:\npulled %.300s\nlocal  %.300s", i, pr[i], lr[i])
		}
	}
	for k, v := range lm {
		if pm[k] != v {
			t.Errorf("metadata %s differs: %.200s vs %.200s", k, pm[k], v)
		}
	}
	if res.CosineSimilarity != lres.CosineSimilarity || res.NumTensors != lres.NumTensors || res.ActualBitWidth != lres.ActualBitWidth {
		t.Errorf("push result %v/%d/%d, local %v/%d/%d", res.CosineSimilarity, res.NumTensors, res.ActualBitWidth,
			lres.CosineSimilarity, lres.NumTensors, lres.ActualBitWidth)
	}
	for _, f := range []string{"config.json", "tokenizer_config.json", artifact.ReportName} {
		if _, err := os.Stat(filepath.Join(pulled, f)); err != nil {
			t.Errorf("pull did not write %s", f)
		}
	}
}

// inputSchema / batch helpers for raw Flight calls.
func f32Batch(mem memory.Allocator, name string, shape []int64, dtype string, off int64, vals []float32) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, schema.Input(arrow.PrimitiveTypes.Float32))
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append(name)
	lb := b.Field(1).(*array.ListBuilder)
	lb.Append(true)
	lb.ValueBuilder().(*array.Int64Builder).AppendValues(shape, nil)
	b.Field(2).(*array.StringBuilder).Append(dtype)
	b.Field(3).(*array.Int64Builder).Append(off)
	vb := b.Field(4).(*array.ListBuilder)
	vb.Append(true)
	vb.ValueBuilder().(*array.Float32Builder).AppendValues(vals, nil)
	return b.NewRecordBatch()
}

// rawPut sends batches with a descriptor and returns the last app_metadata or the error.
func rawPut(t *testing.T, addr string, desc *flight.FlightDescriptor, batches func(w *flight.Writer) error) ([]byte, error) {
	t.Helper()
	fc, err := flight.NewClientWithMiddleware(addr, nil, nil, grpcInsecure()...)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	stream, err := fc.DoPut(context.Background())
	if err != nil {
		return nil, err
	}
	w := flight.NewRecordWriter(stream, ipc.WithSchema(schema.Input(arrow.PrimitiveTypes.Float32)))
	w.SetFlightDescriptor(desc)
	werr := batches(w)
	w.Close()
	stream.CloseSend()
	var last []byte
	for {
		pr, err := stream.Recv()
		if err != nil {
			if errors.Is(err, ioEOF) {
				return last, werr
			}
			return last, err
		}
		last = pr.GetAppMetadata()
	}
}

func cmdDesc(v any) *flight.FlightDescriptor {
	b, _ := json.Marshal(v)
	return &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: b}
}

func normal(n int, seed int) []float32 {
	x := make([]float32, n)
	s := uint64(seed)*2654435761 + 1
	for i := range x {
		// a cheap deterministic pseudo-normal: sum of uniforms
		var acc float32
		for k := 0; k < 4; k++ {
			s = s*6364136223846793005 + 1442695040888963407
			acc += float32(s>>40) / float32(1<<24)
		}
		x[i] = (acc - 2) * 0.05
	}
	return x
}

// A 3M-element tensor split over 30 batches, plus an error for each code.
func TestLargeTensorManyBatchesAndErrors(t *testing.T) {
	ts := startServer(t, middleware.Config{}, flightsrv.Options{MaxUploadBytes: 64 << 20})
	mem := memory.DefaultAllocator
	shape := []int64{3000, 1000}
	vals := normal(3_000_000, 1)
	put := func(name string, cfg map[string]any, overwrite bool) ([]byte, error) {
		return rawPut(t, ts.addr, cmdDesc(map[string]any{"model": name, "config": cfg, "overwrite": overwrite}), func(w *flight.Writer) error {
			for off := 0; off < len(vals); off += 100_000 {
				rec := f32Batch(mem, "big.weight", shape, "F32", int64(off), vals[off:off+100_000])
				err := w.Write(rec)
				rec.Release()
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	last, err := put("big", map[string]any{"modality": "text"}, false)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		NumTensors int `json:"num_tensors"`
		Layers     []struct {
			Params   int64 `json:"params"`
			BitWidth int   `json:"bit_width"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(last, &res); err != nil || res.NumTensors != 1 || res.Layers[0].Params != 3_000_000 || res.Layers[0].BitWidth != 4 {
		t.Fatalf("result %s (%v)", last, err)
	}
	c := dial(t, ts.addr, client.Options{})
	info, md, err := c.Info(context.Background(), "big")
	if err != nil || info.GetTotalRecords() != 3 || md["model"] != "big" {
		t.Fatalf("info: %v %v", info, err)
	}

	// Error codes.
	if _, err := put("big", map[string]any{"modality": "text"}, false); code(err) != codes.AlreadyExists {
		t.Errorf("existing name: %v", err)
	}
	if _, err := put("bad", map[string]any{"modality": "text", "bit_width": 3}, false); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "InvalidBitWidth(3)") {
		t.Errorf("bit width 3: %v", err)
	}
	// No modality and no config.json: recorded as undetected, not refused.
	if raw, err := put("nomod", nil, false); err != nil {
		t.Errorf("no modality: %v", err)
	} else {
		var res quant.Result
		json.Unmarshal(raw, &res)
		if res.Modality != "" || !strings.HasPrefix(res.ModalitySource, "not detected") || res.ModalityEffect == "" {
			t.Errorf("no modality: %q %q %q", res.Modality, res.ModalitySource, res.ModalityEffect)
		}
	}
	if _, err := put("strict", map[string]any{"modality": "text", "bit_width": 2, "min_accuracy": 0.99, "fail_fast": true}, false); code(err) != codes.FailedPrecondition {
		t.Errorf("fail_fast: %v", err)
	}
	if _, _, err := c.Info(context.Background(), "nope"); code(err) != codes.NotFound {
		t.Errorf("unknown model: %v", err)
	}
	small := startServer(t, middleware.Config{}, flightsrv.Options{MaxUploadBytes: 1 << 20})
	_, err = rawPut(t, small.addr, cmdDesc(map[string]any{"model": "x", "config": map[string]any{"modality": "text"}}), func(w *flight.Writer) error {
		rec := f32Batch(mem, "w", []int64{1000, 1000}, "F32", 0, vals[:1_000_000])
		defer rec.Release()
		return w.Write(rec)
	})
	if code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "upload limit") {
		t.Errorf("upload limit: %v", err)
	}
	// Out-of-order chunk and NaN are InvalidArgument naming the tensor.
	_, err = rawPut(t, ts.addr, cmdDesc(map[string]any{"model": "gap", "config": map[string]any{"modality": "text"}}), func(w *flight.Writer) error {
		rec := f32Batch(mem, "w", []int64{10, 10}, "F32", 50, vals[:50])
		defer rec.Release()
		return w.Write(rec)
	})
	if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"w"`) {
		t.Errorf("chunk gap: %v", err)
	}
	nan := append([]float32(nil), vals[:100]...)
	nan[42] = float32(nanValue())
	_, err = rawPut(t, ts.addr, cmdDesc(map[string]any{"model": "nan", "config": map[string]any{"modality": "text"}}), func(w *flight.Writer) error {
		rec := f32Batch(mem, "w", []int64{10, 10}, "F32", 0, nan)
		defer rec.Release()
		return w.Write(rec)
	})
	if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "element 42") {
		t.Errorf("NaN: %v", err)
	}
	// Nothing half-written is listed.
	infos, err := c.List(context.Background(), "")
	if err != nil || len(infos) != 2 { // big and nomod
		t.Errorf("list after failures: %d models, %v", len(infos), err)
	}
	// Shutting down: Unavailable.
	ts.svc.BeginShutdown()
	if _, _, err := c.Info(context.Background(), "big"); code(err) != codes.Unavailable {
		t.Errorf("shutting down: %v", err)
	}
}

// 16 clients pushing and pulling at once: pairs race for one name (one
// wins, the other gets AlreadyExists), then everyone pulls concurrently.
func TestConcurrentClients(t *testing.T) {
	// 16 uploads at once from one host: no upload caps here (TestUploadLimitsAndIdleTimeout has them).
	ts := startServer(t, middleware.Config{}, flightsrv.Options{MaxUploads: -1, MaxUploadsPerClient: -1})
	var pushed, pulled sync.WaitGroup
	var mu sync.Mutex
	exists := 0
	errs := make(chan error, 32)
	pushed.Add(16)
	pulled.Add(16)
	for i := 0; i < 16; i++ {
		go func(i int) {
			defer pulled.Done()
			c, err := client.Dial(context.Background(), client.Options{Server: "grpc://" + ts.addr})
			if err != nil {
				errs <- err
				pushed.Done()
				return
			}
			defer c.Close()
			name := fmt.Sprintf("m%d", i%8)
			_, err = c.Push(context.Background(), tinyDir, client.PushOptions{Name: name, Config: map[string]any{"bit_width": 2 + 2*(i%2)}})
			if code(err) == codes.AlreadyExists {
				mu.Lock()
				exists++
				mu.Unlock()
			} else if err != nil {
				errs <- fmt.Errorf("push %s: %w", name, err)
			}
			pushed.Done()
			pushed.Wait()
			if err := c.Pull(context.Background(), name, filepath.Join(t.TempDir(), "out"), client.PullOptions{}); err != nil {
				errs <- fmt.Errorf("pull %s: %w", name, err)
			}
		}(i)
	}
	pulled.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if exists != 8 {
		t.Errorf("%d pushes got AlreadyExists, want exactly 8 (one per contested name)", exists)
	}
	st, _ := ts.store.Stats(context.Background())
	if st.Models != 8 || st.Pending != 0 {
		t.Errorf("%d models, %d pending; want 8, 0", st.Models, st.Pending)
	}
}

func startChild(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ARROWQUANT_SERVE_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	deadline := time.Now().Add(20 * time.Second)
	var line string
	for time.Now().Before(deadline) && !strings.Contains(line, "\n") {
		n, err := out.Read(buf)
		line += string(buf[:n])
		if err != nil {
			break
		}
	}
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "ADDR" {
		cmd.Process.Kill()
		t.Fatalf("child server did not start: %q", line)
	}
	return cmd, f[1]
}

// Restart keeps committed models; kill -9 during a DoPut leaves no partial model.
func TestRestartAndKillDuringPut(t *testing.T) {
	dir := t.TempDir()
	cmd, addr := startChild(t, dir)
	c, err := client.Dial(context.Background(), client.Options{Server: "grpc://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Push(context.Background(), tinyDir, client.PushOptions{Name: "kept"}); err != nil {
		t.Fatal(err)
	}
	// Start a slow upload and kill the server in the middle of it.
	done := make(chan error, 1)
	go func() {
		_, err := rawPut(t, addr, cmdDesc(map[string]any{"model": "partial", "config": map[string]any{"modality": "text"}}), func(w *flight.Writer) error {
			vals := normal(100_000, 2)
			for off := 0; off < 1_000_000; off += 100_000 {
				rec := f32Batch(memory.DefaultAllocator, "w", []int64{1000, 1000}, "F32", int64(off), vals)
				err := w.Write(rec)
				rec.Release()
				if err != nil {
					return err
				}
				time.Sleep(50 * time.Millisecond)
			}
			return nil
		})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	<-done
	c.Close()

	cmd, addr = startChild(t, dir)
	defer func() { // SIGTERM is a clean, graceful exit
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("server exit after SIGTERM: %v", err)
		}
	}()
	c, err = client.Dial(context.Background(), client.Options{Server: "grpc://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	infos, err := c.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].GetFlightDescriptor().GetPath()[0] != "kept" {
		t.Fatalf("after kill -9 and restart: %v", infos)
	}
	if err := c.Pull(context.Background(), "kept", filepath.Join(t.TempDir(), "k"), client.PullOptions{}); err != nil {
		t.Fatalf("committed model unreadable after restart: %v", err)
	}
}

// The Go client against a server with token and with basic auth.
func TestAuthNegativesThroughClient(t *testing.T) {
	ts := startServer(t, middleware.Config{AuthToken: "s3cret"}, flightsrv.Options{})
	ctx := context.Background()
	for _, tok := range []string{"", "wrong"} {
		c := dial(t, ts.addr, client.Options{Token: tok})
		if _, err := c.List(ctx, ""); code(err) != codes.Unauthenticated {
			t.Errorf("token %q: %v, want Unauthenticated", tok, err)
		}
	}
	c := dial(t, ts.addr, client.Options{Token: "s3cret"})
	if _, err := c.Push(ctx, tinyDir, client.PushOptions{Name: "ok"}); err != nil {
		t.Fatalf("valid token: %v", err)
	}

	users := filepath.Join(t.TempDir(), "users")
	if err := middleware.AddUser(users, "alice", "pw1"); err != nil {
		t.Fatal(err)
	}
	bs := startServer(t, middleware.Config{AuthBasicFile: users}, flightsrv.Options{})
	if _, err := client.Dial(ctx, client.Options{Server: "grpc://" + bs.addr, User: "alice", Password: "nope"}); code(errors.Unwrap(err)) != codes.Unauthenticated && !strings.Contains(fmt.Sprint(err), "Unauthenticated") {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := client.Dial(ctx, client.Options{Server: "grpc://" + bs.addr, User: "bob", Password: "pw1"}); !strings.Contains(fmt.Sprint(err), "Unauthenticated") {
		t.Errorf("unknown user: %v", err)
	}
	anon := dial(t, bs.addr, client.Options{})
	if _, err := anon.List(ctx, ""); code(err) != codes.Unauthenticated {
		t.Errorf("no credentials: %v", err)
	}
	alice := dial(t, bs.addr, client.Options{User: "alice", Password: "pw1"})
	if _, err := alice.Push(ctx, tinyDir, client.PushOptions{Name: "a"}); err != nil {
		t.Fatalf("alice: %v", err)
	}
	if infos, err := alice.List(ctx, ""); err != nil || len(infos) != 1 {
		t.Fatalf("alice list: %v %v", infos, err)
	}
}

// Every action, including quantize on a kept source, and DoGet tickets.
func TestActionsAndTickets(t *testing.T) {
	ts := startServer(t, middleware.Config{}, flightsrv.Options{KeepSource: true})
	ctx := context.Background()
	c := dial(t, ts.addr, client.Options{})
	if _, err := c.Push(ctx, tinyDir, client.PushOptions{Name: "src", Config: map[string]any{"bit_width": 8}}); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Valid  bool                        `json:"valid"`
		Config config.DiffusionQuantConfig `json:"config"`
	}
	if err := c.Action(ctx, wire.ActionValidateConfig, map[string]any{"profile": "edge", "config": map[string]any{"group_size": 64}}, &v); err != nil || !v.Valid || v.Config.BitWidth != 2 || v.Config.GroupSize != 64 {
		t.Fatalf("validate_config: %+v %v", v, err)
	}
	err := c.Action(ctx, wire.ActionValidateConfig, map[string]any{"config": map[string]any{"num_time_groups": 150}}, nil)
	if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "InvalidTimeGroups(150)") {
		t.Errorf("invalid config: %v", err)
	}
	if err := c.Action(ctx, wire.ActionValidateConfig, map[string]any{"config": map[string]any{"bitwidth": 4}}, nil); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "UnknownKey") {
		t.Errorf("unknown key: %v", err)
	}
	var profiles map[string]config.DiffusionQuantConfig
	if err := c.Action(ctx, wire.ActionProfiles, nil, &profiles); err != nil || profiles["cloud"].BitWidth != 8 || profiles["edge"].GroupSize != 256 {
		t.Fatalf("profiles: %v %v", profiles, err)
	}
	var res struct {
		BitWidth int `json:"bit_width"`
		Layers   []any
	}
	if err := c.Action(ctx, wire.ActionQuantize, map[string]any{"model": "src", "name": "re2", "profile": "edge"}, &res); err != nil || res.BitWidth != 2 || len(res.Layers) != 27 {
		t.Fatalf("quantize action: %+v %v", res, err)
	}
	var stats map[string]any
	if err := c.Action(ctx, wire.ActionStats, nil, &stats); err != nil || stats["models"].(float64) != 2 {
		t.Fatalf("stats: %v %v", stats, err)
	}
	// One tensor, dequantized, equals the dequantization of its quantized batches.
	const tensor = "model.layers.0.mlp.down_proj.weight"
	var n int64
	var shape []int64
	err = c.Get(ctx, wire.Ticket{Model: "re2", Tensor: tensor, Dequantize: true}, func(s *arrow.Schema, rec arrow.RecordBatch) error {
		if s.Field(4).Type.(*arrow.ListType).Elem().ID() != arrow.FLOAT32 {
			return fmt.Errorf("dequantized stream has %s values", s.Field(4).Type)
		}
		n += int64(rec.Column(4).(*array.List).ListValues().Len())
		l := rec.Column(1).(*array.List)
		shape = l.ListValues().(*array.Int64).Int64Values()
		return nil
	})
	if err != nil || n != shape[0]*shape[1] {
		t.Fatalf("dequantized tensor: %d values for shape %v (%v)", n, shape, err)
	}
	if err := c.Get(ctx, wire.Ticket{Model: "re2", Tensor: "nope"}, func(*arrow.Schema, arrow.RecordBatch) error { return nil }); code(err) != codes.NotFound {
		t.Errorf("unknown tensor: %v", err)
	}
	if err := c.Action(ctx, wire.ActionDelete, map[string]any{"model": "re2"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Action(ctx, wire.ActionDelete, map[string]any{"model": "re2"}, nil); code(err) != codes.NotFound {
		t.Errorf("second delete: %v", err)
	}
	// Without a kept source the quantize action is a FailedPrecondition.
	plain := startServer(t, middleware.Config{}, flightsrv.Options{})
	pc := dial(t, plain.addr, client.Options{})
	if _, err := pc.Push(ctx, tinyDir, client.PushOptions{Name: "m"}); err != nil {
		t.Fatal(err)
	}
	if err := pc.Action(ctx, wire.ActionQuantize, map[string]any{"model": "m", "name": "m2"}, nil); code(err) != codes.FailedPrecondition {
		t.Errorf("quantize without source: %v", err)
	}
}

// A FlightData message carrying only app_metadata (pyarrow's
// writer.write_metadata) between batches is accepted.
func TestMetadataOnlyMessages(t *testing.T) {
	ts := startServer(t, middleware.Config{}, flightsrv.Options{})
	vals := normal(20_000, 3)
	last, err := rawPut(t, ts.addr, cmdDesc(map[string]any{"model": "meta", "config": map[string]any{"modality": "text"}}), func(w *flight.Writer) error {
		for off := 0; off < len(vals); off += 10_000 {
			rec := f32Batch(memory.DefaultAllocator, "w", []int64{100, 200}, "F32", int64(off), vals[off:off+10_000])
			err := w.WriteWithAppMetadata(rec, []byte("note"))
			rec.Release()
			if err != nil {
				return err
			}
			if err := w.WriteMetadata([]byte("progress")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || !strings.Contains(string(last), `"num_tensors":1`) {
		t.Fatalf("%s %v", last, err)
	}
}

// An upload that declared more tensors than it sent is refused, not committed.
func TestDeclaredTensorCount(t *testing.T) {
	ts := startServer(t, middleware.Config{}, flightsrv.Options{})
	vals := normal(100, 4)
	_, err := rawPut(t, ts.addr, cmdDesc(map[string]any{"model": "short", "tensors": 2, "config": map[string]any{"modality": "text"}}), func(w *flight.Writer) error {
		rec := f32Batch(memory.DefaultAllocator, "w", []int64{10, 10}, "F32", 0, vals)
		defer rec.Release()
		return w.Write(rec)
	})
	if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "declared 2 tensors") {
		t.Fatalf("got %v", err)
	}
	if _, err := ts.store.Get(context.Background(), "short"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("partial upload stored: %v", err)
	}
}

// A pulled report.json describes the local copy, as quantize's does.
func TestPulledReportIsLocal(t *testing.T) {
	ts := startServer(t, middleware.Config{}, flightsrv.Options{})
	c := dial(t, ts.addr, client.Options{})
	if _, err := c.Push(context.Background(), tinyDir, client.PushOptions{Name: "r"}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "pulled")
	if err := c.Pull(context.Background(), "r", out, client.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, artifact.ReportName))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		QuantizedPath string  `json:"quantized_path"`
		ModelSizeMB   float64 `json:"model_size_mb"`
	}
	json.Unmarshal(b, &rep)
	st, _ := os.Stat(filepath.Join(out, artifact.FileName))
	if rep.QuantizedPath != filepath.Join(out, artifact.FileName) || rep.ModelSizeMB != float64(st.Size())/(1<<20) {
		t.Fatalf("report %+v, file %d bytes", rep, st.Size())
	}
}

// Calibration sent with a push weighs the matching layer and shows in FlightInfo.
func TestPushWithCalibration(t *testing.T) {
	ts := startServer(t, middleware.Config{}, flightsrv.Options{})
	c := dial(t, ts.addr, client.Options{})
	path := filepath.Join(t.TempDir(), "calib.jsonl")
	var b strings.Builder
	act := make([]float32, 256)
	for k := 0; k < 32; k++ {
		for j := range act {
			act[j] = float32((j*7+k)%13) - 6
		}
		line, _ := json.Marshal(map[string]any{"layer": "model.layers.0.mlp.up_proj", "timestep": k, "activation": act})
		b.Write(line)
		b.WriteByte('\n')
	}
	os.WriteFile(path, []byte(b.String()), 0o644)
	res, err := c.Push(context.Background(), tinyDir, client.PushOptions{Name: "cal", Calibration: path, Config: map[string]any{"num_time_groups": 4}})
	if err != nil {
		t.Fatal(err)
	}
	weighted := 0
	for _, l := range res.Layers {
		if l.Weighting != "" {
			weighted++
			if l.Name != "model.layers.0.mlp.up_proj.weight" || l.OutputCosineSimilarity == nil {
				t.Errorf("weighted layer %+v", l)
			}
		}
	}
	if weighted != 1 || res.TimeGroups == nil || res.TimeGroups.Calibration == nil || res.TimeGroups.Calibration.RowsRead != 32 {
		t.Fatalf("weighted %d, time groups %+v", weighted, res.TimeGroups)
	}
	_, md, err := c.Info(context.Background(), "cal")
	if err != nil {
		t.Fatal(err)
	}
	tg, _ := md["time_groups"].(map[string]any)
	params, _ := tg["activation_params"].(map[string]any)
	if len(params["model.layers.0.mlp.up_proj"].([]any)) != 4 {
		t.Errorf("FlightInfo time_groups: %v", tg)
	}
}

// Received bodies go back to a pool once their batch is spooled and are
// reused for the next messages: the kept source of an upload in batches of
// 256 KB bodies is the values sent, byte for byte.
func TestPooledBodiesSpoolWhatWasSent(t *testing.T) {
	ts := startServer(t, middleware.Config{}, flightsrv.Options{KeepSource: true})
	const rows, cols, per = 64, 8192, 65536 // 8 batches of 65,536 float32
	vals := normal(rows*cols, 11)
	_, err := rawPut(t, ts.addr, cmdDesc(map[string]any{"model": "pooled", "config": map[string]any{"bit_width": 8}}), func(w *flight.Writer) error {
		for off := 0; off < len(vals); off += per {
			rec := f32Batch(memory.DefaultAllocator, "w", []int64{rows, cols}, "F32", int64(off), vals[off:off+per])
			err := w.Write(rec)
			rec.Release()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e, err := ts.store.Get(context.Background(), "pooled")
	if err != nil {
		t.Fatal(err)
	}
	var file string
	for f := range e.Files {
		if strings.HasPrefix(f, "source/") && strings.HasSuffix(f, ".bin") {
			file = f
		}
	}
	f, err := ts.store.Open(context.Background(), "pooled", file)
	if err != nil {
		t.Fatalf("kept source %q of %v: %v", file, e.Files, err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4*len(vals) {
		t.Fatalf("kept source: %d bytes, want %d", len(got), 4*len(vals))
	}
	for i, v := range vals {
		if g := math.Float32frombits(binary.LittleEndian.Uint32(got[4*i:])); math.Float32bits(g) != math.Float32bits(v) {
			t.Fatalf("value %d: %v, sent %v", i, g, v)
		}
	}
}
