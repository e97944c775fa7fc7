package middleware

import (
	"bytes"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// OutgoingData encodes to the bytes proto gives the same FlightData, and
// its size is proto.Size's.
func TestOutgoingDataEncodesAsFlightData(t *testing.T) {
	c := newFlightCodec()
	big := bytes.Repeat([]byte{7, 0, 255}, 100_000) // past gRPC's pooling threshold
	for _, tc := range []struct {
		name         string
		header, body []byte
	}{
		{"header-and-body", []byte("meta"), []byte("some body bytes")},
		{"large-body", bytes.Repeat([]byte{1}, 300), big},
		{"header-only", []byte("schema message"), nil},
		{"empty-body", []byte("h"), []byte{}},
		{"body-only", nil, []byte{1, 2, 3}},
		{"nothing", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&flight.FlightData{DataHeader: tc.header, DataBody: tc.body})
			if err != nil {
				t.Fatal(err)
			}
			d := &OutgoingData{Header: tc.header}
			if tc.body != nil {
				d.Body = mem.SliceBuffer(tc.body)
			}
			got, err := c.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if b := got.Materialize(); !bytes.Equal(b, want) {
				t.Errorf("encoded %d bytes, want proto's %d (first %x, want %x)", len(b), len(want), b[:min(len(b), 8)], want[:min(len(want), 8)])
			}
			if d.WireSize() != len(want) {
				t.Errorf("WireSize %d, want %d", d.WireSize(), len(want))
			}
			// And it decodes as the FlightData.
			var back flight.FlightData
			if err := c.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back.DataHeader, tc.header) || !bytes.Equal(back.DataBody, tc.body) {
				t.Errorf("decoded header %d / body %d bytes, want %d / %d", len(back.DataHeader), len(back.DataBody), len(tc.header), len(tc.body))
			}
			got.Free()
		})
	}
}

// The body stays with its allocator until the last reference (the
// transport's, from Marshal) is freed; then every byte is back.
func TestOutgoingDataBodyReferences(t *testing.T) {
	alloc := memory.NewCheckedAllocator(memory.DefaultAllocator)
	const n = 1 << 20
	whole, b := NewBodyBuffer(alloc, n)
	for i := range b {
		b[i] = byte(i)
	}
	body := whole.Slice(16, n)
	got, err := newFlightCodec().Marshal(&OutgoingData{Header: b[:16], Body: body})
	if err != nil {
		t.Fatal(err)
	}
	body.Free() // the caller's references, after SendMsg
	whole.Free()
	if alloc.CurrentAlloc() < n {
		t.Fatalf("body released while the marshalled message holds it: %d bytes allocated", alloc.CurrentAlloc())
	}
	enc := got.Materialize()
	if !bytes.Equal(enc[len(enc)-(n-16):], b[16:]) {
		t.Error("the encoded body is not the buffer's bytes")
	}
	got.Free() // the transport, once written
	alloc.AssertSize(t, 0)

	// Small buffers are plain slices, outside the allocator.
	small, sb := NewBodyBuffer(alloc, 100)
	if len(sb) != 100 || small.Len() != 100 {
		t.Errorf("small buffer of %d / %d bytes, want 100", len(sb), small.Len())
	}
	small.Free()
	alloc.AssertSize(t, 0)
}

func TestOutgoingDataIsSendOnly(t *testing.T) {
	enc, err := proto.Marshal(&flight.FlightData{DataBody: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := newFlightCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(enc)}, &OutgoingData{}); err == nil {
		t.Error("decoding into OutgoingData succeeded")
	}
}
