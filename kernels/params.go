package kernels

// ParamLanes is how many groups RangeParamsLanes sets at once.
const ParamLanes = 8

// ShrinkRange narrows [lo, hi] around its midpoint c = lo/2 + hi/2 by
// beta: [c-(c-lo)·beta, c+(hi-c)·beta], in float32.
func ShrinkRange(lo, hi, beta float32) (float32, float32) {
	c := lo/2 + hi/2
	return c - (c-lo)*beta, c + (hi-c)*beta
}

// RangeParamsLanes sets scales[k], mins[k] = MinMaxParams(lo[k], hi[k],
// bits) for the 8 lanes, each range first narrowed by ShrinkRange when
// beta != 1. A lane whose params are out of fp16's range (MinMaxParams
// not ok) gets 0, 0 and its bit in the returned mask. Lanes must be
// finite. One vector pass where the CPU converts to fp16 (F16C).
func RangeParamsLanes(lo, hi *[ParamLanes]float32, bits int, beta float32, scales, mins *[ParamLanes]uint16) (bad uint8) {
	if useF16C {
		return rangeParamsF16C(lo, hi, beta, float32(QMax(bits)), beta != 1, scales, mins)
	}
	return rangeParamsGo(lo, hi, bits, beta, scales, mins)
}

func rangeParamsGo(lo, hi *[ParamLanes]float32, bits int, beta float32, scales, mins *[ParamLanes]uint16) (bad uint8) {
	for k := range ParamLanes {
		l, h := lo[k], hi[k]
		if beta != 1 {
			l, h = ShrinkRange(l, h, beta)
		}
		s, m, ok := MinMaxParams(l, h, bits)
		if !ok {
			bad |= 1 << k
		}
		scales[k], mins[k] = s, m
	}
	return bad
}

// VectorParams says whether RangeParamsLanes runs its F16C pass.
func VectorParams() bool { return useF16C }
