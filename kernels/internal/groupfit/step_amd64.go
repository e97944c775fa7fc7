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
