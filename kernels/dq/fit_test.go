package dq

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/arrowquant/arrowquant/kernels"
)

// The assembly's offsets of subs and pass.
func TestSubsLayout(t *testing.T) {
	var f subs
	got := []uintptr{unsafe.Offsetof(f.n), unsafe.Offsetof(f.x), unsafe.Offsetof(f.xx), unsafe.Offsetof(f.q),
		unsafe.Offsetof(f.qq), unsafe.Offsetof(f.xq), unsafe.Offsetof(f.s), unsafe.Offsetof(f.b),
		unsafe.Offsetof(f.sc), unsafe.Offsetof(f.mc)}
	want := []uintptr{128, 256, 384, 512, 640, 768, 896, 1024, 1280, 1344}
	var at pass
	got = append(got, unsafe.Offsetof(at.s), unsafe.Offsetof(at.b))
	want = append(want, 16, 80)
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("offsets %v, want %v", got, want)
		}
	}
}

// randomSubs is a fit state from real sums of adversarial sub-blocks at
// random (s, b), with lanes edited to the edges of refit and
// chooseCodes: no weight, every code 0, every code equal (det 0),
// negative slopes, signed zeros, huge and non-finite values.
func randomSubs(rng *rand.Rand, f *subs, x, w []float32) {
	adversarial(rng, x, w)
	g := []int{16, 32}[rng.IntN(2)]
	if rng.IntN(2) == 0 {
		w = nil
	}
	var ls lockstep
	ls.load(x, w, g)
	ns := kernels.SuperBlockElems / g
	ls.moments(ns, x, w, g)
	var at pass
	for j := range ns {
		at.set(j, float32(math.Exp(rng.NormFloat64()*3)), float32(rng.NormFloat64()))
	}
	ls.stats(ns, &at, x, w, g, float32([]int{3, 15, 255}[rng.IntN(3)]))
	*f = ls.f
	for j := range 16 {
		f.s[j] = rng.NormFloat64() * math.Exp(rng.NormFloat64()*4)
		f.b[j] = rng.NormFloat64() * math.Exp(rng.NormFloat64()*4)
		switch rng.IntN(12) {
		case 0:
			f.n[j], f.x[j] = 0, 0
		case 1:
			f.q[j], f.qq[j], f.xq[j] = 0, 0, 0
		case 2: // every code c: det = n·c²·n - (c·n)² = 0
			c := float64(rng.IntN(16))
			f.q[j], f.qq[j] = c*f.n[j], c*c*f.n[j]
		case 3:
			f.s[j] = math.Copysign(0, -1)
		case 4:
			f.b[j] = []float64{1e300, -1e300, 1e-310, math.Inf(1), math.NaN()}[rng.IntN(5)]
		case 5:
			f.xq[j] = -f.xq[j] // a negative least-squares slope
		case 6:
			f.s[j] = []float64{1e300, 1e19, math.Inf(1), math.NaN()}[rng.IntN(4)]
		}
	}
}

func sameBits(a, b []float64) bool {
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return false
		}
	}
	return true
}

func sameOrNaN(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || a != a && b != b
}

// start, refit, keepBest and chooseCodes (vector where the machine has
// them) are their Go twins bit for bit.
func TestFitStepsMatchGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	x := make([]float32, kernels.SuperBlockElems)
	w := make([]float32, kernels.SuperBlockElems)
	var f subs
	for it := range 20000 {
		randomSubs(rng, &f, x, w)
		ns := 1 + rng.IntN(16)
		var on [16]bool
		for j := range ns {
			on[j] = rng.IntN(4) != 0
		}
		omega := []float64{1, 2, 1.5}[it%3]
		v, g := f, f
		v.refit(&on, ns, omega)
		g.refitGo(&on, omega)
		if !sameBits(v.s[:], g.s[:]) || !sameBits(v.b[:], g.b[:]) {
			t.Fatalf("it %d refit ns %d ω %v on %v:\n s %v\n want %v\n b %v\n want %v", it, ns, omega, on, v.s, g.s, v.b, g.b)
		}
		st := start{beta: []float32{1, 0.93, 0.7, float32(rng.Float64())}[rng.IntN(4)], oneSided: rng.IntN(2) == 0}
		qmax := float32([]int{3, 15, 255}[rng.IntN(3)])
		for j := range 16 {
			f.done[j] = rng.IntN(4) == 0
			if rng.IntN(10) == 0 {
				f.n[j] = []float64{0, -1, math.NaN()}[rng.IntN(3)]
			}
		}
		v, g = f, f
		var atV, atG pass
		v.start(&atV, ns, st, qmax)
		g.startGo(&atG, ns, st, qmax)
		for j := range ns {
			// A NaN n (never in a fit: fit returns the values' error
			// first) may give NaNs of another payload.
			if atV.on[j] != atG.on[j] || atG.on[j] && (!sameOrNaN(float64(atV.s[j]), float64(atG.s[j])) || !sameOrNaN(float64(atV.b[j]), float64(atG.b[j]))) ||
				!sameOrNaN(v.s[j], g.s[j]) || !sameOrNaN(v.b[j], g.b[j]) {
				t.Fatalf("it %d start %+v qmax %v sub %d (lo %v hi %v n %v x %v done %v): on %v (%v, %v) f (%v, %v), want %v (%v, %v) f (%v, %v)",
					it, st, qmax, j, f.lo[j], f.hi[j], f.n[j], f.x[j], f.done[j],
					atV.on[j], atV.s[j], atV.b[j], v.s[j], v.b[j], atG.on[j], atG.s[j], atG.b[j], g.s[j], g.b[j])
			}
		}
		var best saved
		var other subs
		randomSubs(rng, &other, x, w)
		other.save(&best, 16)
		for j := range 16 {
			f.e[j] = []float64{math.Inf(1), math.NaN(), 0, rng.ExpFloat64() * f.xx[j], v.errAt(j)}[rng.IntN(5)]
		}
		v, g = f, f
		v.keepBest(&best, &on, ns)
		g.keepBestGo(&best, &on, ns)
		if !sameBits(v.s[:], g.s[:]) || !sameBits(v.b[:], g.b[:]) || !sameBits(v.q[:], g.q[:]) || !sameBits(v.qq[:], g.qq[:]) ||
			!sameBits(v.xq[:], g.xq[:]) || !sameBits(v.e[:], g.e[:]) {
			t.Fatalf("it %d keepBest ns %d on %v:\n got  %+v\n want %+v", it, ns, on, v, g)
		}
		d := math.Abs(rng.NormFloat64()) * math.Exp(rng.NormFloat64()*3)
		dmin := rng.NormFloat64() * math.Exp(rng.NormFloat64()*3)
		switch rng.IntN(8) {
		case 0:
			d = 0
		case 1:
			dmin = 0
		case 2:
			d, dmin = 6e-8, -6e-8 // the smallest fp16 steps: codes far past pmax
		}
		pmax := []int32{15, 63}[rng.IntN(2)]
		v, g = f, f
		v.chooseCodes(ns, d, dmin, pmax)
		g.chooseCodesGo(ns, d, dmin, pmax)
		for j := range ns {
			if v.sc[j] != g.sc[j] || v.mc[j] != g.mc[j] {
				t.Fatalf("it %d chooseCodes sub %d (s %v b %v d %v dmin %v pmax %d): (%d, %d), want (%d, %d)",
					it, j, f.s[j], f.b[j], d, dmin, pmax, v.sc[j], v.mc[j], g.sc[j], g.mc[j])
			}
		}
	}
}
