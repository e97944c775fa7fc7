package artifact_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/schema"
)

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

const fuzzName = "pulled/model.arrow"

// rewrite re-encodes an artifact file with its metadata and its batches'
// columns changed by editMeta and editCol (either may be nil; editCol
// returns nil to keep a column).
func rewrite(tb testing.TB, data []byte, editMeta func(map[string]string), editCol func(batch, col int, a arrow.Array) arrow.Array) []byte {
	tb.Helper()
	fr, err := ipc.NewFileReader(bytes.NewReader(data))
	if err != nil {
		tb.Fatal(err)
	}
	defer fr.Close()
	md := fr.Schema().Metadata()
	meta := map[string]string{}
	for i, k := range md.Keys() {
		meta[k] = md.Values()[i]
	}
	if editMeta != nil {
		editMeta(meta)
	}
	sch := arrow.NewSchema(fr.Schema().Fields(), ptr(arrow.MetadataFrom(meta)))
	var buf bytes.Buffer
	w, err := ipc.NewFileWriter(&buf, ipc.WithSchema(sch))
	if err != nil {
		tb.Fatal(err)
	}
	for b := 0; b < fr.NumRecords(); b++ {
		rec, err := fr.RecordBatchAt(b)
		if err != nil {
			tb.Fatal(err)
		}
		cols := rec.Columns()
		var made []arrow.Array
		if editCol != nil {
			cols = append([]arrow.Array(nil), cols...)
			for c := range cols {
				if a := editCol(b, c, cols[c]); a != nil {
					cols[c] = a
					made = append(made, a)
				}
			}
		}
		out := array.NewRecordBatch(sch, cols, rec.NumRows())
		if err := w.Write(out); err != nil {
			tb.Fatal(err)
		}
		out.Release()
		rec.Release()
		for _, a := range made {
			a.Release()
		}
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// int64s builds an int64 column of one value.
func int64s(v int64) arrow.Array {
	b := array.NewInt64Builder(memory.DefaultAllocator)
	defer b.Release()
	b.Append(v)
	return b.NewArray()
}

// hostileSeeds are seed artifacts edited into the shapes of known attacks.
func hostileSeeds(tb testing.TB) map[string][]byte {
	read := func(name string) []byte {
		data, err := os.ReadFile(seedDir + "/" + name)
		if err != nil {
			tb.Fatal(err)
		}
		return data
	}
	int4, raw, multi := read("int4_lsq.arrow"), read("multirow.arrow"), read("multirow.arrow")
	editIndex := func(data []byte, edit func(e []map[string]any)) []byte {
		return rewrite(tb, data, func(m map[string]string) {
			var idx []map[string]any
			if err := json.Unmarshal([]byte(m[schema.MetaIndex]), &idx); err != nil {
				tb.Fatal(err)
			}
			edit(idx)
			b, _ := json.Marshal(idx)
			m[schema.MetaIndex] = string(b)
		}, nil)
	}
	col := func(data []byte, batch, col int, v int64) []byte {
		return rewrite(tb, data, nil, func(b, c int, _ arrow.Array) arrow.Array {
			if b == batch && c == col {
				return int64s(v)
			}
			return nil
		})
	}
	return map[string][]byte{
		"empty":          {},
		"magic only":     []byte("ARROW1\x00\x00ARROW1"),
		"truncated":      int4[:len(int4)/2],
		"version 3":      rewrite(tb, raw, func(m map[string]string) { m[schema.MetaFormatVersion] = "3" }, nil),
		"other format":   rewrite(tb, raw, func(m map[string]string) { m[schema.MetaFormat] = "safetensors" }, nil),
		"no index":       rewrite(tb, raw, func(m map[string]string) { delete(m, schema.MetaIndex) }, nil),
		"index null":     rewrite(tb, raw, func(m map[string]string) { m[schema.MetaIndex] = "null" }, nil),
		"wrapping shape": editIndex(int4, func(e []map[string]any) { e[0]["shape"] = []int64{1 << 32, 1 << 32} }),
		"batch overlap":  editIndex(int4, func(e []map[string]any) { e[1]["first_batch"] = 0 }),
		"duplicate":      editIndex(int4, func(e []map[string]any) { e[1]["name"] = e[0]["name"] }),
		"huge batches":   editIndex(multi, func(e []map[string]any) { e[0]["num_batches"] = 1 << 40 }),
		"huge tensor":    editIndex(multi, func(e []map[string]any) { e[0]["shape"] = []int64{1<<63 - 1} }),
		// chunk_elems whose byte counts wrap around (fp16: 2n = 0; INT4: n·4 = 0 mod 2^64).
		"raw elems wrap":  col(raw, 0, schema.IdxChunkElems, -1<<63),
		"int4 elems wrap": col(int4, 0, schema.IdxChunkElems, 1<<62),
		"negative offset": col(multi, 1, schema.IdxChunkOffset, -4),
		"overlap":         col(multi, 1, schema.IdxChunkOffset, 2),
	}
}

// checkRejection asserts that err is a *FormatError naming the file (and,
// when given, the tensor and row).
func checkRejection(t *testing.T, err error, tensor string, row int) {
	t.Helper()
	var fe *artifact.FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("rejection is %T, want *artifact.FormatError: %v", err, err)
	}
	if fe.File != fuzzName || !strings.HasPrefix(err.Error(), "artifact "+fuzzName+": ") {
		t.Fatalf("rejection does not name the file first: %v", err)
	}
	if tensor != "" && (fe.Tensor != tensor || fe.Row != row) {
		t.Fatalf("rejection names tensor %q row %d, want %q row %d: %v", fe.Tensor, fe.Row, tensor, row, err)
	}
}

// readArtifact opens data as an artifact and dequantizes every tensor
// through one Dequantizer, as pull and dequantize do. It returns the
// number of tensors read whole.
func readArtifact(t *testing.T, data []byte) int {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer func() {
		if n := mem.CurrentAlloc(); n != 0 {
			t.Fatalf("%d bytes still allocated after releasing everything", n)
		}
	}()
	r, err := artifact.NewReader(bytes.NewReader(data), nopCloser{}, fuzzName, mem)
	if err != nil {
		checkRejection(t, err, "", -1)
		return 0
	}
	defer r.Close()
	d := artifact.NewDequantizer(mem)
	whole := 0
	var seen int64
	for _, e := range r.Tensors() {
		n, err := schema.CheckShape(e.Shape)
		if err != nil {
			t.Fatalf("index entry %q with shape %v accepted: %v", e.Name, e.Shape, err)
		}
		var got int64
		ok := true
		for b := e.FirstBatch; b < e.FirstBatch+e.NumBatches && ok; b++ {
			rec, err := r.Batch(b)
			if err != nil {
				checkRejection(t, err, e.Name, b-e.FirstBatch)
				ok = false
				break
			}
			off := rec.Column(schema.IdxChunkOffset).(*array.Int64).Value(0)
			elems := rec.Column(schema.IdxChunkElems).(*array.Int64).Value(0)
			vals, err := d.Batch(context.Background(), rec)
			rec.Release()
			if err != nil {
				t.Fatalf("tensor %q batch %d: accepted by Reader.Batch, refused by the Dequantizer: %v", e.Name, b, err)
			}
			if vals.Len() != 1 || int64(vals.ListValues().Len()) != elems {
				t.Fatalf("tensor %q batch %d: %d values for %d elements", e.Name, b, vals.ListValues().Len(), elems)
			}
			vals.Release()
			if off != got {
				t.Fatalf("tensor %q batch %d: accepted chunk_offset %d after %d elements", e.Name, b, off, got)
			}
			got += elems
		}
		if ok {
			if got != n {
				t.Fatalf("tensor %q: rows hold %d of its %d elements", e.Name, got, n)
			}
			whole++
		}
		seen += int64(e.NumBatches)
	}
	if seen != int64(r.NumBatches()) {
		t.Fatalf("index covers %d of %d batches", seen, r.NumBatches())
	}
	// Out of order: the last batch first must fail or succeed, not panic.
	if nb := r.NumBatches(); nb > 0 {
		if rec, err := r.Batch(nb - 1); err == nil {
			rec.Release()
		}
	}
	return whole
}

// FuzzArtifactReader reads arbitrary files as artifacts (a model.arrow
// from an untrusted pull): NewReader, then every batch through Batch and a
// Dequantizer. Never a panic; every rejection a *FormatError naming the
// file (and the tensor and row for a bad row); what is accepted
// dequantizes, row by row, to exactly the tensor's elements; and nothing
// stays allocated.
func FuzzArtifactReader(f *testing.F) {
	for _, p := range seedFiles(f) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, data := range hostileSeeds(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) { readArtifact(t, data) })
}

// TestHostileArtifacts pins what the reader says about each hostile seed.
func TestHostileArtifacts(t *testing.T) {
	want := map[string]string{
		"empty":           "not an Arrow IPC file",
		"magic only":      "not an Arrow IPC file",
		"truncated":       "not an Arrow IPC file",
		"version 3":       "unsupported artifact format version \"3\"",
		"other format":    `arrowquant.format is "safetensors"`,
		"no index":        "no arrowquant.index metadata",
		"index null":      "index covers 0 of the file's 2 batches",
		"wrapping shape":  "element count overflows",
		"batch overlap":   `tensor "attn.q.bias": index: batches [0, +1), want them to start at 1 of 2`,
		"duplicate":       "listed twice in the index",
		"huge batches":    "1099511627776 batches for 6 elements",
		"huge tensor":     "2 batches for 9223372036854775807 elements",
		"raw elems wrap":  `tensor "w" row 0: chunk_offset 0, chunk_elems -9223372036854775808`,
		"int4 elems wrap": `tensor "attn.q.weight" row 0: chunk_offset 0, chunk_elems 4611686018427387904`,
		"negative offset": `tensor "w" row 1: chunk_offset -4`,
		"overlap":         `tensor "w" row 1: last row ends at element 4 of 6`,
	}
	seeds := hostileSeeds(t)
	for name, data := range seeds {
		t.Run(name, func(t *testing.T) {
			err := readAllErr(data)
			if err == nil || !strings.Contains(err.Error(), want[name]) || want[name] == "" {
				t.Fatalf("got %v, want an error containing %q", err, want[name])
			}
			if errors.Is(err, artifact.ErrVersion) != (name == "version 3") {
				t.Fatalf("errors.Is(%v, ErrVersion) = %v", err, !(name == "version 3"))
			}
			whole := 0
			if name == "int4 elems wrap" {
				whole = 1 // the bias after it is fine
			}
			if n := readArtifact(t, data); n != whole {
				t.Fatalf("%d tensors read whole, want %d", n, whole)
			}
		})
	}
	if len(seeds) != len(want) {
		t.Fatalf("%d seeds, %d expectations", len(seeds), len(want))
	}
}

// readAllErr reads an artifact whole and returns the first error.
func readAllErr(data []byte) error {
	mem := memory.NewGoAllocator()
	r, err := artifact.NewReader(bytes.NewReader(data), nopCloser{}, fuzzName, mem)
	if err != nil {
		return err
	}
	defer r.Close()
	d := artifact.NewDequantizer(mem)
	for b := 0; b < r.NumBatches(); b++ {
		rec, err := r.Batch(b)
		if err != nil {
			return err
		}
		vals, err := d.Batch(context.Background(), rec)
		rec.Release()
		if err != nil {
			return err
		}
		vals.Release()
	}
	return nil
}

// TestMain turns off the minimization of new fuzz inputs unless
// -test.fuzzminimizetime is given. The inputs are KB-sized files, and
// minimizing each new one (Go's default: up to 60 s) took most of a run:
// FuzzCalibParquet ran 1,529 executions in 2 minutes with minimization
// bounded to 3 s, 28,937 in 1 minute without. Crashing inputs are then
// kept as found.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		flag.Set("test.fuzzminimizetime", "0")
	}
	os.Exit(m.Run())
}

// A batch whose name offsets make arrow-go's own validator panic
// (String.ValidateFull slices before it checks): an error, not a crash.
func TestDequantizerContainsValidatorPanic(t *testing.T) {
	mem := memory.NewGoAllocator()
	src := newSrc("w", []int64{2, 3}, schema.DTypeF16, 10)
	sch := schema.Quantized(nil)
	a, b := rawRecord(mem, sch, src, 0, 4), rawRecord(mem, sch, src, 4, 2)
	defer a.Release()
	defer b.Release()
	cols := make([]arrow.Array, sch.NumFields())
	for i := range cols {
		c, err := array.Concatenate([]arrow.Array{a.Column(i), b.Column(i)}, mem)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		cols[i] = c
	}
	offs := memory.NewBufferBytes(arrow.Int32Traits.CastToBytes([]int32{0, 1000, 1}))
	name := array.MakeFromData(array.NewData(arrow.BinaryTypes.String, 2, []*memory.Buffer{nil, offs, memory.NewBufferBytes([]byte("w"))}, nil, 0, 0))
	defer name.Release()
	cols[schema.IdxName] = name
	rec := array.NewRecordBatch(sch, cols, 2)
	defer rec.Release()
	_, err := artifact.NewDequantizer(mem).Batch(context.Background(), rec)
	if err == nil || !strings.Contains(err.Error(), "internal error in validating a record batch: runtime error: slice bounds out of range") {
		t.Fatalf("got %v", err)
	}
}
