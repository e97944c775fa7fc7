package artifact_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/fixture"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/local"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
)

// go test ./artifact -run TestSeedArtifacts -update-seeds rewrites the
// artifacts under testdata/ that seed the fuzz targets.
var updateSeeds = flag.Bool("update-seeds", false, "regenerate the seed artifacts in testdata/")

const seedDir = "testdata/artifacts"

// srcTensor is a seeded source tensor: values are N(0, 0.05²) with every
// 7th element ×8 (outliers), encoded in its dtype.
type srcTensor struct {
	meta   quant.TensorMeta
	values []float32 // as stored in the source (already rounded to the dtype)
}

func newSrc(name string, shape []int64, dtype string, seed uint64) *srcTensor {
	n := schema.NumElements(shape)
	rng := rand.New(rand.NewPCG(seed, 7))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * 0.05)
		if i%7 == 3 {
			v[i] *= 8
		}
	}
	t := &srcTensor{meta: quant.TensorMeta{Name: name, Shape: shape, DType: dtype}, values: v}
	raw := t.encode(v)
	switch dtype { // round the reference to what the source holds
	case schema.DTypeF16:
		fp.DecodeHalf(v, raw)
	case schema.DTypeBF16:
		fp.DecodeBF16(v, raw)
	}
	return t
}

func (t *srcTensor) valueType() arrow.DataType {
	vt, _ := schema.ValueType(t.meta.DType)
	return vt
}

func (t *srcTensor) encode(v []float32) []byte {
	switch t.meta.DType {
	case schema.DTypeF16:
		b := make([]byte, 2*len(v))
		fp.EncodeHalf(b, v)
		return b
	case schema.DTypeBF16:
		b := make([]byte, 2*len(v))
		fp.EncodeBF16(b, v)
		return b
	}
	b := make([]byte, 4*len(v))
	fp.EncodeF32(b, v)
	return b
}

func (t *srcTensor) Meta() quant.TensorMeta { return t.meta }

func (t *srcTensor) ReadChunk(_ context.Context, mem memory.Allocator, off, n int64) (arrow.RecordBatch, error) {
	raw := t.encode(t.values[off : off+n])
	buf := memory.NewResizableBuffer(mem)
	defer buf.Release()
	buf.Resize(len(raw))
	copy(buf.Bytes(), raw)
	return quant.InputRecord(mem, t.meta, off, t.valueType(), buf), nil
}

type srcList struct {
	ts []*srcTensor
	i  int
}

func (s *srcList) Next(context.Context) (quant.Tensor, error) {
	if s.i == len(s.ts) {
		return nil, io.EOF
	}
	s.i++
	return s.ts[s.i-1], nil
}

// seedSpec is one seed artifact: a quantization run over a few tensors.
type seedSpec struct {
	file    string
	bits    int
	group   int
	method  string
	spatial bool // with calibration data from the fixture layer below
	tensors func() []*srcTensor
}

// awqLayer has outlier input channels that grow with the timestep, so
// AWQ smoothing stores channel scales on its weight.
func awqLayer() *fixture.Layer { return fixture.NewLayer("blk.proj", 16, 128, 5) }

var seedSpecs = []seedSpec{
	{file: "int2_clip.arrow", bits: 2, group: 32, method: "clip", tensors: func() []*srcTensor {
		return []*srcTensor{
			newSrc("blk.ff.weight", []int64{6, 50}, schema.DTypeF32, 1), // 300 elements: ragged last group of 12
			newSrc("blk.norm.weight", []int64{50}, schema.DTypeF16, 2),  // 1-D: kept as fp16
			newSrc("blk.empty.weight", []int64{0, 16}, schema.DTypeF32, 3),
		}
	}},
	{file: "int4_lsq.arrow", bits: 4, group: 64, method: "lsq", tensors: func() []*srcTensor {
		return []*srcTensor{
			newSrc("attn.q.weight", []int64{16, 24}, schema.DTypeBF16, 4),
			newSrc("attn.q.bias", []int64{16}, schema.DTypeBF16, 5), // kept as bf16
		}
	}},
	{file: "int8_minmax.arrow", bits: 8, group: 128, method: "minmax", tensors: func() []*srcTensor {
		return []*srcTensor{
			newSrc("proj.weight", []int64{5, 30}, schema.DTypeF32, 6), // 150: ragged second group
			newSrc("scale", []int64{}, schema.DTypeF32, 7),            // a scalar
		}
	}},
	{file: "dq4.arrow", bits: 4, method: "dq", tensors: func() []*srcTensor {
		return []*srcTensor{newSrc("mlp.up.weight", []int64{3, 200}, schema.DTypeF16, 8)} // 600: partial last super-block
	}},
	{file: "dq2.arrow", bits: 2, method: "dq", tensors: func() []*srcTensor {
		return []*srcTensor{newSrc("mlp.down.weight", []int64{2, 136}, schema.DTypeF32, 9)}
	}},
	{file: "awq.arrow", bits: 4, group: 32, spatial: true, tensors: func() []*srcTensor {
		l := awqLayer()
		return []*srcTensor{{meta: quant.TensorMeta{Name: l.Name + ".weight", Shape: []int64{int64(l.Out), int64(l.In)}, DType: schema.DTypeF32}, values: l.W}}
	}},
}

// writeSeed runs the pipeline for spec into dir and returns the artifact path.
func writeSeed(t *testing.T, spec seedSpec, dir string) string {
	t.Helper()
	cfg := config.Default()
	cfg.BitWidth, cfg.MinAccuracy, cfg.NumThreads = spec.bits, 0, 1
	if spec.group != 0 {
		cfg.GroupSize = spec.group
	}
	cfg.EnableTimeAware, cfg.EnableSpatial = spec.spatial, spec.spatial
	cfg.NumTimeGroups, cfg.CalibrationSamples = 2, 64
	o := quant.Options{Config: cfg, Modality: "image", Method: spec.method, Mem: memory.NewGoAllocator()}
	if spec.spatial {
		o.Calibration = filepath.Join(t.TempDir(), "calib.jsonl")
		if err := awqLayer().WriteCalibration(o.Calibration, 64); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, spec.file)
	w, err := artifact.Create(path, o.Mem)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	res, stats, err := quant.Run(context.Background(), o, &srcList{ts: spec.tensors()}, w)
	if err != nil {
		t.Fatalf("%s: %v", spec.file, err)
	}
	res.QuantizationTimeS = 0 // keep regenerated files stable
	meta := local.ArtifactMetadata(res, stats, "seed")
	if o.Calibration != "" { // keep regenerated files stable
		for k, v := range meta {
			meta[k] = strings.ReplaceAll(v, o.Calibration, "calib.jsonl")
		}
	}
	if err := w.Commit(meta); err != nil {
		t.Fatal(err)
	}
	// Keep what the reader reads: the report, configuration and time
	// groups (KBs of JSON, stored twice) only slow the fuzzer down.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data = rewrite(t, data, func(m map[string]string) {
		for k := range m {
			switch k {
			case schema.MetaFormat, schema.MetaFormatVersion, schema.MetaIndex, schema.MetaModelName, schema.MetaModality:
			default:
				delete(m, k)
			}
		}
	}, nil)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeHandmade writes the seeds the pipeline does not produce: a tensor
// split over two rows, and a format-version-1 artifact (14 columns).
func writeHandmade(t *testing.T, dir string) {
	t.Helper()
	mem := memory.NewGoAllocator()
	for _, v1 := range []bool{false, true} {
		file, rows := "multirow.arrow", [][2]int64{{0, 4}, {4, 2}}
		if v1 {
			file, rows = "v1.arrow", [][2]int64{{0, 6}}
		}
		src := newSrc("w", []int64{2, 3}, schema.DTypeF16, 10)
		sch := schema.Quantized(nil)
		if v1 {
			sch = arrow.NewSchema(sch.Fields()[:schema.IdxGroupParams], nil)
		}
		var recs []arrow.RecordBatch
		for _, r := range rows {
			recs = append(recs, rawRecord(mem, sch, src, r[0], r[1]))
		}
		idx, _ := json.Marshal([]schema.TensorEntry{{Name: "w", Shape: []int64{2, 3}, DType: schema.DTypeF16,
			Method: schema.MethodRawF16, BitWidth: 16, NumBatches: len(rows)}})
		meta := map[string]string{schema.MetaFormat: schema.FormatName, schema.MetaFormatVersion: schema.FormatVersion, schema.MetaIndex: string(idx)}
		if v1 {
			meta[schema.MetaFormatVersion] = "1"
		}
		if err := writeIPCFile(filepath.Join(dir, file), arrow.NewSchema(sch.Fields(), ptr(arrow.MetadataFrom(meta))), recs); err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			r.Release()
		}
	}
}

func ptr[T any](v T) *T { return &v }

// rawRecord is one fp16 row of src: n elements from off.
func rawRecord(mem memory.Allocator, sch *arrow.Schema, src *srcTensor, off, n int64) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, sch)
	defer b.Release()
	raw := make([]byte, 2*n)
	fp.EncodeHalf(raw, src.values[off:off+n])
	b.Field(schema.IdxName).(*array.StringBuilder).Append(src.meta.Name)
	sb := b.Field(schema.IdxShape).(*array.ListBuilder)
	sb.Append(true)
	sb.ValueBuilder().(*array.Int64Builder).AppendValues(src.meta.Shape, nil)
	b.Field(schema.IdxDType).(*array.StringBuilder).Append(src.meta.DType)
	b.Field(schema.IdxChunkOffset).(*array.Int64Builder).Append(off)
	b.Field(schema.IdxChunkElems).(*array.Int64Builder).Append(n)
	b.Field(schema.IdxMethod).(*array.StringBuilder).Append(schema.MethodRawF16)
	b.Field(schema.IdxBitWidth).(*array.Int8Builder).Append(16)
	b.Field(schema.IdxGroupSize).(*array.Int32Builder).Append(0)
	b.Field(schema.IdxCodes).(*array.BinaryBuilder).Append(raw)
	b.Field(schema.IdxScales).(*array.ListBuilder).Append(true)
	b.Field(schema.IdxMins).(*array.ListBuilder).Append(true)
	b.Field(schema.IdxCosine).(*array.Float64Builder).Append(1)
	b.Field(schema.IdxRequestedBitWidth).(*array.Int8Builder).Append(4)
	b.Field(schema.IdxFallbackReason).(*array.StringBuilder).Append("1-D tensor")
	if sch.NumFields() > schema.IdxGroupParams {
		b.Field(schema.IdxGroupParams).(*array.BinaryBuilder).AppendNull()
		b.Field(schema.IdxChannelScales).(*array.ListBuilder).AppendNull()
	}
	return b.NewRecordBatch()
}

// seedKinds names the kinds of rows a file holds, for the coverage check.
func seedKinds(t *testing.T, path string) map[string]bool {
	t.Helper()
	kinds := map[string]bool{}
	r, err := artifact.Open(path, memory.NewGoAllocator())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if v := r.Meta(schema.MetaFormatVersion); v == "1" {
		kinds["format version 1"] = true
	}
	for i := 0; i < r.NumBatches(); i++ {
		rec, err := r.Batch(i)
		if err != nil {
			t.Fatal(err)
		}
		method := rec.Column(schema.IdxMethod).(*array.String).Value(0)
		bits := rec.Column(schema.IdxBitWidth).(*array.Int8).Value(0)
		gs := int64(rec.Column(schema.IdxGroupSize).(*array.Int32).Value(0))
		n := rec.Column(schema.IdxChunkElems).(*array.Int64).Value(0)
		switch {
		case bits == 16:
			kinds[method] = true
		case rec.NumCols() > schema.IdxGroupParams && rec.Column(schema.IdxGroupParams).IsValid(0):
			kinds[fmt.Sprintf("dq INT%d", bits)] = true
		default:
			kinds[fmt.Sprintf("%s INT%d", method, bits)] = true
		}
		if n == 0 {
			kinds["zero elements"] = true
		}
		if bits != 16 && gs > 0 && n%gs != 0 {
			kinds["ragged group"] = true
		}
		if rec.NumCols() > schema.IdxChannelScales && rec.Column(schema.IdxChannelScales).IsValid(0) {
			kinds["channel_scales"] = true
		}
		if rec.Column(schema.IdxChunkOffset).(*array.Int64).Value(0) > 0 {
			kinds["later row"] = true
		}
		rec.Release()
	}
	return kinds
}

// seedFiles lists the committed seed artifacts.
func seedFiles(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(seedDir, "*.arrow"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no seed artifacts in %s (go test ./artifact -run TestSeedArtifacts -update-seeds): %v", seedDir, err)
	}
	return files
}

// TestSeedArtifacts checks that the committed seeds cover every kind of
// row and decode close to their (regenerated) source values.
func TestSeedArtifacts(t *testing.T) {
	if *updateSeeds {
		if err := os.MkdirAll(seedDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, s := range seedSpecs {
			writeSeed(t, s, seedDir)
		}
		writeHandmade(t, seedDir)
	}
	all := map[string]bool{}
	for _, f := range seedFiles(t) {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 16<<10 {
			t.Errorf("%s: %d bytes, keep seeds small", f, st.Size())
		}
		for k := range seedKinds(t, f) {
			all[k] = true
		}
	}
	for _, k := range []string{"clip INT2", "lsq INT4", "minmax INT8", "dq INT2", "dq INT4", "fp16", "bf16",
		"zero elements", "ragged group", "channel_scales", "later row", "format version 1"} {
		if !all[k] {
			t.Errorf("no seed artifact holds a %s row (have %v)", k, all)
		}
	}
	// Reconstruction against the source values.
	want := map[string][]float32{}
	for _, s := range seedSpecs {
		for _, src := range s.tensors() {
			want[src.meta.Name] = src.values
		}
	}
	want["w"] = newSrc("w", []int64{2, 3}, schema.DTypeF16, 10).values
	for _, f := range seedFiles(t) {
		got := readAll(t, f)
		for name, g := range got {
			w, ok := want[name]
			if !ok {
				t.Fatalf("%s: unexpected tensor %q", f, name)
			}
			if len(g) != len(w) {
				t.Fatalf("%s: tensor %q: %d values, want %d", f, name, len(g), len(w))
			}
			if len(w) == 0 {
				continue
			}
			var dot, gg, ww float64
			for i := range w {
				dot, gg, ww = dot+float64(g[i])*float64(w[i]), gg+float64(g[i])*float64(g[i]), ww+float64(w[i])*float64(w[i])
			}
			cos := dot / math.Sqrt(gg*ww)
			if cos < 0.9 || math.IsNaN(cos) {
				t.Errorf("%s: tensor %q: cosine %.4f to its source", f, name, cos)
			}
		}
	}
}

// readAll dequantizes every tensor of an artifact, asserting that nothing
// stays allocated afterwards.
func readAll(t *testing.T, path string) map[string][]float32 {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	r, err := artifact.Open(path, mem)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out := map[string][]float32{}
	d := artifact.NewDequantizer(mem)
	for _, e := range r.Tensors() {
		out[e.Name] = []float32{}
		for b := e.FirstBatch; b < e.FirstBatch+e.NumBatches; b++ {
			rec, err := r.Batch(b)
			if err != nil {
				t.Fatal(err)
			}
			vals, err := d.Batch(context.Background(), rec)
			rec.Release()
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name] = append(out[e.Name], vals.ListValues().(*array.Float32).Float32Values()...)
			vals.Release()
		}
	}
	return out
}

// writeIPCFile writes recs as an Arrow IPC file of schema sch.
func writeIPCFile(path string, sch *arrow.Schema, recs []arrow.RecordBatch) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w, err := ipc.NewFileWriter(f, ipc.WithSchema(sch))
	if err != nil {
		f.Close()
		return err
	}
	for _, r := range recs {
		rec := array.NewRecordBatch(sch, r.Columns(), r.NumRows())
		err := w.Write(rec)
		rec.Release()
		if err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
