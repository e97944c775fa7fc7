package dq

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/arrowquant/arrowquant/kernels"
)

// The assembly's offsets of laneBlock, laneParams and laneSums.
func TestLaneLayout(t *testing.T) {
	var lb laneBlock
	var lp laneParams
	var o laneSums
	var u laneSumsU
	got := []uintptr{unsafe.Offsetof(lb.wt), unsafe.Offsetof(lb.rows), unsafe.Offsetof(lp.inv), unsafe.Offsetof(lp.qmaxf), unsafe.Offsetof(lp.qmax), unsafe.Offsetof(lp.on),
		unsafe.Offsetof(o.b), unsafe.Offsetof(o.c), unsafe.Offsetof(o.lo), unsafe.Offsetof(o.hi),
		unsafe.Offsetof(u.qq), unsafe.Offsetof(u.xq), unsafe.Offsetof(u.lo), unsafe.Offsetof(u.hi)}
	want := []uintptr{1024, 2048, 32, 64, 96, 100, 64, 128, 192, 224, 32, 64, 320, 352}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("offsets %v, want %v", got, want)
		}
	}
}

// adversarial fills x and w with values from several scales, exact .5
// code ties, signed zeros, denormals, fp16 range edges, zero weights.
func adversarial(rng *rand.Rand, x, w []float32) {
	scale := float32(math.Exp(rng.NormFloat64() * 4))
	for i := range x {
		switch rng.IntN(12) {
		case 0:
			x[i] = float32(rng.IntN(8)) * 0.5 // ties for s = 0.5, b = 0
		case 1:
			x[i] = float32(math.Copysign(0, rng.NormFloat64()))
		case 2:
			x[i] = math.Float32frombits(uint32(rng.IntN(1 << 23))) // denormal
		case 3:
			x[i] = float32(rng.IntN(3)-1) * 65504
		default:
			x[i] = float32(rng.NormFloat64()) * scale
		}
		switch rng.IntN(8) {
		case 0:
			w[i] = 0
		case 1:
			w[i] = float32(rng.IntN(4))
		default:
			w[i] = float32(math.Exp(rng.NormFloat64() * 2))
		}
	}
}

func randomLaneBlock(rng *rand.Rand, lb *laneBlock) {
	lb.rows = []int{16, 32, 1, 7}[rng.IntN(4)]
	adversarial(rng, lb.xt[:lb.rows*lanes], lb.wt[:lb.rows*lanes])
}

// The vector kernels equal their Go twins bit for bit: the stats passes
// (amd64: the pass kernels, which set up their lanes from a pass and
// write the sums of the sub-blocks on into the fit state; arm64: the
// lane kernels) and the moments.
func TestLanesMatchGo(t *testing.T) {
	if !vectorLanes() {
		t.Skip("no vector lane kernels on this CPU")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var lb laneBlock
	for it := range 20000 {
		randomLaneBlock(rng, &lb)
		var p laneParams
		var at pass
		p.qmax = int32([]int{3, 15, 255}[it%3])
		for k := range lanes {
			p.qmaxf[k] = float32(p.qmax)
		}
		for k := range lanes {
			s := float32(math.Exp(rng.NormFloat64()*3)) * []float32{1, 0.5, 0, 1e-30, 1e-45}[rng.IntN(5)]
			at.set(k, s, float32(rng.NormFloat64())*[]float32{0, 1, 100}[rng.IntN(3)])
			at.on[k] = rng.IntN(4) != 0
			if at.on[k] { // the lanes' params as lockstep.stats sets them
				p.b[k] = at.b[k]
				if s != 0 {
					p.inv[k] = 1 / s
				}
			}
		}
		sentinel := func(f *subs) {
			for k := range lanes {
				f.q[k], f.qq[k], f.xq[k] = float64(k), -1, math.Inf(1)
			}
		}
		var f, want subs
		var b laneSums
		statsLanesGo(&lb, &p, &b)
		sentinel(&f)
		sentinel(&want)
		for k := range lanes {
			if at.on[k] {
				want.q[k], want.qq[k], want.xq[k] = b.a[k], b.b[k], b.c[k]
			}
		}
		var lp laneParams
		lp.qmax, lp.qmaxf = p.qmax, p.qmaxf
		if statsPass(&lb, &lp, &at, 0, &f) {
			if f.q != want.q || f.qq != want.qq || !sameBits(f.xq[:], want.xq[:]) {
				t.Fatalf("it %d rows %d on %v: stats pass q %v qq %v xq %v, Go %v %v %v", it, lb.rows, at.on, f.q, f.qq, f.xq, want.q, want.qq, want.xq)
			}
		} else {
			var a laneSums
			statsLanes(&lb, &p, &a)
			if !sameSums(&a, &b) {
				t.Fatalf("it %d: stats %+v, Go %+v", it, a, b)
			}
		}
		var a laneSums
		a, b = laneSums{}, laneSums{}
		momentsLanes(&lb, &a)
		momentsLanesGo(&lb, &b)
		if !sameSums(&a, &b) {
			t.Fatalf("it %d: moments %+v, Go %+v", it, a, b)
		}
		var ua, ub laneSumsU
		momentsLanesU(&lb, &ua)
		momentsLanesUGo(&lb, &ub)
		if !sameSumsU(&ua, &ub) {
			t.Fatalf("it %d rows %d: unweighted moments %+v, Go %+v", it, lb.rows, ua, ub)
		}
		ub = laneSumsU{}
		statsLanesUGo(&lb, &p, &ub)
		sentinel(&f)
		sentinel(&want)
		var wantSlow uint32
		for k := range lanes {
			switch {
			case !at.on[k]:
			case !(p.inv[k] < maxInv): // stats' scalar loop: the caller's
				wantSlow |= 1 << k
			default:
				r := &ub.xq
				want.q[k], want.qq[k] = float64(ub.q[k]), float64(ub.qq[k])
				want.xq[k] = float64((r[0][k]+r[4][k])+(r[1][k]+r[5][k])) + float64((r[2][k]+r[6][k])+(r[3][k]+r[7][k]))
			}
		}
		if slow, ok := statsPassU(&lb, &lp, &at, 0, &f); ok {
			for k := range lanes { // the caller replaces a slow lane's sums
				if wantSlow&(1<<k) != 0 {
					want.q[k], want.qq[k], want.xq[k] = f.q[k], f.qq[k], f.xq[k]
				}
			}
			if slow != wantSlow || f.q != want.q || f.qq != want.qq || !sameBits(f.xq[:], want.xq[:]) {
				t.Fatalf("it %d rows %d on %v: unweighted stats pass slow %b q %v qq %v xq %v, Go %b %v %v %v",
					it, lb.rows, at.on, slow, f.q, f.qq, f.xq, wantSlow, want.q, want.qq, want.xq)
			}
		} else {
			for k := range lanes { // the unweighted lane kernel serves inv < maxInv
				if !(p.inv[k] < maxInv) {
					p.inv[k] = maxInv / 2
				}
			}
			ua, ub = laneSumsU{}, laneSumsU{}
			statsLanesU(&lb, &p, &ua)
			statsLanesUGo(&lb, &p, &ub)
			if !sameSumsU(&ua, &ub) {
				t.Fatalf("it %d rows %d: unweighted stats %+v, Go %+v", it, lb.rows, ua, ub)
			}
		}
	}
}

func sameSums(a, b *laneSums) bool {
	for k := range lanes {
		for _, p := range [][2]float64{{a.a[k], b.a[k]}, {a.b[k], b.b[k]}, {a.c[k], b.c[k]}} {
			if math.Float64bits(p[0]) != math.Float64bits(p[1]) && !(p[0] != p[0] && p[1] != p[1]) {
				return false
			}
		}
	}
	return a.lo == b.lo && a.hi == b.hi
}

func sameSumsU(a, b *laneSumsU) bool {
	eq := func(x, y []float32) bool {
		for i := range x {
			if math.Float32bits(x[i]) != math.Float32bits(y[i]) && !(x[i] != x[i] && y[i] != y[i]) {
				return false
			}
		}
		return true
	}
	for r := range a.xq {
		if !eq(a.xq[r][:], b.xq[r][:]) {
			return false
		}
	}
	return eq(a.q[:], b.q[:]) && eq(a.qq[:], b.qq[:]) && a.lo == b.lo && a.hi == b.hi
}

// Each lane's sums are the scalar stats' and moments' of its sub-block.
func TestLanesMatchScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	x := make([]float32, kernels.SuperBlockElems)
	w := make([]float32, kernels.SuperBlockElems)
	for it := range 3000 {
		adversarial(rng, x, w)
		g := []int{16, 32}[it%2]
		w := w
		if it%4 >= 2 {
			w = nil
		}
		var ls lockstep
		ls.load(x, w, g)
		qmax := float32([]int{3, 15, 255}[it%3])
		var at pass
		for j := range kernels.SuperBlockElems / g {
			s := float32(math.Exp(rng.NormFloat64() * 3))
			switch rng.IntN(20) {
			case 0:
				s = 1e-12 // inv beyond maxInv: stats' scalar loop
			case 1:
				s = 0
			}
			at.set(j, s, float32(rng.NormFloat64()))
			at.on[j] = it%3 == 0 || rng.IntN(3) != 0
		}
		ns := kernels.SuperBlockElems / g
		ls.moments(ns, x, w, g)
		var scalar subs
		for j := range ns { // the sums of sub-blocks off stay
			ls.f.q[j], ls.f.qq[j], ls.f.xq[j] = float64(j), -1, math.Inf(1)
			scalar.q[j], scalar.qq[j], scalar.xq[j] = float64(j), -1, math.Inf(1)
		}
		ls.stats(ns, &at, x, w, g, qmax)
		for j := range ns {
			xs, ws := subSlices(x, w, j, g)
			scalar.moments(j, xs, ws)
			if at.on[j] {
				scalar.stats(j, xs, ws, at.s[j], at.b[j], qmax)
			}
		}
		if ls.f != scalar {
			t.Fatalf("it %d: lanes %+v, scalar %+v", it, ls.f, scalar)
		}
	}
}

// A weighted super-block fitted in lockstep gets the scalar fit's params
// and codes.
func TestLockstepFitIsScalarFit(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x := make([]float32, kernels.SuperBlockElems)
	w := make([]float32, kernels.SuperBlockElems)
	for it := range 3000 {
		bits := []int{2, 4, 8}[it%3]
		g, pb, _, _ := kernels.SuperBlockLayout(bits)
		if it%5 == 0 {
			adversarial(rng, x, w)
		} else {
			for i := range x {
				x[i] = float32(rng.NormFloat64())
				w[i] = float32(math.Exp(rng.NormFloat64()))
			}
		}
		w := w
		if it%4 >= 2 {
			w = nil
		}
		var lock, none lockstep
		lock.load(x, w, g)
		var p1, p2 kernels.SuperBlockParams
		e1 := fit(&p1, &lock, x, w, bits, g, pb, 0)
		e2 := fit(&p2, &none, x, w, bits, g, pb, 0)
		if (e1 == nil) != (e2 == nil) || p1 != p2 {
			t.Fatalf("it %d bits %d: lockstep %+v %v, scalar %+v %v", it, bits, p1, e1, p2, e2)
		}
	}
}

// laneBlock.load puts element i of sub-block j0+k at row i, lane k.
func TestLaneBlockLoad(t *testing.T) {
	x := make([]float32, kernels.SuperBlockElems)
	w := make([]float32, kernels.SuperBlockElems)
	for i := range x {
		x[i], w[i] = float32(i), float32(-i)
	}
	for _, g := range []int{16, 32} {
		for j0 := 0; j0+lanes <= kernels.SuperBlockElems/g; j0 += lanes {
			var lb laneBlock
			lb.load(x, w, j0, g)
			for i := range g {
				for k := range lanes {
					if want := float32((j0+k)*g + i); lb.xt[i*lanes+k] != want || lb.wt[i*lanes+k] != -want {
						t.Fatalf("g %d j0 %d row %d lane %d: %v %v, want %v", g, j0, i, k, lb.xt[i*lanes+k], lb.wt[i*lanes+k], want)
					}
				}
			}
		}
	}
}
