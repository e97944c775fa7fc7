package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// File is a parsed GGUF header.
type File struct {
	Version    uint32
	KVs        []KV // in file order; arrays as Go slices
	Tensors    []TensorEntry
	Alignment  uint64
	DataOffset int64 // start of the data section in the file
}

// TensorEntry is a tensor info with its data offset (relative to
// DataOffset).
type TensorEntry struct {
	TensorInfo
	Offset uint64
}

// KV returns the value of key (nil when absent).
func (f *File) KV(key string) any {
	for _, kv := range f.KVs {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

// Limits that keep a hostile header from allocating without bound.
const (
	maxStringLen = 1 << 26
	maxArrayLen  = 1 << 26
	maxCount     = 1 << 24
	maxDims      = 8
)

// ReadHeader parses a GGUF v2/v3 little-endian header from r.
func ReadHeader(r io.Reader) (*File, error) {
	d := &dec{r: bufio.NewReaderSize(r, 1<<16)}
	var magic [4]byte
	d.read(magic[:])
	if d.err == nil && string(magic[:]) != Magic {
		return nil, fmt.Errorf("gguf: bad magic %q", magic[:])
	}
	f := &File{Version: d.u32(), Alignment: DefaultAlignment}
	if d.err == nil && f.Version != 2 && f.Version != 3 {
		return nil, fmt.Errorf("gguf: unsupported version %d", f.Version)
	}
	nt, nkv := d.u64(), d.u64()
	if d.err == nil && (nt > maxCount || nkv > maxCount) {
		return nil, fmt.Errorf("gguf: %d tensors, %d metadata keys: too many", nt, nkv)
	}
	for i := uint64(0); i < nkv && d.err == nil; i++ {
		key := d.str()
		v := d.value(d.u32(), 0)
		f.KVs = append(f.KVs, KV{key, v})
		if key == KeyAlignment {
			a, ok := v.(uint32)
			if !ok || a == 0 || a&(a-1) != 0 {
				return nil, fmt.Errorf("gguf: bad %s %v", KeyAlignment, v)
			}
			f.Alignment = uint64(a)
		}
	}
	for i := uint64(0); i < nt && d.err == nil; i++ {
		var t TensorEntry
		t.Name = d.str()
		nd := d.u32()
		if nd > maxDims {
			return nil, fmt.Errorf("gguf: tensor %q has %d dimensions", t.Name, nd)
		}
		for j := uint32(0); j < nd; j++ {
			t.NE = append(t.NE, d.u64())
		}
		t.Type = Type(d.u32())
		t.Offset = d.u64()
		f.Tensors = append(f.Tensors, t)
	}
	if d.err != nil {
		return nil, fmt.Errorf("gguf: header: %w", d.err)
	}
	f.DataOffset = int64(alignUp(uint64(d.n), f.Alignment))
	return f, nil
}

type dec struct {
	r   *bufio.Reader
	n   int64
	err error
	buf [8]byte
}

func (d *dec) read(p []byte) {
	if d.err != nil {
		return
	}
	n, err := io.ReadFull(d.r, p)
	d.n += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		d.err = err
	}
}

func (d *dec) u8() uint8   { d.read(d.buf[:1]); return d.buf[0] }
func (d *dec) u16() uint16 { d.read(d.buf[:2]); return binary.LittleEndian.Uint16(d.buf[:]) }
func (d *dec) u32() uint32 { d.read(d.buf[:4]); return binary.LittleEndian.Uint32(d.buf[:]) }
func (d *dec) u64() uint64 { d.read(d.buf[:8]); return binary.LittleEndian.Uint64(d.buf[:]) }

func (d *dec) str() string {
	n := d.u64()
	if d.err != nil {
		return ""
	}
	if n > maxStringLen {
		d.err = fmt.Errorf("string of %d bytes", n)
		return ""
	}
	b := make([]byte, n)
	d.read(b)
	return string(b)
}

func (d *dec) value(t uint32, depth int) any {
	if d.err != nil {
		return nil
	}
	switch t {
	case valUint8:
		return d.u8()
	case valInt8:
		return int8(d.u8())
	case valUint16:
		return d.u16()
	case valInt16:
		return int16(d.u16())
	case valUint32:
		return d.u32()
	case valInt32:
		return int32(d.u32())
	case valUint64:
		return d.u64()
	case valInt64:
		return int64(d.u64())
	case valFloat32:
		return math.Float32frombits(d.u32())
	case valFloat64:
		return math.Float64frombits(d.u64())
	case valBool:
		return d.u8() != 0
	case valString:
		return d.str()
	case valArray:
		elem, n := d.u32(), d.u64()
		if d.err != nil {
			return nil
		}
		if n > maxArrayLen || depth > 2 {
			d.err = fmt.Errorf("array of %d elements at depth %d", n, depth)
			return nil
		}
		return d.array(elem, n, depth)
	}
	d.err = fmt.Errorf("unknown value type %d", t)
	return nil
}

func (d *dec) array(elem uint32, n uint64, depth int) any {
	switch elem {
	case valUint8:
		return readSlice[uint8](d, elem, n, depth)
	case valInt8:
		return readSlice[int8](d, elem, n, depth)
	case valUint16:
		return readSlice[uint16](d, elem, n, depth)
	case valInt16:
		return readSlice[int16](d, elem, n, depth)
	case valUint32:
		return readSlice[uint32](d, elem, n, depth)
	case valInt32:
		return readSlice[int32](d, elem, n, depth)
	case valUint64:
		return readSlice[uint64](d, elem, n, depth)
	case valInt64:
		return readSlice[int64](d, elem, n, depth)
	case valFloat32:
		return readSlice[float32](d, elem, n, depth)
	case valFloat64:
		return readSlice[float64](d, elem, n, depth)
	case valBool:
		return readSlice[bool](d, elem, n, depth)
	case valString:
		return readSlice[string](d, elem, n, depth)
	}
	return readSlice[any](d, elem, n, depth)
}

func readSlice[T any](d *dec, elem uint32, n uint64, depth int) []T {
	out := make([]T, 0, min(n, 1<<16))
	for i := uint64(0); i < n && d.err == nil; i++ {
		v, _ := d.value(elem, depth+1).(T)
		out = append(out, v)
	}
	return out
}
