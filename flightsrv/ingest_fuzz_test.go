package flightsrv

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math"
	"os"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/float16"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/schema"
	"github.com/arrowquant/arrowquant/wire"
)

// fuzzRow is one input row: values are generated, n of them.
type fuzzRow struct {
	name  string
	shape []int64
	dtype string
	off   int64
	n     int
}

// ipcStream encodes rows as the FlightData messages of a DoPut (Arrow IPC
// of the input schema with values of type vt: float32, float16 or uint16),
// framed as [u32 header length][header][u32 body length][body]... so the
// fuzzer mutates what a client controls: the messages, not gRPC's framing.
func ipcStream(t testing.TB, vt arrow.DataType, rows []fuzzRow) []byte {
	var cap capture
	sc := schema.Input(vt)
	w := flight.NewRecordWriter(&cap, ipc.WithSchema(sc))
	for _, r := range rows {
		b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
		b.Field(0).(*array.StringBuilder).Append(r.name)
		lb := b.Field(1).(*array.ListBuilder)
		lb.Append(true)
		lb.ValueBuilder().(*array.Int64Builder).AppendValues(r.shape, nil)
		b.Field(2).(*array.StringBuilder).Append(r.dtype)
		b.Field(3).(*array.Int64Builder).Append(r.off)
		vb := b.Field(4).(*array.ListBuilder)
		vb.Append(true)
		for i := 0; i < r.n; i++ {
			v := float32(i%7) - 3
			switch ib := vb.ValueBuilder().(type) {
			case *array.Float32Builder:
				ib.Append(v)
			case *array.Float16Builder:
				ib.Append(float16.New(v))
			case *array.Uint16Builder:
				ib.Append(uint16(math.Float32bits(v) >> 16))
			}
		}
		rec := b.NewRecordBatch()
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
		b.Release()
	}
	w.Close()
	var out []byte
	for _, d := range cap.msgs {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(d.DataHeader)))
		out = append(out, d.DataHeader...)
		out = binary.LittleEndian.AppendUint32(out, uint32(len(d.DataBody)))
		out = append(out, d.DataBody...)
	}
	return out
}

type capture struct{ msgs []*flight.FlightData }

func (c *capture) Send(d *flight.FlightData) error {
	c.msgs = append(c.msgs, &flight.FlightData{DataHeader: bytes.Clone(d.DataHeader), DataBody: bytes.Clone(d.DataBody)})
	return nil
}

// framedStream replays framed messages as a DoPut stream (only Recv is used).
type framedStream struct {
	flight.FlightService_DoPutServer
	data []byte
}

func (s *framedStream) Recv() (*flight.FlightData, error) {
	field := func() ([]byte, bool) {
		if len(s.data) < 4 {
			return nil, false
		}
		n := int(binary.LittleEndian.Uint32(s.data))
		s.data = s.data[4:]
		if n > len(s.data) {
			n = len(s.data)
		}
		b := s.data[:n]
		s.data = s.data[n:]
		return b, true
	}
	h, ok := field()
	if !ok {
		return nil, io.EOF
	}
	b, _ := field()
	return &flight.FlightData{DataHeader: h, DataBody: b}, nil
}

func seedStreams(t testing.TB) [][]byte {
	f32, f16, u16 := arrow.PrimitiveTypes.Float32, arrow.FixedWidthTypes.Float16, arrow.PrimitiveTypes.Uint16
	return [][]byte{
		ipcStream(t, f32, []fuzzRow{{"w", []int64{4, 8}, "F32", 0, 16}, {"w", []int64{4, 8}, "F32", 16, 16}, {"b", []int64{8}, "F32", 0, 8}}),
		ipcStream(t, f16, []fuzzRow{{"h", []int64{2, 3}, "F16", 0, 6}}),
		ipcStream(t, u16, []fuzzRow{{"bf", []int64{3, 3}, "BF16", 0, 9}}),
		ipcStream(t, f32, []fuzzRow{{"z", []int64{0, 16}, "F32", 0, 0}, {"s", []int64{}, "F32", 0, 1}}),
		ipcStream(t, f32, []fuzzRow{{"e", []int64{2, 4}, "F32", 0, 4}, {"e", []int64{2, 4}, "F32", 4, 0}, {"e", []int64{2, 4}, "F32", 4, 4}}),
		ipcStream(t, f32, []fuzzRow{{"wrap", []int64{1 << 32, 1 << 32}, "F32", 0, 0}}),
		ipcStream(t, f32, []fuzzRow{{"wrap8", []int64{1<<61 + 1, 8}, "F32", 0, 8}}),
		ipcStream(t, f32, []fuzzRow{{"gap", []int64{8}, "F32", 4, 4}}),
		ipcStream(t, f32, []fuzzRow{{"short", []int64{8}, "F32", 0, 4}}),
		ipcStream(t, f32, []fuzzRow{{"", []int64{1}, "F32", 0, 1}}),
		ipcStream(t, f32, []fuzzRow{{"d", []int64{1}, "Q4", 0, 1}}),
	}
}

// FuzzIngest decodes arbitrary bytes as the Arrow IPC stream of a DoPut and
// spools them as the server does: no input may panic, a refusal is
// InvalidArgument or ResourceExhausted, an accepted stream has every
// tensor whole on disk, and nothing stays allocated.
func FuzzIngest(f *testing.F) {
	for _, s := range seedStreams(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
		defer func() {
			if n := mem.CurrentAlloc(); n != 0 {
				t.Fatalf("%d bytes left allocated", n)
			}
		}()
		watch := newIdleWatch(0, nil)
		stream := &metadataTolerantStream{FlightService_DoPutServer: &framedStream{data: data}, watch: watch}
		rdr, err := func() (r *flight.Reader, err error) {
			defer func() { // as openPutReader: a decoder panic is the client's malformed input
				if p := recover(); p != nil {
					r, err = nil, status.Errorf(codes.InvalidArgument, "decoder: %v", p)
				}
			}()
			return flight.NewRecordReader(stream, ipc.WithAllocator(mem))
		}()
		if err != nil {
			return
		}
		defer rdr.Release()
		if err := checkSchema(rdr.Schema()); err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("schema refused with %v", err)
			}
			return
		}
		src, err := newFlightSource(t.TempDir(), ".spool", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer src.close()
		in := newIngestor(src, 1<<20)
		if err := in.setSchema(rdr.Schema()); err != nil {
			t.Fatalf("setSchema after checkSchema: %v", err)
		}
		acks := 0
		err = receive(rdr, in, func(wire.Ack) { acks++ })
		if err != nil {
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.ResourceExhausted {
				t.Fatalf("refused with %v, want InvalidArgument or ResourceExhausted", err)
			}
			return
		}
		if !src.finished || len(src.all) == 0 {
			t.Fatalf("accepted a stream that is not finished (%v) or empty (%d tensors)", src.finished, len(src.all))
		}
		for _, st := range src.all {
			fi, err := os.Stat(st.path)
			if err != nil || st.have != st.n || fi.Size() != st.n*st.width {
				t.Fatalf("tensor %q accepted with %d of %d elements, %d bytes spooled (%v)", st.meta.Name, st.have, st.n, fi.Size(), err)
			}
		}
	})
}

// TestIngestSeedsBehave pins what the seeds exercise.
func TestIngestSeedsBehave(t *testing.T) {
	want := []codes.Code{codes.OK, codes.OK, codes.OK, codes.OK, codes.OK, codes.InvalidArgument, codes.InvalidArgument,
		codes.InvalidArgument, codes.InvalidArgument, codes.InvalidArgument, codes.InvalidArgument}
	for i, s := range seedStreams(t) {
		rdr, err := flight.NewRecordReader(&framedStream{data: s})
		if err != nil {
			t.Fatal(err)
		}
		src, _ := newFlightSource(t.TempDir(), ".spool", false, nil)
		in := newIngestor(src, 1<<20)
		in.setSchema(rdr.Schema())
		err = receive(rdr, in, func(wire.Ack) {})
		if status.Code(err) != want[i] {
			t.Errorf("seed %d: %v, want %v", i, err, want[i])
		}
		src.close()
		rdr.Release()
	}
}

// FuzzIngestRows builds well-formed streams from fuzzed row contents
// (names, shapes, offsets, counts), so the ingest contract itself is
// explored rather than the IPC decoder: the same invariants as FuzzIngest.
func FuzzIngestRows(f *testing.F) {
	f.Add("w", int64(4), int64(8), uint8(2), "F32", int64(0), uint16(16), uint16(16))
	f.Add("z", int64(0), int64(16), uint8(2), "F32", int64(0), uint16(0), uint16(0))
	f.Add("s", int64(1), int64(1), uint8(0), "F32", int64(0), uint16(1), uint16(0))
	f.Add("o", int64(1)<<61+1, int64(8), uint8(2), "F32", int64(0), uint16(8), uint16(0))
	f.Add("g", int64(3), int64(3), uint8(2), "BF16", int64(2), uint16(7), uint16(3))
	f.Fuzz(func(t *testing.T, name string, d0, d1 int64, ndims uint8, dtype string, off int64, n1, n2 uint16) {
		shape := []int64{d0, d1, 2, 3}[:min(int(ndims), 4)]
		rows := []fuzzRow{{name, shape, dtype, off, int(n1)}}
		if n2 > 0 {
			rows = append(rows, fuzzRow{name, shape, dtype, off + int64(n1), int(n2)})
		}
		data := ipcStream(t, arrow.PrimitiveTypes.Float32, rows)
		mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
		rdr, err := flight.NewRecordReader(&framedStream{data: data}, ipc.WithAllocator(mem))
		if err != nil {
			t.Fatalf("a well-formed stream did not decode: %v", err)
		}
		// In memory, in pages of 3 values; the budget holds the upload
		// limit, so the receiver never waits for a reader.
		src, err := newFlightSource(t.TempDir(), ".spool", false, newSpoolMemory(1<<24, mem))
		if err != nil {
			t.Fatal(err)
		}
		src.pageElems = 3
		in := newIngestor(src, 1<<24)
		if err := in.setSchema(rdr.Schema()); err != nil {
			t.Fatal(err)
		}
		err = receive(rdr, in, func(wire.Ack) {})
		if err == nil {
			for _, st := range src.all {
				if st.have != st.n || st.inMem != st.n {
					t.Fatalf("accepted %q with %d of %d elements, %d in memory", st.meta.Name, st.have, st.n, st.inMem)
				}
				if st.n > 0 {
					rec, err := st.ReadChunk(context.Background(), mem, 0, st.n)
					if err != nil {
						t.Fatal(err)
					}
					got := rec.Column(4).(*array.List).ListValues().(*array.Float32).Float32Values()
					for i, v := range got { // ipcStream's values restart at every row
						j := i
						if j >= int(n1) {
							j -= int(n1)
						}
						if want := float32(j%7) - 3; v != want {
							t.Fatalf("%q value %d is %v, want %v", st.meta.Name, i, v, want)
						}
					}
					rec.Release()
				}
			}
		} else if c := status.Code(err); c != codes.InvalidArgument && c != codes.ResourceExhausted {
			t.Fatalf("refused with %v", err)
		}
		src.close()
		rdr.Release()
		if left := mem.CurrentAlloc(); left != 0 {
			t.Fatalf("%d bytes left allocated", left)
		}
	})
}

// The tensor a batch starts keeps its own name and dtype, not views of
// the batch's buffers (which would keep every tensor's first message body
// alive until the upload ends): overwriting those buffers after the batch
// changes nothing.
func TestIngestKeepsNoViewOfTheBatch(t *testing.T) {
	sc := schema.Input(arrow.PrimitiveTypes.Float32)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append("model.layers.0.mlp.up_proj.weight")
	lb := b.Field(1).(*array.ListBuilder)
	lb.Append(true)
	lb.ValueBuilder().(*array.Int64Builder).AppendValues([]int64{2, 4}, nil)
	b.Field(2).(*array.StringBuilder).Append("F32")
	b.Field(3).(*array.Int64Builder).Append(0)
	vb := b.Field(4).(*array.ListBuilder)
	vb.Append(true)
	vb.ValueBuilder().(*array.Float32Builder).AppendValues(make([]float32, 8), nil)
	rec := b.NewRecordBatch()
	defer rec.Release()

	src, err := newFlightSource(t.TempDir(), ".spool", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.close()
	in := newIngestor(src, 1<<20)
	if err := in.setSchema(sc); err != nil {
		t.Fatal(err)
	}
	if _, err := in.batch(rec); err != nil {
		t.Fatal(err)
	}
	for _, col := range []int{0, 2} {
		data := rec.Column(col).Data().Buffers()[2].Bytes()
		for i := range data {
			data[i] = 'x'
		}
	}
	meta := src.all[0].meta
	if meta.Name != "model.layers.0.mlp.up_proj.weight" || meta.DType != "F32" {
		t.Fatalf("spooled tensor: name %q dtype %q after the batch's buffers changed", meta.Name, meta.DType)
	}
	if !in.seen["model.layers.0.mlp.up_proj.weight"] {
		t.Fatalf("seen: %v", in.seen)
	}
}
