//go:build purego || !amd64

package groupfit

// On arm64 Go fuses Step's products into its sums (FMADDD): a vector
// twin would have to match that; the scalar Step runs instead.
const stepVector = false

func stepLanesVec(a *stepArgs, weighted bool, sh, mh *[Lanes]uint16) uint8 {
	panic("groupfit: no vector step on this build")
}

func finishPass(f *finishArgs) uint8 { return finishPassGo(f) }

func gatherStep(base *[Lanes]*Stats, om *[Lanes]float64, mask Mask, a *stepArgs) {
	gatherStepGo(base, om, mask, a)
}
