// Package fp converts between float32 and the 16-bit float formats found in
// model files (IEEE half, bfloat16) with exact, table-driven decoding.
package fp

import (
	"math"
)

// halfToF32 decodes every IEEE-754 half bit pattern.
var halfToF32 = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = decodeHalf(uint16(i))
	}
	return &t
}()

// HalfToFloat32 decodes one IEEE half.
func HalfToFloat32(h uint16) float32 { return halfToF32[h] }

// BF16ToFloat32 decodes one bfloat16 (the top half of a float32).
func BF16ToFloat32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

func decodeHalf(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := int(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0: // zero or subnormal: man * 2^-24
		v := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	default:
		return math.Float32frombits(sign | uint32(exp-15+127)<<23 | man<<13)
	}
}

// Float32ToHalf rounds to the nearest IEEE half, ties to even, with subnormals;
// values beyond the half range become ±Inf and NaN stays NaN.
func Float32ToHalf(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	abs := u & 0x7fffffff
	switch {
	case abs > 0x7f800000: // NaN
		return sign | 0x7e00
	case abs >= 0x477ff000: // rounds to >= 65520: overflow
		return sign | 0x7c00
	case abs < 0x38800000: // below the smallest normal half (2^-14): subnormal or zero
		if abs < 0x33000000 { // < 2^-25 rounds to zero
			return sign
		}
		e := abs >> 23
		m := abs&0x7fffff | 0x800000
		shift := 126 - e // m * 2^(e-150) / 2^-24 = m >> (126-e)
		// Round to nearest even without a branch: adding half-1 and the
		// kept lowest bit carries exactly when the rest is above half, or
		// at half with an odd kept part.
		return sign | uint16((m+(uint32(1)<<(shift-1)-1)+(m>>shift)&1)>>shift)
	default:
		r := abs - 0x38000000 // rebias exponent 127 -> 15
		return sign | uint16((r+0xfff+(r>>13)&1)>>13)
	}
}

// Float32ToBF16 rounds to nearest even bfloat16; NaN stays NaN.
func Float32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// DecodeHalf decodes little-endian IEEE halves from src into dst (len(dst) values).
func DecodeHalf(dst []float32, src []byte) {
	if len(dst) == 0 {
		return
	}
	_ = src[2*len(dst)-1]
	for i := range dst {
		dst[i] = halfToF32[uint16(src[2*i])|uint16(src[2*i+1])<<8]
	}
}

// DecodeBF16 decodes little-endian bfloat16 values from src into dst.
func DecodeBF16(dst []float32, src []byte) {
	if len(dst) == 0 {
		return
	}
	_ = src[2*len(dst)-1]
	for i := range dst {
		dst[i] = math.Float32frombits((uint32(src[2*i]) | uint32(src[2*i+1])<<8) << 16)
	}
}

// DecodeF32 decodes little-endian float32 values from src into dst.
func DecodeF32(dst []float32, src []byte) {
	if len(dst) == 0 {
		return
	}
	_ = src[4*len(dst)-1]
	for i := range dst {
		b := src[4*i : 4*i+4]
		dst[i] = math.Float32frombits(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
	}
}

// DecodeF64 decodes little-endian float64 values from src into dst (rounded to float32).
func DecodeF64(dst []float32, src []byte) {
	if len(dst) == 0 {
		return
	}
	_ = src[8*len(dst)-1]
	for i := range dst {
		b := src[8*i : 8*i+8]
		u := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
			uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
		dst[i] = float32(math.Float64frombits(u))
	}
}

// EncodeHalf writes src as little-endian IEEE halves into dst (2*len(src) bytes).
func EncodeHalf(dst []byte, src []float32) {
	if len(src) == 0 {
		return
	}
	_ = dst[2*len(src)-1]
	for i, f := range src {
		h := Float32ToHalf(f)
		dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
	}
}

// EncodeBF16 writes src as little-endian bfloat16 into dst (2*len(src) bytes).
func EncodeBF16(dst []byte, src []float32) {
	if len(src) == 0 {
		return
	}
	_ = dst[2*len(src)-1]
	for i, f := range src {
		h := Float32ToBF16(f)
		dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
	}
}

// EncodeF32 writes src as little-endian float32 into dst (4*len(src) bytes).
func EncodeF32(dst []byte, src []float32) {
	if len(src) == 0 {
		return
	}
	_ = dst[4*len(src)-1]
	for i, f := range src {
		u := math.Float32bits(f)
		dst[4*i], dst[4*i+1], dst[4*i+2], dst[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
}

// DecodeHalves widens float16 bit patterns to float32 (exactly):
// dst[i] = half(src[i]). dst must be at least as long as src.
func DecodeHalves(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	for i, h := range src {
		dst[i] = halfToF32[h]
	}
}

// DecodeBF16s widens bfloat16 bit patterns to float32 (exactly), 8 at a
// time with AVX2 where the CPU has it.
func DecodeBF16s(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	n8 := len(src) &^ 7
	if useAVX2 && n8 > 0 {
		decodeBF16AVX2(&dst[0], &src[0], n8)
	} else {
		n8 = 0
	}
	decodeBF16Go(dst[n8:], src[n8:])
}

func decodeBF16Go(dst []float32, src []uint16) {
	for i, b := range src {
		dst[i] = math.Float32frombits(uint32(b) << 16)
	}
}

// MulPeriodicInto sets dst[k] = x[k] * s[(off+k) mod len(s)] for the
// len(x) values (float32 products; dst may be x): element off+k of a
// row-major matrix of len(s) columns times its column's scale.
func MulPeriodicInto(dst, x []float32, off int64, s []float32) {
	k := int(off % int64(len(s)))
	dst = dst[:len(x)]
	for len(x) > 0 {
		sc := s[k:]
		n := min(len(x), len(sc))
		MulInto(dst[:n], x[:n], sc[:n])
		x, dst, k = x[n:], dst[n:], 0
	}
}

// MulInto sets dst[i] = a[i] * b[i] for the len(a) values (float32
// products, 8 at a time with AVX2 where the CPU has it; dst may be a).
func MulInto(dst, a, b []float32) {
	dst, b = dst[:len(a)], b[:len(a)]
	n8 := len(a) &^ 7
	if useAVX2 && n8 > 0 {
		mulAVX2(&dst[0], &a[0], &b[0], n8)
	} else {
		n8 = 0
	}
	for i := n8; i < len(a); i++ {
		dst[i] = a[i] * b[i]
	}
}
