package kernels

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/arrowquant/arrowquant/internal/fp"
)

// This file holds the plain-Go numeric core that the Arrow kernels wrap.
// Every function works on float32 slices; the Arrow layer decodes float16
// and bfloat16 rows into float32 blocks first.

// NonFiniteError reports a NaN or ±Inf input value. Index counts elements
// from the start of the row (kernels) or tensor (pipeline).
type NonFiniteError struct {
	Index int64
	Value float32
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("non-finite value %v at element %d", e.Value, e.Index)
}

// ParamRangeError reports a group whose range cannot be stored in the
// fp16 scale/min of the artifact format.
type ParamRangeError struct {
	Group    int64
	Min, Max float32
}

func (e *ParamRangeError) Error() string {
	return fmt.Sprintf("group %d range [%g, %g] exceeds the fp16 range of group parameters (|x| <= 65504)", e.Group, e.Min, e.Max)
}

// QMax is the largest code of a bit width.
func QMax(bits int) int32 { return int32(1)<<bits - 1 }

// PackedLen is the number of code bytes for n elements at bits.
func PackedLen(n int64, bits int) int64 { return (n*int64(bits) + 7) / 8 }

// NumGroups is the number of groups (the last one may be ragged).
func NumGroups(n int64, groupSize int) int64 { return (n + int64(groupSize) - 1) / int64(groupSize) }

// checkFinite returns the first non-finite element of x, offset by base.
func checkFinite(x []float32, base int64) error {
	for i, v := range x {
		if v-v != 0 {
			return &NonFiniteError{Index: base + int64(i), Value: v}
		}
	}
	return nil
}

// groupMinMax returns the min and max of x (len > 0). NaN propagates
// (as through the builtin min/max), so callers check finiteness of the
// result. AVX2 takes the min and max of order-preserving integer keys of
// the values, which are the builtin min and max (signed zeros included)
// with NaN beyond ±Inf.
func groupMinMax(x []float32) (lo, hi float32) {
	if n := len(x) &^ 7; useAVX2 && n >= 16 {
		l, h := minMaxKeysAVX2(&x[0], n)
		lo, hi = keyToFloat(l), keyToFloat(h)
		for _, v := range x[n:] {
			lo, hi = min(lo, v), max(hi, v)
		}
		if lo != lo || hi != hi {
			nan := float32(math.NaN())
			return nan, nan
		}
		return lo, hi
	}
	return groupMinMaxGo(x)
}

// groupMinMaxGo is the portable groupMinMax. Pairs are reduced first so
// each accumulator sees one dependent op per 8.
func groupMinMaxGo(x []float32) (lo, hi float32) {
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

// GroupMinMax writes the min and max of every group of x.
func GroupMinMax(x []float32, groupSize int, mins, maxs []float32, base int64) error {
	for g := 0; g*groupSize < len(x); g++ {
		grp := x[g*groupSize : min(len(x), (g+1)*groupSize)]
		lo, hi := groupMinMax(grp)
		if lo-lo != 0 || hi-hi != 0 {
			return checkFinite(grp, base+int64(g*groupSize))
		}
		mins[g], maxs[g] = lo, hi
	}
	return nil
}

// HalfRoundDown returns the largest fp16 value <= v (v finite).
func HalfRoundDown(v float32) uint16 {
	h := fp.Float32ToHalf(v)
	if fp.HalfToFloat32(h) > v {
		h = halfStepDown(h)
	}
	return h
}

// HalfRoundUp returns the smallest fp16 value >= v (v finite).
func HalfRoundUp(v float32) uint16 {
	h := fp.Float32ToHalf(v)
	if fp.HalfToFloat32(h) < v {
		h = halfStepUp(h)
	}
	return h
}

func halfStepDown(h uint16) uint16 {
	switch {
	case h == 0 || h == 0x8000:
		return 0x8001
	case h&0x8000 == 0:
		return h - 1
	default:
		return h + 1
	}
}

func halfStepUp(h uint16) uint16 {
	switch {
	case h == 0x8000 || h == 0:
		return 0x0001
	case h&0x8000 == 0:
		return h + 1
	default:
		return h - 1
	}
}

// MinMaxParams turns a group's range into fp16 (scale, min) for bits such
// that every value of [lo, hi] lies in [min, min + qmax*scale]: the min is
// rounded down and the scale up. A constant group gets scale 0 and is
// reconstructed exactly when its value is an fp16 value.
func MinMaxParams(lo, hi float32, bits int) (scale, minv uint16, ok bool) {
	if lo < -65504 || hi > 65504 {
		return 0, 0, false
	}
	minv = HalfRoundDown(lo)
	m := fp.HalfToFloat32(minv)
	if hi == lo && m == lo {
		return 0, minv, true
	}
	s := (hi - m) / float32(QMax(bits))
	scale = HalfRoundUp(s)
	if scale&0x7c00 == 0x7c00 {
		return 0, 0, false
	}
	return scale, minv, true
}

// QuantizeRef is the reference quantizer: one code per element, rounding
// half up, clamped to [0, qmax], with the same float32 arithmetic as the
// packed fast path, which must agree with it code for code.
func QuantizeRef(x []float32, scale, minv float32, bits int) []int32 {
	q := make([]int32, len(x))
	if scale == 0 {
		return q
	}
	inv := 1 / scale
	for i, v := range x {
		t := float32((v-minv)*inv) + 0.5
		c := math.Floor(float64(t))
		q[i] = int32(max(0, min(float64(QMax(bits)), c)))
	}
	return q
}

// DequantizeValue is the one dequantization formula: min + q*scale in
// float32 with two roundings (no fused multiply-add), as numpy computes it.
func DequantizeValue(q int32, scale, minv float32) float32 {
	p := float32(q) * scale
	return float32(p) + minv
}

// PackGroups quantizes x with per-group fp16 params and packs the codes
// into dst (PackedLen(len(x), bits) bytes, little-endian bit order: element
// k of a byte sits at bits [k*bits, (k+1)*bits)).
func PackGroups(dst []byte, x []float32, scales, mins []uint16, bits, groupSize int) {
	if bits != 2 && bits != 4 && bits != 8 {
		panic(fmt.Sprintf("kernels: unsupported bit width %d", bits))
	}
	quantizeGroups(dst, x, scales, mins, bits, groupSize, nil)
}

// quantCode is the fast-path code formula; inv == 0 yields code 0. The
// int64 conversion cannot overflow: group params are fp16 (inv <= 2^24)
// and values with valid params lie within ±65504 of them.
func quantCode(v, inv, m float32, qmax int64) int64 {
	// The float32 conversion forbids a fused multiply-add, so codes are
	// identical on every platform.
	c := int64(float32((v-m)*inv) + 0.5)
	return max(0, min(qmax, c))
}

// packGroup writes codes of grp (starting at element start; start is a
// multiple of 4, so groups begin on byte boundaries for every bit width).
// The main loops pack 32 bits of codes at a time; tails go element-wise.
func packGroup(dst []byte, start int, grp []float32, inv, m float32, bits int) {
	qmax := int64(QMax(bits))
	perWord := 32 / bits
	words := len(grp) / perWord
	out := dst[start*bits/8:]
	for w := 0; w < words; w++ {
		v := grp[w*perWord : (w+1)*perWord : (w+1)*perWord]
		var word uint32
		switch bits {
		case 8:
			word = uint32(quantCode(v[0], inv, m, qmax)) | uint32(quantCode(v[1], inv, m, qmax))<<8 |
				uint32(quantCode(v[2], inv, m, qmax))<<16 | uint32(quantCode(v[3], inv, m, qmax))<<24
		case 4:
			word = uint32(quantCode(v[0], inv, m, qmax)) | uint32(quantCode(v[1], inv, m, qmax))<<4 |
				uint32(quantCode(v[2], inv, m, qmax))<<8 | uint32(quantCode(v[3], inv, m, qmax))<<12 |
				uint32(quantCode(v[4], inv, m, qmax))<<16 | uint32(quantCode(v[5], inv, m, qmax))<<20 |
				uint32(quantCode(v[6], inv, m, qmax))<<24 | uint32(quantCode(v[7], inv, m, qmax))<<28
		case 2:
			for k := 15; k >= 0; k-- {
				word = word<<2 | uint32(quantCode(v[k], inv, m, qmax))
			}
		default:
			panic(fmt.Sprintf("kernels: unsupported bit width %d", bits))
		}
		o := out[4*w : 4*w+4 : 4*w+4]
		o[0], o[1], o[2], o[3] = byte(word), byte(word>>8), byte(word>>16), byte(word>>24)
	}
	for i := words * perWord; i < len(grp); i++ {
		bit := i * bits
		out[bit/8] |= byte(quantCode(grp[i], inv, m, qmax) << (bit % 8))
	}
}

// Code returns element i's code from packed codes.
func Code(codes []byte, i int, bits int) int32 {
	switch bits {
	case 8:
		return int32(codes[i])
	case 4:
		return int32(codes[i/2]>>(4*(i%2))) & 0xf
	default:
		return int32(codes[i/4]>>(2*(i%4))) & 0x3
	}
}

// DequantizeGroups reconstructs n values from packed codes and fp16 params.
func DequantizeGroups(dst []float32, codes []byte, scales, mins []uint16, bits, groupSize int) {
	for g := 0; g*groupSize < len(dst); g++ {
		start := g * groupSize
		dequantizeGroup(dst[start:min(len(dst), start+groupSize)], codes, start, fp.HalfToFloat32(scales[g]), fp.HalfToFloat32(mins[g]), bits)
	}
}

// dequantizeGroup writes DequantizeValue(q, s, m) for the codes of
// elements [start, start+len(out)) of a row's packed codes (start a
// multiple of 4). Super-block sub-blocks use it with m negated: their
// x̂ = float32(q·s) − m equals float32(q·s) + (−m) exactly.
func dequantizeGroup(out []float32, codes []byte, start int, s, m float32, bits int) {
	switch bits {
	case 8:
		in := codes[start : start+len(out)]
		i := 0
		if n := len(out) &^ 7; useAVX2 && n > 0 {
			dequant8AVX2(&out[0], n, &in[0], s, m)
			i = n
		}
		for ; i < len(out); i++ {
			out[i] = DequantizeValue(int32(in[i]), s, m)
		}
	case 4:
		in := codes[start/2:]
		i := 0
		if w := len(out) / 8; useAVX2 && w > 0 {
			_ = in[4*w-1]
			dequant4AVX2(&out[0], w, (*uint32)(unsafe.Pointer(&in[0])), s, m)
			i = 8 * w
		}
		if i == len(out) {
			return
		}
		var lut [16]float32
		for q := range lut {
			lut[q] = DequantizeValue(int32(q), s, m)
		}
		for ; i+2 <= len(out); i += 2 {
			b := in[i/2]
			out[i], out[i+1] = lut[b&0xf], lut[b>>4]
		}
		if i < len(out) {
			out[i] = lut[in[i/2]&0xf]
		}
	case 2:
		in := codes[start/4:]
		i := 0
		if w := len(out) / 16; useAVX2 && w > 0 {
			_ = in[4*w-1]
			dequant2AVX2(&out[0], w, (*uint32)(unsafe.Pointer(&in[0])), s, m)
			i = 16 * w
		}
		if i == len(out) {
			return
		}
		var lut [4]float32
		for q := range lut {
			lut[q] = DequantizeValue(int32(q), s, m)
		}
		for ; i+4 <= len(out); i += 4 {
			b := in[i/4]
			out[i], out[i+1], out[i+2], out[i+3] = lut[b&3], lut[b>>2&3], lut[b>>4&3], lut[b>>6]
		}
		for k := 0; i < len(out); i, k = i+1, k+1 {
			out[i] = lut[in[i/4]>>(2*k)&3]
		}
	default:
		panic(fmt.Sprintf("kernels: unsupported bit width %d", bits))
	}
}

// Similarity holds the sums from which cosine similarity and relative MSE
// follow; sums of several chunks add up to the sums of the whole tensor.
type Similarity struct {
	Dot, AA, BB, Err2 float64
	N                 int64
}

// Add accumulates o into s.
func (s *Similarity) Add(o Similarity) {
	s.Dot += o.Dot
	s.AA += o.AA
	s.BB += o.BB
	s.Err2 += o.Err2
	s.N += o.N
}

// Cosine is dot/(|a||b|); two all-zero vectors are identical (1), one
// all-zero vector against a non-zero one is 0.
func (s Similarity) Cosine() float64 {
	switch {
	case s.AA == 0 && s.BB == 0:
		return 1
	case s.AA == 0 || s.BB == 0:
		return 0
	}
	return min(1, s.Dot/math.Sqrt(s.AA*s.BB))
}

// RelMSE is |a-b|² / |a|² (0 when both are zero).
func (s Similarity) RelMSE() float64 {
	if s.AA == 0 {
		if s.Err2 == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return s.Err2 / s.AA
}

// SimilarityOf computes the sums for a (original) against b (reconstruction).
// It accumulates |a|², |b|² and |a-b|² in float64 over four lanes (element
// i in lane i%4, a tail of fewer than 4 in lane 0) and derives the dot
// product as (|a|² + |b|² - |a-b|²)/2.
func SimilarityOf(a, b []float32) Similarity {
	b = b[:len(a)]
	var l simLanes
	simLanesOf(&l, a, b)
	return l.similarity(len(a))
}

// SimilarityOfPieces is SimilarityOf(a, b) of n values for an a and a b
// made piece by piece, so that neither exists whole: fill(off, dst)
// writes b[off:off+len(dst)] into dst and returns a's same piece, for off
// = 0, piece, 2·piece, ... (piece rounded up to a multiple of 4; the last
// piece may be shorter). Every piece but the last is a multiple of 4
// elements, so each element lands in SimilarityOf's lane and the sums
// are its bit for bit. A fill error stops it.
func SimilarityOfPieces(n, piece int, fill func(off int, dst []float32) (a []float32, err error)) (Similarity, error) {
	piece = max(4, (piece+3)&^3)
	buf := make([]float32, min(piece, n))
	var l simLanes
	for off := 0; off < n; off += piece {
		k := min(piece, n-off)
		a, err := fill(off, buf[:k])
		if err != nil {
			return Similarity{}, err
		}
		simLanesOf(&l, a[:k], buf[:k])
	}
	return l.similarity(n), nil
}

// WeightedSimilarityOf is SimilarityOf with a weight per element on every
// sum (Dot = Σw·a·b exactly, not derived), accumulated in float64 over four
// lanes like SimilarityOf (element i in lane i%4, a tail of fewer than 4 in
// lane 0): four independent chains per sum instead of one. (The fused
// kernels want both similarities: SimilaritiesOf.)
func WeightedSimilarityOf(a, b, w []float32) Similarity {
	_, weighted := SimilaritiesOf(a, b, w)
	return weighted
}

// similarityPair is (SimilarityOf(a1, b1), SimilarityOf(a2, b2)), bit for
// bit: two blocks' sums side by side in one pass, which runs faster than
// two (one block's float64 chains wait on their adds). Each block's
// elements past the shorter one's go on in its own lanes.
func similarityPair(a1, b1, a2, b2 []float32) (Similarity, Similarity) {
	b1, b2 = b1[:len(a1)], b2[:len(a2)]
	var l1, l2 simLanes
	c := min(len(a1), len(a2)) &^ 3
	if useAVX2 && c > 0 {
		sim2AVX2(&a1[0], &b1[0], &a2[0], &b2[0], c, &l1, &l2)
	} else {
		c = 0
	}
	simLanesOf(&l1, a1[c:], b1[c:])
	simLanesOf(&l2, a2[c:], b2[c:])
	return l1.similarity(len(a1)), l2.similarity(len(a2))
}

// SimilaritiesOf is (SimilarityOf(a, b), WeightedSimilarityOf(a, b, w)),
// bit for bit, in one pass over the three.
func SimilaritiesOf(a, b, w []float32) (plain, weighted Similarity) {
	b, w = b[:len(a)], w[:len(a)]
	var l simLanes
	var wl wsimLanes
	n4 := len(a) &^ 3
	if useAVX2 && n4 > 0 {
		simBothAVX2(&a[0], &b[0], &w[0], n4, &l, &wl)
	} else {
		simLanesOf(&l, a[:n4], b[:n4])
		wsimGo(&wl, a[:n4], b[:n4], w[:n4])
	}
	for i := n4; i < len(a); i++ {
		l.add(0, a[i], b[i])
		wl.add(0, a[i], b[i], w[i])
	}
	return l.similarity(len(a)), wl.similarity(len(a))
}

// wsimLanes are WeightedSimilarityOf's four lanes of each sum (the layout
// simBothAVX2 reads and writes).
type wsimLanes struct{ dot, aa, bb, ee [4]float64 }

// add accumulates one element into lane k: each product is (w·x)·y in
// float64, as simBothAVX2 computes it.
func (l *wsimLanes) add(k int, v, r, wt float32) {
	x, y, c := float64(v), float64(r), float64(wt)
	d := x - y
	l.dot[k] += c * x * y
	l.aa[k] += c * x * x
	l.bb[k] += c * y * y
	l.ee[k] += c * d * d
}

// similarity is the Similarity of n elements from the lanes' sums.
func (l *wsimLanes) similarity(n int) Similarity {
	return Similarity{
		Dot:  (l.dot[0] + l.dot[1]) + (l.dot[2] + l.dot[3]),
		AA:   (l.aa[0] + l.aa[1]) + (l.aa[2] + l.aa[3]),
		BB:   (l.bb[0] + l.bb[1]) + (l.bb[2] + l.bb[3]),
		Err2: (l.ee[0] + l.ee[1]) + (l.ee[2] + l.ee[3]),
		N:    int64(n),
	}
}

// wsimGo is simBothAVX2's weighted sums in Go: len(a) a multiple of 4, element i in lane i%4.
func wsimGo(l *wsimLanes, a, b, w []float32) {
	for i := 0; i+4 <= len(a); i += 4 {
		x, y, c := a[i:i+4:i+4], b[i:i+4:i+4], w[i:i+4:i+4]
		l.add(0, x[0], y[0], c[0])
		l.add(1, x[1], y[1], c[1])
		l.add(2, x[2], y[2], c[2])
		l.add(3, x[3], y[3], c[3])
	}
}
