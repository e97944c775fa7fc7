package artifact

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/ipcguard"
	"github.com/arrowquant/arrowquant/schema"
)

// The artifact written once (batches as they come, footer at Commit) is
// what arrow-go's own FileWriter writes for the same batches with the full
// schema: every batch message the same bytes, the footer's schema and
// metadata equal, every batch read back equal. Only the schema message at
// the start differs (no metadata there). The same through the page cache
// and past it (BypassPageCache; a 10 MB batch of fp16 codes fills its
// buffer twice).
func TestWriterMatchesArrowFileWriter(t *testing.T) {
	t.Run("page cache", func(t *testing.T) { testWriterMatchesArrowFileWriter(t) })
	t.Run("bypassed", func(t *testing.T) { testWriterMatchesArrowFileWriter(t, BypassPageCache()) })
}

func testWriterMatchesArrowFileWriter(t *testing.T, opts ...Option) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	meta := map[string]string{schema.MetaFormatVersion: schema.FormatVersion, "k": "v", "report": `{"big": "` + string(bytes.Repeat([]byte("x"), 5000)) + `"}`}
	var recs []arrow.RecordBatch
	for i := 0; i < 5; i++ {
		var scales []float32
		if i%2 == 1 {
			scales = []float32{1, 2, 3}
		}
		recs = append(recs, rawRow(t, mem, int64(3*i), []float32{float32(i), -1, 0.5}, scales, false))
	}
	big := make([]float32, 5<<20+3)
	for i := range big {
		big[i] = float32(i)
	}
	recs = append(recs[:2], append([]arrow.RecordBatch{rawRow(t, mem, 6, big, nil, false)}, recs[2:]...)...)
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()

	path := filepath.Join(dir, FileName)
	w, err := Create(path, mem, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(meta); err != nil {
		t.Fatal(err)
	}
	ours, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ref bytes.Buffer
	fw, err := ipc.NewFileWriter(&ref, ipc.WithSchema(schema.Quantized(meta)), ipc.WithAllocator(mem))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		full := array.NewRecordBatch(schema.Quantized(meta), r.Columns(), r.NumRows())
		if err := fw.Write(full); err != nil {
			t.Fatal(err)
		}
		full.Release()
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}

	blocks := func(b []byte) ([]ipcguard.Block, *ipcguard.File) {
		f, err := ipcguard.CheckFile(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		return f.Batches, f
	}
	ob, _ := blocks(ours)
	rb, _ := blocks(ref.Bytes())
	if len(ob) != len(recs) || len(rb) != len(recs) {
		t.Fatalf("blocks: ours %d, arrow-go %d, want %d", len(ob), len(rb), len(recs))
	}
	for i := range ob {
		if ob[i].MetaLen != rb[i].MetaLen || ob[i].BodyLen != rb[i].BodyLen {
			t.Fatalf("block %d: ours %+v, arrow-go %+v", i, ob[i], rb[i])
		}
		a := ours[ob[i].Offset : ob[i].Offset+int64(ob[i].MetaLen)+ob[i].BodyLen]
		b := ref.Bytes()[rb[i].Offset : rb[i].Offset+int64(rb[i].MetaLen)+rb[i].BodyLen]
		if !bytes.Equal(a, b) {
			t.Fatalf("block %d: message bytes differ", i)
		}
	}

	fr, err := ipc.NewFileReader(bytes.NewReader(ours), ipc.WithAllocator(mem))
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	if !fr.Schema().Equal(schema.Quantized(meta)) || !fr.Schema().Metadata().Equal(schema.Quantized(meta).Metadata()) {
		t.Fatalf("footer schema %v", fr.Schema())
	}
	if fr.NumRecords() != len(recs) {
		t.Fatalf("%d records", fr.NumRecords())
	}
	for i, want := range recs {
		got, err := fr.RecordBatch(i)
		if err != nil {
			t.Fatal(err)
		}
		g := array.NewRecordBatch(want.Schema(), got.Columns(), got.NumRows())
		same := array.RecordEqual(g, want)
		g.Release()
		if !same {
			t.Fatalf("batch %d differs", i)
		}
	}
	// The schema message a DoGet stream starts with.
	msg, err := SchemaMessage(fr.Schema(), mem)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ipcguard.CheckMessage(msg); err != nil {
		t.Fatal(err)
	}
}

// An aborted or failed artifact leaves nothing behind.
func TestWriterAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(filepath.Join(dir, FileName), memory.NewGoAllocator())
	if err != nil {
		t.Fatal(err)
	}
	rec := rawRow(t, memory.NewGoAllocator(), 0, []float32{1, 2, 3}, nil, false)
	defer rec.Release()
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}
