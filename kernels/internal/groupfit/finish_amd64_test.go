//go:build !purego

package groupfit

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// finish_amd64.s reads finishArgs, Stats, laneOut and laneArgs by offset.
func TestFinishArgsLayout(t *testing.T) {
	var f finishArgs
	var s Stats
	var o laneOut
	got := []uintptr{
		unsafe.Offsetof(f.o), unsafe.Offsetof(f.a), unsafe.Offsetof(f.sh), unsafe.Offsetof(f.mh), unsafe.Offsetof(f.st),
		unsafe.Offsetof(f.best), unsafe.Offsetof(f.wn), unsafe.Offsetof(f.n), unsafe.Offsetof(f.wq), unsafe.Offsetof(f.mask),
		unsafe.Offsetof(f.valid), unsafe.Offsetof(f.weighted),
		unsafe.Offsetof(s.Err), unsafe.Offsetof(s.R), unsafe.Offsetof(s.RQ), unsafe.Offsetof(s.Q), unsafe.Offsetof(s.QQ),
		unsafe.Offsetof(s.N), unsafe.Offsetof(s.Scale), unsafe.Offsetof(s.Min), unsafe.Offsetof(s.ScaleH),
		unsafe.Offsetof(s.MinH), unsafe.Offsetof(s.Weighted), unsafe.Sizeof(s),
		unsafe.Offsetof(o.e), unsafe.Offsetof(o.r), unsafe.Offsetof(o.rq), unsafe.Offsetof(o.q), unsafe.Offsetof(o.qq),
		unsafe.Offsetof(o.qi), unsafe.Offsetof(o.qqi),
		unsafe.Offsetof(laneArgs{}.s), unsafe.Offsetof(laneArgs{}.m),
	}
	want := []uintptr{0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 73, 74,
		0, 8, 16, 24, 32, 40, 48, 52, 56, 58, 60, 64,
		0, 64, 128, 192, 256, 320, 384,
		0, 64}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("offset %d: %d, finish_amd64.s assumes %d", i, got[i], want[i])
		}
	}
}

// finishPassAVX2 writes the Stats and keeps the bests as finishPassGo,
// bit for bit: random sums (NaN, ±0, huge, equal to the best), random
// masks and valid lanes, weighted and not, int32 code sums that wrap.
func TestFinishPassMatchesGo(t *testing.T) {
	if !stepVector {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(31, 32))
	f32 := func() float32 {
		switch rng.IntN(8) {
		case 0:
			return float32(math.NaN())
		case 1:
			return float32(math.Copysign(0, -1))
		case 2:
			return 0
		case 3:
			return float32(rng.NormFloat64() * 1e30)
		}
		return float32(rng.NormFloat64() * 100)
	}
	for it := range 20000 {
		var o laneOut
		var a laneArgs
		var sh, mh [Lanes]uint16
		var wn [2 * Lanes]float32
		for i := range 2 * Lanes {
			o.e[i], o.r[i], o.rq[i], o.q[i], o.qq[i] = f32(), f32(), f32(), f32(), f32()
			o.qi[i], o.qqi[i] = int32(rng.Uint32()), int32(rng.Uint32())
			if it%2 == 0 {
				o.qi[i], o.qqi[i] = int32(rng.IntN(1000)), int32(rng.IntN(100000))
			}
			wn[i] = f32()
		}
		for k := range Lanes {
			s, m := f32(), f32()
			a.s[2*k], a.s[2*k+1], a.m[2*k], a.m[2*k+1] = s, s, m, m
			sh[k], mh[k] = uint16(rng.Uint32()), uint16(rng.Uint32())
		}
		var best [Lanes]Stats
		for k := range best {
			best[k] = Stats{Err: float64(f32()), R: 1, RQ: 2, Q: 3, QQ: 4, N: 5, Scale: 6, Min: 7, ScaleH: 8, MinH: 9, Weighted: k%2 == 0}
			if rng.IntN(3) == 0 { // ties with the new Err
				best[k].Err = float64(o.e[2*k]) + float64(o.e[2*k+1])
			}
		}
		var stInit [Lanes]Stats
		for k := range stInit {
			stInit[k] = Stats{Err: -1, R: -2, Scale: -3, ScaleH: 77, Weighted: true}
		}
		mask, valid := uint8(rng.Uint32()), uint8(rng.Uint32())
		if it%4 == 0 {
			mask = 0xff
		}
		weighted := it%3 == 0
		run := func(fn func(*finishArgs) uint8) ([Lanes]Stats, [Lanes]Stats, uint8) {
			st, bs := stInit, best
			f := finishArgs{o: &o, a: &a, sh: &sh, mh: &mh, st: &st, best: &bs, wn: &wn,
				mask: mask, valid: valid, weighted: weighted}
			f.n = 128
			if weighted {
				f.wq = 1 << 32
			}
			b := fn(&f)
			return st, bs, b
		}
		gs, gb, gbetter := run(finishPassAVX2)
		ws, wb, wbetter := run(finishPassGo)
		if gbetter != wbetter {
			t.Fatalf("it %d: better %08b, Go %08b (mask %08b valid %08b)", it, gbetter, wbetter, mask, valid)
		}
		for k := range Lanes {
			if !sameStats(gs[k], ws[k]) || !sameStats(gb[k], wb[k]) {
				t.Fatalf("it %d lane %d (mask %08b valid %08b weighted %v):\n st %+v\nGo %+v\n best %+v\n  Go %+v", it, k, mask, valid, weighted, gs[k], ws[k], gb[k], wb[k])
			}
		}
	}
}

// gatherStepAVX2 lays out Step's inputs as gatherStepGo, bit for bit:
// every field of the lanes of mask (each lane's own Stats, some shared),
// the harmless inputs elsewhere (omega there is om's: not read).
func TestGatherStepMatchesGo(t *testing.T) {
	if !stepVector {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(41, 42))
	f64 := func() float64 {
		switch rng.IntN(6) {
		case 0:
			return math.NaN()
		case 1:
			return math.Copysign(0, -1)
		case 2:
			return rng.NormFloat64() * 1e300
		}
		return rng.NormFloat64() * 1e3
	}
	var pool [2 * Lanes]Stats
	for it := range 5000 {
		for i := range pool {
			pool[i] = Stats{Err: f64(), R: f64(), RQ: f64(), Q: f64(), QQ: f64(), N: f64(),
				Scale: float32(f64()), Min: math.Float32frombits(rng.Uint32()), ScaleH: uint16(rng.Uint32()), MinH: uint16(rng.Uint32())}
		}
		var base [Lanes]*Stats
		var om [Lanes]float64
		mask := Mask(rng.Uint32())
		for k := range Lanes {
			if mask&(1<<k) != 0 || rng.IntN(2) == 0 {
				base[k] = &pool[rng.IntN(len(pool))]
			}
			om[k] = []float64{1, 2, 1.5}[rng.IntN(3)]
		}
		var got, want stepArgs
		gatherStepAVX2(&base, &om, uint8(mask), &got)
		gatherStepGo(&base, &om, mask, &want)
		for k := range Lanes {
			g := []float64{got.n[k], got.q[k], got.qq[k], got.r[k], got.rq[k], got.scale[k], got.min[k], got.omega[k]}
			w := []float64{want.n[k], want.q[k], want.qq[k], want.r[k], want.rq[k], want.scale[k], want.min[k], want.omega[k]}
			if mask&(1<<k) == 0 {
				g, w = g[:7], w[:7]
			}
			for i := range w {
				if math.Float64bits(g[i]) != math.Float64bits(w[i]) {
					t.Fatalf("it %d lane %d (mask %08b) field %d: %v, Go %v", it, k, mask, i, g[i], w[i])
				}
			}
		}
	}
}
