package kernels

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
)

// adversarialRow returns n values of one of several kinds: Gaussian at
// random scales, fp16 range edges, denormals, signed zeros, constants,
// values on or next to the code-rounding ties of params (s, m).
func adversarialRow(rng *rand.Rand, n int, s, m float32, kind int) []float32 {
	x := make([]float32, n)
	for i := range x {
		switch kind % 7 {
		case 0:
			x[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()*3))
		case 1:
			v := m + (float32(rng.IntN(20)-2)+0.5)*s
			switch rng.IntN(3) {
			case 1:
				v = math.Nextafter32(v, float32(math.Inf(1)))
			case 2:
				v = math.Nextafter32(v, float32(math.Inf(-1)))
			}
			x[i] = v
		case 2:
			x[i] = []float32{65504, -65504, 65503.9, -65503.9, 0, 1, -1}[rng.IntN(7)]
		case 3:
			x[i] = []float32{math.Float32frombits(uint32(rng.IntN(1 << 23))), -math.Float32frombits(uint32(rng.IntN(1 << 23))), 0, float32(math.Copysign(0, -1))}[rng.IntN(4)]
		case 4:
			x[i] = fp.HalfToFloat32(uint16(rng.IntN(1024)) | uint16(rng.IntN(2))<<15)
		case 5:
			x[i] = 0.375
		default:
			x[i] = float32(rng.NormFloat64())
		}
	}
	return x
}

func same32(a, b []float32) bool {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func sameSim(a, b Similarity) bool {
	f := func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) }
	return f(a.Dot, b.Dot) && f(a.AA, b.AA) && f(a.BB, b.BB) && f(a.Err2, b.Err2) && a.N == b.N
}

// groupMinMax is the builtin min and max: signed zeros, NaN, ±Inf, every
// length.
func TestGroupMinMaxMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for it := range 20000 {
		n := 1 + rng.IntN(300)
		x := adversarialRow(rng, n, 0.25, -1, it)
		if it%3 == 0 { // signed zeros only, or around a constant
			for i := range x {
				x[i] = []float32{0, float32(math.Copysign(0, -1))}[rng.IntN(2)]
			}
		}
		if it%50 == 7 {
			x[rng.IntN(n)] = []float32{float32(math.NaN()), -float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}[rng.IntN(4)]
		}
		lo, hi := groupMinMax(x)
		rlo, rhi := groupMinMaxRef(x)
		nan := func(a, b float32) bool { return a != a && b != b }
		if (math.Float32bits(lo) != math.Float32bits(rlo) && !nan(lo, rlo)) || (math.Float32bits(hi) != math.Float32bits(rhi) && !nan(hi, rhi)) {
			t.Fatalf("it %d n %d: (%v %v), reference (%v %v)", it, n, lo, hi, rlo, rhi)
		}
	}
}

func randomParamsFor(rng *rand.Rand, x []float32, bits, gs int) (scales, mins []uint16) {
	ng := NumGroups(int64(len(x)), gs)
	scales, mins = make([]uint16, ng), make([]uint16, ng)
	for g := range scales {
		grp := x[g*gs : min(len(x), (g+1)*gs)]
		lo, hi := groupMinMaxRef(grp)
		switch rng.IntN(5) {
		case 0:
			scales[g], mins[g] = uint16(1+rng.IntN(1023)), fp.Float32ToHalf(lo)
		case 1:
			scales[g], mins[g] = uint16(rng.IntN(0x7c00)), uint16(rng.IntN(0x7c00))|uint16(rng.IntN(2))<<15
		case 2:
			scales[g], mins[g] = 0x7bff, 0xfbff
		default:
			s, m, ok := MinMaxParams(lo, hi, bits)
			if !ok {
				s, m = 0x3c00, 0
			}
			scales[g], mins[g] = s, m
		}
		if rng.IntN(20) == 0 {
			scales[g] = 0
		}
		if mins[g]&0x7c00 == 0x7c00 { // params are finite
			mins[g] = 0
		}
	}
	return scales, mins
}

// PackGroups, DequantizeGroups, SimilarityOf and the fused pass give the
// reference's codes, values and sums bit for bit.
func TestSharedKernelsMatchReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for it := range 4000 {
		bits := []int{2, 4, 8}[it%3]
		gs := 4 * (1 + rng.IntN(80))
		n := rng.IntN(5 * gs)
		if it%10 == 0 {
			n = 1 + rng.IntN(gs) // one ragged group, every length
		}
		if it%13 == 3 { // a fused block of many small groups (past 32 a call)
			gs = 8 * (1 + rng.IntN(4))
			n = rng.IntN(quantChunk + 1)
		}
		if it%17 == 7 { // a row longer than a block
			n = quantChunk + rng.IntN(2*quantChunk)
		}
		x := adversarialRow(rng, n, 0.25, -1, it/3)
		if n == 0 {
			continue
		}
		if it%7 == 1 {
			for i := range x {
				x[i] = adversarialRow(rng, 1, 0.25, -1, rng.IntN(7))[0]
			}
		}
		scales, mins := randomParamsFor(rng, x, bits, gs)
		if it%11 == 5 {
			for g := range scales {
				scales[g], mins[g] = fp.Float32ToHalf(0.25), fp.Float32ToHalf(-1) // the ties of kind 1
			}
		}
		want := make([]byte, PackedLen(int64(n), bits))
		packGroupsRef(want, x, scales, mins, bits, gs)
		got := make([]byte, len(want))
		for i := range got {
			got[i] = 0xa5 // PackGroups writes every byte
		}
		PackGroups(got, x, scales, mins, bits, gs)
		if !bytes.Equal(got, want) {
			for i := range x {
				if c, w := Code(got, i, bits), Code(want, i, bits); c != w {
					g := i / gs
					t.Errorf("element %d = %v: code %d, reference %d (s %v m %v)", i, x[i], c, w, fp.HalfToFloat32(scales[g]), fp.HalfToFloat32(mins[g]))
					break
				}
			}
			t.Fatalf("it %d: INT%d g%d n %d: codes differ (kernels %s)", it, bits, gs, n, SIMD())
		}
		wantRec := make([]float32, n)
		for i := range wantRec {
			g := i / gs
			wantRec[i] = DequantizeValue(Code(want, i, bits), fp.HalfToFloat32(scales[g]), fp.HalfToFloat32(mins[g]))
		}
		rec := make([]float32, n)
		DequantizeGroups(rec, want, scales, mins, bits, gs)
		if !same32(rec, wantRec) {
			t.Fatalf("it %d: INT%d g%d n %d: dequantized values differ", it, bits, gs, n)
		}
		if got, want := SimilarityOf(x, rec), similarityRef(x, wantRec); !sameSim(got, want) {
			t.Fatalf("it %d: similarity %+v, reference %+v", it, got, want)
		}
		// The fused pass: the same codes and values.
		fused := make([]byte, len(want))
		frec := make([]float32, n)
		for i := range frec {
			frec[i] = float32(math.NaN())
		}
		quantizeGroups(fused, x, scales, mins, bits, gs, frec)
		if !bytes.Equal(fused, want) || !same32(frec, wantRec) {
			t.Fatalf("it %d: INT%d g%d n %d: fused pass differs", it, bits, gs, n)
		}
	}
}

// weightedSimilarityRef is WeightedSimilarityOf in Go only.
func weightedSimilarityRef(a, b, w []float32) Similarity {
	var l wsimLanes
	n4 := len(a) &^ 3
	wsimGo(&l, a[:n4], b[:n4], w[:n4])
	for i := n4; i < len(a); i++ {
		l.add(0, a[i], b[i], w[i])
	}
	return l.similarity(len(a))
}

// The vector weighted similarity equals the Go lanes bit for bit: every
// length (ragged tails), adversarial values, weights of every kind.
func TestWeightedSimilarityMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for it := range 3000 {
		n := rng.IntN(300)
		if it%50 == 0 {
			n = 4096 + rng.IntN(8)
		}
		a := adversarialRow(rng, n, 0.25, -1, it)
		b := adversarialRow(rng, n, 0.25, -1, it/7)
		w := adversarialRow(rng, n, 0.5, 0, it/3)
		for i := range w {
			switch it % 5 {
			case 0:
				w[i] = float32(math.Abs(float64(w[i])))
			case 1:
				w[i] = float32(rng.ExpFloat64())
			}
		}
		if it%13 == 7 && n > 0 {
			a[rng.IntN(n)] = float32(math.NaN())
			b[rng.IntN(n)] = float32(math.Inf(1 - 2*rng.IntN(2)))
		}
		same := func(got, want Similarity) bool {
			return sameSim(got, want) || (math.IsNaN(got.Err2) && math.IsNaN(want.Err2) && got.N == want.N)
		}
		got, want := WeightedSimilarityOf(a, b, w), weightedSimilarityRef(a, b, w)
		if !same(got, want) {
			t.Fatalf("it %d n %d (kernels %s): %+v, Go %+v", it, n, SIMD(), got, want)
		}
		// Both in one pass: each bit for bit its own.
		plain, weighted := SimilaritiesOf(a, b, w)
		if wantPlain := similarityRef(a, b); !same(plain, wantPlain) || !same(weighted, want) {
			t.Fatalf("it %d n %d (kernels %s): SimilaritiesOf %+v %+v, Go %+v %+v", it, n, SIMD(), plain, weighted, wantPlain, want)
		}
	}
	// Known values: weights 1 give SimilarityOf's sums and Dot exactly.
	a, b, w := []float32{1, 2, 3, 4, 5}, []float32{1, 1, 1, 1, 1}, []float32{1, 1, 1, 1, 1}
	if s := WeightedSimilarityOf(a, b, w); s.Dot != 15 || s.AA != 55 || s.BB != 5 || s.Err2 != 30 {
		t.Fatalf("known vector: %+v", s)
	}
}

// AbsMaxInto equals the Go fold element for element: NaN on either side,
// ±Inf, signed zeros, denormals, every tail length.
func TestAbsMaxIntoMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for it := range 2000 {
		n := rng.IntN(70)
		x := adversarialRow(rng, n, 0.25, -1, it)
		r := adversarialRow(rng, n, 0.25, -1, it/7)
		for i := range r {
			r[i] = float32(math.Abs(float64(r[i])))
			if rng.IntN(20) == 0 {
				r[i] = float32(math.NaN())
			}
			if n > 0 && rng.IntN(20) == 0 {
				x[i] = []float32{float32(math.NaN()), float32(math.Inf(-1)), float32(math.Inf(1))}[rng.IntN(3)]
			}
		}
		want := append([]float32(nil), r...)
		for i, v := range x {
			want[i] = max(want[i], math.Float32frombits(math.Float32bits(v)&^(1<<31)))
		}
		AbsMaxInto(r, x)
		for i := range r {
			if math.Float32bits(r[i]) != math.Float32bits(want[i]) && !(math.IsNaN(float64(r[i])) && math.IsNaN(float64(want[i]))) {
				t.Fatalf("it %d n %d element %d (kernels %s): %v, Go %v (x %v)", it, n, i, SIMD(), r[i], want[i], x[i])
			}
		}
	}
}

// MagnitudeMaxInto of 16-bit patterns, decoded, is AbsMaxInto of the
// decoded values for bf16 and fp16 alike (NaN for NaN), at every length
// (the AVX2 steps and the Go tail), and touches nothing past len(x).
func TestMagnitudeMaxIntoIsAbsMaxOfDecoded(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	specials := []uint16{0, 0x8000, 0x0001, 0x8001, 0x7f80, 0xff80, 0x7fc0, 0xffff, 0x7c00, 0xfc00, 0x7e00, 0x03ff, 0x7bff, 0xfbff, 0x7f7f}
	decoders := map[string]func(uint16) float32{
		"bf16": func(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) },
		"fp16": fp.HalfToFloat32,
	}
	for it := range 3000 {
		n := rng.IntN(100)
		x, r := make([]uint16, n+3), make([]uint16, n+3)
		for i := range x {
			x[i] = uint16(rng.Uint32())
			if rng.IntN(4) == 0 {
				x[i] = specials[rng.IntN(len(specials))]
			}
			r[i] = uint16(rng.Uint32()) &^ 0x8000
			if rng.IntN(4) == 0 {
				r[i] = specials[rng.IntN(len(specials))] &^ 0x8000
			}
		}
		got := append([]uint16(nil), r...)
		MagnitudeMaxInto(got[:n], x[:n])
		if got[n] != r[n] || got[n+1] != r[n+1] || got[n+2] != r[n+2] {
			t.Fatalf("it %d n %d: elements past the end changed", it, n)
		}
		for name, dec := range decoders {
			xf, want := make([]float32, n), make([]float32, n)
			for i := range n {
				xf[i], want[i] = dec(x[i]), dec(r[i])
			}
			AbsMaxInto(want, xf)
			for i := range n {
				g := dec(got[i])
				if math.Float32bits(g) != math.Float32bits(want[i]) && !(g != g && want[i] != want[i]) {
					t.Fatalf("it %d n %d element %d (%s, kernels %s): %v, AbsMaxInto of the decoded values %v (x %#04x, r %#04x)", it, n, i, name, SIMD(), g, want[i], x[i], r[i])
				}
			}
		}
	}
}

// SimilarityOfPieces gives SimilarityOf's sums bit for bit whatever the
// piece size (rounded up to a multiple of 4) and length, fills each piece
// once in order, and stops at a fill error.
func TestSimilarityOfPiecesIsSimilarityOf(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for it := range 400 {
		n := rng.IntN(3000)
		a := adversarialRow(rng, n, 0.25, -1, it)
		b := adversarialRow(rng, n, 0.25, -1, it+1)
		piece := []int{1, 3, 4, 5, 17, 64, 1000, n + 9}[it%8]
		want := SimilarityOf(a, b)
		next := 0
		got, err := SimilarityOfPieces(n, piece, func(off int, dst []float32) ([]float32, error) {
			if off != next || (off+len(dst) < n && len(dst)%4 != 0) {
				t.Fatalf("n %d piece %d: fill(%d, %d values), want offset %d and whole pieces of a multiple of 4", n, piece, off, len(dst), next)
			}
			next = off + len(dst)
			copy(dst, b[off:])
			return a[off : off+len(dst)], nil
		})
		if err != nil || next != n {
			t.Fatalf("n %d piece %d: %v, filled %d", n, piece, err, next)
		}
		if got != want && !(math.IsNaN(got.Dot) && math.IsNaN(want.Dot)) {
			t.Fatalf("n %d piece %d (kernels %s): %+v, SimilarityOf %+v", n, piece, SIMD(), got, want)
		}
	}
	stop := errors.New("stop")
	if _, err := SimilarityOfPieces(100, 8, func(off int, dst []float32) ([]float32, error) {
		if off == 16 {
			return nil, stop
		}
		return dst, nil
	}); !errors.Is(err, stop) {
		t.Fatalf("fill error: %v", err)
	}
}

// similarityPair is SimilarityOf of each of its two blocks bit for bit:
// every pair of lengths (either one the shorter, ragged tails), adversarial
// values.
func TestSimilarityPairIsTwoSimilarities(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for it := range 3000 {
		n1, n2 := rng.IntN(300), rng.IntN(300)
		if it%50 == 0 {
			n1, n2 = quantChunk, quantChunk-rng.IntN(9)
		}
		a1, b1 := adversarialRow(rng, n1, 0.25, -1, it), adversarialRow(rng, n1, 0.25, -1, it/7)
		a2, b2 := adversarialRow(rng, n2, 0.25, -1, it/3), adversarialRow(rng, n2, 0.25, -1, it/5)
		s1, s2 := similarityPair(a1, b1, a2, b2)
		if w1, w2 := similarityRef(a1, b1), similarityRef(a2, b2); !sameSim(s1, w1) || !sameSim(s2, w2) {
			t.Fatalf("it %d n %d, %d (kernels %s): %+v %+v, reference %+v %+v", it, n1, n2, SIMD(), s1, s2, w1, w2)
		}
	}
}
