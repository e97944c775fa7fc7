// Package dq is the "dq" quantization method: double-quantized
// super-blocks (kernels' super-block format, the layout of llama.cpp's
// Q2_K/Q4_K budgets) fitted for plain squared error. Per super-block of
// 256 elements:
//
//  1. each sub-block gets a float (scale, min) from a shrunk min/max start
//     and a few rounds of code assignment plus least-squares refit;
//  2. the sub-scales and sub-mins become P-bit codes against fp16 d and
//     dmin, chosen by alternating the integer codes (best of the
//     neighbouring codes under the sub-block's exact quadratic error for
//     its codes) and a joint least-squares refit of (d, dmin) over all
//     elements of the super-block;
//  3. the element codes are recomputed with the quantized params, each
//     sub-block's (sc, mc) codes refitted for them, and (d, dmin) refitted
//     once more before the final codes are packed.
//
// The weighted variant minimizes Σ w·(x - x̂)² with the same steps.
// Listed in kernels/methods.
package dq

import (
	"math"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
)

// Name is the registered method name.
const Name = "dq"

// Method is the dq method.
var Method = kernels.Method{
	Name:        Name,
	Description: "double-quantized super-blocks of 256 (P-bit sub-block scales/mins against fp16 d/dmin), least-squares fits for squared error",
	SuperBlock:  Quantize,
}

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

// subs is the fit state of a super-block's sub-blocks, sub-block j at
// index j of every array (so each step runs across the sub-blocks).
type subs struct {
	lo, hi    [16]float32
	n, x, xx  [16]float64 // Σw, Σw·x, Σw·x²
	q, qq, xq [16]float64 // Σw·q, Σw·q², Σw·x·q of the latest codes
	s, b      [16]float64 // float fit: x̂ = s·q + b
	e         [16]float64 // error of the best start
	sc, mc    [16]int32
	done      [16]bool // float fit final
}

// saved are the sub-blocks' float fits and code sums kept across a pass.
type saved struct{ s, b, q, qq, xq [16]float64 }

// save copies the first ns sub-blocks' fits and sums into v.
func (f *subs) save(v *saved, ns int) {
	copy(v.s[:ns], f.s[:ns])
	copy(v.b[:ns], f.b[:ns])
	copy(v.q[:ns], f.q[:ns])
	copy(v.qq[:ns], f.qq[:ns])
	copy(v.xq[:ns], f.xq[:ns])
}

func (f *subs) restore(v *saved, j int) {
	f.s[j], f.b[j], f.q[j], f.qq[j], f.xq[j] = v.s[j], v.b[j], v.q[j], v.qq[j], v.xq[j]
}

// subSlices are sub-block j's values and weights (nil without weights).
func subSlices(x, w []float32, j, g int) (xs, ws []float32) {
	xs = x[j*g : min(len(x), (j+1)*g)]
	if w != nil {
		ws = w[j*g : j*g+len(xs)]
	}
	return xs, ws
}

// Quantize is dq's kernels.SuperBlockFunc.
func Quantize(x, w []float32, bits int, codes, params []byte, base int64) error {
	g, pb, bpsb, err := kernels.SuperBlockLayout(bits)
	if err != nil {
		return err
	}
	nsub := kernels.SuperBlockElems / g
	var p kernels.SuperBlockParams
	var ls lockstep
	for sb := 0; sb*kernels.SuperBlockElems < len(x); sb++ {
		start := sb * kernels.SuperBlockElems
		blk := x[start:min(len(x), start+kernels.SuperBlockElems)]
		var wb []float32
		if w != nil {
			wb = w[start : start+len(blk)]
		}
		ls.load(blk, wb, g)
		if err := fit(&p, &ls, blk, wb, bits, g, pb, base+int64(start)); err != nil {
			return err
		}
		kernels.EncodeSuperBlockParams(params[sb*bpsb:(sb+1)*bpsb], &p, nsub, pb)
		kernels.PackSuperBlock(codes[start*bits/8:], blk, &p, bits)
	}
	return nil
}

// fit chooses the params of one super-block x. ls holds x's lane
// groups when it is fitted in lockstep (see lockstep.load), and the fit's
// state.
func fit(p *kernels.SuperBlockParams, ls *lockstep, x, w []float32, bits, g, pb int, base int64) error {
	*p = kernels.SuperBlockParams{}
	ns := (len(x) + g - 1) / g
	f := &ls.f
	qmax := float32(kernels.QMax(bits))
	cfg := &settings[bits]
	// Pass 1: range and moments of every sub-block.
	ls.moments(ns, x, w, g)
	constant := true
	for j := range ns {
		lo, hi := f.lo[j], f.hi[j]
		if lo-lo != 0 || hi-hi != 0 || f.xx[j]-f.xx[j] != 0 {
			xs, _ := subSlices(x, nil, j, g)
			for i, v := range xs {
				if v-v != 0 {
					return &kernels.NonFiniteError{Index: base + int64(j*g+i), Value: v}
				}
			}
		}
		if lo < -65504 || hi > 65504 {
			return &kernels.ParamRangeError{Group: base/int64(g) + int64(j), Min: lo, Max: hi}
		}
		constant = constant && lo == hi && lo == f.lo[0]
	}
	if constant { // exact when the value is an fp16 value
		p.DMin = fp.Float32ToHalf(-x[0])
		for j := range ns {
			p.Mc[j] = 1
		}
		return nil
	}
	// Float fit of every sub-block, step by step across the sub-blocks
	// (their fits are independent: each step's code sums of all of them
	// are one lockstep pass).
	for j := range ns {
		if f.lo[j] == f.hi[j] {
			f.s[j], f.b[j] = 0, float64(f.lo[j])
			f.q[j], f.qq[j], f.xq[j] = 0, 0, 0
			f.done[j] = true
		} else {
			f.done[j] = false
			f.e[j] = math.Inf(1)
		}
	}
	multi := len(cfg.starts) > 1
	at, best := &ls.at, &ls.best
	for _, st := range cfg.starts {
		at.on = [16]bool{}
		if multi { // the best start so far stays in (s, b) and its sums
			f.save(best, ns)
		}
		f.start(at, ns, st, qmax)
		ls.stats(ns, at, x, w, g, qmax)
		f.refit(&at.on, ns, 1)
		if multi {
			f.keepBest(best, &at.on, ns)
		}
	}
	for it := 0; it < cfg.iters; it++ {
		at.on = [16]bool{}
		if it == 0 {
			copy(best.q[:ns], f.q[:ns])
			copy(best.qq[:ns], f.qq[:ns])
			copy(best.xq[:ns], f.xq[:ns])
		}
		for j := range ns {
			if !f.done[j] {
				at.set(j, float32(f.s[j]), float32(f.b[j]))
			}
		}
		ls.stats(ns, at, x, w, g, qmax)
		if it == 0 {
			for j := range ns {
				if at.on[j] && best.q[j] == f.q[j] && best.qq[j] == f.qq[j] && best.xq[j] == f.xq[j] {
					// The codes of the start's refit: (s, b) is their
					// optimum already, and stays.
					f.done[j] = true
					at.on[j] = false
				}
			}
		}
		f.refit(&at.on, ns, cfg.omega)
	}
	// Double quantization of the sub-params.
	pmax := int32(1)<<pb - 1
	var smax, mpos, mneg float64
	for j := range ns {
		smax = max(smax, f.s[j])
		if m := -f.b[j]; m > 0 {
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
		f.chooseCodes(ns, d, dmin, pmax)
		d, dmin = f.refitD(ns, d, dmin)
	}
	// The codes chosen for the unrounded (d, dmin) serve the re-coding.
	dh, dminh := half(d), half(dmin)
	p.D, p.DMin = dh, dminh
	f.store(p, ns)
	// Re-code with the quantized params, refit each sub-block's integer
	// codes for the new codes, then (d, dmin) for those integers (their
	// joint optimum, so the integers stay).
	at.on = [16]bool{}
	for j := range ns {
		s, m := p.SubBlockParams(j)
		at.set(j, s, -m)
	}
	ls.stats(ns, at, x, w, g, qmax)
	f.refit(&at.on, ns, 1)
	df, dminf := float64(fp.HalfToFloat32(dh)), float64(fp.HalfToFloat32(dminh))
	f.chooseCodes(ns, df, dminf, pmax)
	if cfg.final {
		nd, ndmin := f.refitD(ns, df, dminf)
		dh, dminh = half(nd), half(ndmin)
	}
	p.D, p.DMin = dh, dminh
	f.store(p, ns)
	return nil
}

func (f *subs) store(p *kernels.SuperBlockParams, ns int) {
	for j := range ns {
		p.Sc[j], p.Mc[j] = uint8(f.sc[j]), uint8(f.mc[j])
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

// moments fills sub-block j's lo, hi and the weighted moments of its
// values xs. A NaN does not reach lo or hi but makes xx NaN.
func (f *subs) moments(j int, xs, ws []float32) {
	if ws == nil {
		lo, hi := key(xs[0]), key(xs[0])
		var s0, s1, q0, q1 float32
		i := 0
		for ; i+2 <= len(xs); i += 2 {
			a, b := xs[i], xs[i+1]
			ka, kb := key(a), key(b)
			lo, hi = min(lo, min(ka, kb)), max(hi, max(ka, kb))
			s0 += a
			s1 += b
			q0 += a * a
			q1 += b * b
		}
		if i < len(xs) {
			a := xs[i]
			lo, hi = min(lo, key(a)), max(hi, key(a))
			s0 += a
			q0 += a * a
		}
		f.lo[j], f.hi[j] = unkey(lo), unkey(hi)
		f.n[j], f.x[j], f.xx[j] = float64(len(xs)), float64(s0)+float64(s1), float64(q0)+float64(q1)
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
	f.lo[j], f.hi[j], f.n[j], f.x[j], f.xx[j] = lo, hi, n, s, q
}

// key maps a float32 to an int32 of the same order (-0 below +0), so
// integer min and max (conditional moves) find the range.
func key(v float32) int32 {
	u := int32(math.Float32bits(v))
	return u ^ int32(uint32(u>>31)>>1)
}

func unkey(k int32) float32 { return math.Float32frombits(uint32(k ^ int32(uint32(k>>31)>>1))) }

// stats assigns sub-block j's nearest codes for x̂ = s·q + b and sums
// them.
func (f *subs) stats(j int, xs, ws []float32, s, b, qmax float32) {
	var inv float32
	if s != 0 {
		inv = 1 / s
	}
	qm := int32(qmax)
	if ws == nil {
		if n := len(xs) &^ 7; n > 0 && inv < maxInv {
			var lanes [8]float32
			q, qq := codeSums(xs[:n], b, inv, qmax, &lanes)
			xq := float64((lanes[0]+lanes[4])+(lanes[1]+lanes[5])) + float64((lanes[2]+lanes[6])+(lanes[3]+lanes[7]))
			for _, v := range xs[n:] {
				c := max(0, min(qm, int32(float32((v-b)*inv)+0.5)))
				q += float32(c)
				qq += float32(c * c)
				xq += float64(v * float32(c))
			}
			f.q[j], f.qq[j], f.xq[j] = float64(q), float64(qq), xq
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
		f.q[j], f.qq[j], f.xq[j] = float64(qi), float64(qqi), float64(xq0+xq1)+float64(xq2+xq3)
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
	f.q[j], f.qq[j], f.xq[j] = q, qq, xq
}

// refitGo moves (s, b) of the sub-blocks on omega times towards the
// least-squares optimum for their latest codes (refit's portable form).
func (f *subs) refitGo(on *[16]bool, omega float64) {
	for j := range on {
		if !on[j] {
			continue
		}
		n, q, qq := f.n[j], f.q[j], f.qq[j]
		det := n*qq - q*q
		if !(det > 1e-9*n*qq) || n <= 0 {
			if n > 0 && qq == 0 { // every code 0: only the offset moves
				f.b[j] = f.x[j] / n
			}
			continue
		}
		id := 1 / det
		s := (n*f.xq[j] - q*f.x[j]) * id
		b := (qq*f.x[j] - q*f.xq[j]) * id
		if omega != 1 {
			s = f.s[j] + omega*(s-f.s[j])
			b = f.b[j] + omega*(b-f.b[j])
		}
		if s < 0 {
			s = 0
			b = f.x[j] / n
		}
		f.s[j], f.b[j] = s, b
	}
}

// startGo sets the start st of every sub-block not done: its (s, b) in f
// and in the pass at: start's portable form.
func (f *subs) startGo(at *pass, ns int, st start, qmax float32) {
	for j := range ns {
		if f.done[j] {
			continue
		}
		lo, hi := f.lo[j], f.hi[j]
		if st.oneSided {
			mean := float32(f.x[j] / f.n[j])
			if f.n[j] <= 0 { // weights all zero
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
		f.s[j], f.b[j] = float64(s), float64(b)
		at.set(j, s, b)
	}
}

// keepBestGo keeps the refitted start of each sub-block on where its
// error is below the best start's so far (and makes it the best), else
// brings back the best start's fit and sums: keepBest's portable form.
func (f *subs) keepBestGo(best *saved, on *[16]bool, ns int) {
	for j := range ns {
		if !on[j] {
			continue
		}
		if e := f.errAt(j); e < f.e[j] {
			f.e[j] = e
		} else {
			f.restore(best, j)
		}
	}
}

// errAt is sub-block j's squared error of its latest codes at its (s, b).
func (f *subs) errAt(j int) float64 {
	s, b := f.s[j], f.b[j]
	return f.xx[j] - 2*s*f.xq[j] - 2*b*f.x[j] + s*s*f.qq[j] + 2*s*b*f.q[j] + f.n[j]*b*b
}

// chooseCodesGo picks each sub-block's (sc, mc) among the codes next to
// its float fit for the lowest error of its latest codes (the first of
// equal errors in the order (s0, m0), (s0, m1), (s1, m0), (s1, m1)):
// chooseCodes' portable form.
func (f *subs) chooseCodesGo(ns int, d, dmin float64, pmax int32) {
	df, dmf := float32(d), float32(dmin)
	id, idm := codeSteps(d, dmin)
	pm := int64(pmax)
	for j := range ns {
		s0 := int32(max(0, min(pm, int64(f.s[j]*id))))
		m0 := int32(max(0, min(pm, int64(-f.b[j]*idm))))
		s1, m1 := min(s0+1, pmax), min(m0+1, pmax)
		sa, sb := float64(float32(df*float32(s0))), float64(float32(df*float32(s1)))
		ma, mb := -float64(float32(dmf*float32(m0))), -float64(float32(dmf*float32(m1)))
		// errAt(s, b) = xx + s·(s·qq - 2·xq) + b·(b·n - 2·x) + 2·s·b·q;
		// keys order the four errors (low bits: the candidate).
		qq, xq2, n, x2 := f.qq[j], 2*f.xq[j], f.n[j], 2*f.x[j]
		fa, fb := sa*(sa*qq-xq2), sb*(sb*qq-xq2)
		ga, gb := ma*(ma*n-x2), mb*(mb*n-x2)
		q2, xx := 2*f.q[j], f.xx[j]
		k0 := errKey(xx+fa+ga+q2*sa*ma, 0)
		k1 := errKey(xx+fa+gb+q2*sa*mb, 1)
		k2 := errKey(xx+fb+ga+q2*sb*ma, 2)
		k3 := errKey(xx+fb+gb+q2*sb*mb, 3)
		k := min(min(k0, k1), min(k2, k3))
		f.sc[j] = s0 + int32(k>>1&1)*(s1-s0)
		f.mc[j] = m0 + int32(k&1)*(m1-m0)
	}
}

// codeSteps are 1/d and 1/dmin (0 for 0).
func codeSteps(d, dmin float64) (id, idm float64) {
	if d != 0 {
		id = 1 / d
	}
	if dmin != 0 {
		idm = 1 / dmin
	}
	return id, idm
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
func (f *subs) refitD(ns int, d, dmin float64) (float64, float64) {
	var a, bc, c, r1, r2 float64
	for j := range ns {
		sc, mc := float64(f.sc[j]), float64(f.mc[j])
		a += sc * sc * f.qq[j]
		bc -= sc * mc * f.q[j]
		c += mc * mc * f.n[j]
		r1 += sc * f.xq[j]
		r2 -= mc * f.x[j]
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
