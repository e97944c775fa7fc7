//go:build !purego

package groupfit

import "golang.org/x/sys/cpu"

//go:noescape
func stepLanesAVX2(a *stepArgs, weighted bool, sh, mh *[Lanes]uint16) (inRange uint8)

// stepVector: stepLanes runs stepLanesAVX2 (F16C for the fp16 rounding).
var stepVector = cpu.X86.HasAVX2 && cpu.X86.HasF16C

func stepLanesVec(a *stepArgs, weighted bool, sh, mh *[Lanes]uint16) uint8 {
	return stepLanesAVX2(a, weighted, sh, mh)
}

//go:noescape
func finishPassAVX2(f *finishArgs) (better uint8)

// finishPass is finishPassGo in AVX2 (as stepVector, on AVX2 machines).
func finishPass(f *finishArgs) uint8 {
	if stepVector {
		return finishPassAVX2(f)
	}
	return finishPassGo(f)
}

//go:noescape
func gatherStepAVX2(base *[Lanes]*Stats, om *[Lanes]float64, mask uint8, a *stepArgs)

// gatherStep is gatherStepGo in AVX2 for the lanes of mask (outside it the
// omega is om's, not 1: those lanes' results are not read).
func gatherStep(base *[Lanes]*Stats, om *[Lanes]float64, mask Mask, a *stepArgs) {
	gatherStepAVX2(base, om, uint8(mask), a)
}
