package artifact

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/arrowquant/arrowquant/internal/ipcguard"
)

// The Arrow IPC file footer (format/File.fbs, format/Schema.fbs), encoded
// here because the artifact's schema-level metadata is known only after
// the last batch: the batches are written once, straight into the final
// file, and the footer (with the full schema and every batch's block)
// follows them. arrow-go's footer writer is internal to its FileWriter.

// Type union ids (Schema.fbs Type) of the types an artifact holds.
const (
	fbTypeInt           = 2
	fbTypeFloatingPoint = 3
	fbTypeBinary        = 4
	fbTypeUtf8          = 5
	fbTypeList          = 12
	fbMetadataV5        = 4
)

// footerBytes encodes a Footer table: version V5, the schema, no
// dictionaries, the record batch blocks.
func footerBytes(s *arrow.Schema, blocks []ipcguard.Block) ([]byte, error) {
	b := flatbuffers.NewBuilder(4096)
	schema, err := schemaFB(b, s)
	if err != nil {
		return nil, err
	}
	b.StartVector(24, 0, 8)
	dicts := b.EndVector(0)
	b.StartVector(24, len(blocks), 8)
	for i := len(blocks) - 1; i >= 0; i-- { // struct Block: offset, metaDataLength, (pad), bodyLength
		b.Prep(8, 24)
		b.PrependInt64(blocks[i].BodyLen)
		b.Pad(4)
		b.PrependInt32(blocks[i].MetaLen)
		b.PrependInt64(blocks[i].Offset)
	}
	recs := b.EndVector(len(blocks))
	b.StartObject(5)
	b.PrependInt16Slot(0, fbMetadataV5, 0)
	b.PrependUOffsetTSlot(1, schema, 0)
	b.PrependUOffsetTSlot(2, dicts, 0)
	b.PrependUOffsetTSlot(3, recs, 0)
	b.Finish(b.EndObject())
	return b.FinishedBytes(), nil
}

func schemaFB(b *flatbuffers.Builder, s *arrow.Schema) (flatbuffers.UOffsetT, error) {
	fields := make([]flatbuffers.UOffsetT, s.NumFields())
	for i, f := range s.Fields() {
		off, err := fieldFB(b, f)
		if err != nil {
			return 0, err
		}
		fields[i] = off
	}
	fieldVec := offsetVector(b, fields)
	md := s.Metadata()
	var meta flatbuffers.UOffsetT
	if md.Len() > 0 {
		kvs := make([]flatbuffers.UOffsetT, md.Len())
		for i := range kvs {
			k, v := b.CreateString(md.Keys()[i]), b.CreateString(md.Values()[i])
			b.StartObject(2)
			b.PrependUOffsetTSlot(0, k, 0)
			b.PrependUOffsetTSlot(1, v, 0)
			kvs[i] = b.EndObject()
		}
		meta = offsetVector(b, kvs)
	}
	b.StartObject(4) // endianness (Little, the default), fields, custom_metadata, features
	b.PrependUOffsetTSlot(1, fieldVec, 0)
	if meta != 0 {
		b.PrependUOffsetTSlot(2, meta, 0)
	}
	return b.EndObject(), nil
}

func fieldFB(b *flatbuffers.Builder, f arrow.Field) (flatbuffers.UOffsetT, error) {
	name := b.CreateString(f.Name)
	var children []flatbuffers.UOffsetT
	var typeID byte
	var typ flatbuffers.UOffsetT
	intType := func(bits int32, signed bool) {
		typeID = fbTypeInt
		b.StartObject(2)
		b.PrependInt32Slot(0, bits, 0)
		b.PrependBoolSlot(1, signed, false)
		typ = b.EndObject()
	}
	floatType := func(precision int16) { // HALF 0, SINGLE 1, DOUBLE 2
		typeID = fbTypeFloatingPoint
		b.StartObject(1)
		b.PrependInt16Slot(0, precision, 0)
		typ = b.EndObject()
	}
	empty := func(id byte) {
		typeID = id
		b.StartObject(0)
		typ = b.EndObject()
	}
	switch dt := f.Type.(type) {
	case *arrow.StringType:
		empty(fbTypeUtf8)
	case *arrow.BinaryType:
		empty(fbTypeBinary)
	case *arrow.Int8Type:
		intType(8, true)
	case *arrow.Int32Type:
		intType(32, true)
	case *arrow.Int64Type:
		intType(64, true)
	case *arrow.Float16Type:
		floatType(0)
	case *arrow.Float32Type:
		floatType(1)
	case *arrow.Float64Type:
		floatType(2)
	case *arrow.ListType:
		child, err := fieldFB(b, dt.ElemField())
		if err != nil {
			return 0, err
		}
		children = []flatbuffers.UOffsetT{child}
		empty(fbTypeList)
	default:
		return 0, fmt.Errorf("artifact: footer: field %q: type %s is not one an artifact holds", f.Name, f.Type)
	}
	childVec := offsetVector(b, children) // readers (Arrow C++) want the vector even when empty
	b.StartObject(7)                      // name, nullable, type_type, type, dictionary, children, custom_metadata
	b.PrependUOffsetTSlot(0, name, 0)
	b.PrependBoolSlot(1, f.Nullable, false)
	b.PrependByteSlot(2, typeID, 0)
	b.PrependUOffsetTSlot(3, typ, 0)
	b.PrependUOffsetTSlot(5, childVec, 0)
	return b.EndObject(), nil
}

func offsetVector(b *flatbuffers.Builder, offs []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	b.StartVector(4, len(offs), 4)
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	return b.EndVector(len(offs))
}

// SchemaMessage is the IPC schema message of s (its flatbuffer, without
// the continuation marker and length prefix): what a stream of the
// artifact's batches starts with. The file's own first message has no
// schema metadata; the footer's schema has it all.
func SchemaMessage(s *arrow.Schema, mem memory.Allocator) ([]byte, error) {
	var pw schemaCapture
	w := ipc.NewWriterWithPayloadWriter(&pw, ipc.WithSchema(s), ipc.WithAllocator(mem))
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("artifact: schema message: %w", err)
	}
	if pw.buf.Len() < 8 {
		return nil, errors.New("artifact: schema message: nothing written")
	}
	return pw.buf.Bytes()[8:], nil
}

type schemaCapture struct {
	buf  bytes.Buffer
	done bool
}

func (c *schemaCapture) Start() error { return nil }
func (c *schemaCapture) WritePayload(p ipc.Payload) error {
	if c.done {
		return nil
	}
	c.done = true
	_, err := p.WritePayload(&c.buf)
	return err
}
func (c *schemaCapture) Close() error { return nil }
