package flightsrv

import (
	"encoding/binary"
	"fmt"
)

// checkIPCHeader bounds-checks the flatbuffer of an Arrow IPC Message (a
// FlightData data_header) before arrow-go decodes it. arrow-go trusts the
// lengths a flatbuffer declares: a 200-byte schema message that declares
// 2^31 fields makes it allocate tens of GB and the runtime kills the
// process (found by FuzzIngest), and deeply nested children overflow the
// stack. Both are fatal errors, not panics, so they must be refused before
// decoding: every offset and vector must lie inside the buffer, nesting is
// limited, and a compressed batch may not declare buffers larger than the
// body could plausibly hold.
//
// The layout is Arrow's Message.fbs / Schema.fbs (field i of a table is
// vtable slot i).
func checkIPCHeader(header, body []byte) error {
	c := &fbCheck{b: header}
	root, err := c.root()
	if err != nil {
		return err
	}
	kind, err := c.u8Field(root, 1) // header_type
	if err != nil {
		return err
	}
	hdr, hasHdr, err := c.tableField(root, 2) // header
	if err != nil {
		return err
	}
	if err := c.keyValues(root, 4); err != nil { // custom_metadata
		return err
	}
	if !hasHdr {
		return nil
	}
	switch kind {
	case 1: // Schema
		return c.schema(hdr)
	case 2: // DictionaryBatch: id, data (RecordBatch), isDelta
		rb, ok, err := c.tableField(hdr, 1)
		if err != nil || !ok {
			return err
		}
		return c.recordBatch(rb, body)
	case 3: // RecordBatch
		return c.recordBatch(hdr, body)
	}
	return fmt.Errorf("unsupported IPC message type %d (tensors are not Arrow record batches)", kind)
}

// Limits of what a DoPut message may declare.
const (
	maxIPCFields        = 4096 // fields and children in one schema
	maxIPCDepth         = 32   // nesting of child fields
	maxDecompressedSize = 1 << 30
)

type fbCheck struct {
	b      []byte
	fields int
}

func (c *fbCheck) u32(at int) (uint32, error) {
	if at < 0 || at+4 > len(c.b) {
		return 0, fmt.Errorf("malformed IPC header: offset %d outside its %d bytes", at, len(c.b))
	}
	return binary.LittleEndian.Uint32(c.b[at:]), nil
}

func (c *fbCheck) u16(at int) (uint16, error) {
	if at < 0 || at+2 > len(c.b) {
		return 0, fmt.Errorf("malformed IPC header: offset %d outside its %d bytes", at, len(c.b))
	}
	return binary.LittleEndian.Uint16(c.b[at:]), nil
}

func (c *fbCheck) root() (int, error) {
	off, err := c.u32(0)
	if err != nil {
		return 0, err
	}
	return c.table(int(off))
}

// table checks a table at t: its vtable lies inside the buffer.
func (c *fbCheck) table(t int) (int, error) {
	so, err := c.u32(t)
	if err != nil {
		return 0, err
	}
	vt := t - int(int32(so))
	size, err := c.u16(vt)
	if err != nil {
		return 0, err
	}
	if size < 4 || size%2 != 0 || vt+int(size) > len(c.b) {
		return 0, fmt.Errorf("malformed IPC header: vtable of %d bytes at %d", size, vt)
	}
	return t, nil
}

// field returns the absolute position of field i of table t (0 if absent).
func (c *fbCheck) field(t, i int) (int, error) {
	so, _ := c.u32(t)
	vt := t - int(int32(so))
	size, _ := c.u16(vt)
	slot := 4 + 2*i
	if slot+2 > int(size) {
		return 0, nil
	}
	off, err := c.u16(vt + slot)
	if err != nil || off == 0 {
		return 0, err
	}
	return t + int(off), nil
}

func (c *fbCheck) u8Field(t, i int) (byte, error) {
	p, err := c.field(t, i)
	if err != nil || p == 0 {
		return 0, err
	}
	if p >= len(c.b) {
		return 0, fmt.Errorf("malformed IPC header: field at %d outside its %d bytes", p, len(c.b))
	}
	return c.b[p], nil
}

// ref follows the uoffset stored at p.
func (c *fbCheck) ref(p int) (int, error) {
	off, err := c.u32(p)
	if err != nil {
		return 0, err
	}
	return p + int(off), nil
}

func (c *fbCheck) tableField(t, i int) (int, bool, error) {
	p, err := c.field(t, i)
	if err != nil || p == 0 {
		return 0, false, err
	}
	target, err := c.ref(p)
	if err != nil {
		return 0, false, err
	}
	tt, err := c.table(target)
	return tt, err == nil, err
}

// vector returns the start of the elements and the length of the vector
// in field i of t, checking that length·elem bytes fit.
func (c *fbCheck) vector(t, i, elem int) (start, n int, err error) {
	p, err := c.field(t, i)
	if err != nil || p == 0 {
		return 0, 0, err
	}
	v, err := c.ref(p)
	if err != nil {
		return 0, 0, err
	}
	l, err := c.u32(v)
	if err != nil {
		return 0, 0, err
	}
	if int64(l)*int64(elem) > int64(len(c.b)-v-4) {
		return 0, 0, fmt.Errorf("malformed IPC header: a vector declares %d elements in %d bytes", l, len(c.b)-v-4)
	}
	return v + 4, int(l), nil
}

func (c *fbCheck) stringField(t, i int) error {
	start, _, err := c.vector(t, i, 1) // a string is a byte vector
	_ = start
	return err
}

func (c *fbCheck) keyValues(t, i int) error {
	start, n, err := c.vector(t, i, 4)
	if err != nil {
		return err
	}
	for k := 0; k < n; k++ {
		kv, err := c.ref(start + 4*k)
		if err == nil {
			kv, err = c.table(kv)
		}
		if err == nil {
			err = c.stringField(kv, 0)
		}
		if err == nil {
			err = c.stringField(kv, 1)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *fbCheck) schema(s int) error {
	if err := c.keyValues(s, 2); err != nil {
		return err
	}
	if _, _, err := c.vector(s, 3, 8); err != nil { // features
		return err
	}
	return c.fieldList(s, 1, 0)
}

// fieldList checks the Field vector in slot i of t, recursively.
func (c *fbCheck) fieldList(t, i, depth int) error {
	if depth > maxIPCDepth {
		return fmt.Errorf("IPC schema nests fields deeper than %d levels", maxIPCDepth)
	}
	start, n, err := c.vector(t, i, 4)
	if err != nil {
		return err
	}
	c.fields += n
	if c.fields > maxIPCFields {
		return fmt.Errorf("IPC schema declares more than %d fields", maxIPCFields)
	}
	for k := 0; k < n; k++ {
		f, err := c.ref(start + 4*k)
		if err == nil {
			f, err = c.table(f)
		}
		if err != nil {
			return err
		}
		if err := c.stringField(f, 0); err != nil { // name
			return err
		}
		if _, _, err := c.tableField(f, 3); err != nil { // type
			return err
		}
		if _, _, err := c.tableField(f, 4); err != nil { // dictionary
			return err
		}
		if err := c.keyValues(f, 6); err != nil {
			return err
		}
		if err := c.fieldList(f, 5, depth+1); err != nil { // children
			return err
		}
	}
	return nil
}

// recordBatch checks nodes, buffers and, for compressed bodies, the
// uncompressed length each buffer declares (the decoder allocates it).
func (c *fbCheck) recordBatch(rb int, body []byte) error {
	if _, _, err := c.vector(rb, 1, 16); err != nil { // nodes: FieldNode structs
		return err
	}
	start, n, err := c.vector(rb, 2, 16) // buffers: Buffer structs {offset, length}
	if err != nil {
		return err
	}
	if _, _, err := c.vector(rb, 4, 8); err != nil { // variadicBufferCounts
		return err
	}
	_, compressed, err := c.tableField(rb, 3)
	if err != nil {
		return err
	}
	for k := 0; k < n; k++ {
		at := start + 16*k
		off := int64(binary.LittleEndian.Uint64(c.b[at:]))
		length := int64(binary.LittleEndian.Uint64(c.b[at+8:]))
		if off < 0 || length < 0 || off > int64(len(body)) || length > int64(len(body))-off {
			return fmt.Errorf("IPC record batch: buffer %d at [%d, +%d) outside the %d-byte body", k, off, length, len(body))
		}
		if compressed && length >= 8 {
			if raw := int64(binary.LittleEndian.Uint64(body[off:])); raw > maxDecompressedSize {
				return fmt.Errorf("IPC record batch: compressed buffer %d declares %d bytes uncompressed (limit %d)", k, raw, maxDecompressedSize)
			}
		}
	}
	return nil
}
