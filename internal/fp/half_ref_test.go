package fp

import (
	"math"
	"testing"
)

// refHalf is Float32ToHalf as it was, with a branch per rounding.
func refHalf(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	abs := u & 0x7fffffff
	switch {
	case abs > 0x7f800000:
		return sign | 0x7e00
	case abs >= 0x477ff000:
		return sign | 0x7c00
	case abs < 0x38800000:
		if abs < 0x33000000 {
			return sign
		}
		e := abs >> 23
		m := abs&0x7fffff | 0x800000
		shift := 126 - e
		half := uint32(1) << (shift - 1)
		q := m >> shift
		rem := m & (half<<1 - 1)
		if rem > half || (rem == half && q&1 == 1) {
			q++
		}
		return sign | uint16(q)
	default:
		r := abs - 0x38000000
		q := r >> 13
		rem := r & 0x1fff
		if rem > 0x1000 || (rem == 0x1000 && q&1 == 1) {
			q++
		}
		return sign | uint16(q)
	}
}

// Float32ToHalf (branch-free rounding) equals the branching reference on
// every rounding boundary of every exponent and sign, and on a stride of
// all patterns. (Checked once on all 2^32 patterns: equal.)
func TestHalfRoundingMatchesReference(t *testing.T) {
	check := func(u uint32) {
		f := math.Float32frombits(u)
		if got, want := Float32ToHalf(f), refHalf(f); got != want {
			t.Fatalf("Float32ToHalf(%#08x = %v) = %#04x, reference %#04x", u, f, got, want)
		}
	}
	for top := uint32(0); top < 1<<19; top++ { // sign, exponent, 10 mantissa bits
		for _, low := range []uint32{0, 1, 0xfff, 0x1000, 0x1001, 0x1fff} {
			check(top<<13 | low)
		}
	}
	for e := uint32(0x66); e < 0x71; e++ { // subnormal halves: the tie of each shift
		shift := 126 - e
		for _, m := range []uint32{0x800000, 0xffffff, 0x800000 | 1<<(shift-1), 0x800000 | 3<<(shift-1), 0x800000 | 1<<(shift-1) - 1, 0x800000 | 1<<(shift-1) + 1} {
			for _, sign := range []uint32{0, 1 << 31} {
				check(sign | e<<23 | m&0x7fffff)
			}
		}
	}
	for u := uint64(0); u < 1<<32; u += 65521 {
		check(uint32(u))
	}
}
