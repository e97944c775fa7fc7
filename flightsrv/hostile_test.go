package flightsrv_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/codes"

	"github.com/arrowquant/arrowquant/client"
	"github.com/arrowquant/arrowquant/flightsrv"
	"github.com/arrowquant/arrowquant/flightsrv/middleware"
	"github.com/arrowquant/arrowquant/schema"
	"github.com/arrowquant/arrowquant/wire"
)

// pushOK checks the server still serves a normal push and pull.
func pushOK(t *testing.T, ts *testServer, name string) {
	t.Helper()
	c := dial(t, ts.addr, client.Options{})
	if _, err := c.Push(context.Background(), tinyDir, client.PushOptions{Name: name, Config: map[string]any{"bit_width": 8}}); err != nil {
		t.Fatalf("push after hostile calls: %v", err)
	}
	if err := c.Pull(context.Background(), name, filepath.Join(t.TempDir(), "out"), client.PullOptions{}); err != nil {
		t.Fatalf("pull after hostile calls: %v", err)
	}
}

// The inputs that once crashed the server (nil buffer, wrapped shape
// products) fail alone, or succeed where they are valid, and the server
// serves on.
func TestHostileDoPutsDoNotCrash(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	ts := startServer(t, middleware.Config{}, flightsrv.Options{Mem: mem, MaxUploadBytes: 1 << 30})
	put := func(name string, rows ...arrow.RecordBatch) error {
		_, err := rawPut(t, ts.addr, cmdDesc(map[string]any{"model": name, "config": map[string]any{"modality": "text"}}), func(w *flight.Writer) error {
			for _, r := range rows {
				if err := w.Write(r); err != nil {
					return err
				}
				r.Release()
			}
			return nil
		})
		return err
	}
	b := func(name string, shape []int64, off int64, vals []float32) arrow.RecordBatch {
		return f32Batch(memory.DefaultAllocator, name, shape, "F32", off, vals)
	}
	valid := map[string][]arrow.RecordBatch{
		"zero-size":          {b("t", []int64{0}, 0, nil)},
		"zero-size-2d":       {b("t", []int64{0, 16}, 0, nil), b("u", []int64{4}, 0, []float32{1, 2, 3, 4})},
		"empty-chunk-midway": {b("t", []int64{4, 8}, 0, normal(16, 1)), b("t", []int64{4, 8}, 16, nil), b("t", []int64{4, 8}, 16, normal(16, 2))},
		"scalar":             {b("t", []int64{}, 0, []float32{3})},
	}
	for name, rows := range valid {
		if err := put(name, rows...); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	invalid := map[string]struct {
		rows []arrow.RecordBatch
		code codes.Code
	}{
		"wraps-to-0":    {[]arrow.RecordBatch{b("t", []int64{1 << 32, 1 << 32}, 0, nil)}, codes.InvalidArgument},
		"wraps-to-8":    {[]arrow.RecordBatch{b("t", []int64{1<<61 + 1, 8}, 0, normal(8, 1))}, codes.InvalidArgument},
		"33-dims":       {[]arrow.RecordBatch{b("t", make([]int64, 33), 0, nil)}, codes.InvalidArgument},
		"over-limit":    {[]arrow.RecordBatch{b("t", []int64{1 << 20, 1 << 20}, 0, nil)}, codes.ResourceExhausted},
		"control-name":  {[]arrow.RecordBatch{b("a\x00b", []int64{2}, 0, []float32{1, 2})}, codes.InvalidArgument},
		"short-and-end": {[]arrow.RecordBatch{b("t", []int64{8}, 0, normal(4, 1))}, codes.InvalidArgument},
	}
	for name, c := range invalid {
		if err := put(name, c.rows...); code(err) != c.code {
			t.Errorf("%s: %v, want %v", name, err, c.code)
		}
	}
	ctx := context.Background()
	for name := range valid {
		if _, err := ts.store.Get(ctx, name); err != nil {
			t.Errorf("valid upload %s not stored: %v", name, err)
		}
	}
	if st, _ := ts.store.Stats(ctx); st.Models != len(valid) || st.Pending != 0 {
		t.Errorf("store holds %d models (%d pending), want %d", st.Models, st.Pending, len(valid))
	}
	// Zero-size tensors come back as stored: one row of no elements.
	c := dial(t, ts.addr, client.Options{})
	var rows int
	err := c.Get(ctx, wire.Ticket{Model: "zero-size", Dequantize: true}, func(_ *arrow.Schema, rec arrow.RecordBatch) error {
		rows += int(rec.NumRows())
		if n := rec.Column(4).(interface{ ValueOffsets(int) (int64, int64) }); n != nil {
			if s, e := n.ValueOffsets(0); e != s {
				t.Errorf("zero-size tensor returned %d values", e-s)
			}
		}
		return nil
	})
	if err != nil || rows != 1 {
		t.Errorf("DoGet zero-size: %d rows, %v", rows, err)
	}
	pushOK(t, ts, "after")
	ts.stop()
	mem.AssertSize(t, 0)
}

func TestStrictJSONAndNames(t *testing.T) {
	ts := startServer(t, middleware.Config{}, flightsrv.Options{})
	one := func(w *flight.Writer) error {
		r := f32Batch(memory.DefaultAllocator, "t", []int64{4}, "F32", 0, []float32{1, 2, 3, 4})
		defer r.Release()
		return w.Write(r)
	}
	for _, cmd := range []string{
		`{"model":"m"} x`, `{"model":"m"}{}`, `{"model":"m","extra":1}`, `{"model":5}`, `{"model":"m","tensors":-1}`,
		`{"Model":"m"}`, `{"model":"m","calibration":{"Name":"c.jsonl","data":"eA=="}}`,
		`{"model":"` + strings.Repeat("x", 100000) + `"}`, `{"model":"../x"}`, `{"model":"a//b"}`,
	} {
		_, err := rawPut(t, ts.addr, &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(cmd)}, one)
		if code(err) != codes.InvalidArgument {
			t.Errorf("%.60s: %v, want InvalidArgument", cmd, err)
		}
		if err != nil && len(err.Error()) > 8192 {
			t.Errorf("%.60s: a %d-byte error message", cmd, len(err.Error()))
		}
	}
	for _, tk := range []string{`{"model":"m"} x`, `{"model":"m","bogus":true}`, `{"model":1}`} {
		fc, ferr := flight.NewClientWithMiddleware(ts.addr, nil, nil, grpcInsecure()...)
		if ferr != nil {
			t.Fatal(ferr)
		}
		s, err := fc.DoGet(context.Background(), &flight.Ticket{Ticket: []byte(tk)})
		if err == nil {
			_, err = s.Recv()
		}
		fc.Close()
		if code(err) != codes.InvalidArgument {
			t.Errorf("ticket %s: %v, want InvalidArgument", tk, err)
		}
	}
	pushOK(t, ts, "after")
}

// Over the upload caps a DoPut fails at once with ResourceExhausted; a
// stalled upload is ended by the idle timeout and frees its name.
func TestUploadLimitsAndIdleTimeout(t *testing.T) {
	ts := startServer(t, middleware.Config{}, flightsrv.Options{MaxUploads: 1, IdleTimeout: 300 * time.Millisecond})
	fc, err := flight.NewClientWithMiddleware(ts.addr, nil, nil, grpcInsecure()...)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	stalled, err := fc.DoPut(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w := flight.NewRecordWriter(stalled, ipc.WithSchema(schema.Input(arrow.PrimitiveTypes.Float32)))
	w.SetFlightDescriptor(cmdDesc(map[string]any{"model": "stall", "config": map[string]any{"modality": "text"}}))
	r := f32Batch(memory.DefaultAllocator, "t", []int64{64}, "F32", 0, normal(32, 1))
	if err := w.Write(r); err != nil {
		t.Fatal(err)
	}
	r.Release()
	time.Sleep(100 * time.Millisecond) // the stalled upload holds the only slot
	_, err = rawPut(t, ts.addr, cmdDesc(map[string]any{"model": "second", "config": map[string]any{"modality": "text"}}), func(w *flight.Writer) error { return nil })
	if code(err) != codes.ResourceExhausted {
		t.Fatalf("second upload: %v, want ResourceExhausted", err)
	}
	start := time.Now()
	_, err = stalled.Recv()
	for err == nil {
		_, err = stalled.Recv()
	}
	if code(err) != codes.DeadlineExceeded || time.Since(start) > 5*time.Second {
		t.Fatalf("stalled upload ended with %v after %v, want DeadlineExceeded soon after 300ms", err, time.Since(start))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := ts.store.Stats(context.Background())
		if st.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled upload still holds its name: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pushOK(t, ts, "stall") // the name and the slot are free again
}

// An error message never shows the server's paths, and calibration
// problems are the client's: InvalidArgument naming the client's file.
func TestBadCalibrationIsInvalidArgument(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ts := startServer(t, middleware.Config{HidePaths: []string{tmp}}, flightsrv.Options{})
	c := dial(t, ts.addr, client.Options{})
	bad := filepath.Join(t.TempDir(), "calib.parquet")
	os.WriteFile(bad, []byte("not parquet at all"), 0o644)
	txt := filepath.Join(t.TempDir(), "calib.txt")
	os.WriteFile(txt, []byte("x"), 0o644)
	other := filepath.Join(t.TempDir(), "other.jsonl") // another model's layer
	os.WriteFile(other, []byte(`{"layer": "no.such.layer", "timestep": 0, "activation": [1, 2]}`+"\n"), 0o644)
	for _, f := range []string{bad, txt, other} {
		_, err := c.Push(context.Background(), tinyDir, client.PushOptions{Name: "c", Calibration: f})
		if code(err) != codes.InvalidArgument || strings.Contains(err.Error(), tmp) || !strings.Contains(err.Error(), filepath.Base(f)) {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("calibration temporaries left: %v", ents)
	}
}

// panicAllocator panics on every allocation while armed: a stand-in for a
// bug anywhere in the goroutines a DoPut starts.
type panicAllocator struct {
	memory.Allocator
	armed atomic.Bool
}

func (a *panicAllocator) Allocate(n int) []byte {
	if a.armed.Load() {
		panic("injected allocation failure")
	}
	return a.Allocator.Allocate(n)
}

func TestPanicInUploadGoroutinesIsContained(t *testing.T) {
	alloc := &panicAllocator{Allocator: memory.DefaultAllocator}
	var panics atomic.Int32
	ts := startServer(t, middleware.Config{}, flightsrv.Options{Mem: alloc, Hooks: flightsrv.Hooks{Panic: func(string) { panics.Add(1) }}})
	alloc.armed.Store(true)
	_, err := rawPut(t, ts.addr, cmdDesc(map[string]any{"model": "boom", "config": map[string]any{"modality": "text"}}), func(w *flight.Writer) error {
		r := f32Batch(memory.DefaultAllocator, "t", []int64{64, 64}, "F32", 0, normal(64*64, 3))
		defer r.Release()
		return w.Write(r)
	})
	if code(err) != codes.Internal || strings.Contains(err.Error(), "injected") {
		t.Fatalf("upload with a panic: %v, want Internal without the panic's text", err)
	}
	if panics.Load() == 0 {
		t.Error("the contained panic was not reported to the Panic hook")
	}
	alloc.armed.Store(false)
	if st, _ := ts.store.Stats(context.Background()); st.Models != 0 || st.Pending != 0 {
		t.Errorf("the failed upload left %+v", st)
	}
	pushOK(t, ts, "after-panic")
}
