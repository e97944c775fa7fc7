package dq

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkStatsPass times one lockstep stats pass of the vector kernels
// over 8 sub-blocks of 32 (INT4's layout), in cache (GB/s of the float32
// values): unweighted, and weighted with codes up to 15 (their Σwc·v by
// FMA, exact) and up to 255 (rounded products).
//
//	go test -run '^$' -bench StatsPass -cpu 1 ./kernels/dq/
func BenchmarkStatsPass(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	var lb laneBlock
	lb.rows = 32
	for i := range lb.xt {
		lb.xt[i] = float32(rng.NormFloat64())
		lb.wt[i] = float32(rng.ExpFloat64())
	}
	var at pass
	for j := range lanes {
		at.set(j, 0.2, -1.5)
	}
	for _, c := range []struct {
		name     string
		qmax     int32
		weighted bool
	}{{"unweighted/int4", 15, false}, {"weighted/int4", 15, true}, {"weighted/int8", 255, true}} {
		b.Run(c.name, func(b *testing.B) {
			var lp laneParams
			lp.qmax = c.qmax
			for k := range lp.qmaxf {
				lp.qmaxf[k] = float32(c.qmax)
			}
			var f subs
			pass := func() bool { return statsPass(&lb, &lp, &at, 0, &f) }
			if !c.weighted {
				pass = func() bool { _, ok := statsPassU(&lb, &lp, &at, 0, &f); return ok }
			}
			if !pass() {
				b.Skip("no vector kernel on this machine")
			}
			b.SetBytes(4 * 32 * lanes)
			for b.Loop() {
				pass()
			}
		})
	}
}
