// Package groupfit is the shared core of the parameter-search methods
// (lsq, clip): an exact evaluation pass of fp16 group params with the
// arithmetic of the shared pack and dequantize kernels, the
// least-squares refit of (scale, min) for fixed codes, and the group loop
// with minmax's finiteness and range checks.
package ref

import "github.com/arrowquant/arrowquant/kernels"

// FitFunc chooses the fp16 params of one group x with min lo < max hi,
// both within ±65504; w is nil or one error weight per element.
type FitFunc func(x, w []float32, bits int, lo, hi float32) (scaleH, minH uint16)

// segGroups is the number of groups whose min/max are taken at once.
const segGroups = 256

// ForEachGroup is a kernels.GroupParamsFunc body: per group it takes the
// min and max (kernels.GroupMinMax, so NaN/±Inf give minmax's
// NonFiniteError), rejects ranges beyond fp16 with a ParamRangeError
// (Group counts from the start of the row: base is a multiple of
// groupSize in every caller), stores minmax's exact params for constant
// groups and calls fit for the others.
func ForEachGroup(x []float32, bits, groupSize int, scales, mins []uint16, base int64, fit FitFunc) error {
	return ForEachWeightedGroup(x, nil, bits, groupSize, scales, mins, base, fit)
}

// ForEachWeightedGroup is ForEachGroup with per-element error weights
// (w nil, or len(x) weights >= 0) handed to fit group by group.
func ForEachWeightedGroup(x, w []float32, bits, groupSize int, scales, mins []uint16, base int64, fit FitFunc) error {
	var los, his [segGroups]float32
	ng := int(kernels.NumGroups(int64(len(x)), groupSize))
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
			if lo == hi { // minmax is exact, or within an fp16 step of the constant
				scales[g], mins[g], _ = kernels.MinMaxParams(lo, hi, bits)
				continue
			}
			a, b := g*groupSize, min(len(x), (g+1)*groupSize)
			var wg []float32
			if w != nil {
				wg = w[a:b]
			}
			scales[g], mins[g] = fit(x[a:b], wg, bits, lo, hi)
		}
	}
	return nil
}
