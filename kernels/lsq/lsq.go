// Package lsq is the "lsq" quantization method: per group, a few
// rounds of llama.cpp's make_qkx idea (assign codes, refit scale and min
// by least squares for those codes) from the better of the min/max range
// and a shrunk one, every candidate evaluated exactly as stored (fp16
// params, codes recomputed by the shared pack kernel from them). Never
// worse than minmax on a group; about 0.3-0.45 GB/s per core. Listed in
// kernels/methods.
package lsq

import (
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/internal/groupfit"
)

// Name is the registered method name.
const Name = "lsq"

// Method is the lsq method.
var Method = kernels.Method{
	Name:        Name,
	Description: "least-squares refit of group scale and min (make_qkx style, fp16-exact evaluation)",
	GroupParams: GroupParams,
	// Weighted: the same search minimizing Σ w·(x - x̂)², for per-channel
	// importance from calibration activations.
	WeightedGroupParams: WeightedGroupParams,
}

// Search settings per bit width, tuned with bench/quality's data (N(0,1),
// Laplace, Student-t(5), an LLM-like matrix with outlier columns) for the
// lowest error at 0.3 GB/s of fp32 per core or more through the fused
// kernel (an exact evaluation pass costs about 2 ns per element, the
// shared pack/dequantize/similarity part about 3.5 ns):
//
//   - beta: the shrunk start, the group's [min, max] shrunk about its
//     midpoint (beta128 for groups of 128 and more, whose min/max range
//     is wider). The plain min/max params are evaluated too, and the
//     better start is refined: groups with an outlier (LLM-like weights)
//     find their optimum from there, Gaussian-like ones from the shrunk
//     start. So no group ends worse than with minmax.
//   - passes: exact evaluations after the starts; the refit of the last
//     point is then taken without a pass when its error bound wins.
//     INT2 and INT4 spend 3 passes per group, INT8 1: at 255 levels the
//     refit of the min/max params is all there is to gain.
//   - omega: over-relaxation of the refit step. Codes follow the params,
//     so the fixed-code least-squares step is too short: 2-3 get further
//     per pass than 1; INT2 stays at 2, larger steps overshoot on groups
//     with outliers.
type setting struct {
	beta, beta128 float32
	shrunk        bool // evaluate the shrunk start besides min/max
	passes        int
	omega         float64
}

var settings = [9]setting{ // by bit width
	2: {beta: 0.6, beta128: 0.6, shrunk: true, passes: 1, omega: 2},
	4: {beta: 0.95, beta128: 0.9, shrunk: true, passes: 1, omega: 3},
	8: {passes: 0, omega: 1},
}

// GroupParams is lsq's kernels.GroupParamsFunc.
func GroupParams(x []float32, bits, groupSize int, scales, mins []uint16, base int64) error {
	return groupfit.ForEachGroupBatch(x, nil, bits, groupSize, scales, mins, base, fit)
}

// WeightedGroupParams is the search with per-element error weights.
func WeightedGroupParams(x, w []float32, bits, groupSize int, scales, mins []uint16, base int64) error {
	return groupfit.ForEachGroupBatch(x, w, bits, groupSize, scales, mins, base, fit)
}

// fit searches every group of the batch in lockstep: for each lane what
// the scalar search did (kernels/internal/ref keeps it, for the tests).
func fit(b *groupfit.Batch, bits int, lo, hi *[groupfit.Lanes]float32) {
	cfg := &settings[bits]
	beta := cfg.beta
	if b.Len() >= 128 {
		beta = cfg.beta128
	}
	all := b.All()
	var a, c [groupfit.Lanes]groupfit.Stats
	var start [groupfit.Lanes]*groupfit.Stats
	var sh, mh [groupfit.Lanes]uint16
	groupfit.ShrinkLanes(lo, hi, b.N(), bits, 1, &sh, &mh) // minmax's params
	for k := range b.N() {
		start[k] = &a[k]
	}
	b.Try(&a, &sh, &mh, all)
	if cfg.shrunk {
		groupfit.ShrinkLanes(lo, hi, b.N(), bits, beta, &sh, &mh)
		better := b.Try(&c, &sh, &mh, all)
		for k := range b.N() {
			if better&(1<<k) != 0 {
				start[k] = &c[k]
			}
		}
	}
	b.RefineFrom(&start, all, cfg.passes, cfg.omega, true)
}
