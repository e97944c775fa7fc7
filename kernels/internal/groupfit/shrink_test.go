package groupfit

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
)

// shrinkInput is a lane's (lo, hi): random spans and the edges that
// decide the roundings (fp16 values and their float32 neighbours,
// denormals, zeros of both signs, ±65504 and just past it, constants).
func shrinkInput(rng *rand.Rand) (lo, hi float32) {
	near := func(v float32) float32 {
		switch rng.IntN(3) {
		case 1:
			return math.Nextafter32(v, float32(math.Inf(1)))
		case 2:
			return math.Nextafter32(v, float32(math.Inf(-1)))
		}
		return v
	}
	half := func() float32 { return fp.HalfToFloat32(uint16(rng.IntN(0x7c00)) | uint16(rng.IntN(2))<<15) }
	switch rng.IntN(7) {
	case 0:
		a, b := float32(rng.NormFloat64()*math.Exp(rng.NormFloat64()*4)), float32(rng.NormFloat64()*math.Exp(rng.NormFloat64()*4))
		lo, hi = min(a, b), max(a, b)
	case 1: // fp16 values and neighbours
		a, b := near(half()), near(half())
		lo, hi = min(a, b), max(a, b)
	case 2: // fp16 denormals, float32 denormals, signed zeros
		vals := []float32{near(fp.HalfToFloat32(uint16(rng.IntN(1024)))), -near(fp.HalfToFloat32(uint16(rng.IntN(1024)))),
			math.Float32frombits(uint32(rng.IntN(1 << 23))), -math.Float32frombits(uint32(rng.IntN(1 << 23))), 0, float32(math.Copysign(0, -1))}
		a, b := vals[rng.IntN(len(vals))], vals[rng.IntN(len(vals))]
		lo, hi = min(a, b), max(a, b)
	case 3: // the range edges, in and out
		vals := []float32{65504, -65504, near(65504), near(-65504), 65520, -65520, 1e6, -1e6}
		lo, hi = -float32(math.Abs(float64(vals[rng.IntN(len(vals))]))), float32(math.Abs(float64(vals[rng.IntN(len(vals))])))
	case 4: // constant groups, on and off the fp16 grid
		v := near(half())
		lo, hi = v, v
	case 5: // a tiny span far from zero
		v := float32(rng.NormFloat64() * 1000)
		lo, hi = v, near(v)
		lo, hi = min(lo, hi), max(lo, hi)
	default: // any float32 of the fp16 range
		a := math.Float32frombits(rng.Uint32() & 0x477fffff)
		b := math.Float32frombits(rng.Uint32()&0x477fffff | 0x80000000)
		lo, hi = b, a
	}
	return lo, hi
}

// ShrinkLanes gives Shrink's params, lane by lane, for every lane count,
// bit width and shrink factor the methods use.
func TestShrinkLanesIsShrink(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	betas := []float32{1, 0.4, 0.55, 0.6, 0.7, 0.85, 0.9, 0.95, 0.98}
	t.Logf("vector shrink: %v", kernels.VectorParams())
	for it := range 200_000 {
		var lo, hi [Lanes]float32
		for k := range lo {
			lo[k], hi[k] = shrinkInput(rng)
		}
		n := 1 + it%Lanes
		bits := []int{2, 4, 8}[rng.IntN(3)]
		beta := betas[rng.IntN(len(betas))]
		var sh, mh, wsh, wmh [Lanes]uint16
		ShrinkLanes(&lo, &hi, n, bits, beta, &sh, &mh)
		shrinkLanesGo(&lo, &hi, n, bits, beta, &wsh, &wmh)
		if sh != wsh || mh != wmh {
			for k := range n {
				if sh[k] != wsh[k] || mh[k] != wmh[k] {
					t.Fatalf("lane %d of %d: lo %g (%#x) hi %g (%#x) bits %d beta %g: (%#04x, %#04x), want Shrink's (%#04x, %#04x)",
						k, n, lo[k], math.Float32bits(lo[k]), hi[k], math.Float32bits(hi[k]), bits, beta, sh[k], mh[k], wsh[k], wmh[k])
				}
			}
			t.Fatalf("lanes past %d written", n)
		}
	}
}

// The directed roundings agree with HalfRoundDown and HalfRoundUp over a
// sweep of float32 patterns in the fp16 range (the mins directly; the
// scales through constant-free spans).
func TestShrinkLanesRoundingSweep(t *testing.T) {
	if !kernels.VectorParams() {
		t.Skip("no vector shrink on this CPU or build")
	}
	var lo, hi [Lanes]float32
	var sh, mh, wsh, wmh [Lanes]uint16
	k := 0
	check := func() {
		ShrinkLanes(&lo, &hi, Lanes, 2, 1, &sh, &mh)
		shrinkLanesGo(&lo, &hi, Lanes, 2, 1, &wsh, &wmh)
		if sh != wsh || mh != wmh {
			t.Fatalf("lo %v hi %v: (%x, %x), want (%x, %x)", lo, hi, sh, mh, wsh, wmh)
		}
	}
	for u := uint32(0); u < 0x477fe000; u += 61 { // |v| <= 65504, both signs
		for _, v := range []float32{math.Float32frombits(u), -math.Float32frombits(u)} {
			lo[k], hi[k] = min(v, v*0.5), max(v, v*0.5)+1e-3
			if k++; k == Lanes {
				check()
				k = 0
			}
		}
	}
}
