package gguf

import (
	"fmt"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/dq"
	"github.com/arrowquant/arrowquant/kernels/lsq"
	"github.com/arrowquant/arrowquant/kernels/q80"
)

// Encoder re-encodes float32 values as ggml blocks with ArrowQuant's own
// kernels, then the repackers of blocks.go, so the packing has one path:
//
//	Q4_K / Q2_K  the dq method's super-blocks (INT4 / INT2)
//	Q4_1         lsq's fp16 (scale, min) per group of 32 at INT4
//	Q8_0         the q8_0 method at INT8, group 32
//	F16 / BF16   round to nearest even; F32 as is
//
// Its scratch buffers are reused between calls; not safe for concurrent use.
type Encoder struct {
	codes, params []byte
	scales, mins  []uint16
}

// Encode writes the blocks of x (whole blocks of t, starting at a block
// boundary; base is x[0]'s element index in its tensor, for errors) to dst.
func (e *Encoder) Encode(t Type, x []float32, dst []byte, base int64) error {
	n := len(x)
	if n%t.BlockSize() != 0 || len(dst) != n/t.BlockSize()*t.BlockBytes() {
		return fmt.Errorf("gguf: encode %v: %d elements into %d bytes", t, n, len(dst))
	}
	switch t {
	case F32:
		fp.EncodeF32(dst, x)
	case F16:
		for i, v := range x {
			if v > 65504 || v < -65504 || v-v != 0 {
				return fmt.Errorf("gguf: encode F16: element %d is %v, outside the F16 range", base+int64(i), v)
			}
		}
		fp.EncodeHalf(dst, x)
	case BF16:
		fp.EncodeBF16(dst, x)
	case Q4_K, Q2_K:
		bits := 4
		if t == Q2_K {
			bits = 2
		}
		codes, params := grow(&e.codes, int(kernels.PackedLen(int64(n), bits))), grow(&e.params, int(kernels.SuperBlockParamsLen(int64(n), bits)))
		if err := dq.Quantize(x, nil, bits, codes, params, base); err != nil {
			return err
		}
		if t == Q4_K {
			return Q4KFromSuperBlocks(dst, codes, params, n)
		}
		return Q2KFromSuperBlocks(dst, codes, params, n)
	case Q4_1, Q8_0:
		bits, params := 4, lsq.GroupParams
		if t == Q8_0 {
			bits, params = 8, q80.GroupParams
		}
		ng := n / 32
		scales, mins := grow16(&e.scales, ng), grow16(&e.mins, ng)
		if err := params(x, bits, 32, scales, mins, base); err != nil {
			return err
		}
		codes := grow(&e.codes, int(kernels.PackedLen(int64(n), bits)))
		kernels.PackGroups(codes, x, scales, mins, bits, 32)
		if t == Q8_0 {
			return Q80FromGroups(dst, codes, scales, mins, 32, n)
		}
		return Q41FromGroups(dst, codes, scales, mins, 4, 32, n)
	default:
		return fmt.Errorf("gguf: encode: unsupported type %v", t)
	}
	return nil
}

func grow(b *[]byte, n int) []byte {
	if cap(*b) < n {
		*b = make([]byte, n)
	}
	return (*b)[:n]
}

func grow16(b *[]uint16, n int) []uint16 {
	if cap(*b) < n {
		*b = make([]uint16, n)
	}
	return (*b)[:n]
}
