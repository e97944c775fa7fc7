//go:build !purego

package groupfit

import "golang.org/x/sys/cpu"

//go:noescape
func shrinkLanesF16C(lo, hi *[Lanes]float32, beta, qmax float32, shrink bool, sh, mh *[Lanes]uint16)

// shrinkVector: ShrinkLanes runs shrinkLanesF16C.
var shrinkVector = cpu.X86.HasAVX && cpu.X86.HasF16C

func shrinkLanesVec(lo, hi *[Lanes]float32, beta, qmax float32, shrink bool, sh, mh *[Lanes]uint16) {
	shrinkLanesF16C(lo, hi, beta, qmax, shrink, sh, mh)
}
