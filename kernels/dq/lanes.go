package dq

import (
	"math"

	"github.com/arrowquant/arrowquant/kernels"
)

// lanes is how many sub-blocks of a weighted super-block are fitted in
// lockstep: one vector lane each, every lane's float64 sums accumulated
// element by element in the order of the scalar stats and moments, so
// the sums (and the fit) are theirs bit for bit.
const lanes = 8

// laneBlock is a lane group's values and weights transposed: row i
// holds element i of each of its 8 sub-blocks.
type laneBlock struct {
	xt, wt [32 * lanes]float32
	rows   int
}

// load transposes the 8 sub-blocks of g elements from x[j0*g:] (and w).
func (lb *laneBlock) load(x, w []float32, j0, g int) {
	lb.rows = g
	for k := range lanes {
		xs := x[(j0+k)*g : (j0+k+1)*g]
		ws := w[(j0+k)*g : (j0+k+1)*g]
		for i := range g {
			lb.xt[i*lanes+k] = xs[i]
			lb.wt[i*lanes+k] = ws[i]
		}
	}
}

// laneSums are the per-lane outputs of the lockstep kernels.
type laneSums struct {
	a, b, c [lanes]float64 // stats: Σw·q, Σw·q², Σw·x·q; moments: Σw, Σw·x, Σw·x²
	lo, hi  [lanes]int32   // moments: range keys (see key)
}

// laneParams are the per-lane (b, 1/s) of a stats pass.
type laneParams struct {
	b, inv [lanes]float32
	qmax   int32
}

// statsLanesGo is the weighted stats of 8 sub-blocks in lockstep: per
// lane, exactly stats' loop (c = clamp(int32(float32((v-b)·inv)+0.5), 0,
// qmax), wc = float64(w)·c; q += wc, qq += wc·c, xq += wc·float64(v)).
func statsLanesGo(lb *laneBlock, p *laneParams, o *laneSums) {
	var q, qq, xq [lanes]float64
	for i := range lb.rows {
		xr := (*[lanes]float32)(lb.xt[i*lanes:])
		wr := (*[lanes]float32)(lb.wt[i*lanes:])
		for k := range lanes {
			v := xr[k]
			c := float64(max(0, min(p.qmax, int32(float32((v-p.b[k])*p.inv[k])+0.5))))
			wc := float64(wr[k]) * c
			q[k] += wc
			qq[k] += wc * c
			xq[k] += wc * float64(v)
		}
	}
	o.a, o.b, o.c = q, qq, xq
}

// momentsLanesGo is the weighted moments of 8 sub-blocks in lockstep:
// per lane Σw, Σw·x, Σw·x·x in float64 in element order (moments'
// loop) and the range as keys. For finite values the keys' range is
// moments' min/max; a NaN or infinity makes Σw·x² non-finite (w·x·x
// with w ≥ 0), which the caller checks before it uses the range.
func momentsLanesGo(lb *laneBlock, o *laneSums) {
	var n, s, q [lanes]float64
	lo, hi := [lanes]int32{}, [lanes]int32{}
	for k := range lanes {
		lo[k], hi[k] = math.MaxInt32, math.MinInt32
	}
	for i := range lb.rows {
		xr := (*[lanes]float32)(lb.xt[i*lanes:])
		wr := (*[lanes]float32)(lb.wt[i*lanes:])
		for k := range lanes {
			v := xr[k]
			kv := key(v)
			lo[k], hi[k] = min(lo[k], kv), max(hi[k], kv)
			c := float64(wr[k])
			n[k] += c
			s[k] += c * float64(v)
			q[k] += c * float64(v) * float64(v)
		}
	}
	o.a, o.b, o.c, o.lo, o.hi = n, s, q, lo, hi
}

// lockstep runs the moments and stats passes of a super-block's
// sub-blocks: in lane groups of 8 when the super-block is whole and
// weighted, else one sub-block at a time with moments and stats.
type lockstep struct {
	groups [kernels.SuperBlockElems / 16 / lanes]laneBlock
	n      int // lane groups loaded (0: scalar)
}

// load transposes super-block x (and w) into lane groups of sub-blocks
// of g elements, when it is whole and weighted.
func (ls *lockstep) load(x, w []float32, g int) {
	ls.n = 0
	if w == nil || len(x) != kernels.SuperBlockElems {
		return
	}
	ls.n = len(x) / g / lanes
	for l := range ls.n {
		ls.groups[l].load(x, w, l*lanes, g)
	}
}

// pass is one stats pass: the sub-blocks it runs for and their (s, b).
type pass struct {
	on   [16]bool
	s, b [16]float32
}

func (at *pass) set(j int, s, b float32) {
	at.on[j] = true
	at.s[j], at.b[j] = s, b
}

// moments fills every sub-block's range and moments.
func (ls *lockstep) moments(subs []sub, x, w []float32, g int) {
	if ls.n == 0 {
		for j := range subs {
			xs, ws := subSlices(x, w, j, g)
			moments(&subs[j], xs, ws)
		}
		return
	}
	var o laneSums
	for l := range ls.n {
		momentsLanes(&ls.groups[l], &o)
		for k := range lanes {
			sj := &subs[l*lanes+k]
			sj.lo, sj.hi = unkey(o.lo[k]), unkey(o.hi[k])
			sj.n, sj.x, sj.xx = o.a[k], o.b[k], o.c[k]
		}
	}
}

// stats runs stats for the sub-blocks of at, each at its (s, b).
func (ls *lockstep) stats(subs []sub, at *pass, x, w []float32, g int, qmax float32) {
	if ls.n == 0 {
		for j := range subs {
			if at.on[j] {
				xs, ws := subSlices(x, w, j, g)
				stats(&subs[j], xs, ws, at.s[j], at.b[j], qmax)
			}
		}
		return
	}
	var lp laneParams
	var o laneSums
	lp.qmax = int32(qmax)
	for l := range ls.n {
		busy := false
		for k := range lanes {
			j := l*lanes + k
			lp.b[k], lp.inv[k] = 0, 0
			if at.on[j] {
				busy = true
				lp.b[k] = at.b[j]
				if s := at.s[j]; s != 0 {
					lp.inv[k] = 1 / s
				}
			}
		}
		if !busy {
			continue
		}
		statsLanes(&ls.groups[l], &lp, &o)
		for k := range lanes {
			if j := l*lanes + k; at.on[j] {
				sj := &subs[j]
				sj.q, sj.qq, sj.xq = o.a[k], o.b[k], o.c[k]
			}
		}
	}
}
