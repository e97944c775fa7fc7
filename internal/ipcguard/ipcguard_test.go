package ipcguard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// nested is a schema with every shape of metadata the checks follow:
// nested children, a union's type ids, a dictionary, custom metadata.
func nested() *arrow.Schema {
	md := arrow.NewMetadata([]string{"k"}, []string{"v"})
	return arrow.NewSchema([]arrow.Field{
		{Name: "l", Type: arrow.ListOf(arrow.StructOf(arrow.Field{Name: "x", Type: arrow.PrimitiveTypes.Float32}))},
		{Name: "u", Type: arrow.SparseUnionOf([]arrow.Field{{Name: "a", Type: arrow.PrimitiveTypes.Int8}}, []arrow.UnionTypeCode{5}), Nullable: true},
		{Name: "d", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int16, ValueType: arrow.BinaryTypes.String}, Metadata: md},
	}, &md)
}

// ipcFile writes two batches of sch with every column null.
func ipcFile(t *testing.T, sch *arrow.Schema) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := ipc.NewFileWriter(&buf, ipc.WithSchema(sch))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		b := array.NewRecordBuilder(memory.DefaultAllocator, sch)
		for _, f := range b.Fields() {
			f.AppendNull()
		}
		rec := b.NewRecordBatch()
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
		b.Release()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCheckFileAcceptsWhatArrowWrites(t *testing.T) {
	data := ipcFile(t, nested())
	f, err := CheckFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Batches) != 2 {
		t.Fatalf("%d batches", len(f.Batches))
	}
	for i := range f.Batches {
		if err := f.CheckBatch(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.CheckBatch(2); !errors.Is(err, ErrMetadata) {
		t.Fatalf("batch 2 of 2: %v", err)
	}
}

// Every 4 bytes of the footer and of each message, overwritten with a
// length or offset that points far away: CheckFile or CheckBatch refuses
// it, or arrow-go reads the file without dying (a panic is fine: callers
// recover it; an allocation of GBs or an endless recursion is not).
func TestCorruptMetadataNeverReachesArrow(t *testing.T) {
	data := ipcFile(t, nested())
	footerLen := int(binary.LittleEndian.Uint32(data[len(data)-10:]))
	refused := 0
	for p := 0; p+4 <= len(data)-10; p++ {
		for _, v := range []uint32{0x7FFFFFFF, 0xFFFFFFF8, 0x00100000, 0x0000FFFF} {
			bad := bytes.Clone(data)
			binary.LittleEndian.PutUint32(bad[p:], v)
			f, err := CheckFile(bytes.NewReader(bad), int64(len(bad)))
			if err != nil {
				refused++
				continue
			}
			func() {
				defer func() { recover() }()
				fr, err := ipc.NewFileReader(bytes.NewReader(bad), ipc.WithAllocator(Capped{memory.NewGoAllocator(), 1 << 20}))
				if err != nil {
					return
				}
				defer fr.Close()
				for i := 0; i < fr.NumRecords(); i++ {
					if f.CheckBatch(i) != nil {
						continue
					}
					if rec, err := fr.RecordBatchAt(i); err == nil {
						rec.Release()
					}
				}
			}()
		}
	}
	if refused == 0 {
		t.Fatalf("no corruption of a %d-byte file (footer %d bytes) refused", len(data), footerLen)
	}
}

func TestStreamReader(t *testing.T) {
	var buf bytes.Buffer
	sch := nested()
	w := ipc.NewWriter(&buf, ipc.WithSchema(sch))
	b := array.NewRecordBuilder(memory.DefaultAllocator, sch)
	for _, f := range b.Fields() {
		f.AppendNull()
	}
	rec := b.NewRecordBatch()
	b.Release()
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	rec.Release()
	w.Close()
	data := buf.Bytes()
	r, err := ipc.NewReaderFromMessageReader(NewStreamReader(bytes.NewReader(data), 1<<20, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for r.Next() {
		n += int(r.RecordBatch().NumRows())
	}
	if r.Err() != nil || n != 1 {
		t.Fatalf("%d rows, %v", n, r.Err())
	}
	r.Release()
	// A body claimed longer than the stream: an error, no allocation of it.
	bad := bytes.Clone(data)
	for p := 0; p+8 <= len(bad); p++ {
		if binary.LittleEndian.Uint64(bad[p:]) == 8 { // the record batch's body length
			binary.LittleEndian.PutUint64(bad[p:], 1<<40)
		}
	}
	s := NewStreamReader(bytes.NewReader(bad), 1<<20, 1<<50)
	var err2 error
	for err2 == nil {
		_, err2 = s.Message()
	}
	if errors.Is(err2, io.EOF) {
		t.Fatalf("read to the end of a stream claiming a 1 TB body")
	}
	s.Release()
}

func TestCapped(t *testing.T) {
	a := Capped{memory.NewGoAllocator(), 16}
	if len(a.Allocate(16)) != 16 {
		t.Fatal("16 bytes")
	}
	defer func() {
		if err, ok := recover().(error); !ok || !errors.Is(err, ErrMetadata) {
			t.Fatalf("recovered %v", err)
		}
	}()
	a.Allocate(17)
}
