package gguf

import "fmt"

// Type is a ggml tensor type id, as stored in a GGUF tensor info.
type Type uint32

// The ggml types this package writes (ggml.h numbering).
const (
	F32  Type = 0
	F16  Type = 1
	Q4_0 Type = 2
	Q4_1 Type = 3
	Q8_0 Type = 8
	Q2_K Type = 10
	Q4_K Type = 12
	BF16 Type = 30
)

// QK_K is the super-block size of the K-quants.
const QK_K = 256

var typeInfo = map[Type]struct {
	name          string
	block, nbytes int // elements and bytes per block
}{
	F32:  {"F32", 1, 4},
	F16:  {"F16", 1, 2},
	BF16: {"BF16", 1, 2},
	Q4_0: {"Q4_0", 32, 18},
	Q4_1: {"Q4_1", 32, 20},
	Q8_0: {"Q8_0", 32, 34},
	Q2_K: {"Q2_K", QK_K, 84},
	Q4_K: {"Q4_K", QK_K, 144},
}

// String is the type's ggml name ("Q4_K").
func (t Type) String() string {
	if ti, ok := typeInfo[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("ggml_type(%d)", uint32(t))
}

// MarshalText names the type in JSON.
func (t Type) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText reads a type name written by MarshalText (a report read back).
func (t *Type) UnmarshalText(b []byte) error {
	for id, ti := range typeInfo {
		if ti.name == string(b) {
			*t = id
			return nil
		}
	}
	var n uint32
	if _, err := fmt.Sscanf(string(b), "ggml_type(%d)", &n); err == nil {
		*t = Type(n)
		return nil
	}
	return fmt.Errorf("gguf: unknown type name %q", b)
}

// Known reports whether this package handles the type.
func (t Type) Known() bool { _, ok := typeInfo[t]; return ok }

// BlockSize is the number of elements per block (1 for F32/F16/BF16).
func (t Type) BlockSize() int { return typeInfo[t].block }

// BlockBytes is the number of bytes per block.
func (t Type) BlockBytes() int { return typeInfo[t].nbytes }

// BitsPerWeight is the type's storage cost per element.
func (t Type) BitsPerWeight() float64 {
	ti := typeInfo[t]
	return float64(8*ti.nbytes) / float64(ti.block)
}

// DataBytes is the size of a tensor of type t with dimensions ne (ne[0]
// innermost), or an error when ne[0] is not a multiple of the block size.
func DataBytes(t Type, ne []uint64) (uint64, error) {
	ti, ok := typeInfo[t]
	if !ok {
		return 0, fmt.Errorf("gguf: unsupported tensor type %v", t)
	}
	if len(ne) == 0 {
		return 0, fmt.Errorf("gguf: a tensor needs at least one dimension")
	}
	if ne[0]%uint64(ti.block) != 0 {
		return 0, fmt.Errorf("gguf: %v needs rows (ne[0]) divisible by %d, have %d", t, ti.block, ne[0])
	}
	n := uint64(1)
	for _, d := range ne {
		n *= d
	}
	return n / uint64(ti.block) * uint64(ti.nbytes), nil
}
