package ref

// dq's super-block fit as it was (kernels/dq at 0e2c5a4, its scalar
// path: the lockstep kernels give the same sums).

import (
	"math"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
)

// start is a starting range of the float fit: the sub-block's [min, max]
// shrunk by beta about its midpoint or, oneSided, only on the side of the
// extreme farther from the (weighted) mean, towards the mean.
type start struct {
	beta     float32
	oneSided bool
}

// setting of one bit width, tuned on N(0,1) and Laplace (bench/quality)
// for the quality targets at the lowest cost. Every start costs an
// evaluation pass plus a refit; the best refit (by its exact error for
// its codes) goes on for iters rounds. INT4 sub-blocks of 32 often have
// one outlying extreme: the one-sided start finds their optimum, which
// the symmetric ones (or more rounds from them) miss.
type setting struct {
	starts []start
	iters  int     // code assignment + refit rounds of the float fit
	omega  float64 // over-relaxation of the float refits
	alt    int     // integer/(d, dmin) alternations before re-coding
	final  bool    // refit (d, dmin) after re-coding
}

var settings = [9]setting{
	2: {starts: []start{{beta: 0.7}}, iters: 0, omega: 1, alt: 1, final: true},
	4: {starts: []start{{beta: 1}, {beta: 0.93, oneSided: true}}, iters: 2, omega: 2, alt: 1, final: true},
	8: {starts: []start{{beta: 1}}, iters: 1, omega: 1, alt: 1, final: true},
}

// sub is the state of one sub-block.
type sub struct {
	lo, hi    float32
	n, x, xx  float64 // Σw, Σw·x, Σw·x²
	q, qq, xq float64 // Σw·q, Σw·q², Σw·x·q of the latest codes
	s, b      float64 // float fit: x̂ = s·q + b
	sc, mc    int32
	e         float64 // error of the best start
	done      bool    // float fit final
}

// subSlices are sub-block j's values and weights (nil without weights).
func subSlices(x, w []float32, j, g int) (xs, ws []float32) {
	xs = x[j*g : min(len(x), (j+1)*g)]
	if w != nil {
		ws = w[j*g : j*g+len(xs)]
	}
	return xs, ws
}

// DQ is dq's Quantize (kernels/dq) as it was before its fit was
// vectorised across sub-blocks.
func DQ(x, w []float32, bits int, codes, params []byte, base int64) error {
	g, pb, bpsb, err := kernels.SuperBlockLayout(bits)
	if err != nil {
		return err
	}
	nsub := kernels.SuperBlockElems / g
	var p kernels.SuperBlockParams
	var subs [16]sub
	for sb := 0; sb*kernels.SuperBlockElems < len(x); sb++ {
		start := sb * kernels.SuperBlockElems
		blk := x[start:min(len(x), start+kernels.SuperBlockElems)]
		var wb []float32
		if w != nil {
			wb = w[start : start+len(blk)]
		}
		if err := fit(&p, subs[:], blk, wb, bits, g, pb, base+int64(start)); err != nil {
			return err
		}
		kernels.EncodeSuperBlockParams(params[sb*bpsb:(sb+1)*bpsb], &p, nsub, pb)
		kernels.PackSuperBlock(codes[start*bits/8:], blk, &p, bits)
	}
	return nil
}

// fit chooses the params of one super-block x.
func fit(p *kernels.SuperBlockParams, subs []sub, x, w []float32, bits, g, pb int, base int64) error {
	*p = kernels.SuperBlockParams{}
	ns := (len(x) + g - 1) / g
	subs = subs[:ns]
	qmax := float32(kernels.QMax(bits))
	cfg := &settings[bits]
	// Pass 1: range and moments of every sub-block.
	for j := range subs {
		xs, ws := subSlices(x, w, j, g)
		moments(&subs[j], xs, ws)
	}
	constant := true
	for j := range subs {
		sj := &subs[j]
		if sj.lo-sj.lo != 0 || sj.hi-sj.hi != 0 || sj.xx-sj.xx != 0 {
			xs, _ := subSlices(x, nil, j, g)
			for i, v := range xs {
				if v-v != 0 {
					return &kernels.NonFiniteError{Index: base + int64(j*g+i), Value: v}
				}
			}
		}
		if sj.lo < -65504 || sj.hi > 65504 {
			return &kernels.ParamRangeError{Group: base/int64(g) + int64(j), Min: sj.lo, Max: sj.hi}
		}
		constant = constant && sj.lo == sj.hi && sj.lo == subs[0].lo
	}
	if constant { // exact when the value is an fp16 value
		p.DMin = fp.Float32ToHalf(-x[0])
		for j := range subs {
			p.Mc[j] = 1
		}
		return nil
	}
	// Float fit of every sub-block, step by step across the sub-blocks
	// (their fits are independent: each step's code sums of all of them
	// are one lockstep pass).
	for j := range subs {
		if sj := &subs[j]; sj.lo == sj.hi {
			sj.s, sj.b = 0, float64(sj.lo)
			sj.q, sj.qq, sj.xq = 0, 0, 0
			sj.done = true
		} else {
			sj.done = false
			sj.e = math.Inf(1)
		}
	}
	multi := len(cfg.starts) > 1
	var at pass
	var best [16]saved
	for _, st := range cfg.starts {
		at.on = [16]bool{}
		for j := range subs {
			sj := &subs[j]
			if sj.done {
				continue
			}
			lo, hi := sj.lo, sj.hi
			if st.oneSided {
				mean := float32(sj.x / sj.n)
				if sj.n <= 0 { // weights all zero
					mean = lo/2 + hi/2
				}
				if hi-mean > mean-lo {
					hi = mean + (hi-mean)*st.beta
				} else {
					lo = mean - (mean-lo)*st.beta
				}
			} else {
				c := lo/2 + hi/2
				lo, hi = c-(c-lo)*st.beta, c+(hi-c)*st.beta
			}
			s, b := (hi-lo)/qmax, lo
			// The best start so far stays in (s, b) and its sums.
			best[j] = saved{sj.s, sj.b, sj.q, sj.qq, sj.xq}
			sj.s, sj.b = float64(s), float64(b)
			at.set(j, s, b)
		}
		at.stats(subs, x, w, g, qmax)
		for j := range subs {
			sj := &subs[j]
			if !at.on[j] {
				continue
			}
			refit(sj, 1)
			if multi {
				if e := sj.errAt(sj.s, sj.b); e < sj.e {
					sj.e = e
				} else {
					bj := &best[j]
					sj.s, sj.b, sj.q, sj.qq, sj.xq = bj.s, bj.b, bj.q, bj.qq, bj.xq
				}
			}
		}
	}
	for it := 0; it < cfg.iters; it++ {
		at.on = [16]bool{}
		for j := range subs {
			sj := &subs[j]
			if sj.done {
				continue
			}
			best[j] = saved{q: sj.q, qq: sj.qq, xq: sj.xq}
			at.set(j, float32(sj.s), float32(sj.b))
		}
		at.stats(subs, x, w, g, qmax)
		for j := range subs {
			sj := &subs[j]
			if !at.on[j] {
				continue
			}
			if bj := &best[j]; it == 0 && bj.q == sj.q && bj.qq == sj.qq && bj.xq == sj.xq {
				// The codes of the start's refit: (s, b) is their
				// optimum already, and stays.
				sj.done = true
				continue
			}
			refit(sj, cfg.omega)
		}
	}
	// Double quantization of the sub-params.
	pmax := int32(1)<<pb - 1
	var smax, mpos, mneg float64
	for j := range subs {
		smax = max(smax, subs[j].s)
		if m := -subs[j].b; m > 0 {
			mpos = max(mpos, m)
		} else {
			mneg = max(mneg, -m)
		}
	}
	d := smax / float64(pmax)
	dmin := mpos / float64(pmax)
	if mneg > mpos { // the sub-mins share dmin's sign
		dmin = -mneg / float64(pmax)
	}
	for a := 0; a < cfg.alt; a++ {
		chooseCodes(subs, d, dmin, pmax)
		d, dmin = refitD(subs, d, dmin)
	}
	// The codes chosen for the unrounded (d, dmin) serve the re-coding.
	dh, dminh := half(d), half(dmin)
	p.D, p.DMin = dh, dminh
	store(p, subs)
	// Re-code with the quantized params, refit each sub-block's integer
	// codes for the new codes, then (d, dmin) for those integers (their
	// joint optimum, so the integers stay).
	at.on = [16]bool{}
	for j := range subs {
		s, m := p.SubBlockParams(j)
		at.set(j, s, -m)
	}
	at.stats(subs, x, w, g, qmax)
	for j := range subs {
		refit(&subs[j], 1)
	}
	df, dminf := float64(fp.HalfToFloat32(dh)), float64(fp.HalfToFloat32(dminh))
	chooseCodes(subs, df, dminf, pmax)
	if cfg.final {
		nd, ndmin := refitD(subs, df, dminf)
		dh, dminh = half(nd), half(ndmin)
	}
	p.D, p.DMin = dh, dminh
	store(p, subs)
	return nil
}

func store(p *kernels.SuperBlockParams, subs []sub) {
	for j := range subs {
		p.Sc[j], p.Mc[j] = uint8(subs[j].sc), uint8(subs[j].mc)
	}
}

// half rounds a float64 to the nearest finite fp16.
func half(v float64) uint16 {
	v = max(-65504, min(65504, v))
	if v != v {
		return 0
	}
	return fp.Float32ToHalf(float32(v))
}

// moments fills lo, hi and the weighted moments of xs. A NaN does not
// reach lo or hi but makes xx NaN.
func moments(sj *sub, xs, ws []float32) {
	if ws == nil {
		lo, hi := rangeKey(xs[0]), rangeKey(xs[0])
		var s0, s1, q0, q1 float32
		i := 0
		for ; i+2 <= len(xs); i += 2 {
			a, b := xs[i], xs[i+1]
			ka, kb := rangeKey(a), rangeKey(b)
			lo, hi = min(lo, min(ka, kb)), max(hi, max(ka, kb))
			s0 += a
			s1 += b
			q0 += a * a
			q1 += b * b
		}
		if i < len(xs) {
			a := xs[i]
			lo, hi = min(lo, rangeKey(a)), max(hi, rangeKey(a))
			s0 += a
			q0 += a * a
		}
		sj.lo, sj.hi = unrangeKey(lo), unrangeKey(hi)
		sj.n, sj.x, sj.xx = float64(len(xs)), float64(s0)+float64(s1), float64(q0)+float64(q1)
		return
	}
	lo, hi := xs[0], xs[0]
	var n, s, q float64
	for i, v := range xs {
		lo, hi = min(lo, v), max(hi, v)
		c := float64(ws[i])
		n += c
		s += c * float64(v)
		q += c * float64(v) * float64(v)
	}
	sj.lo, sj.hi, sj.n, sj.x, sj.xx = lo, hi, n, s, q
}

// rangeKey maps a float32 to an int32 of the same order (-0 below +0), so
// integer min and max (conditional moves) find the range.
func rangeKey(v float32) int32 {
	u := int32(math.Float32bits(v))
	return u ^ int32(uint32(u>>31)>>1)
}

func unrangeKey(k int32) float32 { return math.Float32frombits(uint32(k ^ int32(uint32(k>>31)>>1))) }

// stats assigns the nearest codes for x̂ = s·q + b and sums them.
func stats(sj *sub, xs, ws []float32, s, b, qmax float32) {
	var inv float32
	if s != 0 {
		inv = 1 / s
	}
	qm := int32(qmax)
	if ws == nil {
		if n := len(xs) &^ 7; n > 0 && inv < 1e10 {
			var lanes [8]float32
			q, qq := codeSumsGo(xs[:n], b, inv, qmax, &lanes)
			xq := float64((lanes[0]+lanes[4])+(lanes[1]+lanes[5])) + float64((lanes[2]+lanes[6])+(lanes[3]+lanes[7]))
			for _, v := range xs[n:] {
				c := max(0, min(qm, int32(float32((v-b)*inv)+0.5)))
				q += float32(c)
				qq += float32(c * c)
				xq += float64(v * float32(c))
			}
			sj.q, sj.qq, sj.xq = float64(q), float64(qq), xq
			return
		}
		var qi, qqi int32
		var xq0, xq1, xq2, xq3 float32
		i := 0
		for ; i+4 <= len(xs); i += 4 {
			v := xs[i : i+4 : i+4]
			c0 := max(0, min(qm, int32(float32((v[0]-b)*inv)+0.5)))
			c1 := max(0, min(qm, int32(float32((v[1]-b)*inv)+0.5)))
			c2 := max(0, min(qm, int32(float32((v[2]-b)*inv)+0.5)))
			c3 := max(0, min(qm, int32(float32((v[3]-b)*inv)+0.5)))
			qi += (c0 + c1) + (c2 + c3)
			qqi += (c0*c0 + c1*c1) + (c2*c2 + c3*c3)
			xq0 += v[0] * float32(c0)
			xq1 += v[1] * float32(c1)
			xq2 += v[2] * float32(c2)
			xq3 += v[3] * float32(c3)
		}
		for ; i < len(xs); i++ {
			c0 := max(0, min(qm, int32(float32((xs[i]-b)*inv)+0.5)))
			qi += c0
			qqi += c0 * c0
			xq0 += xs[i] * float32(c0)
		}
		sj.q, sj.qq, sj.xq = float64(qi), float64(qqi), float64(xq0+xq1)+float64(xq2+xq3)
		return
	}
	var q, qq, xq float64
	for i, v := range xs {
		c := float64(max(0, min(qm, int32(float32((v-b)*inv)+0.5))))
		wc := float64(ws[i]) * c
		q += wc
		qq += wc * c
		xq += wc * float64(v)
	}
	sj.q, sj.qq, sj.xq = q, qq, xq
}

// refit moves (s, b) omega times towards the least-squares optimum for
// the sub-block's latest codes.
func refit(sj *sub, omega float64) {
	det := sj.n*sj.qq - sj.q*sj.q
	if !(det > 1e-9*sj.n*sj.qq) || sj.n <= 0 {
		if sj.n > 0 && sj.qq == 0 { // every code 0: only the offset moves
			sj.b = sj.x / sj.n
		}
		return
	}
	id := 1 / det
	s := (sj.n*sj.xq - sj.q*sj.x) * id
	b := (sj.qq*sj.x - sj.q*sj.xq) * id
	if omega != 1 {
		s = sj.s + omega*(s-sj.s)
		b = sj.b + omega*(b-sj.b)
	}
	if s < 0 {
		s = 0
		b = sj.x / sj.n
	}
	sj.s, sj.b = s, b
}

// errAt is the sub-block's squared error of its latest codes at (s, b).
func (sj *sub) errAt(s, b float64) float64 {
	return sj.xx - 2*s*sj.xq - 2*b*sj.x + s*s*sj.qq + 2*s*b*sj.q + sj.n*b*b
}

// chooseCodes picks each sub-block's (sc, mc) among the codes next to its
// float fit for the lowest error of its latest codes (the first of equal
// errors in the order (s0, m0), (s0, m1), (s1, m0), (s1, m1)).
func chooseCodes(subs []sub, d, dmin float64, pmax int32) {
	df, dmf := float32(d), float32(dmin)
	var id, idm float64
	if d != 0 {
		id = 1 / d
	}
	if dmin != 0 {
		idm = 1 / dmin
	}
	pm := int64(pmax)
	for j := range subs {
		sj := &subs[j]
		s0 := int32(max(0, min(pm, int64(sj.s*id))))
		m0 := int32(max(0, min(pm, int64(-sj.b*idm))))
		s1, m1 := min(s0+1, pmax), min(m0+1, pmax)
		sa, sb := float64(float32(df*float32(s0))), float64(float32(df*float32(s1)))
		ma, mb := -float64(float32(dmf*float32(m0))), -float64(float32(dmf*float32(m1)))
		// errAt(s, b) = xx + s·(s·qq - 2·xq) + b·(b·n - 2·x) + 2·s·b·q;
		// keys order the four errors (low bits: the candidate).
		fa, fb := sa*(sa*sj.qq-2*sj.xq), sb*(sb*sj.qq-2*sj.xq)
		ga, gb := ma*(ma*sj.n-2*sj.x), mb*(mb*sj.n-2*sj.x)
		q2 := 2 * sj.q
		k0 := errKey(sj.xx+fa+ga+q2*sa*ma, 0)
		k1 := errKey(sj.xx+fa+gb+q2*sa*mb, 1)
		k2 := errKey(sj.xx+fb+ga+q2*sb*ma, 2)
		k3 := errKey(sj.xx+fb+gb+q2*sb*mb, 3)
		k := min(min(k0, k1), min(k2, k3))
		sj.sc = s0 + int32(k>>1&1)*(s1-s0)
		sj.mc = m0 + int32(k&1)*(m1-m0)
	}
}

// errKey orders errors by their float64 bits (a negative rounding of a
// zero error counts as 0) with the candidate index in the two low bits.
func errKey(e float64, idx uint64) uint64 {
	b := int64(math.Float64bits(e))
	b &^= b >> 63
	return uint64(b)&^3 | idx
}

// refitD is the joint least-squares (d, dmin) for the sub-blocks' codes
// and integer sub-params: x̂ = d·sc·q - dmin·mc.
func refitD(subs []sub, d, dmin float64) (float64, float64) {
	var a, bc, c, r1, r2 float64
	for j := range subs {
		sj := &subs[j]
		sc, mc := float64(sj.sc), float64(sj.mc)
		a += sc * sc * sj.qq
		bc -= sc * mc * sj.q
		c += mc * mc * sj.n
		r1 += sc * sj.xq
		r2 -= mc * sj.x
	}
	det := a*c - bc*bc
	switch {
	case det > 1e-9*a*c:
		return (c*r1 - bc*r2) / det, (a*r2 - bc*r1) / det
	case a > 0 && c == 0:
		return r1 / a, dmin
	case c > 0 && a == 0:
		return d, r2 / c
	}
	return d, dmin
}

type saved struct{ s, b, q, qq, xq float64 }

type pass struct {
	on   [16]bool
	s, b [16]float32
}

func (at *pass) set(j int, s, b float32) {
	at.on[j] = true
	at.s[j], at.b[j] = s, b
}

func (at *pass) stats(subs []sub, x, w []float32, g int, qmax float32) {
	for j := range subs {
		if at.on[j] {
			xs, ws := subSlices(x, w, j, g)
			stats(&subs[j], xs, ws, at.s[j], at.b[j], qmax)
		}
	}
}

func codeSumsGo(x []float32, b, inv, qmax float32, lanes *[8]float32) (q, qq float32) {
	qm := int64(qmax)
	var l [8]float32
	for i := 0; i+8 <= len(x); i += 8 {
		v := (*[8]float32)(x[i:])
		for k := range 8 {
			c := float32(max(0, min(qm, int64(float32((v[k]-b)*inv)+0.5))))
			q += c
			qq += c * c
			l[k] += v[k] * c
		}
	}
	*lanes = l
	return q, qq
}
