package client

import (
	"io"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/arrowquant/arrowquant/internal/flightcodec"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
)

// transportStub is a DoPut stream whose SendMsg encodes the message with
// flightcodec's codec and keeps the encoding, as gRPC's transport holds a
// message until it has written it.
type transportStub struct {
	flight.FlightService_DoPutClient
	sent []mem.BufferSlice
}

func (s *transportStub) SendMsg(m any) error {
	enc, err := flightcodec.New().Marshal(m)
	if err != nil {
		return err
	}
	s.sent = append(s.sent, enc)
	return nil
}

// written frees what the transport holds.
func (s *transportStub) written() {
	for _, b := range s.sent {
		b.Free()
	}
	s.sent = nil
}

// messages decodes what was sent as proto decodes a FlightData.
func (s *transportStub) messages(t *testing.T) []*flight.FlightData {
	var out []*flight.FlightData
	for _, b := range s.sent {
		fd := &flight.FlightData{}
		if err := proto.Unmarshal(b.Materialize(), fd); err != nil {
			t.Fatal(err)
		}
		out = append(out, fd)
	}
	return out
}

// dataStream replays FlightData messages to flight.NewRecordReader.
type dataStream struct{ msgs []*flight.FlightData }

func (d *dataStream) Recv() (*flight.FlightData, error) {
	if len(d.msgs) == 0 {
		return nil, io.EOF
	}
	m := d.msgs[0]
	d.msgs = d.msgs[1:]
	return m, nil
}

// bf16Wire is the wire type of BF16 values.
func bf16Wire(t *testing.T) arrow.DataType {
	vt, err := schema.ValueType("BF16")
	if err != nil {
		t.Fatal(err)
	}
	return vt
}

func valuesRecord(t *testing.T, mem memory.Allocator, name string, n int, seed byte) arrow.RecordBatch {
	t.Helper()
	buf := memory.NewResizableBuffer(mem)
	buf.Resize(2 * n)
	for i := range buf.Bytes() {
		buf.Bytes()[i] = byte(i*7) + seed
	}
	defer buf.Release()
	return quant.InputRecord(mem, quant.TensorMeta{Name: name, Shape: []int64{int64(n)}, DType: "BF16"}, 0, bf16Wire(t), buf)
}

// A record's values travel without a copy: the message's body piece is the
// record's own buffer, which stays allocated until the transport has
// written it; and the stream decodes to the records written, with the
// descriptor on the first message only.
func TestPutWriterSendsValuesWithoutCopying(t *testing.T) {
	alloc := memory.NewCheckedAllocator(memory.NewGoAllocator())
	stub := &transportStub{}
	desc, _ := proto.Marshal(&flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(`{"model":"m"}`)})
	w := newPutWriter(stub, desc, ipc.WithSchema(schema.Input(bf16Wire(t))), ipc.WithAllocator(alloc))
	recs := []arrow.RecordBatch{valuesRecord(t, alloc, "a", 1<<16, 1), valuesRecord(t, alloc, "b", 100, 2), valuesRecord(t, alloc, "c", 1<<17, 3)}
	var want []string
	for _, rec := range recs {
		want = append(want, rec.Column(4).String())
		values := rec.Column(4).(*array.List).ListValues().Data().Buffers()[1].Bytes()
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		last := stub.sent[len(stub.sent)-1]
		shared := false
		for _, piece := range last {
			if d := piece.ReadOnlyData(); len(d) == len(values) && unsafe.SliceData(d) == unsafe.SliceData(values) {
				shared = true
			}
		}
		if wantShared := len(values) >= minSharedPiece; shared != wantShared {
			t.Errorf("record %d: values of %d bytes sent as the record's buffer: %v, want %v", len(want), len(values), shared, wantShared)
		}
		rec.Release()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if alloc.CurrentAlloc() < 2*(1<<16+1<<17) {
		t.Fatalf("%d bytes allocated: the values were freed while the transport holds them", alloc.CurrentAlloc())
	}

	msgs := stub.messages(t)
	for i, m := range msgs {
		if (m.FlightDescriptor != nil) != (i == 0) || i == 0 && string(m.FlightDescriptor.Cmd) != `{"model":"m"}` {
			t.Fatalf("message %d: descriptor %v", i, m.FlightDescriptor)
		}
	}
	stub.written()
	alloc.AssertSize(t, 0)

	rdr, err := flight.NewRecordReader(&dataStream{msgs: msgs})
	if err != nil {
		t.Fatal(err)
	}
	defer rdr.Release()
	for i := 0; rdr.Next(); i++ {
		if got := rdr.RecordBatch().Column(4).String(); i >= len(want) || got != want[i] {
			t.Fatalf("record %d decodes to other values", i)
		}
		want[i] = ""
	}
	if want[len(want)-1] != "" {
		t.Fatal("fewer records decoded than written")
	}
}

// holds finds a slice inside any of a record's buffers, children included,
// and nothing else.
func TestHolds(t *testing.T) {
	rec := valuesRecord(t, memory.DefaultAllocator, "w", 1000, 0)
	defer rec.Release()
	values := rec.Column(4).(*array.List).ListValues().Data().Buffers()[1].Bytes()
	if !holds(rec, values) || !holds(rec, values[10:500]) {
		t.Error("the values buffer is not found")
	}
	if holds(rec, make([]byte, 100)) || holds(rec, append([]byte(nil), values...)) {
		t.Error("a slice outside the record is found")
	}
}
