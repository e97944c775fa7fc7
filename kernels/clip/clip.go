// Package clip is the "clip" quantization method: per group, a
// grid search over clipping ranges (the group's [min, max] shrunk about
// its midpoint by several factors, each evaluated exactly as stored),
// then least-squares refits (make_qkx style) from the two best. Slower
// than lsq, closest to the per-group optimum. Listed in kernels/methods.
package clip

import (
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/internal/groupfit"
)

// Name is the registered method name.
const Name = "clip"

// Method is the clip method.
var Method = kernels.Method{
	Name:        Name,
	Description: "clipping grid search plus least-squares refit of group scale and min (fp16-exact evaluation)",
	GroupParams: GroupParams,
	// Weighted: the same search minimizing Σ w·(x - x̂)², for per-channel
	// importance from calibration activations.
	WeightedGroupParams: WeightedGroupParams,
}

// setting of one bit width: the shrink factors of the grid (1 is the
// min/max range itself, so clip is never worse than minmax on a group),
// how many of the best grid points are refined, and the refit passes and
// over-relaxation of each refinement. Exact evaluation passes per group:
// INT2 14, INT4 10, INT8 4 (lsq: 3, 3, 1). Refining two grid points
// matters most on groups with outliers, whose optimum lies near the
// min/max range while Gaussian-like groups want a shrunk one.
type setting struct {
	grid   []float32
	top    int
	passes int
	omega  float64
}

var settings = [9]setting{ // by bit width
	2: {grid: []float32{0.4, 0.55, 0.7, 1}, top: 2, passes: 5, omega: 2},
	4: {grid: []float32{0.85, 0.9, 0.95, 1}, top: 2, passes: 3, omega: 2},
	8: {grid: []float32{0.98, 1}, top: 1, passes: 2, omega: 2},
}

// GroupParams is clip's kernels.GroupParamsFunc.
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
	all := b.All()
	var pts [8][groupfit.Lanes]groupfit.Stats // [grid point][lane]
	var sh, mh [groupfit.Lanes]uint16
	n := 0
	for _, beta := range cfg.grid {
		groupfit.ShrinkLanes(lo, hi, b.N(), bits, beta, &sh, &mh)
		b.Try(&pts[n], &sh, &mh, all)
		n++
	}
	var start [groupfit.Lanes]*groupfit.Stats
	for i := 0; i < cfg.top && i < n; i++ {
		for k := range b.N() {
			m := i // selection: the i-th best grid point
			for j := i + 1; j < n; j++ {
				if pts[j][k].Err < pts[m][k].Err {
					m = j
				}
			}
			pts[i][k], pts[m][k] = pts[m][k], pts[i][k]
			start[k] = &pts[i][k]
		}
		b.RefineFrom(&start, all, cfg.passes, cfg.omega, false)
	}
	for k := range b.N() {
		best := b.Best[k]
		b.Accept(k, &best)
	}
}
