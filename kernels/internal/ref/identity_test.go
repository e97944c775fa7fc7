package ref_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/clip"
	"github.com/arrowquant/arrowquant/kernels/dq"
	"github.com/arrowquant/arrowquant/kernels/internal/groupfit"
	"github.com/arrowquant/arrowquant/kernels/internal/ref"
	"github.com/arrowquant/arrowquant/kernels/lsq"
)

type paramsFunc func(x, w []float32, bits, groupSize int, scales, mins []uint16, base int64) error

var methods = []struct {
	name     string
	got, ref paramsFunc
}{
	{"lsq", func(x, w []float32, bits, gs int, sc, mn []uint16, base int64) error {
		if w == nil {
			return lsq.GroupParams(x, bits, gs, sc, mn, base)
		}
		return lsq.WeightedGroupParams(x, w, bits, gs, sc, mn, base)
	}, ref.LSQ},
	{"clip", func(x, w []float32, bits, gs int, sc, mn []uint16, base int64) error {
		if w == nil {
			return clip.GroupParams(x, bits, gs, sc, mn, base)
		}
		return clip.WeightedGroupParams(x, w, bits, gs, sc, mn, base)
	}, ref.Clip},
}

// same runs a method and its reference on x and fails on any difference
// of params (and so of codes) or of the error returned.
func same(t *testing.T, what string, x, w []float32, bits, gs int) {
	t.Helper()
	ng := kernels.NumGroups(int64(len(x)), gs)
	for _, m := range methods {
		s1, m1 := make([]uint16, ng), make([]uint16, ng)
		s2, m2 := make([]uint16, ng), make([]uint16, ng)
		e1 := m.got(x, w, bits, gs, s1, m1, 0)
		e2 := m.ref(x, w, bits, gs, s2, m2, 0)
		if fmt.Sprintf("%T %v", e1, e1) != fmt.Sprintf("%T %v", e2, e2) {
			t.Fatalf("%s %s INT%d g%d weighted %v: error %v, reference %v", what, m.name, bits, gs, w != nil, e1, e2)
		}
		if e1 != nil {
			continue
		}
		for g := range s1 {
			if s1[g] != s2[g] || m1[g] != m2[g] {
				t.Fatalf("%s %s INT%d g%d weighted %v: group %d params (%#04x, %#04x), reference (%#04x, %#04x) (kernel %s)",
					what, m.name, bits, gs, w != nil, g, s1[g], m1[g], s2[g], m2[g], groupfit.Kernel())
			}
		}
	}
}

// sameDQ runs dq and its reference on x and fails on any difference of
// super-block params, codes or error.
func sameDQ(t *testing.T, what string, x, w []float32, bits int) {
	t.Helper()
	n := int64(len(x))
	c1, c2 := make([]byte, kernels.PackedLen(n, bits)), make([]byte, kernels.PackedLen(n, bits))
	p1, p2 := make([]byte, kernels.SuperBlockParamsLen(n, bits)), make([]byte, kernels.SuperBlockParamsLen(n, bits))
	e1 := dq.Quantize(x, w, bits, c1, p1, 0)
	e2 := ref.DQ(x, w, bits, c2, p2, 0)
	if fmt.Sprintf("%T %v", e1, e1) != fmt.Sprintf("%T %v", e2, e2) {
		t.Fatalf("%s dq INT%d weighted %v: error %v, reference %v", what, bits, w != nil, e1, e2)
	}
	if e1 != nil {
		return
	}
	_, _, bpsb, _ := kernels.SuperBlockLayout(bits)
	for i := range p1 {
		if p1[i] != p2[i] {
			t.Fatalf("%s dq INT%d weighted %v: super-block %d params differ at byte %d", what, bits, w != nil, i/bpsb, i%bpsb)
		}
	}
	for i := range c1 {
		if c1[i] != c2[i] {
			t.Fatalf("%s dq INT%d weighted %v: code byte %d differs", what, bits, w != nil, i)
		}
	}
}

// qualityData are bench/quality's datasets (same generator and seed),
// n samples each and a side×side LLM-like matrix.
func qualityData(n, side int) map[string][]float32 {
	rng := rand.New(rand.NewPCG(20260601, 1))
	gen := func(f func() float64) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(f())
		}
		return x
	}
	d := map[string][]float32{}
	d["N(0,1)"] = gen(rng.NormFloat64)
	d["Laplace"] = gen(func() float64 {
		if v := rng.ExpFloat64(); rng.IntN(2) == 0 {
			return -v
		} else {
			return v
		}
	})
	d["Student-t(5)"] = gen(func() float64 {
		var chi2 float64
		for range 5 {
			z := rng.NormFloat64()
			chi2 += z * z
		}
		return rng.NormFloat64() / math.Sqrt(chi2/5)
	})
	col := make([]float64, side)
	for j := range col {
		col[j] = 1
		if rng.Float64() < 0.005 {
			col[j] = 8 + 12*rng.Float64()
		}
	}
	x := make([]float32, side*side)
	for r := 0; r < side; r++ {
		rs := 0.02 * math.Exp(0.3*rng.NormFloat64())
		row := x[r*side : (r+1)*side]
		for j := range row {
			row[j] = float32(rng.NormFloat64() * rs * col[j])
		}
	}
	d["LLM-like"] = x
	return d
}

// The vectorised lsq, clip and dq choose the reference's params on the
// quality datasets (their generator at 256K samples and 1024² by default,
// QUALITY.md's full sizes with AQ_REF_FULL=1, smaller with -short),
// unweighted and weighted,
// at every bit width and the group sizes of QUALITY.md.
func TestQualityDataIdentical(t *testing.T) {
	n, side := 1<<18, 1024
	switch {
	case os.Getenv("AQ_REF_FULL") != "": // QUALITY.md's sizes: about 2 min
		n, side = 1<<21, 4096
	case testing.Short():
		n, side = 1<<16, 512
	}
	data := qualityData(n, side)
	rng := rand.New(rand.NewPCG(9, 9))
	for name, x := range data {
		w := make([]float32, len(x))
		for i := range w {
			w[i] = float32(rng.ExpFloat64())
		}
		for _, bits := range []int{2, 4, 8} {
			sameDQ(t, name, x, nil, bits)
			sameDQ(t, name+" weighted", x, w, bits)
			for _, gs := range []int{32, 64, 128, 256} {
				same(t, name, x, nil, bits, gs)
				if gs == 128 {
					same(t, name+" weighted", x, w, bits, gs)
				}
			}
		}
	}
}

// Random and adversarial rows: every ragged length, constant groups,
// fp16 range edges, denormals, zeros, ties, zero weights; and the
// errors of NaN, ±Inf and out-of-range values.
func TestAdversarialIdentical(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	iters := 3000
	if testing.Short() {
		iters = 600
	}
	for it := range iters {
		gs := []int{4, 8, 32, 64, 128, 256}[rng.IntN(6)]
		n := 1 + rng.IntN(12*gs)
		if it%7 == 0 {
			n = gs*rng.IntN(10) + 1 + rng.IntN(gs) // ragged: every tail length
		}
		x := make([]float32, n)
		kind := it % 9
		for i := range x {
			switch kind {
			case 0:
				x[i] = float32(rng.NormFloat64())
			case 1: // ties of a coarse grid
				x[i] = float32(rng.IntN(17))*0.125 - 1
			case 2:
				x[i] = []float32{65504, -65504, 0, 65000, -1}[rng.IntN(5)]
			case 3:
				x[i] = math.Float32frombits(uint32(rng.IntN(1<<23))) * float32(1-2*rng.IntN(2))
			case 4:
				x[i] = fp.HalfToFloat32(uint16(rng.IntN(1024)) | uint16(rng.IntN(2))<<15)
			case 5: // constant groups with a few exceptions
				x[i] = 0.3
				if rng.IntN(gs) == 0 {
					x[i] = float32(rng.NormFloat64())
				}
			case 6:
				x[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()*6))
				if math.Abs(float64(x[i])) > 65504 {
					x[i] = 1
				}
			case 7: // zeros of both signs, and tiny values
				x[i] = []float32{0, float32(math.Copysign(0, -1)), 1e-8, -1e-8}[rng.IntN(4)]
			default: // outliers
				x[i] = float32(rng.NormFloat64() * 0.02)
				if rng.IntN(40) == 0 {
					x[i] *= 300
				}
			}
		}
		if it%50 == 3 {
			x[rng.IntN(n)] = []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 70000, -1e6}[rng.IntN(5)]
		}
		var w []float32
		if it%2 == 1 {
			w = make([]float32, n)
			for i := range w {
				w[i] = []float32{0, 1, float32(rng.ExpFloat64()), 1e-20, 1e4}[rng.IntN(5)]
			}
		}
		what, bits := fmt.Sprintf("it %d kind %d n %d", it, kind, n), []int{2, 4, 8}[rng.IntN(3)]
		same(t, what, x, w, bits, gs)
		sameDQ(t, what, x, w, bits)
	}
}
