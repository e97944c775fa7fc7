package kernels

// MinMax is the built-in method: each group's own min and max, rounded
// outward to fp16. Fast and exact for constant groups; other methods
// trade speed for a tighter clipping range.
var MinMax = Method{
	Name:        "minmax",
	Description: "group min/max (round-to-nearest codes, fp16 scale and min)",
	GroupParams: MinMaxGroupParams,
}

// MinMaxGroupParams is minmax's GroupParamsFunc.
func MinMaxGroupParams(x []float32, bits, groupSize int, scales, mins []uint16, base int64) error {
	for g := 0; g*groupSize < len(x); g++ {
		start := g * groupSize
		grp := x[start:min(len(x), start+groupSize)]
		lo, hi := groupMinMax(grp)
		if lo-lo != 0 || hi-hi != 0 {
			return checkFinite(grp, base+int64(start))
		}
		s, m, ok := MinMaxParams(lo, hi, bits)
		if !ok {
			return &ParamRangeError{Group: (base + int64(start)) / int64(groupSize), Min: lo, Max: hi}
		}
		scales[g], mins[g] = s, m
	}
	return nil
}
