package gguf_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/float16"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/gguf"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/dq"
	"github.com/arrowquant/arrowquant/kernels/lsq"
	"github.com/arrowquant/arrowquant/kernels/q80"
	"github.com/arrowquant/arrowquant/schema"
)

// A test artifact is built row by row with the artifact writer, so every
// layout (and every malformed one) can be made without the pipeline.

type testRow struct {
	off, n        int64
	method        string
	bits, group   int
	codes         []byte
	scales, mins  []uint16
	groupParams   []byte // nil: null
	channelScales []float32
}

type testTensor struct {
	name   string
	shape  []int64
	dtype  string
	cosine float64
	rows   []testRow
	gen    func(i int) testRow // rows made on demand (large tensors), with nrows
	nrows  int
}

func writeArtifact(t testing.TB, dir string, tensors []testTensor, meta map[string]string) string {
	t.Helper()
	mem := memory.NewGoAllocator()
	path := filepath.Join(dir, artifact.FileName)
	w, err := artifact.Create(path, mem)
	if err != nil {
		t.Fatal(err)
	}
	var index []schema.TensorEntry
	batch := 0
	for _, tt := range tensors {
		n := tt.nrows
		if tt.gen == nil {
			n = len(tt.rows)
		}
		var first testRow
		for i := range n {
			r := tt.rows
			var row testRow
			if tt.gen != nil {
				row = tt.gen(i)
			} else {
				row = r[i]
			}
			if i == 0 {
				first = row
			}
			rec := buildRow(mem, tt, row)
			if err := w.Write(rec); err != nil {
				t.Fatal(err)
			}
			rec.Release()
		}
		index = append(index, schema.TensorEntry{Name: tt.name, Shape: tt.shape, DType: tt.dtype, Method: first.method,
			BitWidth: first.bits, GroupSize: first.group, FirstBatch: batch, NumBatches: n})
		batch += n
	}
	idx, _ := json.Marshal(index)
	m := map[string]string{
		schema.MetaFormat: schema.FormatName, schema.MetaFormatVersion: schema.FormatVersion,
		schema.MetaModelName: "testmodel", schema.MetaIndex: string(idx), schema.MetaEqualization: "null",
		schema.MetaTimeGroups: "null", schema.MetaReport: `{"bit_width":4,"layers":[]}`, schema.MetaConfig: "{}",
	}
	for k, v := range meta {
		m[k] = v
	}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	return path
}

func buildRow(mem memory.Allocator, tt testTensor, r testRow) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, schema.Quantized(nil))
	defer b.Release()
	b.Field(schema.IdxName).(*array.StringBuilder).Append(tt.name)
	sb := b.Field(schema.IdxShape).(*array.ListBuilder)
	sb.Append(true)
	sb.ValueBuilder().(*array.Int64Builder).AppendValues(tt.shape, nil)
	b.Field(schema.IdxDType).(*array.StringBuilder).Append(tt.dtype)
	b.Field(schema.IdxChunkOffset).(*array.Int64Builder).Append(r.off)
	b.Field(schema.IdxChunkElems).(*array.Int64Builder).Append(r.n)
	b.Field(schema.IdxMethod).(*array.StringBuilder).Append(r.method)
	b.Field(schema.IdxBitWidth).(*array.Int8Builder).Append(int8(r.bits))
	b.Field(schema.IdxGroupSize).(*array.Int32Builder).Append(int32(r.group))
	b.Field(schema.IdxCodes).(*array.BinaryBuilder).Append(r.codes)
	for _, c := range []struct {
		idx int
		v   []uint16
	}{{schema.IdxScales, r.scales}, {schema.IdxMins, r.mins}} {
		lb := b.Field(c.idx).(*array.ListBuilder)
		lb.Append(true)
		vb := lb.ValueBuilder().(*array.Float16Builder)
		for _, h := range c.v {
			vb.Append(float16.FromBits(h))
		}
	}
	cos := tt.cosine
	if cos == 0 {
		cos = 0.99
	}
	b.Field(schema.IdxCosine).(*array.Float64Builder).Append(cos)
	b.Field(schema.IdxRequestedBitWidth).(*array.Int8Builder).Append(int8(r.bits))
	b.Field(schema.IdxFallbackReason).(*array.StringBuilder).AppendNull()
	if r.groupParams != nil {
		b.Field(schema.IdxGroupParams).(*array.BinaryBuilder).Append(r.groupParams)
	} else {
		b.Field(schema.IdxGroupParams).(*array.BinaryBuilder).AppendNull()
	}
	cb := b.Field(schema.IdxChannelScales).(*array.ListBuilder)
	if r.channelScales != nil {
		cb.Append(true)
		cb.ValueBuilder().(*array.Float32Builder).AppendValues(r.channelScales, nil)
	} else {
		cb.AppendNull()
	}
	return b.NewRecordBatch()
}

func normal(rng *rand.Rand, n int, scale float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = scale * float32(rng.NormFloat64())
	}
	return x
}

// Row makers with the real kernels.

func superRow(t testing.TB, x []float32, bits int, off int64) testRow {
	codes := make([]byte, kernels.PackedLen(int64(len(x)), bits))
	params := make([]byte, kernels.SuperBlockParamsLen(int64(len(x)), bits))
	if err := dq.Quantize(x, nil, bits, codes, params, 0); err != nil {
		t.Fatal(err)
	}
	g, _, _, _ := kernels.SuperBlockLayout(bits)
	return testRow{off: off, n: int64(len(x)), method: "dq", bits: bits, group: g, codes: codes, scales: []uint16{}, mins: []uint16{}, groupParams: params}
}

func groupRow(t testing.TB, x []float32, method string, bits, group int, off int64) testRow {
	ng := kernels.NumGroups(int64(len(x)), group)
	scales, mins := make([]uint16, ng), make([]uint16, ng)
	params := map[string]kernels.GroupParamsFunc{"lsq": lsq.GroupParams, "minmax": kernels.MinMaxGroupParams, "q8_0": q80.GroupParams}[method]
	if err := params(x, bits, group, scales, mins, 0); err != nil {
		t.Fatal(err)
	}
	codes := make([]byte, kernels.PackedLen(int64(len(x)), bits))
	kernels.PackGroups(codes, x, scales, mins, bits, group)
	return testRow{off: off, n: int64(len(x)), method: method, bits: bits, group: group, codes: codes, scales: scales, mins: mins}
}

func rawRow(x []float32, method string) testRow {
	codes := make([]byte, 2*len(x))
	if method == schema.MethodRawF16 {
		fp.EncodeHalf(codes, x)
	} else {
		fp.EncodeBF16(codes, x)
	}
	return testRow{n: int64(len(x)), method: method, bits: 16, codes: codes, scales: []uint16{}, mins: []uint16{}}
}

func tensor(name string, shape []int64, rows ...testRow) testTensor {
	return testTensor{name: name, shape: shape, dtype: schema.DTypeBF16, rows: rows}
}

// readGGUF parses an exported file and dequantizes every tensor with the
// reference dequantizer, by GGUF name.
func readGGUF(t testing.TB, path string) (*gguf.File, map[string][]float32) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := gguf.ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, ti := range h.Tensors {
		size, err := gguf.DataBytes(ti.Type, ti.NE)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, size)
		if _, err := f.ReadAt(data, h.DataOffset+int64(ti.Offset)); err != nil {
			t.Fatal(err)
		}
		n := 1
		for _, d := range ti.NE {
			n *= int(d)
		}
		v := make([]float32, n)
		if err := gguf.Dequantize(ti.Type, data, v); err != nil {
			t.Fatalf("%s: %v", ti.Name, err)
		}
		out[ti.Name] = v
	}
	return h, out
}

// artifactValues is the artifact's own dequantization (artifact.Dequantizer,
// channel scales applied), by tensor name, and each tensor's channel scales.
func artifactValues(t testing.TB, path string) (map[string][]float32, map[string][]float32) {
	t.Helper()
	r, err := artifact.Open(path, memory.NewGoAllocator())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	deq := artifact.NewDequantizer(memory.NewGoAllocator())
	out, cs := map[string][]float32{}, map[string][]float32{}
	for _, te := range r.Tensors() {
		for b := te.FirstBatch; b < te.FirstBatch+te.NumBatches; b++ {
			rec, err := r.Batch(b)
			if err != nil {
				t.Fatal(err)
			}
			l := rec.Column(schema.IdxChannelScales).(*array.List)
			if l.IsValid(0) {
				s, e := l.ValueOffsets(0)
				cs[te.Name] = append([]float32(nil), l.ListValues().(*array.Float32).Float32Values()[s:e]...)
			}
			vals, err := deq.Batch(context.Background(), rec)
			rec.Release()
			if err != nil {
				t.Fatal(err)
			}
			out[te.Name] = append(out[te.Name], vals.ListValues().(*array.Float32).Float32Values()...)
			vals.Release()
		}
	}
	return out, cs
}

func sameBits(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

func export(t testing.TB, o gguf.ExportOptions) *gguf.Report {
	t.Helper()
	rep, err := gguf.Export(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func byName(rep *gguf.Report) map[string]*gguf.TensorReport {
	m := map[string]*gguf.TensorReport{}
	for _, tr := range rep.Tensors {
		m[tr.Name] = tr
	}
	return m
}

// Every exact path: the reference dequantization of the exported blocks
// equals the artifact's dequantization bit for bit.
func TestExportExactPaths(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	path := writeArtifact(t, dir, []testTensor{
		tensor("dq4", []int64{8, 512}, superRow(t, normal(rng, 4096, 0.02), 4, 0)),
		tensor("dq2", []int64{4, 256}, superRow(t, normal(rng, 1024, 0.02), 2, 0)),
		tensor("lsq4g128", []int64{16, 64}, groupRow(t, normal(rng, 1024, 1), "lsq", 4, 128, 0)),
		tensor("lsq4g32", []int64{2, 96}, groupRow(t, normal(rng, 192, 1), "lsq", 4, 32, 0)),
		tensor("minmax2g32", []int64{4, 96}, groupRow(t, normal(rng, 384, 1), "minmax", 2, 32, 0)),
		tensor("q8", []int64{4, 64}, groupRow(t, normal(rng, 256, 3), "q8_0", 8, 32, 0)),
		tensor("raw.bf16", []int64{3, 5}, rawRow(normal(rng, 15, 1), schema.MethodRawBF16)),
		tensor("raw.f16", []int64{2, 64}, rawRow(normal(rng, 128, 1), schema.MethodRawF16)),
		tensor("norm", []int64{7}, rawRow(normal(rng, 7, 1), schema.MethodRawBF16)),
		tensor("scalar", []int64{}, rawRow([]float32{2.5}, schema.MethodRawF16)),
		tensor("empty", []int64{0, 64}, rawRow(nil, schema.MethodRawBF16)),
		tensor("after.empty", []int64{3}, rawRow([]float32{1, 2, 3}, schema.MethodRawBF16)),
	}, nil)
	out := filepath.Join(dir, "m.gguf")
	rep := export(t, gguf.ExportOptions{Input: dir, Output: out, Exact: true, Verify: true})
	want := map[string]gguf.Type{"dq4": gguf.Q4_K, "dq2": gguf.Q2_K, "lsq4g128": gguf.Q4_1, "lsq4g32": gguf.Q4_1,
		"minmax2g32": gguf.Q4_1, "q8": gguf.Q8_0, "raw.bf16": gguf.BF16, "raw.f16": gguf.F16, "norm": gguf.F32, "scalar": gguf.F32,
		"empty": gguf.BF16, "after.empty": gguf.F32}
	h, got := readGGUF(t, out)
	art, _ := artifactValues(t, path)
	reps := byName(rep)
	if rep.ExactTensors != len(want) || rep.ReencodedTensors != 0 || !rep.Verified {
		t.Fatalf("exact %d re-encoded %d verified %v", rep.ExactTensors, rep.ReencodedTensors, rep.Verified)
	}
	for _, ti := range h.Tensors {
		if ti.Type != want[ti.Name] || reps[ti.Name].Type != ti.Type || !reps[ti.Name].Exact || reps[ti.Name].CosineArtifact != 1 {
			t.Errorf("%s: type %v (want %v), report %+v", ti.Name, ti.Type, want[ti.Name], reps[ti.Name])
		}
		if i := sameBits(art[ti.Name], got[ti.Name]); i >= 0 {
			t.Errorf("%s: element %d differs from the artifact", ti.Name, i)
		}
	}
	// ne is ggml order; a scalar is [1].
	if ne := reps["dq4"].NE; ne[0] != 512 || ne[1] != 8 || len(reps["scalar"].NE) != 1 || reps["scalar"].NE[0] != 1 {
		t.Errorf("ne %v, scalar %v", ne, reps["scalar"].NE)
	}
	if h.KV("general.architecture") != "unknown" || h.KV("general.name") != "testmodel" || h.KV("arrowquant.format_version") != uint32(2) {
		t.Errorf("header: %v %v %v", h.KV("general.architecture"), h.KV("general.name"), h.KV("arrowquant.format_version"))
	}
	var ex struct {
		Tensors []struct {
			Name  string `json:"name"`
			Exact bool   `json:"exact"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal([]byte(h.KV("arrowquant.export").(string)), &ex); err != nil || len(ex.Tensors) != len(want) || !ex.Tensors[0].Exact {
		t.Errorf("arrowquant.export: %v %+v", err, ex)
	}
	// The report file beside the output is the returned report.
	b, err := os.ReadFile(out + gguf.ReportSuffix)
	if err != nil || string(b) != string(rep.JSON())+"\n" {
		t.Errorf("report file: %v", err)
	}
}

// Re-encoded tensors get the nearest type, and their reported cosine is
// that of the exported values against the artifact's.
func TestExportReencodes(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	path := writeArtifact(t, dir, []testTensor{
		tensor("dq4.rows96", []int64{8, 96}, superRow(t, normal(rng, 768, 0.02), 4, 0)),
		tensor("dq2.rows96", []int64{8, 96}, superRow(t, normal(rng, 768, 0.02), 2, 0)),
		tensor("dq8", []int64{2, 256}, superRow(t, normal(rng, 512, 0.02), 8, 0)),
		tensor("lsq2g128", []int64{4, 256}, groupRow(t, normal(rng, 1024, 1), "lsq", 2, 128, 0)),
		tensor("minmax8g64", []int64{4, 64}, groupRow(t, normal(rng, 256, 1), "minmax", 8, 64, 0)),
		tensor("lsq4.rows20", []int64{3, 20}, groupRow(t, normal(rng, 60, 1), "lsq", 4, 32, 0)),
	}, nil)
	out := filepath.Join(dir, "m.gguf")
	rep := export(t, gguf.ExportOptions{Input: path, Output: out})
	want := map[string]gguf.Type{"dq4.rows96": gguf.Q4_1, "dq2.rows96": gguf.Q4_1, "dq8": gguf.Q8_0,
		"lsq2g128": gguf.Q2_K, "minmax8g64": gguf.Q8_0, "lsq4.rows20": gguf.F16}
	_, got := readGGUF(t, out)
	art, _ := artifactValues(t, path)
	for name, tr := range byName(rep) {
		if tr.Type != want[name] || tr.Exact || tr.How != "re-encode" || !tr.CosineMeasured || tr.CosineSourceBound == nil {
			t.Errorf("%s: %+v", name, tr)
		}
		cos := kernels.SimilarityOf(art[name], got[name]).Cosine()
		if math.Abs(cos-tr.CosineArtifact) > 1e-12 || cos < 0.95 {
			t.Errorf("%s: cosine %v, reported %v", name, cos, tr.CosineArtifact)
		}
		if *tr.CosineSourceBound > 0.99 || *tr.CosineSourceBound < 0.9 { // artifact cosine 0.99 composed with the re-encoding
			t.Errorf("%s: source bound %v", name, *tr.CosineSourceBound)
		}
	}
	// --exact refuses the same artifact before writing anything.
	out2 := filepath.Join(dir, "exact.gguf")
	_, err := gguf.Export(context.Background(), gguf.ExportOptions{Input: path, Output: out2, Exact: true})
	var ie *gguf.InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "dq4.rows96") || !strings.Contains(err.Error(), "6 of 6 tensors") {
		t.Fatalf("--exact: %v", err)
	}
	assertOnly(t, dir, "m.gguf", "m.gguf.report.json", artifact.FileName)
}

// assertOnly checks that dir holds exactly these files (no temporaries).
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for _, e := range ents {
		if !want[e.Name()] {
			t.Errorf("unexpected file %s", e.Name())
		}
		delete(want, e.Name())
	}
	for n := range want {
		t.Errorf("missing file %s", n)
	}
}

// Channel scales: a norm pair whose consumers share them folds (producer
// γ·s as F32, consumers' blocks unchanged); a pair whose consumers differ,
// and an up -> down pair, re-encode with the scales applied.
func TestExportFolds(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 8))
	in := int64(256)
	cs := make([]float32, in)
	for i := range cs {
		cs[i] = float32(math.Exp(rng.NormFloat64() * 0.3))
	}
	other := append([]float32(nil), cs...)
	other[3] *= 1.5
	withCS := func(r testRow, s []float32) testRow { r.channelScales = s; return r }
	path := writeArtifact(t, dir, []testTensor{
		tensor("l.input_layernorm.weight", []int64{in}, rawRow(normal(rng, int(in), 1), schema.MethodRawBF16)),
		tensor("l.q.weight", []int64{4, in}, withCS(superRow(t, normal(rng, 1024, 0.02), 4, 0), cs)),
		tensor("l.k.weight", []int64{2, in}, withCS(groupRow(t, normal(rng, 512, 0.02), "lsq", 4, 64, 0), cs)),
		tensor("l.post_attention_layernorm.weight", []int64{in}, rawRow(normal(rng, int(in), 1), schema.MethodRawBF16)),
		tensor("l.gate.weight", []int64{4, in}, withCS(superRow(t, normal(rng, 1024, 0.02), 4, 0), cs)),
		tensor("l.up.weight", []int64{4, in}, withCS(superRow(t, normal(rng, 1024, 0.02), 4, 0), other)),
		tensor("l.down.weight", []int64{in, 4 * 32}, withCS(superRow(t, normal(rng, int(in)*128, 0.02), 4, 0), make128(rng))),
	}, map[string]string{schema.MetaEqualization: `{"pairs": [
		{"producer": "l.input_layernorm.weight", "consumers": ["l.q.weight", "l.k.weight"]},
		{"producer": "l.post_attention_layernorm.weight", "consumers": ["l.gate.weight", "l.up.weight"]},
		{"producer": "l.up.weight", "consumers": ["l.down.weight"]}], "considered": 3}`})
	out := filepath.Join(dir, "m.gguf")
	rep := export(t, gguf.ExportOptions{Input: dir, Output: out, Verify: true})
	if len(rep.Folds) != 3 || !rep.Folds[0].Folded || rep.Folds[1].Folded || rep.Folds[2].Folded ||
		!strings.Contains(rep.Folds[1].Reason, "different channel scales") || !strings.Contains(rep.Folds[2].Reason, "not a stored 1-D") {
		t.Fatalf("folds %+v", rep.Folds)
	}
	reps := byName(rep)
	_, got := readGGUF(t, out)
	art, scales := artifactValues(t, path)
	// Folded: the consumers' blocks are the stored ones (times s: the
	// artifact's values), the norm is γ·s.
	for _, name := range []string{"l.q.weight", "l.k.weight"} {
		tr := reps[name]
		if !tr.Exact || !strings.HasPrefix(tr.How, "repack") || tr.ChannelScales != "folded into the producer" {
			t.Errorf("%s: %+v", name, tr)
		}
		v := append([]float32(nil), got[name]...)
		artifact.ScaleChannels(v, 0, scales[name])
		if i := sameBits(art[name], v); i >= 0 {
			t.Errorf("%s: exported·s differs from the artifact at %d", name, i)
		}
	}
	norm := reps["l.input_layernorm.weight"]
	if norm.How != "fold" || !norm.Exact || norm.Type != gguf.F32 {
		t.Errorf("producer: %+v", norm)
	}
	g := art["l.input_layernorm.weight"]
	for j := range g {
		if got["l.input_layernorm.weight"][j] != g[j]*cs[j] {
			t.Fatalf("folded norm element %d: %v, want %v", j, got["l.input_layernorm.weight"][j], g[j]*cs[j])
		}
	}
	// Not folded: re-encoded from the artifact's values (scales applied).
	for _, name := range []string{"l.gate.weight", "l.up.weight", "l.down.weight"} {
		tr := reps[name]
		want := gguf.Q4_K
		if name == "l.down.weight" { // rows of 128: a 32-block type
			want = gguf.Q4_1
		}
		if tr.Exact || tr.ChannelScales != "applied (no exact fold)" || tr.Type != want {
			t.Errorf("%s: %+v", name, tr)
		}
		if c := kernels.SimilarityOf(art[name], got[name]).Cosine(); math.Abs(c-tr.CosineArtifact) > 1e-12 || c < 0.99 {
			t.Errorf("%s: cosine %v, reported %v", name, c, tr.CosineArtifact)
		}
	}
	if post := reps["l.post_attention_layernorm.weight"]; post.How != "widen" {
		t.Errorf("unfolded norm: %+v", post)
	}
}

func make128(rng *rand.Rand) []float32 {
	s := make([]float32, 128)
	for i := range s {
		s[i] = 1 + rng.Float32()
	}
	return s
}

// A plan renames and drops tensors, adds KVs and permutes rows; rows keep
// their blocks, so a permuted tensor stays exact.
func TestExportPlan(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(9, 10))
	path := writeArtifact(t, dir, []testTensor{
		tensor("model.q.weight", []int64{8, 256}, superRow(t, normal(rng, 2048, 0.02), 4, 0)),
		tensor("model.rotary.inv_freq", []int64{4}, rawRow([]float32{1, 2, 3, 4}, schema.MethodRawF16)),
		tensor("model.norm.weight", []int64{256}, rawRow(normal(rng, 256, 1), schema.MethodRawBF16)),
	}, nil)
	perm := []int{1, 0, 3, 2, 7, 6, 5, 4} // two runs of 2 and one of 4
	plan := &gguf.Plan{
		Arch: "llama",
		KVs:  []gguf.KV{{Key: "llama.block_count", Value: uint32(1)}, {Key: "tokenizer.ggml.tokens", Value: []string{"a", "b"}}},
		TensorName: func(hf string) (string, bool) {
			switch hf {
			case "model.q.weight":
				return "blk.0.attn_q.weight", true
			case "model.norm.weight":
				return "output_norm.weight", true
			}
			return "", false
		},
		RowOrder: func(hf string, shape []int64) []int {
			if hf == "model.q.weight" {
				return perm
			}
			return nil
		},
	}
	out := filepath.Join(dir, "m.gguf")
	rep := export(t, gguf.ExportOptions{Input: dir, Output: out, Plan: plan, Exact: true, Verify: true})
	if len(rep.Skipped) != 1 || rep.Skipped[0] != "model.rotary.inv_freq" || len(rep.Tensors) != 2 || rep.Architecture != "llama" {
		t.Fatalf("report: skipped %v, %d tensors, arch %s", rep.Skipped, len(rep.Tensors), rep.Architecture)
	}
	h, got := readGGUF(t, out)
	if h.KV("general.architecture") != "llama" || h.KV("llama.block_count") != uint32(1) || len(h.KV("tokenizer.ggml.tokens").([]string)) != 2 {
		t.Fatalf("kvs: %v", h.KVs[:4])
	}
	art, _ := artifactValues(t, path)
	q := got["blk.0.attn_q.weight"]
	for i, p := range perm {
		if j := sameBits(art["model.q.weight"][256*p:256*p+256], q[256*i:256*i+256]); j >= 0 {
			t.Fatalf("row %d (source row %d) differs at %d", i, p, j)
		}
	}
	// Reserved keys, duplicate names and bad permutations are refused.
	for _, bad := range []*gguf.Plan{
		{KVs: []gguf.KV{{Key: "general.alignment", Value: uint32(64)}}},
		{KVs: []gguf.KV{{Key: "arrowquant.report", Value: "x"}}},
		{TensorName: func(string) (string, bool) { return "same", true }},
		{RowOrder: func(string, []int64) []int { return []int{0, 0, 1, 2, 3, 4, 5, 6} }},
	} {
		if _, err := gguf.Export(context.Background(), gguf.ExportOptions{Input: dir, Output: out, Overwrite: true, Plan: bad}); err == nil {
			t.Errorf("plan %+v accepted", bad)
		}
	}
}

// Inputs and outputs the export refuses, each naming the file, as an
// InputError (exit 2 in the CLI); nothing is written.
func TestExportRefusals(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(11, 12))
	good := filepath.Join(dir, "good")
	os.Mkdir(good, 0o755)
	path := writeArtifact(t, good, []testTensor{tensor("w", []int64{4, 256}, superRow(t, normal(rng, 1024, 0.02), 4, 0))}, nil)
	newer := filepath.Join(dir, "newer")
	os.Mkdir(newer, 0o755)
	writeArtifact(t, newer, []testTensor{tensor("w", []int64{4, 256}, superRow(t, normal(rng, 1024, 0.02), 4, 0))},
		map[string]string{schema.MetaFormatVersion: "3"})
	notOurs := filepath.Join(dir, "notours")
	os.Mkdir(notOurs, 0o755)
	writeArtifact(t, notOurs, []testTensor{tensor("w", []int64{4, 256}, superRow(t, normal(rng, 1024, 0.02), 4, 0))},
		map[string]string{schema.MetaFormat: "other"})
	garbage := filepath.Join(dir, "garbage.arrow")
	os.WriteFile(garbage, []byte("not an arrow file at all"), 0o644)
	data, _ := os.ReadFile(path)
	truncated := filepath.Join(dir, "truncated.arrow")
	os.WriteFile(truncated, data[:len(data)/2], 0o644)
	exists := filepath.Join(dir, "exists.gguf")
	os.WriteFile(exists, []byte("x"), 0o644)
	for _, c := range []struct {
		in, out, want string
	}{
		{newer, filepath.Join(dir, "a.gguf"), `format version "3"`},
		{notOurs, filepath.Join(dir, "a.gguf"), `arrowquant.format is "other"`},
		{garbage, filepath.Join(dir, "a.gguf"), "garbage.arrow"},
		{truncated, filepath.Join(dir, "a.gguf"), "truncated.arrow"},
		{filepath.Join(dir, "missing"), filepath.Join(dir, "a.gguf"), "missing"},
		{good, exists, "exists.gguf exists (use --overwrite"},
		{good, filepath.Join(dir, "nodir", "a.gguf"), "output directory"},
		{good, dir, "is a directory"},
	} {
		_, err := gguf.Export(context.Background(), gguf.ExportOptions{Input: c.in, Output: c.out})
		var ie *gguf.InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s -> %s: got %v, want an InputError with %q", c.in, c.out, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "a.gguf")); err == nil {
		t.Error("a refused export left a file")
	}
	// --overwrite replaces the existing file.
	export(t, gguf.ExportOptions{Input: good, Output: exists, Overwrite: true})
	if f, err := os.Open(exists); err != nil {
		t.Fatal(err)
	} else if _, err := gguf.ReadHeader(f); err != nil {
		t.Fatalf("overwritten file: %v", err)
	} else {
		f.Close()
	}
}

// A failure mid-write (here a cancelled context after the first bytes;
// disk full takes the same path) leaves neither the output nor a
// temporary file.
func TestExportFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(13, 14))
	writeArtifact(t, dir, []testTensor{
		tensor("a", []int64{4, 256}, superRow(t, normal(rng, 1024, 0.02), 4, 0)),
		tensor("b", []int64{4, 256}, superRow(t, normal(rng, 1024, 0.02), 4, 0)),
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := gguf.Export(ctx, gguf.ExportOptions{Input: dir, Output: filepath.Join(dir, "m.gguf"),
		Progress: func(done, total int64) { cancel() }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	assertOnly(t, dir, artifact.FileName)
	// A row that contradicts its tensor's storage fails naming it.
	dir2 := t.TempDir()
	bad := superRow(t, normal(rng, 1024, 0.02), 4, 0)
	bad.groupParams = bad.groupParams[:10]
	writeArtifact(t, dir2, []testTensor{tensor("broken", []int64{4, 256}, bad)}, nil)
	_, err = gguf.Export(context.Background(), gguf.ExportOptions{Input: dir2, Output: filepath.Join(dir2, "m.gguf")})
	if err == nil || !strings.Contains(err.Error(), `"broken"`) || !strings.Contains(err.Error(), "group_params") {
		t.Fatalf("broken row: %v", err)
	}
	assertOnly(t, dir2, artifact.FileName)
	// A q8_0 tensor whose groups are not symmetric is refused mid-stream.
	dir3 := t.TempDir()
	q := groupRow(t, normal(rng, 256, 1), "q8_0", 8, 32, 0)
	q.mins[2]++
	writeArtifact(t, dir3, []testTensor{tensor("q8", []int64{4, 64}, q)}, nil)
	_, err = gguf.Export(context.Background(), gguf.ExportOptions{Input: dir3, Output: filepath.Join(dir3, "m.gguf")})
	if err == nil || !strings.Contains(err.Error(), `"q8"`) || !strings.Contains(err.Error(), "group 2") {
		t.Fatalf("asymmetric q8_0 group: %v", err)
	}
	assertOnly(t, dir3, artifact.FileName)
}

// Streaming: a tensor of 64M elements (256 MB as float32) exports with
// the Go heap bounded by a few rows, and the Arrow allocator back at zero.
func TestExportStreamsLargeTensor(t *testing.T) {
	if testing.Short() {
		t.Skip("large tensor")
	}
	dir := t.TempDir()
	const rows, cols = 8192, 8192
	nrows := rows * cols / schema.ChunkElems
	params := make([]byte, kernels.SuperBlockParamsLen(schema.ChunkElems, 4))
	codes := make([]byte, schema.ChunkElems/2)
	rng := rand.New(rand.NewPCG(15, 16))
	for i := range codes {
		codes[i] = byte(rng.Uint32())
	}
	for b := 0; b < len(params); b += 16 {
		params[b], params[b+1], params[b+2], params[b+3] = 0x00, 0x1C, 0x00, 0x20 // d 0.0039, dmin 0.0078
		for k := 4; k < 16; k++ {
			params[b+k] = byte(rng.Uint32())
		}
	}
	path := writeArtifact(t, dir, []testTensor{{name: "big", shape: []int64{rows, cols}, dtype: schema.DTypeBF16, nrows: nrows,
		gen: func(i int) testRow {
			return testRow{off: int64(i) * schema.ChunkElems, n: schema.ChunkElems, method: "dq", bits: 4, group: 32,
				codes: codes, scales: []uint16{}, mins: []uint16{}, groupParams: params}
		}}}, nil)
	_ = path
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	out := filepath.Join(dir, "big.gguf")
	rep := export(t, gguf.ExportOptions{Input: dir, Output: out, Mem: mem, Exact: true})
	close(stop)
	<-done
	mem.AssertSize(t, 0)
	grow := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("64M-element tensor (%d rows): file %d MB, Go heap grew by at most %.1f MB", nrows, rep.FileBytes>>20, float64(grow)/(1<<20))
	if grow > 48<<20 {
		t.Errorf("heap grew by %d MB exporting a 256 MB (float32) tensor", grow>>20)
	}
	st, _ := os.Stat(out)
	if want := int64(rows * cols / 256 * 144); rep.DataBytes != want || st.Size() != rep.FileBytes {
		t.Errorf("data %d bytes (want %d), file %d (report %d)", rep.DataBytes, want, st.Size(), rep.FileBytes)
	}
	// Spot-check the last block against the artifact's last row.
	f, _ := os.Open(out)
	defer f.Close()
	h, err := gguf.ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, 144)
	if _, err := f.ReadAt(blk, h.DataOffset+rep.DataBytes-144); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	got, want := make([]float32, 256), make([]float32, 256)
	gguf.Dequantize(gguf.Q4_K, blk, got)
	kernels.DequantizeSuperBlocks(want, codes[len(codes)-128:], params[len(params)-16:], 4)
	if i := sameBits(want, got); i >= 0 {
		t.Fatalf("last block differs at %d", i)
	}
}
