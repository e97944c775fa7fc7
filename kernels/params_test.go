package kernels_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
	. "github.com/arrowquant/arrowquant/kernels"
)

// edgeValue is a value that decides a rounding or a range check: fp16
// values and their float32 neighbours, denormals of both formats, signed
// zeros, ±65504 and just past it, or a normal value of random magnitude.
func edgeValue(rng *rand.Rand) float32 {
	near := func(v float32) float32 {
		switch rng.IntN(3) {
		case 1:
			return math.Nextafter32(v, float32(math.Inf(1)))
		case 2:
			return math.Nextafter32(v, float32(math.Inf(-1)))
		}
		return v
	}
	sign := float32(1 - 2*rng.IntN(2))
	switch rng.IntN(6) {
	case 0:
		return near(fp.HalfToFloat32(uint16(rng.IntN(0x7c00)))) * sign
	case 1:
		return near(fp.HalfToFloat32(uint16(rng.IntN(1024)))) * sign
	case 2:
		return math.Float32frombits(uint32(rng.IntN(1<<23))) * sign
	case 3:
		return []float32{0, float32(math.Copysign(0, -1)), near(65504), 65520, 1e6}[rng.IntN(5)] * sign
	default:
		return float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()*4))
	}
}

// RangeParamsLanes is MinMaxParams lane by lane, its mask MinMaxParams'
// !ok, with and without shrinking.
func TestRangeParamsLanesIsMinMaxParams(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	t.Logf("vector params: %v", VectorParams())
	badLanes := 0
	for range 100_000 {
		var lo, hi [ParamLanes]float32
		for k := range lo {
			a, b := edgeValue(rng), edgeValue(rng)
			if rng.IntN(5) == 0 {
				b = a // constant groups
			}
			lo[k], hi[k] = min(a, b), max(a, b)
		}
		bits := []int{2, 4, 8}[rng.IntN(3)]
		beta := []float32{1, 1, 0.6, 0.9}[rng.IntN(4)]
		var s, m [ParamLanes]uint16
		bad := RangeParamsLanes(&lo, &hi, bits, beta, &s, &m)
		for k := range ParamLanes {
			l, h := lo[k], hi[k]
			if beta != 1 {
				l, h = ShrinkRange(l, h, beta)
			}
			ws, wm, ok := MinMaxParams(l, h, bits)
			if s[k] != ws || m[k] != wm || (bad>>k&1 == 1) == ok {
				t.Fatalf("lane %d: [%g, %g] bits %d beta %g: (%#04x, %#04x, bad %v), want (%#04x, %#04x, ok %v)",
					k, lo[k], hi[k], bits, beta, s[k], m[k], bad>>k&1 == 1, ws, wm, ok)
			}
			if !ok {
				badLanes++
			}
		}
	}
	if badLanes == 0 {
		t.Fatal("no lane out of range: the mask went untested")
	}
}

// minMaxGroupParamsRef is MinMaxGroupParams group by group.
func minMaxGroupParamsRef(x []float32, bits, groupSize int, scales, mins []uint16, base int64) error {
	for g := 0; g*groupSize < len(x); g++ {
		start := g * groupSize
		grp := x[start:min(len(x), start+groupSize)]
		lo, hi := grp[0], grp[0]
		for _, v := range grp {
			lo, hi = min(lo, v), max(hi, v)
		}
		if lo-lo != 0 || hi-hi != 0 {
			for i, v := range grp {
				if v-v != 0 {
					return &NonFiniteError{Index: base + int64(start+i), Value: v}
				}
			}
		}
		s, m, ok := MinMaxParams(lo, hi, bits)
		if !ok {
			return &ParamRangeError{Group: (base + int64(start)) / int64(groupSize), Min: lo, Max: hi}
		}
		scales[g], mins[g] = s, m
	}
	return nil
}

// MinMaxGroupParams, eight groups at a time, gives every group's params
// and the first bad group's error as the group-by-group loop does.
func TestMinMaxGroupParamsBatchesAsGroups(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 4))
	errs := 0
	for it := range 3000 {
		gs := []int{16, 32, 64, 128}[rng.IntN(4)]
		n := rng.IntN(20*gs) + 1
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
			if rng.IntN(400) == 0 {
				x[i] = edgeValue(rng)
			}
		}
		if it%3 == 0 { // a few groups constant, one maybe not finite
			for g := 0; g*gs < n; g += 1 + rng.IntN(4) {
				v := edgeValue(rng)
				for i := g * gs; i < min(n, (g+1)*gs); i++ {
					x[i] = v
				}
			}
			if rng.IntN(2) == 0 {
				x[rng.IntN(n)] = []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}[rng.IntN(3)]
			}
		}
		bits := []int{2, 4, 8}[rng.IntN(3)]
		groups := int(NumGroups(int64(n), gs))
		s, m := make([]uint16, groups), make([]uint16, groups)
		ws, wm := make([]uint16, groups), make([]uint16, groups)
		err := MinMaxGroupParams(x, bits, gs, s, m, 1000)
		want := minMaxGroupParamsRef(x, bits, gs, ws, wm, 1000)
		if (err == nil) != (want == nil) || (err != nil && err.Error() != want.Error()) {
			t.Fatalf("n %d group %d bits %d: error %v, want %v", n, gs, bits, err, want)
		}
		if err != nil {
			errs++
			var pe *ParamRangeError
			var ne *NonFiniteError
			if !errors.As(err, &pe) && !errors.As(err, &ne) {
				t.Fatalf("error %T %v", err, err)
			}
			continue
		}
		for g := range groups {
			if s[g] != ws[g] || m[g] != wm[g] {
				t.Fatalf("n %d group size %d bits %d, group %d: (%#04x, %#04x), want (%#04x, %#04x)", n, gs, bits, g, s[g], m[g], ws[g], wm[g])
			}
		}
	}
	t.Logf("%d of 3000 rows failed", errs)
	if errs == 0 || errs > 2500 {
		t.Fatalf("%d of 3000 rows failed: the error and the params paths need both", errs)
	}
}
