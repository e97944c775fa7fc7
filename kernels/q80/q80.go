// Package q80 is the "q8_0" quantization method: symmetric groups
// with ggml's Q8_0 math, so an INT8 group-32 tensor exports to GGUF Q8_0
// bit for bit. Per group:
//
//	d = fp16(amax / 127)                 (round to nearest even, as ggml's
//	                                      quantize_row_q8_0_ref: amax/127 in
//	                                      float32, then GGML_FP32_TO_FP16)
//	scale = d, min = -128·d              (fp16; exact: 8 more bits of exponent)
//
// The shared packer then stores code c = q + 128 with q in [-127, 127],
// rounding (x + 128·d)/d for the stored d; llama.cpp rounds x·(1/d) with d
// before its fp16 rounding, so about 0.7% of codes are one step apart
// (N(0,1)), at the same total error (q80_test.go). The artifact
// reconstructs
//
//	float32(float32(c)·d) + (−128·d) = q·d   exactly in float32:
//
// d is an fp16 value M·2^e with |M| < 2^11, so c·d = (c·M)·2^e with
// c·M < 2^19 and 128·d = M·2^(e+7) are exact in float32 (24-bit
// significand, exponents far inside its range), their sum (c−128)·M·2^e =
// q·d needs at most 18 bits and is exact too, and ggml's Q8_0 computes
// float32(q)·d, the same exact product. For q = 0 both give +0 (d ≥ 0).
// -128·d is also an exact fp16 value (a power-of-two multiple of d) as
// long as it is within ±65504, which a cap on d keeps (d ≤ 511.75:
// groups with amax above 64992 clip their largest values by < 1%).
//
// q8_0 is an INT8 method. A named method serves every step of the
// bit-width ladder, so at INT2/INT4 it uses minmax's params (a symmetric
// 2-bit grid wastes a level); GGUF export maps those rows like any
// per-group rows. Listed in kernels/methods.
package q80

import (
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
)

// Name is the registered method name.
const Name = "q8_0"

// Method is the q8_0 method.
var Method = kernels.Method{
	Name:        Name,
	Description: "symmetric groups, d = fp16(amax/127), min = -128·d: ggml's Q8_0 at INT8 group 32 (exact GGUF export)",
	GroupParams: GroupParams,
}

// GroupParams is q8_0's kernels.GroupParamsFunc.
func GroupParams(x []float32, bits, groupSize int, scales, mins []uint16, base int64) error {
	if bits != 8 {
		return kernels.MinMaxGroupParams(x, bits, groupSize, scales, mins, base)
	}
	const pos, neg = 127, 128
	const dmax = 511.75 // the largest fp16 d with -128·d within ±65504
	for g := 0; g*groupSize < len(x); g++ {
		start := g * groupSize
		grp := x[start:min(len(x), start+groupSize)]
		var lo, hi float32
		for _, v := range grp {
			lo, hi = min(lo, v), max(hi, v)
		}
		if lo-lo != 0 || hi-hi != 0 {
			for i, v := range grp {
				if v-v != 0 {
					return &kernels.NonFiniteError{Index: base + int64(start+i), Value: v}
				}
			}
		}
		if lo < -65504 || hi > 65504 {
			gmin, gmax := grp[0], grp[0]
			for _, v := range grp {
				gmin, gmax = min(gmin, v), max(gmax, v)
			}
			return &kernels.ParamRangeError{Group: (base + int64(start)) / int64(groupSize), Min: gmin, Max: gmax}
		}
		amax := max(hi, -lo)
		d := fp.Float32ToHalf(amax / pos)
		if fp.HalfToFloat32(d) > dmax {
			d = fp.Float32ToHalf(dmax)
		}
		scales[g], mins[g] = d, 0
		if d != 0 {
			mins[g] = fp.Float32ToHalf(-neg * fp.HalfToFloat32(d))
		}
	}
	return nil
}

// Symmetric reports whether fp16 params (scale, min) are this method's at
// bits: scale ≥ +0 and min = −2^(bits−1)·scale exactly. Such groups are
// ggml's symmetric blocks (Q8_0 at 8 bits, Q4_0 at 4).
func Symmetric(scale, minv uint16, bits int) bool {
	if scale&0x8000 != 0 {
		return false
	}
	return fp.HalfToFloat32(minv) == -float32(int32(1)<<(bits-1))*fp.HalfToFloat32(scale)
}
