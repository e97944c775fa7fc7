package groupfit

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
)

// stepInput is one lane's Stats: the sums of a real evaluation (groups of
// every adversarial kind, weighted or not) or synthetic sums at the edges
// of Step's tests (degenerate codes, zero weights, params at the fp16
// range and rounding boundaries).
func stepInput(rng *rand.Rand, weighted bool) Stats {
	if rng.IntN(2) == 0 {
		n := 2 * (1 + rng.IntN(64))
		s, m := float32(math.Exp(rng.NormFloat64()*3)), float32(rng.NormFloat64()*4)
		x := adversarial(rng, n, s, m, rng.IntN(8))
		var st Stats
		sh, mh := fp.Float32ToHalf(s), fp.Float32ToHalf(m)
		if weighted {
			w := make([]float32, n)
			for i := range w {
				w[i] = []float32{0, 1, float32(rng.ExpFloat64()), 1e-30}[rng.IntN(4)]
			}
			EvalWeighted(&st, x, w, sh, mh, int64(1)<<(2*(1+rng.IntN(4)))-1)
		} else {
			Eval(&st, x, sh, mh, int64(1)<<(2*(1+rng.IntN(4)))-1)
		}
		return st
	}
	pick := func(vals ...float64) float64 { return vals[rng.IntN(len(vals))] }
	half := fp.HalfToFloat32(uint16(rng.IntN(0x7c00)) | uint16(rng.IntN(2))<<15)
	st := Stats{
		N:        pick(0, 1, 32, 128, rng.ExpFloat64()*100, -0.0),
		Q:        pick(0, 3, 64, rng.Float64()*400),
		R:        pick(0, 1e-3, -2.5, rng.NormFloat64()*1e3),
		RQ:       pick(0, 1, rng.NormFloat64()*1e4),
		Scale:    float32(pick(float64(half), 65504, 1e-7, 6.1e-5, 0.5)),
		Min:      float32(pick(float64(half), -65504, 65504, 0, -1e-8)),
		Weighted: weighted,
	}
	st.QQ = pick(st.Q*st.Q/math.Max(st.N, 1), st.Q*st.Q/math.Max(st.N, 1)*(1+1e-10), rng.Float64()*1e5, 0)
	return st
}

// stepLanes gives Step's params and verdict on every lane.
func TestStepLanesIsStep(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	t.Logf("vector step: %v", stepVector)
	var b Batch
	for it := range 50_000 {
		weighted := it%2 == 1
		b.Reset(16, 4, weighted)
		b.n = 1 + rng.IntN(Lanes)
		var sts [Lanes]Stats
		var base [Lanes]*Stats
		var om [Lanes]float64
		mask := Mask(rng.IntN(256)) & b.All()
		for k := range b.n {
			sts[k] = stepInput(rng, weighted)
			base[k] = &sts[k]
			om[k] = []float64{1, 2, 3}[rng.IntN(3)]
		}
		var sh, mh [Lanes]uint16
		ok := b.stepLanes(&base, &om, mask, &sh, &mh)
		for k := range b.n {
			if mask&(1<<k) == 0 {
				if ok&(1<<k) != 0 {
					t.Fatalf("lane %d outside the mask reported ok", k)
				}
				continue
			}
			ws, wm, wok := Step(base[k], om[k])
			if gok := ok&(1<<k) != 0; gok != wok || (wok && (sh[k] != ws || mh[k] != wm)) {
				t.Fatalf("lane %d %+v omega %g: (%#04x, %#04x, %v), want Step's (%#04x, %#04x, %v)", k, sts[k], om[k], sh[k], mh[k], gok, ws, wm, wok)
			}
		}
	}
}
