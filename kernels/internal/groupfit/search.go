package groupfit

import (
	"math"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
)

// Search is the parameter search of one group: the best params so far.
type Search struct {
	X    []float32
	W    []float32 // error weight per element; nil = unweighted
	QMax int64
	// Best holds the best evaluated params and their sums; after Accept,
	// possibly params whose stored error is at most Best.Err (a bound).
	Best  Stats
	valid bool
}

// NewSearch starts a search over group x (len > 0) at bits; w (nil, or
// one weight >= 0 per element) weighs each element's squared error.
func NewSearch(x, w []float32, bits int) Search {
	return Search{X: x, W: w, QMax: int64(1)<<bits - 1}
}

// Try evaluates fp16 params exactly into st and keeps them when they beat
// the best; it reports whether they did.
func (s *Search) Try(st *Stats, scaleH, minH uint16) bool {
	if s.W != nil {
		EvalWeighted(st, s.X, s.W, scaleH, minH, s.QMax)
	} else {
		Eval(st, s.X, scaleH, minH, s.QMax)
	}
	if s.valid && st.Err >= s.Best.Err {
		return false
	}
	s.Best, s.valid = *st, true
	return true
}

// ValidParams reports whether fp16 params are usable: a finite positive
// scale and a finite min.
func ValidParams(scaleH, minH uint16) bool {
	return scaleH&0x7fff != 0 && scaleH < 0x7c00 && minH&0x7c00 != 0x7c00
}

// Step is the least-squares refit of (scale, min) for the codes of st,
// moved omega times from st's params, rounded to nearest fp16. With
// omega 1 it minimizes the error of st's codes; larger omega
// over-relaxes (codes follow the params, so the fixed-code step is too
// short).
func Step(st *Stats, omega float64) (scaleH, minH uint16, ok bool) {
	ds, dm := lsDelta(st)
	s := float64(st.Scale) + omega*ds
	m := float64(st.Min) + omega*dm
	if !(s > 0 && s <= 65504 && math.Abs(m) <= 65504) {
		return 0, 0, false
	}
	scaleH, minH = fp.Float32ToHalf(float32(s)), fp.Float32ToHalf(float32(m))
	return scaleH, minH, ValidParams(scaleH, minH)
}

// lsDelta solves the normal equations of min Σ (r - ds·q - dm)².
func lsDelta(st *Stats) (ds, dm float64) {
	d := st.N*st.QQ - st.Q*st.Q
	// Every (weighted) code equal: only the min can move. Unweighted, d is
	// an integer; weighted, it is Σ w_i w_j (q_i - q_j)² over pairs.
	degenerate := d <= 0.5
	if st.Weighted {
		degenerate = d <= 1e-9*st.N*st.QQ
	}
	if degenerate {
		if st.N <= 0 {
			return 0, 0
		}
		return 0, st.R / st.N
	}
	return (st.N*st.RQ - st.Q*st.R) / d, (st.QQ*st.R - st.Q*st.RQ) / d
}

// Bound is the squared error of st's codes under other fp16 params. The
// shared kernel gives each element the nearest code for the stored
// params, so their stored error is at most Bound (up to float rounding).
func Bound(st *Stats, scaleH, minH uint16) float64 {
	ds := float64(fp.HalfToFloat32(scaleH)) - float64(st.Scale)
	dm := float64(fp.HalfToFloat32(minH)) - float64(st.Min)
	return st.Err - 2*ds*st.RQ - 2*dm*st.R + ds*ds*st.QQ + 2*ds*dm*st.Q + st.N*dm*dm
}

// RefineFrom continues from the evaluated point st with up to passes
// more evaluations: each moves to the over-relaxed least-squares refit
// (omega) of the last point or, after a move that went uphill or when
// the over-relaxed params are unusable, to the plain refit (omega 1) of
// the best point. It stops early when the params repeat. With accept,
// the refit of the final point is then taken without a pass when its
// Bound beats the best evaluated error.
func (s *Search) RefineFrom(st *Stats, passes int, omega float64, accept bool) {
	var cur Stats
	base, om := st, omega
	var seen [4]uint32 // recently evaluated params
	seen[0] = key(st.ScaleH, st.MinH)
	for k := 0; k < passes; k++ {
		ns, nm, ok := Step(base, om)
		if !ok && om != 1 {
			ns, nm, ok = Step(base, 1)
		}
		if !ok || has(&seen, key(ns, nm)) {
			break
		}
		seen[(k+1)%len(seen)] = key(ns, nm)
		if s.Try(&cur, ns, nm) {
			base, om = &cur, omega
		} else {
			base, om = &s.Best, 1 // uphill: plain refit of the best point
		}
	}
	if accept {
		s.Accept(base)
	}
}

func key(scaleH, minH uint16) uint32 { return uint32(scaleH)<<16 | uint32(minH) }

func has(seen *[4]uint32, k uint32) bool {
	return seen[0] == k || seen[1] == k || seen[2] == k || seen[3] == k
}

// Accept takes the plain least-squares refit of st when its Bound beats
// the best error. Call it last: Best's sums then describe other params.
func (s *Search) Accept(st *Stats) {
	ns, nm, ok := Step(st, 1)
	if !ok || (ns == st.ScaleH && nm == st.MinH) {
		return
	}
	if b := Bound(st, ns, nm); b < s.Best.Err {
		s.Best.ScaleH, s.Best.MinH = ns, nm
		s.Best.Scale, s.Best.Min = fp.HalfToFloat32(ns), fp.HalfToFloat32(nm)
		s.Best.Err = b
	}
}

// Shrink returns the params covering [c-(c-lo)·beta, c+(hi-c)·beta], c
// the midpoint of [lo, hi], rounded outward to fp16 like minmax (so a
// group far from zero, whose fp16 min is coarse next to its range, still
// gets a usable start). Shrink(lo, hi, bits, 1) is minmax's params.
func Shrink(lo, hi float32, bits int, beta float32) (scaleH, minH uint16) {
	if beta != 1 {
		lo, hi = kernels.ShrinkRange(lo, hi, beta)
	}
	scaleH, minH, _ = kernels.MinMaxParams(lo, hi, bits)
	return scaleH, minH
}
