package dq

import (
	"math"
	"math/bits"

	"github.com/arrowquant/arrowquant/kernels"
)

// lanes is how many sub-blocks of a whole super-block are fitted in
// lockstep: one vector lane each, every lane's sums accumulated element
// by element in the order of the scalar stats and moments (weighted:
// float64 chains; unweighted: codeSums' 8 float32 lanes by element
// index), so the sums (and the fit) are theirs bit for bit.
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
	if transpose8(lb.xt[:], x[j0*g:], g, g/8) && (w == nil || transpose8(lb.wt[:], w[j0*g:], g, g/8)) {
		return
	}
	for k := range lanes {
		xs := x[(j0+k)*g : (j0+k+1)*g]
		for i := range g {
			lb.xt[i*lanes+k] = xs[i]
		}
		if w != nil {
			ws := w[(j0+k)*g : (j0+k+1)*g]
			for i := range g {
				lb.wt[i*lanes+k] = ws[i]
			}
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
	qmaxf  [lanes]float32 // qmax in every lane (unweighted kernel)
	qmax   int32
	on     [lanes]int32 // the pass kernels' lanes on (all ones)
}

// laneSumsU are the outputs of the unweighted lockstep kernels: per lane
// Σc and Σc² (stats) or Σx and Σx² by element parity (moments, in
// xq[0] and xq[1] for even, xq[2] and xq[3] for odd elements), and
// stats' Σx·c by element index mod 8 (codeSums' lanes): xq[r][k].
type laneSumsU struct {
	q, qq  [lanes]float32
	xq     [8][lanes]float32
	lo, hi [lanes]int32
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

// statsLanesUGo is the unweighted stats of 8 sub-blocks in lockstep:
// per lane, codeSumsGo's codes and sums (Σx·c in 8 float32 lanes by
// element index mod 8).
func statsLanesUGo(lb *laneBlock, p *laneParams, o *laneSumsU) {
	var q, qq [lanes]float32
	var xq [8][lanes]float32
	for i := range lb.rows {
		xr := (*[lanes]float32)(lb.xt[i*lanes:])
		for k := range lanes {
			v := xr[k]
			c := float32(max(0, min(int64(p.qmax), int64(float32((v-p.b[k])*p.inv[k])+0.5))))
			q[k] += c
			qq[k] += c * c
			xq[i%8][k] += v * c
		}
	}
	o.q, o.qq, o.xq = q, qq, xq
}

// momentsLanesUGo is the unweighted moments of 8 sub-blocks in
// lockstep: per lane Σx and Σx² in float32 by element parity and the
// range as keys, as moments.
func momentsLanesUGo(lb *laneBlock, o *laneSumsU) {
	var sums [4][lanes]float32 // Σx even, Σx odd, Σx² even, Σx² odd
	lo, hi := [lanes]int32{}, [lanes]int32{}
	for k := range lanes {
		lo[k], hi[k] = math.MaxInt32, math.MinInt32
	}
	for i := range lb.rows {
		xr := (*[lanes]float32)(lb.xt[i*lanes:])
		for k := range lanes {
			v := xr[k]
			kv := key(v)
			lo[k], hi[k] = min(lo[k], kv), max(hi[k], kv)
			sums[i%2][k] += v
			sums[2+i%2][k] += v * v
		}
	}
	o.xq = [8][lanes]float32{sums[0], sums[1], sums[2], sums[3]}
	o.lo, o.hi = lo, hi
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
// sub-blocks: in lane groups of 8 when the super-block is whole, else
// one sub-block at a time with moments and stats.
type lockstep struct {
	groups   [kernels.SuperBlockElems / 16 / lanes]laneBlock
	n        int // lane groups loaded (0: scalar)
	weighted bool
	// the kernels' arguments and outputs (fields, not zeroed per call:
	// the kernels write every output they are read for)
	lp laneParams
	o  laneSums
	ou laneSumsU
	// fit's state (not zeroed per super-block)
	f    subs
	at   pass
	best saved
}

// load transposes super-block x (and w) into lane groups of sub-blocks
// of g elements, when it is whole.
func (ls *lockstep) load(x, w []float32, g int) {
	ls.n = 0
	if len(x) != kernels.SuperBlockElems {
		return
	}
	ls.n = len(x) / g / lanes
	ls.weighted = w != nil
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

// moments fills the range and moments of the ns sub-blocks.
func (ls *lockstep) moments(ns int, x, w []float32, g int) {
	f := &ls.f
	if ls.n == 0 {
		for j := range ns {
			xs, ws := subSlices(x, w, j, g)
			f.moments(j, xs, ws)
		}
		return
	}
	if !ls.weighted {
		o := &ls.ou
		for l := range ls.n {
			momentsLanesU(&ls.groups[l], o)
			for k := range lanes {
				j := l*lanes + k
				f.lo[j], f.hi[j] = unkey(o.lo[k]), unkey(o.hi[k])
				f.n[j] = float64(g)
				f.x[j] = float64(o.xq[0][k]) + float64(o.xq[1][k])
				f.xx[j] = float64(o.xq[2][k]) + float64(o.xq[3][k])
			}
		}
		return
	}
	o := &ls.o
	for l := range ls.n {
		momentsLanes(&ls.groups[l], o)
		for k := range lanes {
			j := l*lanes + k
			f.lo[j], f.hi[j] = unkey(o.lo[k]), unkey(o.hi[k])
			f.n[j], f.x[j], f.xx[j] = o.a[k], o.b[k], o.c[k]
		}
	}
}

// stats runs stats for the sub-blocks of at, each at its (s, b).
func (ls *lockstep) stats(ns int, at *pass, x, w []float32, g int, qmax float32) {
	f := &ls.f
	if ls.n == 0 {
		for j := range ns {
			if at.on[j] {
				xs, ws := subSlices(x, w, j, g)
				f.stats(j, xs, ws, at.s[j], at.b[j], qmax)
			}
		}
		return
	}
	lp, o, ou := &ls.lp, &ls.o, &ls.ou
	lp.qmax = int32(qmax)
	for k := range lanes {
		lp.qmaxf[k] = qmax
	}
	for l := range ls.n {
		if !onAny(at, l) {
			continue
		}
		if ls.weighted {
			if statsPass(&ls.groups[l], lp, at, l*lanes, f) {
				continue
			}
		} else {
			if slow, ok := statsPassU(&ls.groups[l], lp, at, l*lanes, f); ok {
				for ; slow != 0; slow &= slow - 1 { // stats' scalar loop
					j := l*lanes + bits.TrailingZeros32(slow)
					xs, _ := subSlices(x, nil, j, g)
					f.stats(j, xs, nil, at.s[j], at.b[j], qmax)
				}
				continue
			}
		}
		// the portable pass (also the arm64 one)
		for k := range lanes {
			j := l*lanes + k
			lp.b[k], lp.inv[k] = 0, 0
			if at.on[j] {
				lp.b[k] = at.b[j]
				if s := at.s[j]; s != 0 {
					lp.inv[k] = 1 / s
				}
			}
		}
		if ls.weighted {
			statsLanes(&ls.groups[l], lp, o)
			for k := range lanes {
				if j := l*lanes + k; at.on[j] {
					f.q[j], f.qq[j], f.xq[j] = o.a[k], o.b[k], o.c[k]
				}
			}
			continue
		}
		statsLanesU(&ls.groups[l], lp, ou)
		for k := range lanes {
			j := l*lanes + k
			if !at.on[j] {
				continue
			}
			if !(lp.inv[k] < maxInv) { // stats' scalar loop
				xs, _ := subSlices(x, nil, j, g)
				f.stats(j, xs, nil, at.s[j], at.b[j], qmax)
				continue
			}
			r := &ou.xq // as stats combines codeSums' lanes
			f.q[j], f.qq[j] = float64(ou.q[k]), float64(ou.qq[k])
			f.xq[j] = float64((r[0][k]+r[4][k])+(r[1][k]+r[5][k])) + float64((r[2][k]+r[6][k])+(r[3][k]+r[7][k]))
		}
	}
}

// onAny reports whether lane group l has a sub-block on.
func onAny(at *pass, l int) bool {
	for _, on := range at.on[l*lanes : (l+1)*lanes] {
		if on {
			return true
		}
	}
	return false
}
