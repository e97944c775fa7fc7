package ref

import "github.com/arrowquant/arrowquant/internal/fp"

// Stats are the sums of one evaluation pass of a group at fixed fp16
// params: codes q exactly as kernels.PackGroups computes them, the stored
// reconstruction x̂ = float32(float32(q)*scale)+min, residuals r = x - x̂.
type Stats struct {
	Err          float64 // Σ r²: the stored squared error of the group
	R, RQ        float64 // Σ r, Σ r·q
	Q, QQ        float64 // Σ q, Σ q²
	N            float64
	Scale, Min   float32 // the params, widened from fp16
	ScaleH, MinH uint16
	Weighted     bool // the sums carry per-element weights (EvalWeighted)
}

// Eval quantizes x with the fp16 params (scaleH, minH) like the shared
// pack kernel (inv = 1/scale in float32, code = int64(float32((v-min)*inv)
// + 0.5) clamped to [0, qmax]), reconstructs like the shared dequantize
// kernel, and fills st with the sums. Two lanes of float32 accumulators:
// the sums serve comparisons and refits, where their rounding is noise.
func Eval(st *Stats, x []float32, scaleH, minH uint16, qmax int64) {
	s, m := fp.HalfToFloat32(scaleH), fp.HalfToFloat32(minH)
	var inv float32
	if s != 0 {
		inv = 1 / s
	}
	var e0, e1, r0, r1, rq0, rq1 float32
	var q0, q1, qq0, qq1 int64
	i := 0
	for ; i+2 <= len(x); i += 2 {
		v := x[i : i+2 : i+2]
		c0 := max(0, min(qmax, int64(float32((v[0]-m)*inv)+0.5)))
		c1 := max(0, min(qmax, int64(float32((v[1]-m)*inv)+0.5)))
		f0, f1 := float32(c0), float32(c1)
		d0 := v[0] - (float32(f0*s) + m)
		d1 := v[1] - (float32(f1*s) + m)
		e0 += float32(d0 * d0)
		e1 += float32(d1 * d1)
		r0 += d0
		r1 += d1
		rq0 += float32(d0 * f0)
		rq1 += float32(d1 * f1)
		q0 += c0
		q1 += c1
		qq0 += c0 * c0
		qq1 += c1 * c1
	}
	if i < len(x) {
		v := x[i]
		c0 := max(0, min(qmax, int64(float32((v-m)*inv)+0.5)))
		f0 := float32(c0)
		d0 := v - (float32(f0*s) + m)
		e0 += float32(d0 * d0)
		r0 += d0
		rq0 += float32(d0 * f0)
		q0 += c0
		qq0 += c0 * c0
	}
	*st = Stats{
		Err: float64(e0) + float64(e1), R: float64(r0) + float64(r1), RQ: float64(rq0) + float64(rq1),
		Q: float64(q0 + q1), QQ: float64(qq0 + qq1), N: float64(len(x)),
		Scale: s, Min: m, ScaleH: scaleH, MinH: minH,
	}
}

// EvalWeighted is Eval with a weight per element on every sum (Err, R,
// RQ, Q, QQ, N = Σw): the refit and Bound then minimize the weighted
// squared error. Two lanes of float32 accumulators, as Eval.
func EvalWeighted(st *Stats, x, w []float32, scaleH, minH uint16, qmax int64) {
	s, m := fp.HalfToFloat32(scaleH), fp.HalfToFloat32(minH)
	var inv float32
	if s != 0 {
		inv = 1 / s
	}
	var e0, e1, r0, r1, rq0, rq1, q0, q1, qq0, qq1, n0, n1 float32
	w = w[:len(x)]
	i := 0
	for ; i+2 <= len(x); i += 2 {
		v := x[i : i+2 : i+2]
		ww := w[i : i+2 : i+2]
		c0 := max(0, min(qmax, int64(float32((v[0]-m)*inv)+0.5)))
		c1 := max(0, min(qmax, int64(float32((v[1]-m)*inv)+0.5)))
		f0, f1 := float32(c0), float32(c1)
		d0 := v[0] - (float32(f0*s) + m)
		d1 := v[1] - (float32(f1*s) + m)
		wd0, wd1 := float32(ww[0]*d0), float32(ww[1]*d1)
		wf0, wf1 := float32(ww[0]*f0), float32(ww[1]*f1)
		e0 += float32(wd0 * d0)
		e1 += float32(wd1 * d1)
		r0 += wd0
		r1 += wd1
		rq0 += float32(wd0 * f0)
		rq1 += float32(wd1 * f1)
		q0 += wf0
		q1 += wf1
		qq0 += float32(wf0 * f0)
		qq1 += float32(wf1 * f1)
		n0 += ww[0]
		n1 += ww[1]
	}
	if i < len(x) {
		v, wi := x[i], w[i]
		c := max(0, min(qmax, int64(float32((v-m)*inv)+0.5)))
		f := float32(c)
		d := v - (float32(f*s) + m)
		wd, wf := float32(wi*d), float32(wi*f)
		e0 += float32(wd * d)
		r0 += wd
		rq0 += float32(wd * f)
		q0 += wf
		qq0 += float32(wf * f)
		n0 += wi
	}
	*st = Stats{
		Err: float64(e0) + float64(e1), R: float64(r0) + float64(r1), RQ: float64(rq0) + float64(rq1),
		Q: float64(q0) + float64(q1), QQ: float64(qq0) + float64(qq1), N: float64(n0) + float64(n1),
		Scale: s, Min: m, ScaleH: scaleH, MinH: minH, Weighted: true,
	}
}
