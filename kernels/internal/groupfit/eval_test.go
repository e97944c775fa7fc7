package groupfit

import (
	"math/rand/v2"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
)

func normal(n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, seed))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// Eval's error is the stored error of the shared pack and dequantize
// kernels, and its sums are those of the codes they store.
func TestEvalMatchesKernels(t *testing.T) {
	x := normal(1000, 1)
	x[3], x[500] = 9, -7 // clipped
	for _, bits := range []int{2, 4, 8} {
		for _, p := range [][2]float32{{0.37, -1.1}, {1e-3, 0.25}, {0.05, -3}} {
			sh, mh := fp.Float32ToHalf(p[0]), fp.Float32ToHalf(p[1])
			var st Stats
			Eval(&st, x, sh, mh, int64(kernels.QMax(bits)))
			codes := make([]byte, kernels.PackedLen(int64(len(x)), bits))
			kernels.PackGroups(codes, x, []uint16{sh}, []uint16{mh}, bits, len(x))
			rec := make([]float32, len(x))
			kernels.DequantizeGroups(rec, codes, []uint16{sh}, []uint16{mh}, bits, len(x))
			var e, r, rq, q, qq float64
			for i, v := range x {
				c := float64(kernels.Code(codes, i, bits))
				d := float64(v - rec[i])
				e += d * d
				r += d
				rq += d * c
				q += c
				qq += c * c
			}
			if !near(st.Err, e) || !near(st.R, r) || !near(st.RQ, rq) || st.Q != q || st.QQ != qq || st.N != float64(len(x)) {
				t.Errorf("bits %d params %v: Eval %+v, kernels err %v r %v rq %v q %v qq %v", bits, p, st, e, r, rq, q, qq)
			}
		}
	}
}

func near(a, b float64) bool { d := a - b; return d*d <= 1e-10*(1+b*b) }

// The least-squares step minimizes the error of fixed codes, and Bound
// is that error: exact for the refit of an evaluation's own codes.
func TestStepAndBound(t *testing.T) {
	x := normal(256, 2)
	var st Stats
	Eval(&st, x, fp.Float32ToHalf(0.9), fp.Float32ToHalf(-1.6), 3)
	if b := Bound(&st, st.ScaleH, st.MinH); !near(b, st.Err) {
		t.Fatalf("Bound at the evaluated params %v, error %v", b, st.Err)
	}
	ns, nm, ok := Step(&st, 1)
	if !ok {
		t.Fatal("no step")
	}
	b := Bound(&st, ns, nm)
	if b >= st.Err {
		t.Fatalf("refit bound %v not below %v", b, st.Err)
	}
	var next Stats
	Eval(&next, x, ns, nm, 3)
	if next.Err > b*(1+1e-6) {
		t.Fatalf("re-coded error %v above the bound %v", next.Err, b)
	}
	// A Search keeps the best and Accept only takes a winning bound.
	s := NewSearch(x, nil, 2)
	var a Stats
	s.Try(&a, st.ScaleH, st.MinH)
	s.RefineFrom(&a, 3, 2, true)
	if s.Best.Err > next.Err {
		t.Fatalf("search ended at %v, worse than one refit %v", s.Best.Err, next.Err)
	}
}

func BenchmarkEval(b *testing.B) {
	x := normal(1<<16, 3)
	s, m := fp.Float32ToHalf(0.6), fp.Float32ToHalf(-2.5)
	b.SetBytes(4 << 16)
	var st Stats
	for b.Loop() {
		for g := 0; g < len(x); g += 128 {
			Eval(&st, x[g:g+128], s, m, 15)
		}
	}
}
