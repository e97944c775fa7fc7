package hfarch

import "fmt"

// RopePermutation is the row permutation llama.cpp's converter applies to
// Llama q/k projections (LlamaModel.permute): Hugging Face stores each
// head's rotary pairs as two halves (rows [0, d/2) and [d/2, d) of the
// head), llama.cpp's rope kernel wants them interleaved. Within each head
// of HeadDim rows, destination row 2i+j takes source row j·HeadDim/2 + i
// (i < HeadDim/2, j ∈ {0, 1}). Heads is the number of heads of the tensor
// (all heads for q, key/value heads for k).
//
// It permutes whole rows (the outermost PyTorch dimension, GGUF ne[1]);
// for a 1-D bias it permutes elements the same way. Because a row is
// ne[0] contiguous elements and ggml's quantized blocks (Q4_K, Q2_K, Q4_1,
// Q8_0, ...) never cross rows, permuting the rows of an already quantized
// tensor, block bytes and all, is exact: the export may apply it to
// quantized rows or to float rows and gets the same file either way.
// Per-output-row quantization parameters move with their rows; per-input-
// column ones (channel scales along ne[0]) are unaffected.
type RopePermutation struct {
	Heads   int64
	HeadDim int64
}

// Rows is the number of rows permuted (Heads·HeadDim).
func (p RopePermutation) Rows() int64 { return p.Heads * p.HeadDim }

// SourceRow returns the source row written to destination row dst.
func (p RopePermutation) SourceRow(dst int64) int64 {
	half := p.HeadDim / 2
	h, r := dst/p.HeadDim, dst%p.HeadDim
	i, j := r/2, r%2
	return h*p.HeadDim + j*half + i
}

func (p RopePermutation) check(shape []int64) error {
	if p.Heads <= 0 || p.HeadDim <= 0 || p.HeadDim%2 != 0 {
		return fmt.Errorf("rope permutation needs an even head size, got %d heads of %d", p.Heads, p.HeadDim)
	}
	if len(shape) == 0 || shape[0] != p.Rows() {
		return fmt.Errorf("rope permutation of %d heads × %d rows does not fit shape %v", p.Heads, p.HeadDim, shape)
	}
	return nil
}

// Apply writes src's rows to dst in GGUF order. rowBytes is the byte size
// of one row (elements × element size for float types, blocks per row ×
// block size for quantized ones); dst and src must each hold Rows() rows
// and must not overlap.
func (p RopePermutation) Apply(dst, src []byte, rowBytes int) error {
	n := p.Rows()
	if rowBytes <= 0 || int64(len(src)) != n*int64(rowBytes) || len(dst) != len(src) {
		return fmt.Errorf("hfarch: rope permutation of %d rows of %d bytes: got %d source and %d destination bytes",
			n, rowBytes, len(src), len(dst))
	}
	if p.HeadDim%2 != 0 {
		return fmt.Errorf("hfarch: rope permutation needs an even head size, got %d", p.HeadDim)
	}
	rb := int64(rowBytes)
	for d := int64(0); d < n; d++ {
		s := p.SourceRow(d)
		copy(dst[d*rb:(d+1)*rb], src[s*rb:(s+1)*rb])
	}
	return nil
}
