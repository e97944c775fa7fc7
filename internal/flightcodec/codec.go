// Package flightcodec is the gRPC codec of ArrowQuant's Flight server and
// DoPut client: proto's, except that large FlightData bodies are neither
// joined nor copied into fresh heap. OutgoingData sends a body without
// copying it; a received FlightData's body is copied once, into a pool.
package flightcodec

import (
	"bytes"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec flightCodec falls back to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/arrowquant/arrowquant/internal/bufpool"
)

// OutgoingData is a Flight FlightData message (flight_descriptor,
// data_header and data_body; no app_metadata) whose body the codec hands
// to gRPC's transport without copying it: send it with the stream's
// SendMsg. The codec copies Descriptor and Header during SendMsg and
// takes a reference to each piece of Body, which the transport frees once
// it has written the frame; the caller frees its own references after
// SendMsg returns.
type OutgoingData struct {
	Descriptor []byte          // a marshaled FlightDescriptor (a DoPut's first message), or nil
	Header     []byte          // data_header
	Body       mem.BufferSlice // data_body, in pieces sent in order; empty: no data_body field
}

// Field numbers of arrow.flight.protocol.FlightData.
const (
	fieldFlightDescriptor protowire.Number = 1
	fieldDataHeader       protowire.Number = 2
	fieldAppMetadata      protowire.Number = 3
	fieldDataBody         protowire.Number = 1000
)

// WireSize is the message's encoded size (as proto.Size of the same
// FlightData).
func (d *OutgoingData) WireSize() int {
	n := 0
	if len(d.Descriptor) > 0 {
		n += protowire.SizeTag(fieldFlightDescriptor) + protowire.SizeBytes(len(d.Descriptor))
	}
	if len(d.Header) > 0 {
		n += protowire.SizeTag(fieldDataHeader) + protowire.SizeBytes(len(d.Header))
	}
	if b := d.Body.Len(); b > 0 {
		n += protowire.SizeTag(fieldDataBody) + protowire.SizeBytes(b)
	}
	return n
}

// marshal encodes d as proto's deterministic encoding of the same
// FlightData: the fields in number order, empty ones left out. The
// descriptor, header and the body's tag and length are one small buffer;
// the body's pieces follow as they are.
func (d *OutgoingData) marshal() mem.BufferSlice {
	var prefix []byte
	if len(d.Descriptor) > 0 {
		prefix = protowire.AppendTag(prefix, fieldFlightDescriptor, protowire.BytesType)
		prefix = protowire.AppendBytes(prefix, d.Descriptor)
	}
	if len(d.Header) > 0 {
		prefix = protowire.AppendTag(prefix, fieldDataHeader, protowire.BytesType)
		prefix = protowire.AppendBytes(prefix, d.Header)
	}
	size := d.Body.Len()
	if size == 0 {
		return mem.BufferSlice{mem.SliceBuffer(prefix)}
	}
	prefix = protowire.AppendTag(prefix, fieldDataBody, protowire.BytesType)
	prefix = protowire.AppendVarint(prefix, uint64(size))
	out := make(mem.BufferSlice, 0, 1+len(d.Body))
	out = append(out, mem.SliceBuffer(prefix))
	for _, b := range d.Body {
		if b.Len() > 0 {
			b.Ref()
			out = append(out, b)
		}
	}
	return out
}

// flightCodec is gRPC's proto codec, except for OutgoingData.
type flightCodec struct{ proto encoding.CodecV2 }

// New returns the codec: the server's (grpc.ForceServerCodecV2) and a DoPut client's
// (grpc.ForceCodecV2).
func New() encoding.CodecV2 { return flightCodec{proto: encoding.GetCodecV2("proto")} }

func (c flightCodec) Name() string { return "proto" }

func (c flightCodec) Marshal(v any) (mem.BufferSlice, error) {
	if d, ok := v.(*OutgoingData); ok {
		return d.marshal(), nil
	}
	return c.proto.Marshal(v)
}

func (c flightCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *OutgoingData:
		return fmt.Errorf("flight codec: OutgoingData is send-only")
	case *flight.FlightData:
		if unmarshalWithPooledBody(data, m) {
			return nil
		}
	}
	return c.proto.Unmarshal(data, v)
}

// minPooledBody is the smallest data_body unmarshalWithPooledBody takes
// (smaller messages: proto's path, whose copies are cheap at that size).
const minPooledBody = 64 << 10

// bodyPool holds the data_body buffers of received FlightData.
var bodyPool = bufpool.New().Uninit()

// unmarshalWithPooledBody decodes a FlightData whose last field is a
// data_body of at least minPooledBody bytes the way proto.Unmarshal does,
// except that the body is copied once, from gRPC's buffers straight into
// a buffer of bodyPool: proto's path first joins the message into one
// buffer, then copies the body out of it into fresh heap, which is then
// garbage (15 GB of it in a push of the Dream 7B layout). Anything else
// (another field order, unknown fields, a field in the way) reports false
// and is left to proto. The caller gives the body back with
// ReleaseFlightDataBody once nothing refers to it.
func unmarshalWithPooledBody(data mem.BufferSlice, fd *flight.FlightData) bool {
	total := data.Len()
	if total < minPooledBody {
		return false
	}
	var head [4096]byte
	prefix := head[:copyRange(head[:], data, 0)]
	var desc *flight.FlightDescriptor
	var header, appMeta []byte
	for p := 0; p < len(prefix); {
		num, typ, n := protowire.ConsumeTag(prefix[p:])
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		length, m := protowire.ConsumeVarint(prefix[p+n:])
		if m < 0 || length > uint64(total) {
			return false
		}
		start := p + n + m
		end := start + int(length)
		if num == fieldDataBody {
			if end != total || length < minPooledBody {
				return false
			}
			body := bodyPool.Allocate(int(length))
			copyRange(body, data, start)
			fd.Reset()
			fd.FlightDescriptor, fd.DataHeader, fd.AppMetadata, fd.DataBody = desc, header, appMeta, body
			return true
		}
		if end > len(prefix) {
			return false
		}
		field := prefix[start:end]
		switch num {
		case fieldFlightDescriptor:
			if desc == nil {
				desc = new(flight.FlightDescriptor)
			}
			if (proto.UnmarshalOptions{Merge: true}).Unmarshal(field, desc) != nil {
				return false
			}
		case fieldDataHeader:
			header = bytes.Clone(field)
		case fieldAppMetadata:
			appMeta = bytes.Clone(field)
		default:
			return false
		}
		p = end
	}
	return false
}

// copyRange copies data's bytes from offset off into dst, as many as fit,
// and returns how many it copied.
func copyRange(dst []byte, data mem.BufferSlice, off int) int {
	n := 0
	for _, b := range data {
		src := b.ReadOnlyData()
		if off >= len(src) {
			off -= len(src)
			continue
		}
		n += copy(dst[n:], src[off:])
		off = 0
		if n == len(dst) {
			break
		}
	}
	return n
}

// ReleaseFlightDataBody gives back the data_body of a received FlightData
// once nothing refers to it (nor to the record batch read from it). A body
// proto decoded joins the pool too when its capacity is one of the pool's
// sizes (it is as unused); bodies of other sizes are left to the GC.
func ReleaseFlightDataBody(fd *flight.FlightData) {
	if fd != nil && cap(fd.DataBody) >= minPooledBody {
		bodyPool.Free(fd.DataBody)
		fd.DataBody = nil
	}
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
