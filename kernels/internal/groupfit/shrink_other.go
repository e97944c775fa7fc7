//go:build purego || !amd64

package groupfit

const shrinkVector = false

func shrinkLanesVec(lo, hi *[Lanes]float32, beta, qmax float32, shrink bool, sh, mh *[Lanes]uint16) {
	panic("groupfit: no vector shrink on this build")
}
