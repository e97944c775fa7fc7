// Package ipcguard checks the flatbuffer metadata of Arrow IPC files and
// streams before arrow-go decodes it. arrow-go (v18.8.0) trusts the vector
// lengths and offsets in that metadata: a few flipped bytes make it
// allocate without bound (make([]arrow.Field, n) for a field's children,
// make([]string, n) for custom metadata, n up to 2^32) or recurse without
// end (a child offset that wraps around to an ancestor). Both kill the
// process, where its other failures are panics it recovers itself or we
// recover. The checks here bound every offset and vector length arrow-go
// follows, forbid wrapping offsets (so references only go forward), and
// cap the number of tables and the nesting depth.
package ipcguard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Limits on a schema: far above what a calibration file or an artifact
// needs, far below what costs time or memory to decode.
const (
	MaxTables = 1 << 14 // tables in one flatbuffer
	MaxDepth  = 64      // nesting of fields (Arrow's own nesting limit)
)

// ErrMetadata is wrapped by every error of this package.
var ErrMetadata = errors.New("malformed Arrow IPC metadata")

func errorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMetadata}, args...)...)
}

// fb is one flatbuffer under check.
type fb struct {
	b      []byte
	tables int
}

func (f *fb) u32(p uint64) uint32 { return binary.LittleEndian.Uint32(f.b[p:]) }
func (f *fb) u16(p uint64) uint16 { return binary.LittleEndian.Uint16(f.b[p:]) }

// fits reports whether n bytes at p lie inside the buffer.
func (f *fb) fits(p, n uint64) bool { return p <= uint64(len(f.b)) && n <= uint64(len(f.b))-p }

// indirect follows the uoffset stored at p, refusing one that leaves the
// buffer (flatbuffers-go would wrap it around in 32 bits).
func (f *fb) indirect(p uint64, what string) (uint64, error) {
	if !f.fits(p, 4) {
		return 0, errorf("%s: offset at %d outside %d bytes", what, p, len(f.b))
	}
	t := p + uint64(f.u32(p))
	if !f.fits(t, 4) {
		return 0, errorf("%s: offset at %d points to %d, outside %d bytes", what, p, t, len(f.b))
	}
	return t, nil
}

// table is a checked table: its position and vtable.
type table struct {
	f     *fb
	pos   uint64
	vt    uint64
	vsize uint64
	what  string
	depth int
}

// table checks the table at pos: its vtable inside the buffer, its
// inline data inside the buffer, and the table budget.
func (f *fb) table(pos uint64, what string, depth int) (table, error) {
	if f.tables++; f.tables > MaxTables {
		return table{}, errorf("more than %d tables", MaxTables)
	}
	if depth > MaxDepth {
		return table{}, errorf("%s: nested more than %d deep", what, MaxDepth)
	}
	if !f.fits(pos, 4) {
		return table{}, errorf("%s: table at %d outside %d bytes", what, pos, len(f.b))
	}
	vt := int64(pos) - int64(int32(f.u32(pos)))
	if vt < 0 || !f.fits(uint64(vt), 4) {
		return table{}, errorf("%s: vtable at %d outside %d bytes", what, vt, len(f.b))
	}
	vsize, tsize := uint64(f.u16(uint64(vt))), uint64(f.u16(uint64(vt)+2))
	if vsize < 4 || vsize%2 != 0 || !f.fits(uint64(vt), vsize) || tsize < 4 || !f.fits(pos, tsize) {
		return table{}, errorf("%s: vtable at %d of %d bytes for a table of %d bytes", what, vt, vsize, tsize)
	}
	return table{f: f, pos: pos, vt: uint64(vt), vsize: vsize, what: what, depth: depth}, nil
}

// field is the position of field slot k (0 when absent), checked to hold
// size bytes.
func (t table) field(k int, size uint64) (uint64, error) {
	vo := uint64(4 + 2*k)
	if vo+2 > t.vsize {
		return 0, nil
	}
	off := uint64(t.f.u16(t.vt + vo))
	if off == 0 {
		return 0, nil
	}
	if !t.f.fits(t.pos+off, size) {
		return 0, errorf("%s: field %d at %d outside %d bytes", t.what, k, t.pos+off, len(t.f.b))
	}
	return t.pos + off, nil
}

// u8 reads a one-byte scalar field (0 when absent).
func (t table) u8(k int) (byte, error) {
	p, err := t.field(k, 1)
	if err != nil || p == 0 {
		return 0, err
	}
	return t.f.b[p], nil
}

// i64 reads an int64 scalar field (0 when absent).
func (t table) i64(k int) (int64, error) {
	p, err := t.field(k, 8)
	if err != nil || p == 0 {
		return 0, err
	}
	return int64(binary.LittleEndian.Uint64(t.f.b[p:])), nil
}

// child checks the table field k points to (ok false when absent).
func (t table) child(k int, what string) (table, bool, error) {
	p, err := t.field(k, 4)
	if err != nil || p == 0 {
		return table{}, false, err
	}
	c, err := t.f.indirect(p, what)
	if err != nil {
		return table{}, false, err
	}
	ct, err := t.f.table(c, what, t.depth+1)
	return ct, err == nil, err
}

// vector checks the vector field k points to, of elements of elem bytes,
// and returns the position of its first element and its length.
func (t table) vector(k int, elem uint64, what string) (start uint64, n int, err error) {
	p, err := t.field(k, 4)
	if err != nil || p == 0 {
		return 0, 0, err
	}
	v, err := t.f.indirect(p, what)
	if err != nil {
		return 0, 0, err
	}
	l := uint64(t.f.u32(v))
	if !t.f.fits(v+4, l*elem) { // l < 2^32, elem <= 24: no overflow
		return 0, 0, errorf("%s: vector of %d elements of %d bytes at %d outside %d bytes", what, l, elem, v, len(t.f.b))
	}
	return v + 4, int(l), nil
}

// tables checks a vector of tables, calling each on every element.
func (t table) tables(k int, what string, each func(table) error) error {
	start, n, err := t.vector(k, 4, what)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		e, err := t.f.indirect(start+4*uint64(i), what)
		if err != nil {
			return err
		}
		et, err := t.f.table(e, fmt.Sprintf("%s[%d]", what, i), t.depth+1)
		if err != nil {
			return err
		}
		if each != nil {
			if err := each(et); err != nil {
				return err
			}
		}
	}
	return nil
}

// keyValues checks a custom_metadata vector: tables of two strings.
func (t table) keyValues(k int) error {
	return t.tables(k, t.what+".custom_metadata", func(kv table) error {
		for s := 0; s < 2; s++ {
			if _, _, err := kv.vector(s, 1, kv.what); err != nil {
				return err
			}
		}
		return nil
	})
}

// Arrow's flatbuffer enums used here (Schema.fbs, Message.fbs).
const (
	typeUnion          = 14
	headerSchema       = 1
	headerDictionary   = 2
	headerRecordBatch  = 3
	blockBytes         = 24 // struct Block {offset: long; metaDataLength: int; bodyLength: long}
	fieldNodeBytes     = 16
	bufferBytes        = 16
	variadicCountBytes = 8
)

// field checks a Field table and its children, recursively.
func field(t table) error {
	if _, _, err := t.vector(0, 1, t.what+".name"); err != nil {
		return err
	}
	typ, err := t.u8(2)
	if err != nil {
		return err
	}
	if tt, ok, err := t.child(3, t.what+".type"); err != nil {
		return err
	} else if ok && typ == typeUnion {
		if _, _, err := tt.vector(1, 4, tt.what+".typeIds"); err != nil {
			return err
		}
	}
	if d, ok, err := t.child(4, t.what+".dictionary"); err != nil {
		return err
	} else if ok {
		if _, _, err := d.child(1, d.what+".indexType"); err != nil {
			return err
		}
	}
	if err := t.tables(5, t.what+".children", field); err != nil {
		return err
	}
	return t.keyValues(6)
}

// schema checks a Schema table.
func schema(t table) error {
	if err := t.tables(1, "schema.fields", field); err != nil {
		return err
	}
	if err := t.keyValues(2); err != nil {
		return err
	}
	_, _, err := t.vector(3, 8, "schema.features")
	return err
}

// recordBatch checks a RecordBatch table.
func recordBatch(t table) error {
	for _, v := range []struct {
		k    int
		size uint64
		what string
	}{{1, fieldNodeBytes, "nodes"}, {2, bufferBytes, "buffers"}, {4, variadicCountBytes, "variadicBufferCounts"}} {
		if _, _, err := t.vector(v.k, v.size, "record batch "+v.what); err != nil {
			return err
		}
	}
	_, _, err := t.child(3, "record batch compression")
	return err
}

// root checks the root offset of a flatbuffer and returns its table.
func (f *fb) root(what string) (table, error) {
	p, err := f.indirect(0, what)
	if err != nil {
		return table{}, err
	}
	return f.table(p, what, 0)
}

// CheckMessage checks the flatbuffer of one IPC message (without its
// length prefix) and returns its body length.
func CheckMessage(meta []byte) (bodyLen int64, err error) {
	f := &fb{b: meta}
	m, err := f.root("message")
	if err != nil {
		return 0, err
	}
	kind, err := m.u8(1)
	if err != nil {
		return 0, err
	}
	h, ok, err := m.child(2, "message header")
	if err != nil {
		return 0, err
	}
	if ok {
		switch kind {
		case headerSchema:
			err = schema(h)
		case headerRecordBatch:
			err = recordBatch(h)
		case headerDictionary:
			var d table
			if d, ok, err = h.child(1, "dictionary batch data"); err == nil && ok {
				err = recordBatch(d)
			}
		}
		if err != nil {
			return 0, err
		}
	}
	if err := m.keyValues(4); err != nil {
		return 0, err
	}
	if bodyLen, err = m.i64(3); err == nil && bodyLen < 0 {
		err = errorf("message body length %d", bodyLen)
	}
	return bodyLen, err
}

// Block is where one message of an IPC file is.
type Block struct {
	Offset  int64
	MetaLen int32
	BodyLen int64
}

// File is an IPC file whose footer passed CheckFile.
type File struct {
	r       io.ReaderAt
	size    int64
	Batches []Block // the record batch blocks, in order
}

// magic ends (and starts) an IPC file.
const magic = "ARROW1"

// CheckFile checks the footer of the IPC file of size bytes in r: its
// schema, and that every dictionary and record batch block lies inside
// the file and has well-formed message metadata. Checking a record
// batch's metadata costs one small read; the dictionaries are checked
// here because arrow-go reads them when it opens the file.
func CheckFile(r io.ReaderAt, size int64) (*File, error) {
	const trailer = 4 + len(magic)
	if size < int64(len(magic)+2+trailer) {
		return nil, errorf("file of %d bytes is too small", size)
	}
	tail := make([]byte, trailer)
	if _, err := r.ReadAt(tail, size-int64(trailer)); err != nil {
		return nil, fmt.Errorf("read footer: %w", err)
	}
	if string(tail[4:]) != magic {
		return nil, errorf("no %s magic at the end", magic)
	}
	n := int64(binary.LittleEndian.Uint32(tail))
	if n <= 0 || n > size-int64(trailer)-int64(len(magic)) {
		return nil, errorf("footer of %d bytes in a file of %d", n, size)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, size-int64(trailer)-n); err != nil {
		return nil, fmt.Errorf("read footer: %w", err)
	}
	f := &fb{b: buf}
	footer, err := f.root("footer")
	if err != nil {
		return nil, err
	}
	s, ok, err := footer.child(1, "footer schema")
	if err != nil {
		return nil, err
	}
	if ok {
		if err := schema(s); err != nil {
			return nil, err
		}
	}
	if err := footer.keyValues(4); err != nil {
		return nil, err
	}
	file := &File{r: r, size: size}
	blocks := func(k int, what string) ([]Block, error) {
		start, n, err := footer.vector(k, blockBytes, what)
		if err != nil {
			return nil, err
		}
		out := make([]Block, n) // n·24 bytes of the footer back it
		for i := range out {
			p := start + blockBytes*uint64(i)
			out[i] = Block{Offset: int64(binary.LittleEndian.Uint64(buf[p:])), MetaLen: int32(f.u32(p + 8)),
				BodyLen: int64(binary.LittleEndian.Uint64(buf[p+16:]))}
			if b := out[i]; b.Offset < 0 || b.MetaLen < 8 || b.BodyLen < 0 || b.Offset > size || int64(b.MetaLen) > size-b.Offset || b.BodyLen > size-b.Offset-int64(b.MetaLen) {
				return nil, errorf("%s block %d at %d (metadata %d, body %d bytes) outside the file of %d bytes", what, i, b.Offset, b.MetaLen, b.BodyLen, size)
			}
		}
		return out, nil
	}
	dicts, err := blocks(2, "dictionary")
	if err != nil {
		return nil, err
	}
	for i, b := range dicts {
		if err := file.checkBlock(b); err != nil {
			return nil, fmt.Errorf("dictionary %d: %w", i, err)
		}
	}
	if file.Batches, err = blocks(3, "record batch"); err != nil {
		return nil, err
	}
	return file, nil
}

// CheckBatch checks the metadata of record batch i.
func (f *File) CheckBatch(i int) error {
	if i < 0 || i >= len(f.Batches) {
		return errorf("record batch %d of %d", i, len(f.Batches))
	}
	return f.checkBlock(f.Batches[i])
}

func (f *File) checkBlock(b Block) error {
	meta := make([]byte, b.MetaLen) // inside the file (CheckFile)
	if _, err := f.r.ReadAt(meta, b.Offset); err != nil {
		return fmt.Errorf("read message metadata: %w", err)
	}
	prefix := 4
	if binary.LittleEndian.Uint32(meta) == 0xFFFFFFFF {
		prefix = 8
	}
	body, err := CheckMessage(meta[prefix:])
	if err != nil {
		return err
	}
	if body != b.BodyLen {
		return errorf("message body of %d bytes in a block of %d", body, b.BodyLen)
	}
	return nil
}

// CheckMessageBody checks a record batch (or dictionary batch) message,
// already checked by CheckMessage, against the body that came with it
// (a Flight data_body): every buffer lies inside body, and a compressed
// buffer declares at most maxDecompressed bytes uncompressed (the decoder
// allocates what it declares). Other messages pass.
func CheckMessageBody(meta, body []byte, maxDecompressed int64) error {
	f := &fb{b: meta}
	m, err := f.root("message")
	if err != nil {
		return err
	}
	kind, err := m.u8(1)
	if err != nil {
		return err
	}
	rb, ok, err := m.child(2, "message header")
	if err != nil || !ok {
		return err
	}
	switch kind {
	case headerRecordBatch:
	case headerDictionary:
		if rb, ok, err = rb.child(1, "dictionary batch data"); err != nil || !ok {
			return err
		}
	default:
		return nil
	}
	start, n, err := rb.vector(2, bufferBytes, "record batch buffers")
	if err != nil {
		return err
	}
	_, compressed, err := rb.child(3, "record batch compression")
	if err != nil {
		return err
	}
	for k := 0; k < n; k++ {
		at := start + uint64(k)*bufferBytes
		off := int64(binary.LittleEndian.Uint64(f.b[at:]))
		length := int64(binary.LittleEndian.Uint64(f.b[at+8:]))
		if off < 0 || length < 0 || off > int64(len(body)) || length > int64(len(body))-off {
			return errorf("record batch buffer %d at [%d, +%d) outside the %d-byte body", k, off, length, len(body))
		}
		if compressed && length >= 8 {
			if raw := int64(binary.LittleEndian.Uint64(body[off:])); raw > maxDecompressed {
				return errorf("compressed buffer %d declares %d bytes uncompressed (limit %d)", k, raw, maxDecompressed)
			}
		}
	}
	return nil
}
