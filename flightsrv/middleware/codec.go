package middleware

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec flightCodec falls back to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/arrowquant/arrowquant/internal/bufpool"
)

// OutgoingData is a Flight FlightData message (data_header and data_body;
// no descriptor or app_metadata) whose body the server's codec hands to
// gRPC's transport without copying it: send it with the stream's SendMsg.
// The codec copies Header during SendMsg and takes a reference to Body,
// which the transport frees once it has written the frame; the caller
// frees its own reference after SendMsg returns.
type OutgoingData struct {
	Header []byte
	Body   mem.Buffer // nil or empty: no data_body field
}

// Field numbers of arrow.flight.protocol.FlightData.
const (
	fieldDataHeader protowire.Number = 2
	fieldDataBody   protowire.Number = 1000
)

// WireSize is the message's encoded size (as proto.Size of the same
// FlightData).
func (d *OutgoingData) WireSize() int {
	n := 0
	if len(d.Header) > 0 {
		n += protowire.SizeTag(fieldDataHeader) + protowire.SizeBytes(len(d.Header))
	}
	if d.Body != nil && d.Body.Len() > 0 {
		n += protowire.SizeTag(fieldDataBody) + protowire.SizeBytes(d.Body.Len())
	}
	return n
}

// marshal encodes d as proto's deterministic encoding of the same
// FlightData: the fields in number order, empty ones left out. The
// header and the body's tag and length are one small buffer; the body
// follows as is.
func (d *OutgoingData) marshal() mem.BufferSlice {
	var prefix []byte
	if len(d.Header) > 0 {
		prefix = protowire.AppendTag(prefix, fieldDataHeader, protowire.BytesType)
		prefix = protowire.AppendBytes(prefix, d.Header)
	}
	if d.Body == nil || d.Body.Len() == 0 {
		return mem.BufferSlice{mem.SliceBuffer(prefix)}
	}
	prefix = protowire.AppendTag(prefix, fieldDataBody, protowire.BytesType)
	prefix = protowire.AppendVarint(prefix, uint64(d.Body.Len()))
	d.Body.Ref()
	return mem.BufferSlice{mem.SliceBuffer(prefix), d.Body}
}

// flightCodec is gRPC's proto codec, except for OutgoingData.
type flightCodec struct{ proto encoding.CodecV2 }

func newFlightCodec() flightCodec { return flightCodec{proto: encoding.GetCodecV2("proto")} }

func (c flightCodec) Name() string { return "proto" }

func (c flightCodec) Marshal(v any) (mem.BufferSlice, error) {
	if d, ok := v.(*OutgoingData); ok {
		return d.marshal(), nil
	}
	return c.proto.Marshal(v)
}

func (c flightCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if _, ok := v.(*OutgoingData); ok {
		return fmt.Errorf("flight codec: OutgoingData is send-only")
	}
	return c.proto.Unmarshal(data, v)
}

// NewBodyBuffer returns a buffer of n bytes from alloc (not zeroed when alloc
// is an internal/bufpool pool's Uninit) for an OutgoingData body, with
// its bytes to fill before it is sent; the last Free returns them to
// alloc. Buffers under gRPC's pooling threshold are plain slices.
func NewBodyBuffer(alloc memory.Allocator, n int) (mem.Buffer, []byte) {
	if mem.IsBelowBufferPoolingThreshold(n) {
		b := make([]byte, n)
		return mem.SliceBuffer(b), b
	}
	b := alloc.Allocate(n)
	return mem.NewBuffer(&b, bufpool.BytePool{Alloc: alloc}), b
}
