package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// File-level constants of GGUF v3.
const (
	Magic            = "GGUF"
	Version          = 3
	DefaultAlignment = 32
	KeyAlignment     = "general.alignment"
)

// GGUF metadata value types.
const (
	valUint8   uint32 = 0
	valInt8    uint32 = 1
	valUint16  uint32 = 2
	valInt16   uint32 = 3
	valUint32  uint32 = 4
	valInt32   uint32 = 5
	valFloat32 uint32 = 6
	valBool    uint32 = 7
	valString  uint32 = 8
	valArray   uint32 = 9
	valUint64  uint32 = 10
	valInt64   uint32 = 11
	valFloat64 uint32 = 12
)

// TensorInfo is one tensor of a GGUF file: its name, dimensions in ggml
// order (NE[0] innermost: a PyTorch [out, in] weight is [in, out]) and type.
type TensorInfo struct {
	Name string
	NE   []uint64
	Type Type
}

// Writer writes a GGUF v3 file in one pass: NewWriter writes the header
// (all tensor sizes are known up front), then Write takes the tensors'
// data in order, padding each to the alignment. It never seeks.
type Writer struct {
	w       io.Writer
	sizes   []uint64 // data bytes per tensor
	names   []string
	cur     int    // tensor being written
	written uint64 // bytes of tensor cur written so far
	total   int64  // bytes written to w
}

// Alignment is the data alignment this writer uses (general.alignment).
const Alignment = DefaultAlignment

// NewWriter writes the header (magic, version, counts, kvs with
// general.alignment = 32 appended, tensor infos, padding) to w.
func NewWriter(w io.Writer, kvs []KV, tensors []TensorInfo) (*Writer, error) {
	seen := map[string]bool{}
	for _, kv := range kvs {
		if kv.Key == "" {
			return nil, errors.New("gguf: empty metadata key")
		}
		if kv.Key == KeyAlignment {
			return nil, fmt.Errorf("gguf: %s is written by the writer (%d)", KeyAlignment, Alignment)
		}
		if seen[kv.Key] {
			return nil, fmt.Errorf("gguf: metadata key %q given twice", kv.Key)
		}
		seen[kv.Key] = true
	}
	kvs = append(kvs[:len(kvs):len(kvs)], KV{KeyAlignment, uint32(Alignment)})
	gw := &Writer{w: w, sizes: make([]uint64, len(tensors)), names: make([]string, len(tensors))}
	var e enc
	e.raw([]byte(Magic))
	e.u32(Version)
	e.u64(uint64(len(tensors)))
	e.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		e.str(kv.Key)
		if err := e.value(kv.Value, true); err != nil {
			return nil, fmt.Errorf("gguf: metadata %q: %w", kv.Key, err)
		}
	}
	names := map[string]bool{}
	var off uint64
	for i, t := range tensors {
		if names[t.Name] {
			return nil, fmt.Errorf("gguf: tensor name %q given twice", t.Name)
		}
		names[t.Name] = true
		size, err := DataBytes(t.Type, t.NE)
		if err != nil {
			return nil, fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		gw.sizes[i], gw.names[i] = size, t.Name
		e.str(t.Name)
		e.u32(uint32(len(t.NE)))
		for _, d := range t.NE {
			e.u64(d)
		}
		e.u32(uint32(t.Type))
		e.u64(off)
		off = alignUp(off+size, Alignment)
	}
	e.pad(Alignment)
	if _, err := w.Write(e.b); err != nil {
		return nil, fmt.Errorf("gguf: write header: %w", err)
	}
	gw.total = int64(len(e.b))
	if err := gw.skipEmpty(); err != nil {
		return nil, err
	}
	return gw, nil
}

// Size is the file's final size in bytes (the header, then every
// tensor's data padded to the alignment).
func (w *Writer) Size() int64 {
	n := w.total
	for i := w.cur; i < len(w.sizes); i++ {
		n += int64(alignUp(w.sizes[i], Alignment))
	}
	return n - int64(w.written)
}

// Current is the index of the tensor whose data Write expects next
// (len(tensors) when all are written).
func (w *Writer) Current() int { return w.cur }

// Remaining is how many bytes of the current tensor are still expected.
func (w *Writer) Remaining() uint64 {
	if w.cur >= len(w.sizes) {
		return 0
	}
	return w.sizes[w.cur] - w.written
}

// Write appends data of the current tensor; p must not run past its end.
// When a tensor is complete, its padding is written and the next begins.
func (w *Writer) Write(p []byte) (int, error) {
	if w.cur >= len(w.sizes) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, fmt.Errorf("gguf: %d bytes written after the last tensor", len(p))
	}
	if uint64(len(p)) > w.Remaining() {
		return 0, fmt.Errorf("gguf: tensor %q: %d bytes written, only %d left of %d", w.names[w.cur], len(p), w.Remaining(), w.sizes[w.cur])
	}
	n, err := w.w.Write(p)
	w.written += uint64(n)
	w.total += int64(n)
	if err != nil {
		return n, fmt.Errorf("gguf: tensor %q: %w", w.names[w.cur], err)
	}
	if w.written == w.sizes[w.cur] {
		if err := w.finishTensor(); err != nil {
			return n, err
		}
	}
	return n, nil
}

var zeros [Alignment]byte

func (w *Writer) finishTensor() error {
	if pad := alignUp(w.sizes[w.cur], Alignment) - w.sizes[w.cur]; pad > 0 {
		if _, err := w.w.Write(zeros[:pad]); err != nil {
			return fmt.Errorf("gguf: tensor %q: %w", w.names[w.cur], err)
		}
		w.total += int64(pad)
	}
	w.cur++
	w.written = 0
	return w.skipEmpty()
}

// skipEmpty finishes tensors of 0 bytes.
func (w *Writer) skipEmpty() error {
	if w.cur < len(w.sizes) && w.sizes[w.cur] == 0 {
		return w.finishTensor()
	}
	return nil
}

// Close checks that every tensor's data was written (it does not close
// the underlying writer).
func (w *Writer) Close() error {
	if w.cur < len(w.sizes) {
		return fmt.Errorf("gguf: tensor %q: %d of %d bytes written", w.names[w.cur], w.written, w.sizes[w.cur])
	}
	return nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// enc builds little-endian GGUF encodings.
type enc struct{ b []byte }

func (e *enc) raw(p []byte) { e.b = append(e.b, p...) }
func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *enc) str(s string) { e.u64(uint64(len(s))); e.b = append(e.b, s...) }
func (e *enc) pad(a int) {
	for len(e.b)%a != 0 {
		e.b = append(e.b, 0)
	}
}

// value writes v's type id (when typed) and its encoding.
func (e *enc) value(v any, typed bool) error {
	t := func(id uint32) {
		if typed {
			e.u32(id)
		}
	}
	switch v := v.(type) {
	case uint8:
		t(valUint8)
		e.u8(v)
	case int8:
		t(valInt8)
		e.u8(uint8(v))
	case uint16:
		t(valUint16)
		e.u16(v)
	case int16:
		t(valInt16)
		e.u16(uint16(v))
	case uint32:
		t(valUint32)
		e.u32(v)
	case int32:
		t(valInt32)
		e.u32(uint32(v))
	case uint64:
		t(valUint64)
		e.u64(v)
	case int64:
		t(valInt64)
		e.u64(uint64(v))
	case float32:
		t(valFloat32)
		e.u32(math.Float32bits(v))
	case float64:
		t(valFloat64)
		e.u64(math.Float64bits(v))
	case bool:
		t(valBool)
		if v {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case string:
		t(valString)
		e.str(v)
	case []uint8:
		return arrayOf(e, valUint8, v, typed)
	case []int8:
		return arrayOf(e, valInt8, v, typed)
	case []uint16:
		return arrayOf(e, valUint16, v, typed)
	case []int16:
		return arrayOf(e, valInt16, v, typed)
	case []uint32:
		return arrayOf(e, valUint32, v, typed)
	case []int32:
		return arrayOf(e, valInt32, v, typed)
	case []uint64:
		return arrayOf(e, valUint64, v, typed)
	case []int64:
		return arrayOf(e, valInt64, v, typed)
	case []float32:
		return arrayOf(e, valFloat32, v, typed)
	case []float64:
		return arrayOf(e, valFloat64, v, typed)
	case []bool:
		return arrayOf(e, valBool, v, typed)
	case []string:
		return arrayOf(e, valString, v, typed)
	default:
		return fmt.Errorf("unsupported value type %T", v)
	}
	return nil
}

func arrayOf[T any](e *enc, elem uint32, vs []T, typed bool) error {
	if typed {
		e.u32(valArray)
	}
	e.u32(elem)
	e.u64(uint64(len(vs)))
	for _, v := range vs {
		if err := e.value(v, false); err != nil {
			return err
		}
	}
	return nil
}
