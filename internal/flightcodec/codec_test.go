package flightcodec

import (
	"bytes"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// OutgoingData encodes to the bytes proto gives the same FlightData, and
// its size is proto.Size's.
func TestOutgoingDataEncodesAsFlightData(t *testing.T) {
	c := New()
	big := bytes.Repeat([]byte{7, 0, 255}, 100_000) // past gRPC's pooling threshold
	desc := &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(`{"model":"m"}`)}
	for _, tc := range []struct {
		name         string
		desc         *flight.FlightDescriptor
		header, body []byte
		piece        int // the body is sent in pieces of this many bytes (0: one)
	}{
		{"header-and-body", nil, []byte("meta"), []byte("some body bytes"), 0},
		{"large-body", nil, bytes.Repeat([]byte{1}, 300), big, 0},
		{"large-body-in-pieces", nil, bytes.Repeat([]byte{1}, 300), big, 7777},
		{"descriptor-and-schema", desc, []byte("schema message"), nil, 0},
		{"everything-in-pieces", desc, []byte("meta"), big, 65536},
		{"header-only", nil, []byte("schema message"), nil, 0},
		{"empty-body", nil, []byte("h"), []byte{}, 0},
		{"body-only", nil, nil, []byte{1, 2, 3}, 1},
		{"nothing", nil, nil, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&flight.FlightData{FlightDescriptor: tc.desc, DataHeader: tc.header, DataBody: tc.body})
			if err != nil {
				t.Fatal(err)
			}
			d := &OutgoingData{Header: tc.header}
			if tc.desc != nil {
				if d.Descriptor, err = proto.Marshal(tc.desc); err != nil {
					t.Fatal(err)
				}
			}
			switch {
			case tc.body == nil:
			case tc.piece == 0:
				d.Body = mem.BufferSlice{mem.SliceBuffer(tc.body)}
			default:
				d.Body = split(tc.body, tc.piece)
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
			if !proto.Equal(back.FlightDescriptor, tc.desc) {
				t.Errorf("decoded descriptor %v, want %v", back.FlightDescriptor, tc.desc)
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
	got, err := New().Marshal(&OutgoingData{Header: b[:16], Body: mem.BufferSlice{body}})
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
	if err := New().Unmarshal(mem.BufferSlice{mem.SliceBuffer(enc)}, &OutgoingData{}); err == nil {
		t.Error("decoding into OutgoingData succeeded")
	}
}

// split cuts b into a BufferSlice of pieces of n bytes (gRPC hands the
// codec a message as the frames it arrived in).
func split(b []byte, n int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		s = append(s, mem.SliceBuffer(b[:k]))
		b = b[k:]
	}
	return s
}

// A received FlightData decodes as proto decodes it, however its bytes are
// split; a data_body of minPooledBody or more that comes last is taken
// from the pool, and every other layout is left to proto.
func TestFlightDataDecodesAsProto(t *testing.T) {
	c := New()
	big := make([]byte, 300_000)
	for i := range big {
		big[i] = byte(i*7 + i>>8)
	}
	desc := &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(`{"model":"m"}`)}
	unknown := protowire.AppendString(protowire.AppendTag(nil, 9, protowire.BytesType), "x")
	for _, tc := range []struct {
		name   string
		msg    *flight.FlightData
		extra  []byte // appended to the encoding
		pooled bool
	}{
		{"body", &flight.FlightData{DataHeader: []byte("hdr"), DataBody: big}, nil, true},
		{"descriptor-metadata-body", &flight.FlightData{FlightDescriptor: desc, DataHeader: []byte("hdr"), AppMetadata: []byte("note"), DataBody: big}, nil, true},
		{"body-at-threshold", &flight.FlightData{DataHeader: []byte("h"), DataBody: big[:minPooledBody]}, nil, true},
		{"small-body", &flight.FlightData{DataHeader: []byte("h"), DataBody: big[:minPooledBody-1]}, nil, false},
		{"field-after-body", &flight.FlightData{DataHeader: []byte("h"), DataBody: big}, unknown, false},
		{"header-only", &flight.FlightData{DataHeader: bytes.Repeat([]byte("h"), 70_000)}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			enc = append(enc, tc.extra...)
			var want flight.FlightData
			if err := proto.Unmarshal(enc, &want); err != nil {
				t.Fatal(err)
			}
			for _, piece := range []int{1, 7, 4096, 16384, len(enc)} {
				got := &flight.FlightData{AppMetadata: []byte("stale")}
				if err := c.Unmarshal(split(enc, piece), got); err != nil {
					t.Fatalf("pieces of %d: %v", piece, err)
				}
				if !proto.Equal(got, &want) {
					t.Fatalf("pieces of %d: decoded %v, want %v", piece, got.String()[:min(100, len(got.String()))], want.String()[:min(100, len(want.String()))])
				}
				ReleaseFlightDataBody(got)
				direct := &flight.FlightData{}
				if pooled := unmarshalWithPooledBody(split(enc, piece), direct); pooled != tc.pooled {
					t.Fatalf("pieces of %d: body from the pool %v, want %v", piece, pooled, tc.pooled)
				} else if pooled && !proto.Equal(direct, &want) {
					t.Fatalf("pieces of %d: the pooled decoding differs", piece)
				}
				ReleaseFlightDataBody(direct)
			}
		})
	}
}

// Malformed messages fail as they fail in proto, never panic.
func TestMalformedFlightDataFails(t *testing.T) {
	c := New()
	enc, _ := proto.Marshal(&flight.FlightData{DataHeader: []byte("hdr"), DataBody: make([]byte, 100_000)})
	for _, bad := range [][]byte{
		enc[:len(enc)-1], // the body cut short, then zero bytes: the body field ends early and tag 0 follows
		append(enc[:8:8], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), // a varint too long
	} {
		bad = append(bad, make([]byte, 70_000-len(bad)%70_000)...) // zero bytes past minPooledBody
		var got flight.FlightData
		wantErr := proto.Unmarshal(bad, &flight.FlightData{}) != nil
		if err := c.Unmarshal(split(bad, 4096), &got); (err != nil) != wantErr {
			t.Errorf("%d bytes: error %v, proto fails: %v", len(bad), err, wantErr)
		}
	}
}
