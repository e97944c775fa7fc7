//go:build !purego && (amd64 || arm64)

package groupfit

// evalLanes runs the vector kernel of this CPU (vectorKernel, set per
// architecture) or the portable one.
func evalLanes(xt []float32, a *laneArgs, o *laneOut) {
	if vectorKernel == "go" || len(xt) == 0 {
		evalLanesGo(xt, a, o)
		return
	}
	evalLanesVec(&xt[0], len(xt)/(2*Lanes), a, o)
}

func evalLanesWeighted(xt, wt []float32, a *laneArgs, o *laneOut) {
	if vectorKernel == "go" || len(xt) == 0 {
		evalLanesWeightedGo(xt, wt, a, o)
		return
	}
	wt = wt[:len(xt)]
	evalLanesWeightedVec(&xt[0], &wt[0], len(xt)/(2*Lanes), a, o)
}

// Kernel names the evaluation kernel in use.
func Kernel() string { return vectorKernel }
