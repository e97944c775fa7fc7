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
	return groupfit.ForEachGroup(x, bits, groupSize, scales, mins, base, fit)
}

// WeightedGroupParams is the search with per-element error weights.
func WeightedGroupParams(x, w []float32, bits, groupSize int, scales, mins []uint16, base int64) error {
	return groupfit.ForEachWeightedGroup(x, w, bits, groupSize, scales, mins, base, fit)
}

func fit(x, w []float32, bits int, lo, hi float32) (uint16, uint16) {
	cfg := &settings[bits]
	s := groupfit.NewSearch(x, w, bits)
	var pts [8]groupfit.Stats
	n := 0
	for _, beta := range cfg.grid {
		sh, mh := groupfit.Shrink(lo, hi, bits, beta)
		s.Try(&pts[n], sh, mh)
		n++
	}
	for k := 0; k < cfg.top && k < n; k++ {
		b := k // selection: the k-th best grid point
		for j := k + 1; j < n; j++ {
			if pts[j].Err < pts[b].Err {
				b = j
			}
		}
		pts[k], pts[b] = pts[b], pts[k]
		s.RefineFrom(&pts[k], cfg.passes, cfg.omega, false)
	}
	best := s.Best
	s.Accept(&best)
	return s.Best.ScaleH, s.Best.MinH
}
