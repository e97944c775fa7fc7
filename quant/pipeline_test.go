package quant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/schema"
)

// memTensor is an in-memory tensor holding float32 values, served in the
// requested dtype's wire type.
type memTensor struct {
	meta   TensorMeta
	values []float32
}

func (t *memTensor) Meta() TensorMeta { return t.meta }

func (t *memTensor) ReadChunk(ctx context.Context, mem memory.Allocator, off, n int64) (arrow.RecordBatch, error) {
	vt, err := schema.ValueType(t.meta.DType)
	if err != nil {
		return nil, err
	}
	src := t.values[off : off+n]
	buf := memory.NewResizableBuffer(mem)
	defer buf.Release()
	switch t.meta.DType {
	case schema.DTypeF32, schema.DTypeF64:
		buf.Resize(4 * int(n))
		fp.EncodeF32(buf.Bytes(), src)
	case schema.DTypeF16:
		buf.Resize(2 * int(n))
		fp.EncodeHalf(buf.Bytes(), src)
	case schema.DTypeBF16:
		buf.Resize(2 * int(n))
		fp.EncodeBF16(buf.Bytes(), src)
	}
	return InputRecord(mem, t.meta, off, vt, buf), nil
}

func normal(seed uint64, n int, sigma float64) []float32 {
	rng := rand.New(rand.NewPCG(seed, seed))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * sigma)
	}
	return x
}

func run(t *testing.T, cfg config.DiffusionQuantConfig, tensors ...Tensor) (*Result, *Stats, *recordSink, error) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	sink := &recordSink{}
	res, stats, err := Run(context.Background(), Options{Config: cfg, Modality: "text", Mem: mem}, &sliceSource{tensors: tensors}, sink)
	t.Cleanup(func() {
		sink.release()
		mem.AssertSize(t, 0)
	})
	return res, stats, sink, err
}

func TestLadderPolicyAndResult(t *testing.T) {
	cfg := config.FromProfile(config.Edge) // INT2, g256, min_accuracy 0.65
	cfg.MinAccuracy = 0.99                 // INT2 (~0.88) and ... INT4 g256 (~0.994) passes
	w := &memTensor{TensorMeta{"layers.0.w", []int64{300, 1000}, schema.DTypeBF16}, normal(1, 300_000, 0.02)}
	big := &memTensor{TensorMeta{"layers.0.big", []int64{3, 1 << 20}, schema.DTypeF32}, normal(2, 3<<20, 1)}
	norm := &memTensor{TensorMeta{"layers.0.norm", []int64{1000}, schema.DTypeBF16}, normal(3, 1000, 1)}
	res, stats, sink, err := run(t, cfg, w, norm, big)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Layers) != 3 || res.Layers[0].Name != "layers.0.w" || res.Layers[1].Name != "layers.0.norm" {
		t.Fatalf("layers out of source order: %+v", res.Layers)
	}
	lw, ln, lb := res.Layers[0], res.Layers[1], res.Layers[2]
	if lw.BitWidth != 4 || lw.RequestedBitWidth != 2 || lw.FallbackReason == nil || !strings.Contains(*lw.FallbackReason, "INT2 cosine") {
		t.Errorf("weight: %+v", lw)
	}
	if lw.CosineSimilarity < 0.99 || lw.CosineSimilarity > 0.999 {
		t.Errorf("INT4 g256 cosine %v out of the expected band", lw.CosineSimilarity)
	}
	if ln.BitWidth != 16 || ln.Method != schema.MethodRawBF16 || ln.Policy == "" || ln.CosineSimilarity != 1 || ln.FallbackReason != nil {
		t.Errorf("norm must be kept bit-exact as bf16 by policy: %+v", ln)
	}
	if lb.BitWidth != 4 || len(stats.Index) != 3 || stats.Index[2].NumBatches != 3 || stats.Index[2].FirstBatch != 2 {
		t.Errorf("big tensor: %+v index %+v", lb, stats.Index)
	}
	if !res.FallbackOccurred || res.ActualBitWidth != 4 || res.FallbackReason == nil {
		t.Errorf("summary: fallback %v actual %d reason %v", res.FallbackOccurred, res.ActualBitWidth, res.FallbackReason)
	}
	wantCos := (lw.CosineSimilarity*float64(lw.Params) + lb.CosineSimilarity*float64(lb.Params)) / float64(lw.Params+lb.Params)
	if math.Abs(res.CosineSimilarity-wantCos) > 1e-12 || res.MinCosineSimilarity != min(lw.CosineSimilarity, lb.CosineSimilarity) {
		t.Errorf("cosine %v (want %v), min %v", res.CosineSimilarity, wantCos, res.MinCosineSimilarity)
	}
	if len(sink.recs) != 1+1+3 {
		t.Fatalf("%d batches, want 5", len(sink.recs))
	}
	// Every row's packed codes have the size the bit width implies.
	for _, rec := range sink.recs {
		n := rec.Column(schema.IdxChunkElems).(*array.Int64).Value(0)
		bits := int(rec.Column(schema.IdxBitWidth).(*array.Int8).Value(0))
		if got, want := rec.Column(schema.IdxCodes).(*array.Binary).ValueLen(0), int((n*int64(bits)+7)/8); got != want {
			t.Errorf("row of %d elements at %d bits holds %d code bytes, want %d", n, bits, got, want)
		}
	}
	wantBytes := int64(300_000/2 + 4*((300_000+255)/256) + 2*1000 + 3<<20/2 + 4*(3<<20)/256)
	if res.ArtifactBytes != wantBytes {
		t.Errorf("artifact bytes %d, want %d", res.ArtifactBytes, wantBytes)
	}
}

func TestFailFastNamesTensor(t *testing.T) {
	cfg := config.FromProfile(config.Edge)
	cfg.MinAccuracy, cfg.FailFast = 0.95, true
	w := &memTensor{TensorMeta{"blk.attn", []int64{64, 512}, schema.DTypeF32}, normal(4, 64*512, 1)}
	_, _, _, err := run(t, cfg, w)
	var ae *AccuracyError
	if !errors.As(err, &ae) || ae.Tensor != "blk.attn" || ae.BitWidth != 2 || ae.Threshold != 0.95 || ae.Cosine > 0.95 {
		t.Fatalf("got %v", err)
	}
}

func TestAllFallbacksEndUnquantized(t *testing.T) {
	cfg := config.Default()
	cfg.MinAccuracy = 1 // nothing but exact storage passes
	w := &memTensor{TensorMeta{"w", []int64{8, 64}, schema.DTypeF16}, normal(5, 512, 1)}
	res, _, sink, err := run(t, cfg, w)
	if err != nil {
		t.Fatal(err)
	}
	l := res.Layers[0]
	if l.BitWidth != 16 || l.Method != schema.MethodRawF16 || l.CosineSimilarity != 1 || !strings.Contains(*l.FallbackReason, "INT8 cosine") {
		t.Fatalf("%+v", l)
	}
	if res.ActualBitWidth != 16 || !res.FallbackOccurred {
		t.Fatalf("actual %d fallback %v", res.ActualBitWidth, res.FallbackOccurred)
	}
	// The raw row decodes to the original half values exactly.
	raw := sink.recs[0].Column(schema.IdxCodes).(*array.Binary).Value(0)
	got := make([]float32, 512)
	fp.DecodeHalf(got, raw)
	for i, v := range w.values {
		if want := fp.HalfToFloat32(fp.Float32ToHalf(v)); got[i] != want {
			t.Fatalf("element %d: %v, want %v", i, got[i], want)
		}
	}
}

func TestNonFiniteNamesTensorAndCoordinates(t *testing.T) {
	for _, shape := range [][]int64{{4, 1 << 19}, {7}} {
		n := schema.NumElements(shape)
		x := normal(6, int(n), 1)
		bad := n - 3
		x[bad] = float32(math.Inf(-1))
		w := &memTensor{TensorMeta{"model.x", shape, schema.DTypeF32}, x}
		_, _, _, err := run(t, config.Default(), w)
		if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), `"model.x"`) {
			t.Fatalf("shape %v: got %v", shape, err)
		}
		if !strings.Contains(err.Error(), "element "+strconv.FormatInt(bad, 10)) {
			t.Errorf("shape %v: %v does not name element %d", shape, err, bad)
		}
	}
}

// The same input and config give identical batches whatever the thread
// count and streaming mode: tensors are written in source order.
func TestDeterministicAcrossThreadsAndStreaming(t *testing.T) {
	var tensors []Tensor
	for i := 0; i < 6; i++ {
		tensors = append(tensors, &memTensor{TensorMeta{"t" + strconv.Itoa(i), []int64{int64(100 + i), 3000}, schema.DTypeBF16}, normal(uint64(10+i), (100+i)*3000, 0.05)})
	}
	var ref [][]byte
	for _, mode := range []struct {
		threads   int
		streaming bool
	}{{1, true}, {4, false}, {0, false}, {3, true}} {
		cfg := config.Default()
		cfg.NumThreads, cfg.EnableStreaming = mode.threads, mode.streaming
		_, _, sink, err := run(t, cfg, tensors...)
		if err != nil {
			t.Fatal(err)
		}
		var got [][]byte
		for _, r := range sink.recs {
			got = append(got, append([]byte(r.Column(schema.IdxName).(*array.String).Value(0)), r.Column(schema.IdxCodes).(*array.Binary).Value(0)...))
		}
		if ref == nil {
			ref = got
			continue
		}
		if len(got) != len(ref) {
			t.Fatalf("%+v: %d batches, want %d", mode, len(got), len(ref))
		}
		for i := range got {
			if string(got[i]) != string(ref[i]) {
				t.Fatalf("%+v: batch %d differs", mode, i)
			}
		}
	}
}

func TestHonestFeatureStatus(t *testing.T) {
	cfg := config.Default()
	w := &memTensor{TensorMeta{"w", []int64{4, 64}, schema.DTypeF32}, normal(7, 256, 1)}
	res, _, _, err := run(t, cfg, w)
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimeAware.Requested || res.TimeAware.Applied || res.TimeAware.Reason == "" {
		t.Errorf("time_aware: %+v", res.TimeAware)
	}
	if !res.Spatial.Requested || res.Spatial.Applied || res.Spatial.Reason == "" {
		t.Errorf("spatial: %+v", res.Spatial)
	}
}

func TestTimestepLayersProtectedAndTimeGroups(t *testing.T) {
	cfg := config.FromProfile(config.Edge)
	emb := &memTensor{TensorMeta{"model.time_embed.0.weight", []int64{64, 256}, schema.DTypeF32}, normal(21, 64*256, 0.02)}
	w := &memTensor{TensorMeta{"model.layers.0.mlp.up_proj.weight", []int64{64, 256}, schema.DTypeF32}, normal(22, 64*256, 0.02)}
	res, _, _, err := run(t, cfg, emb, w)
	if err != nil {
		t.Fatal(err)
	}
	le, lw := res.Layers[0], res.Layers[1]
	if le.BitWidth != 8 || le.RequestedBitWidth != 8 || le.Protection == "" || le.FallbackReason != nil {
		t.Errorf("time embedding: %+v", le)
	}
	if lw.BitWidth != 2 || lw.Protection != "" {
		t.Errorf("plain layer: %+v", lw)
	}
	if res.FallbackOccurred {
		t.Error("protection is not a fallback")
	}
	tg := res.TimeGroups
	if tg == nil || len(tg.Groups) != 5 || tg.TimestepSpace != "normalized" || len(tg.ProtectedLayers) != 1 || tg.Calibration != nil {
		t.Fatalf("time groups %+v", tg)
	}
	if !res.TimeAware.Applied || !strings.Contains(res.TimeAware.Reason, "no calibration data") {
		t.Errorf("status %+v", res.TimeAware)
	}
	cfg.EnableTimeAware = false
	res, _, _, err = run(t, cfg, emb)
	if err != nil || res.Layers[0].BitWidth != 2 || res.TimeGroups != nil || res.TimeAware.Applied {
		t.Errorf("time-aware off: %+v %v", res.Layers[0], err)
	}
}

func TestCalibrationActivationParams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "calib.jsonl")
	var b strings.Builder
	for ts := 0; ts < 40; ts++ {
		fmt.Fprintf(&b, `{"layer":"model.layers.0.mlp.up_proj","timestep":%d,"activation":[%d,-1,0.5,2]}`+"\n", ts, ts)
		fmt.Fprintf(&b, `{"layer":"unused.layer","timestep":%d,"activation":[1,1]}`+"\n", ts)
	}
	os.WriteFile(path, []byte(b.String()), 0o644)
	cfg := config.Default()
	cfg.NumTimeGroups, cfg.CalibrationSamples = 4, 40
	w := &memTensor{TensorMeta{"model.layers.0.mlp.up_proj.weight", []int64{8, 4}, schema.DTypeF32}, normal(23, 32, 0.02)}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	sink := &recordSink{}
	defer sink.release()
	res, _, err := Run(context.Background(), Options{Config: cfg, Modality: "text", Mem: mem, Calibration: path}, &sliceSource{tensors: []Tensor{w}}, sink)
	if err != nil {
		t.Fatal(err)
	}
	tg := res.TimeGroups
	if tg.TimestepSpace != "calibration" || tg.Calibration.RowsRead != 80 || tg.Calibration.LayersMatched != 1 || len(tg.Groups) != 4 {
		t.Fatalf("time groups %+v %+v", tg, tg.Calibration)
	}
	ps := tg.ActivationParams["model.layers.0.mlp.up_proj"]
	// group 3 holds timesteps 30..39: inputs span [-1, 39]
	if len(ps) != 4 || math.Abs(float64(ps[3].Scale)-40.0/255) > 1e-6 || ps[3].Zero != 6 {
		t.Errorf("activation params %+v", ps)
	}
	if !res.TimeAware.Applied || !strings.Contains(res.TimeAware.Reason, "search of 1 weight tensors weighted") || res.Layers[0].Weighting == "" {
		t.Errorf("status %+v", res.TimeAware)
	}
	cfg8 := cfg
	cfg8.BitWidth = 8
	sink8 := &recordSink{}
	defer sink8.release()
	res8, _, err := Run(context.Background(), Options{Config: cfg8, Modality: "text", Calibration: path}, &sliceSource{tensors: []Tensor{w}}, sink8)
	if err != nil || res8.Layers[0].Weighting != "" || res8.Layers[0].OutputCosineSimilarity != nil || !strings.Contains(res8.TimeAware.Reason, "no weighted search") {
		t.Errorf("INT8 (minmax) must not claim weighting: %+v %+v %v", res8.Layers[0], res8.TimeAware, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte("{}\n"), 0o644)
	if _, _, err := Run(context.Background(), Options{Config: cfg, Modality: "text", Calibration: bad}, &sliceSource{tensors: []Tensor{w}}, &recordSink{}); err == nil || !strings.Contains(err.Error(), "bad.jsonl") {
		t.Errorf("bad calibration: %v", err)
	}
}

// Weighted quantization over several full chunks (weights built once and
// shared) and a partial last chunk, with every buffer released.
func TestWeightedAcrossChunks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "calib.jsonl")
	var b strings.Builder
	for k := 0; k < 8; k++ {
		act := make([]float32, 512)
		for j := range act {
			act[j] = float32((j*3+k)%7) - 3
		}
		line, _ := json.Marshal(map[string]any{"layer": "big.proj", "timestep": k, "activation": act})
		b.Write(line)
		b.WriteByte('\n')
	}
	os.WriteFile(path, []byte(b.String()), 0o644)
	rows := int64(2*schema.ChunkElems/512 + 3)
	w := &memTensor{TensorMeta{"big.proj.weight", []int64{rows, 512}, schema.DTypeF32}, normal(31, int(rows*512), 0.02)}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	sink := &recordSink{}
	defer sink.release()
	res, stats, err := Run(context.Background(), Options{Config: config.Default(), Modality: "text", Mem: mem, Calibration: path}, &sliceSource{tensors: []Tensor{w}}, sink)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Index[0].NumBatches != 3 || res.Layers[0].Weighting == "" || res.Layers[0].OutputCosineSimilarity == nil {
		t.Fatalf("batches %d, layer %+v", stats.Index[0].NumBatches, res.Layers[0])
	}
}

// An F32 tensor kept at 16 bits becomes fp16, or bf16 when a value
// exceeds fp16's range.
func TestRawKeepsRange(t *testing.T) {
	small := &memTensor{TensorMeta{"norm.small", []int64{300}, schema.DTypeF32}, normal(41, 300, 1)}
	bigVals := normal(42, 300, 1)
	bigVals[123] = 1e6
	big := &memTensor{TensorMeta{"norm.big", []int64{300}, schema.DTypeF32}, bigVals}
	res, _, _, err := run(t, config.Default(), small, big)
	if err != nil {
		t.Fatal(err)
	}
	if res.Layers[0].Method != schema.MethodRawF16 || res.Layers[1].Method != schema.MethodRawBF16 {
		t.Fatalf("methods %s, %s; want fp16, bf16", res.Layers[0].Method, res.Layers[1].Method)
	}
	if res.Layers[1].CosineSimilarity < 0.9999 {
		t.Errorf("bf16 cosine %v", res.Layers[1].CosineSimilarity)
	}
}
