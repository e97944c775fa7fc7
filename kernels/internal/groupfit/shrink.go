package groupfit

import "github.com/arrowquant/arrowquant/kernels"

// ShrinkLanes sets sh[k], mh[k] = Shrink(lo[k], hi[k], bits, beta) for
// the lanes k < n, all at once where the CPU converts to fp16
// (kernels.RangeParamsLanes).
func ShrinkLanes(lo, hi *[Lanes]float32, n, bits int, beta float32, sh, mh *[Lanes]uint16) {
	var s, m [Lanes]uint16
	kernels.RangeParamsLanes(lo, hi, bits, beta, &s, &m)
	copy(sh[:n], s[:n])
	copy(mh[:n], m[:n])
}

func shrinkLanesGo(lo, hi *[Lanes]float32, n, bits int, beta float32, sh, mh *[Lanes]uint16) {
	for k := range n {
		sh[k], mh[k] = Shrink(lo[k], hi[k], bits, beta)
	}
}
