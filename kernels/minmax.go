package kernels

// MinMax is the built-in method: each group's own min and max, rounded
// outward to fp16. Fast and exact for constant groups; other methods
// trade speed for a tighter clipping range.
var MinMax = Method{
	Name:        "minmax",
	Description: "group min/max (round-to-nearest codes, fp16 scale and min)",
	GroupParams: MinMaxGroupParams,
}

// MinMaxGroupParams is minmax's GroupParamsFunc: whole groups eight at a
// time (RangeParamsLanes), then the rest, and any batch with a non-finite
// value or a range past fp16 again group by group, so the error is the
// first group's.
func MinMaxGroupParams(x []float32, bits, groupSize int, scales, mins []uint16, base int64) error {
	var lo, hi [ParamLanes]float32
	g := 0
	for ; (g+ParamLanes)*groupSize <= len(x); g += ParamLanes {
		finite := true
		for k := range ParamLanes {
			start := (g + k) * groupSize
			l, h := groupMinMax(x[start : start+groupSize])
			finite = finite && l-l == 0 && h-h == 0
			lo[k], hi[k] = l, h
		}
		if !finite || RangeParamsLanes(&lo, &hi, bits, 1, (*[ParamLanes]uint16)(scales[g:]), (*[ParamLanes]uint16)(mins[g:])) != 0 {
			break
		}
	}
	for ; g*groupSize < len(x); g++ {
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
