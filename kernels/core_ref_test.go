package kernels

import "github.com/arrowquant/arrowquant/internal/fp"

// The scalar loops of core.go as they were before the AVX2 ones: the
// reference simd_test.go compares the kernels with.

var _ = fp.HalfToFloat32

// groupMinMaxRef is the scalar groupMinMax: it returns the min and max of x (len > 0). NaN propagates
// through the builtin min/max, so callers check finiteness of the result.
// Pairs are reduced first so each accumulator sees one dependent op per 8.
func groupMinMaxRef(x []float32) (lo, hi float32) {
	lo0, hi0 := x[0], x[0]
	lo1, hi1 := lo0, hi0
	i := 0
	for ; i+8 <= len(x); i += 8 {
		v := x[i : i+8 : i+8]
		l0, h0 := min(v[0], v[1]), max(v[0], v[1])
		l1, h1 := min(v[2], v[3]), max(v[2], v[3])
		l2, h2 := min(v[4], v[5]), max(v[4], v[5])
		l3, h3 := min(v[6], v[7]), max(v[6], v[7])
		lo0, hi0 = min(lo0, min(l0, l1)), max(hi0, max(h0, h1))
		lo1, hi1 = min(lo1, min(l2, l3)), max(hi1, max(h2, h3))
	}
	for ; i < len(x); i++ {
		lo0, hi0 = min(lo0, x[i]), max(hi0, x[i])
	}
	return min(lo0, lo1), max(hi0, hi1)
}

// packGroupsRef is the scalar PackGroups: it quantizes x with per-group fp16 params and packs the codes
// into dst (PackedLen(len(x), bits) bytes, little-endian bit order: element
// k of a byte sits at bits [k*bits, (k+1)*bits)).
func packGroupsRef(dst []byte, x []float32, scales, mins []uint16, bits, groupSize int) {
	clear(dst[:PackedLen(int64(len(x)), bits)])
	for g := 0; g*groupSize < len(x); g++ {
		start := g * groupSize
		grp := x[start:min(len(x), start+groupSize)]
		s, m := fp.HalfToFloat32(scales[g]), fp.HalfToFloat32(mins[g])
		var inv float32
		if s != 0 {
			inv = 1 / s
		}
		packGroup(dst, start, grp, inv, m, bits)
	}
}

// similarityRef is the scalar SimilarityOf: it computes the sums for a (original) against b (reconstruction).
// It accumulates |a|², |b|² and |a-b|² in float64 over four lanes and
// derives the dot product as (|a|² + |b|² - |a-b|²)/2.
func similarityRef(a, b []float32) Similarity {
	b = b[:len(a)]
	var aa, bb, ee [4]float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		x := a[i : i+4 : i+4]
		y := b[i : i+4 : i+4]
		for k := 0; k < 4; k++ {
			u, v := float64(x[k]), float64(y[k])
			d := u - v
			aa[k] += u * u
			bb[k] += v * v
			ee[k] += d * d
		}
	}
	for ; i < len(a); i++ {
		u, v := float64(a[i]), float64(b[i])
		d := u - v
		aa[0] += u * u
		bb[0] += v * v
		ee[0] += d * d
	}
	s := Similarity{
		AA:   (aa[0] + aa[1]) + (aa[2] + aa[3]),
		BB:   (bb[0] + bb[1]) + (bb[2] + bb[3]),
		Err2: (ee[0] + ee[1]) + (ee[2] + ee[3]),
		N:    int64(len(a)),
	}
	s.Dot = (s.AA + s.BB - s.Err2) / 2
	return s
}
