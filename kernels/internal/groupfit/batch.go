package groupfit

import (
	"math/bits"
	"sync"
	"unsafe"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
)

// Lanes is the number of groups a Batch searches in lockstep.
const Lanes = 8

// Mask selects lanes of a Batch (bit k: lane k).
type Mask uint8

// Batch is the parameter search of up to Lanes groups of one length, run
// in lockstep: every step (Try, RefineFrom, Accept) does for each
// selected lane exactly what Search does for its group, and one
// evaluation pass serves all lanes. The groups' values (and weights) are
// interleaved so that the pass is one vector kernel (evalLanes: AVX2 or
// AVX-512 on amd64, NEON on arm64, evalLanesGo elsewhere or with the
// purego tag) whose lanes each accumulate their group's sums in Eval's
// order: two float32 chains per sum, even and odd elements. So a lane's
// sums are bit for bit Eval's (EvalWeighted's) for its group, and the
// search chooses the params Search chooses.
//
// Interleaved layout: row j holds elements 2j and 2j+1 of every lane,
// xt[16j + 2k + p] = element 2j+p of lane k (16 floats, 64 bytes).
type Batch struct {
	n        int // lanes in use
	l        int // elements per group
	qmax     int64
	weighted bool
	vector   bool // the interleaved kernel evaluates (else Eval per lane)
	laidOut  bool // xt (and wt) hold the lanes' groups

	x, w [Lanes][]float32
	// Best holds each lane's best evaluated params and their sums, as
	// Search.Best.
	Best  [Lanes]Stats
	valid Mask

	xt, wt []float32 // interleaved values and weights, 16·l/2 floats
	wn     [2 * Lanes]float32

	args laneArgs // the kernel's (qmax set by Reset)
	out  laneOut
	step stepArgs
}

// maxVectorLen bounds the group length of the interleaved kernel: its
// integer code sums (Σq, Σq² in int32 lanes) stay exact below it.
const maxVectorLen = 1 << 16

// Reset starts a batch of groups of l elements at bits; weighted says
// whether groups come with error weights.
func (b *Batch) Reset(l, bits int, weighted bool) {
	b.n, b.l, b.qmax, b.weighted = 0, l, int64(1)<<bits-1, weighted
	b.valid, b.laidOut = 0, false
	for i := range b.args.qmax {
		b.args.qmax[i] = float32(b.qmax)
	}
	b.vector = l%2 == 0 && l <= maxVectorLen
	if b.vector {
		need := 8 * l
		if cap(b.xt) < need {
			b.xt = make([]float32, need)
		}
		b.xt = b.xt[:need]
		if weighted {
			if cap(b.wt) < need {
				b.wt = make([]float32, need)
			}
			b.wt = b.wt[:need]
		}
	}
}

// Add puts group x (with weights w when weighted) in the next lane.
func (b *Batch) Add(x, w []float32) {
	k := b.n
	b.x[k], b.w[k] = x, w
	b.n++
	b.laidOut = false
}

// layOut interleaves the lanes' groups (once per batch, at the first
// vector evaluation); lanes past n repeat lane 0 (their sums are unused).
func (b *Batch) layOut() {
	if b.laidOut {
		return
	}
	b.laidOut = true
	interleaveLanes(b.xt, &b.x, b.n)
	if b.weighted {
		interleaveLanes(b.wt, &b.w, b.n)
		// Σw is the same for every evaluation: EvalWeighted's two chains,
		// of the 8 lanes at once.
		pairSums(b.wt, &b.wn)
	}
}

// pairSumsGo is pairSums' portable form.
func pairSumsGo(wt []float32, wn *[2 * Lanes]float32) {
	*wn = [2 * Lanes]float32{}
	for j := 0; j+2*Lanes <= len(wt); j += 2 * Lanes {
		row := wt[j : j+2*Lanes : j+2*Lanes]
		for i := range wn {
			wn[i] += row[i]
		}
	}
}

// interleaveLanes writes the layout of groups src[:n] (even length l,
// dst 8·l floats), lanes n and up from src[0].
func interleaveLanes(dst []float32, src *[Lanes][]float32, n int) {
	var lanes [Lanes][]float32
	for k := range lanes {
		lanes[k] = src[0]
		if k < n {
			lanes[k] = src[k]
		}
	}
	done := interleaveVec(dst, &lanes)
	for k := range lanes {
		interleaveFrom(dst, lanes[k], k, done)
	}
}

// interleaveFrom copies the pairs of x (even length) from pair p0 on
// into lane k of the layout.
func interleaveFrom(dst, x []float32, k, p0 int) {
	pairs := len(x) / 2
	src := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(x))), pairs)
	out := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(dst))), len(dst)/2)
	out = out[k:]
	for j := p0; j < len(src); j++ {
		out[8*j] = src[j]
	}
}

// Len is the group length; N the lanes in use.
func (b *Batch) Len() int { return b.l }
func (b *Batch) N() int   { return b.n }

// All is the mask of the lanes in use.
func (b *Batch) All() Mask { return Mask(1)<<b.n - 1 }

// Group is lane k's values.
func (b *Batch) Group(k int) []float32 { return b.x[k] }

// laneArgs and laneOut are the interleaved kernel's parameters and sums,
// in the layout's lane order (lane 2k+p: group k, elements of parity p).
type laneArgs struct {
	s, m, inv, qmax [2 * Lanes]float32
}

type laneOut struct {
	e, r, rq [2 * Lanes]float32
	q, qq    [2 * Lanes]float32 // weighted: Σw·q, Σw·q²
	qi, qqi  [2 * Lanes]int32   // unweighted: Σq, Σq² (exact)
}

// Try evaluates the params (scaleH[k], minH[k]) of every lane k of mask
// into st[k], keeps those that beat the lane's best, and reports them,
// as Search.Try per lane. Lanes outside mask are left alone.
func (b *Batch) Try(st *[Lanes]Stats, scaleH, minH *[Lanes]uint16, mask Mask) (better Mask) {
	if mask == 0 {
		return 0
	}
	if b.vector && bits.OnesCount8(uint8(mask)) > 1 {
		b.evalVector(scaleH, minH)
		f := finishArgs{o: &b.out, a: &b.args, sh: scaleH, mh: minH, st: st, best: &b.Best, wn: &b.wn,
			n: float64(b.l), mask: uint8(mask), valid: uint8(b.valid), weighted: b.weighted}
		if b.weighted {
			f.wq = 1 << 32 // Stats.Weighted, byte 4 of the word at ScaleH
		}
		better = Mask(finishPass(&f))
		b.valid |= better
		return better
	}
	for k := 0; k < b.n; k++ {
		if mask&(1<<k) == 0 {
			continue
		}
		if b.weighted {
			EvalWeighted(&st[k], b.x[k], b.w[k], scaleH[k], minH[k], b.qmax)
		} else {
			Eval(&st[k], b.x[k], scaleH[k], minH[k], b.qmax)
		}
	}
	better = Mask(keepBests(st, &b.Best, uint8(mask), uint8(b.valid)))
	b.valid |= better
	return better
}

// keepBests makes st[k] lane k's best for every lane of mask that is not
// valid or whose Err is not >= best[k].Err (a NaN Err wins), as
// Search.Try, and reports those lanes.
func keepBests(st, best *[Lanes]Stats, mask, valid uint8) (better uint8) {
	for k := 0; k < Lanes; k++ {
		bit := uint8(1) << k
		if mask&bit == 0 || (valid&bit != 0 && st[k].Err >= best[k].Err) {
			continue
		}
		best[k] = st[k]
		better |= bit
	}
	return better
}

// evalVector runs the interleaved kernel for the params of every lane
// (b.args, b.out); finishPass then reads its sums.
func (b *Batch) evalVector(scaleH, minH *[Lanes]uint16) {
	a, o := &b.args, &b.out
	for k := 0; k < Lanes; k++ {
		s, m := float32(1), float32(0) // unused lanes: harmless params
		if k < b.n {
			s, m = fp.HalfToFloat32(scaleH[k]), fp.HalfToFloat32(minH[k])
		}
		var inv float32
		if s != 0 {
			inv = 1 / s
		}
		a.s[2*k], a.s[2*k+1] = s, s
		a.m[2*k], a.m[2*k+1] = m, m
		a.inv[2*k], a.inv[2*k+1] = inv, inv
	}
	b.layOut()
	if b.weighted {
		evalLanesWeighted(b.xt, b.wt, a, o)
	} else {
		evalLanes(b.xt, a, o)
	}
}

// finishArgs are finishPass's inputs (finish_amd64.s reads them by
// offset: TestFinishArgsLayout).
type finishArgs struct {
	o        *laneOut
	a        *laneArgs
	sh, mh   *[Lanes]uint16
	st, best *[Lanes]Stats
	wn       *[2 * Lanes]float32
	n        float64 // unweighted: every lane's N
	wq       uint64  // 1<<32 when weighted: Stats.Weighted in the word at ScaleH
	mask     uint8
	valid    uint8
	weighted bool
}

// finishPassGo is finishPass in Go: the kernel's sums of every lane of
// mask into st[k] (each sum the float64 of its two parity chains), then
// keepBests.
func finishPassGo(f *finishArgs) uint8 {
	o, a := f.o, f.a
	for k := 0; k < Lanes; k++ {
		if f.mask&(1<<k) == 0 {
			continue
		}
		e, g := 2*k, 2*k+1
		s := &f.st[k] // every field is set
		s.Err = float64(o.e[e]) + float64(o.e[g])
		s.R = float64(o.r[e]) + float64(o.r[g])
		s.RQ = float64(o.rq[e]) + float64(o.rq[g])
		s.Scale, s.Min, s.ScaleH, s.MinH = a.s[e], a.m[e], f.sh[k], f.mh[k]
		s.Weighted = f.weighted
		if f.weighted {
			s.Q, s.QQ = float64(o.q[e])+float64(o.q[g]), float64(o.qq[e])+float64(o.qq[g])
			s.N = float64(f.wn[e]) + float64(f.wn[g])
		} else {
			s.Q, s.QQ = float64(o.qi[e]+o.qi[g]), float64(o.qqi[e]+o.qqi[g])
			s.N = f.n
		}
	}
	return keepBests(f.st, f.best, f.mask, f.valid)
}

// evalLanesGo is the portable interleaved kernel: Eval's arithmetic per
// lane, element pair by element pair.
func evalLanesGo(xt []float32, a *laneArgs, o *laneOut) {
	*o = laneOut{}
	for j := 0; j+2*Lanes <= len(xt); j += 2 * Lanes {
		row := (*[2 * Lanes]float32)(xt[j:])
		for k := range 2 * Lanes {
			v, s, m := row[k], a.s[k], a.m[k]
			f := code(v, m, a.inv[k], a.qmax[k])
			d := v - (float32(f*s) + m)
			o.e[k] += float32(d * d)
			o.r[k] += d
			o.rq[k] += float32(d * f)
			c := int32(f)
			o.qi[k] += c
			o.qqi[k] += c * c
		}
	}
}

// evalLanesWeightedGo is EvalWeighted's arithmetic per lane.
func evalLanesWeightedGo(xt, wt []float32, a *laneArgs, o *laneOut) {
	*o = laneOut{}
	wt = wt[:len(xt)]
	for j := 0; j+2*Lanes <= len(xt); j += 2 * Lanes {
		row := (*[2 * Lanes]float32)(xt[j:])
		wrow := (*[2 * Lanes]float32)(wt[j:])
		for k := range 2 * Lanes {
			v, w, s, m := row[k], wrow[k], a.s[k], a.m[k]
			f := code(v, m, a.inv[k], a.qmax[k])
			d := v - (float32(f*s) + m)
			wd, wf := float32(w*d), float32(w*f)
			o.e[k] += float32(wd * d)
			o.r[k] += wd
			o.rq[k] += float32(wd * f)
			o.q[k] += wf
			o.qq[k] += float32(wf * f)
		}
	}
}

// code is the pack kernel's code as a float32: clamp(trunc(float32((v-m)
// ·inv) + 0.5), 0, qmax). Clamping before truncating agrees with the
// kernel's int64 truncation then clamp for every finite t, and keeps the
// vector kernels' conversions in range.
func code(v, m, inv, qmax float32) float32 {
	t := float32((v-m)*inv) + 0.5
	t = max(0, min(qmax, t))
	return float32(int32(t))
}

// RefineFrom is Search.RefineFrom for every lane of mask, each lane
// continuing from *st[k] and stopping on its own; the passes run in
// lockstep over the lanes still going.
func (b *Batch) RefineFrom(st *[Lanes]*Stats, mask Mask, passes int, omega float64, accept bool) {
	var cur [Lanes]Stats
	base := *st
	var om [Lanes]float64
	var seen [Lanes][4]uint32
	for k := 0; k < b.n; k++ {
		om[k] = omega
		if mask&(1<<k) != 0 {
			seen[k][0] = key(base[k].ScaleH, base[k].MinH)
		}
	}
	active := mask
	var ns, nm [Lanes]uint16
	for p := 0; p < passes && active != 0; p++ {
		good := b.stepLanes(&base, &om, active, &ns, &nm)
		for k := 0; k < b.n; k++ {
			bit := Mask(1) << k
			if active&bit == 0 {
				continue
			}
			s, m, ok := ns[k], nm[k], good&bit != 0
			if !ok && om[k] != 1 {
				s, m, ok = Step(base[k], 1)
			}
			if !ok || has(&seen[k], key(s, m)) {
				active &^= bit
				continue
			}
			seen[k][(p+1)%4] = key(s, m)
			ns[k], nm[k] = s, m
		}
		better := b.Try(&cur, &ns, &nm, active)
		for k := 0; k < b.n; k++ {
			bit := Mask(1) << k
			if active&bit == 0 {
				continue
			}
			if better&bit != 0 {
				base[k], om[k] = &cur[k], omega
			} else {
				base[k], om[k] = &b.Best[k], 1 // uphill: plain refit of the best point
			}
		}
	}
	if accept {
		for k := 0; k < b.n; k++ {
			if mask&(1<<k) != 0 {
				b.Accept(k, base[k])
			}
		}
	}
}

// Accept is Search.Accept for lane k.
func (b *Batch) Accept(k int, st *Stats) {
	ns, nm, ok := Step(st, 1)
	if !ok || (ns == st.ScaleH && nm == st.MinH) {
		return
	}
	if e := Bound(st, ns, nm); e < b.Best[k].Err {
		bs := &b.Best[k]
		bs.ScaleH, bs.MinH = ns, nm
		bs.Scale, bs.Min = fp.HalfToFloat32(ns), fp.HalfToFloat32(nm)
		bs.Err = e
	}
}

// BatchFitFunc chooses the params of every lane of b (lanes 0..b.N()-1,
// each with min lo[k] < max hi[k] within ±65504), leaving them in
// b.Best[k].ScaleH and MinH.
type BatchFitFunc func(b *Batch, bits int, lo, hi *[Lanes]float32)

var batchPool = sync.Pool{New: func() any { return new(Batch) }}

// ForEachGroupBatch is ForEachWeightedGroup with the fit run on batches
// of Lanes full groups (a ragged last group gets a batch of its own): the
// same checks, errors and params.
func ForEachGroupBatch(x, w []float32, bits, groupSize int, scales, mins []uint16, base int64, fit BatchFitFunc) error {
	var los, his [segGroups]float32
	b := batchPool.Get().(*Batch)
	defer batchPool.Put(b)
	var idx [Lanes]int
	var blo, bhi [Lanes]float32
	flush := func() {
		if b.n == 0 {
			return
		}
		fit(b, bits, &blo, &bhi)
		for k := 0; k < b.n; k++ {
			scales[idx[k]], mins[idx[k]] = b.Best[k].ScaleH, b.Best[k].MinH
		}
		b.Reset(b.l, bits, w != nil)
	}
	ng := int(kernels.NumGroups(int64(len(x)), groupSize))
	b.Reset(groupSize, bits, w != nil)
	for g0 := 0; g0 < ng; g0 += segGroups {
		g1 := min(ng, g0+segGroups)
		seg := x[g0*groupSize : min(len(x), g1*groupSize)]
		if err := kernels.GroupMinMax(seg, groupSize, los[:], his[:], base+int64(g0*groupSize)); err != nil {
			return err
		}
		for g := g0; g < g1; g++ {
			lo, hi := los[g-g0], his[g-g0]
			if lo < -65504 || hi > 65504 { // minmax's range check (kernels.MinMaxParams)
				return &kernels.ParamRangeError{Group: base/int64(groupSize) + int64(g), Min: lo, Max: hi}
			}
		}
		for g := g0; g < g1; g++ {
			lo, hi := los[g-g0], his[g-g0]
			if lo == hi { // minmax is exact, or within an fp16 step of the constant
				scales[g], mins[g], _ = kernels.MinMaxParams(lo, hi, bits)
				continue
			}
			a, e := g*groupSize, min(len(x), (g+1)*groupSize)
			if e-a != groupSize { // the ragged last group
				flush()
				b.Reset(e-a, bits, w != nil)
			}
			var wg []float32
			if w != nil {
				wg = w[a:e]
			}
			idx[b.n], blo[b.n], bhi[b.n] = g, lo, hi
			b.Add(x[a:e], wg)
			if b.n == Lanes {
				flush()
			}
		}
	}
	flush()
	return nil
}
