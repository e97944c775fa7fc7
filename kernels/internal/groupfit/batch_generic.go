//go:build purego || !(amd64 || arm64)

package groupfit

// The portable kernels (the purego build, and architectures without
// vector kernels).

func evalLanes(xt []float32, a *laneArgs, o *laneOut) { evalLanesGo(xt, a, o) }

func evalLanesWeighted(xt, wt []float32, a *laneArgs, o *laneOut) {
	evalLanesWeightedGo(xt, wt, a, o)
}

// Kernel names the evaluation kernel in use.
func Kernel() string { return "go" }

func interleaveVec(dst []float32, lanes *[Lanes][]float32) int { return 0 }

func pairSums(wt []float32, wn *[2 * Lanes]float32) { pairSumsGo(wt, wn) }
