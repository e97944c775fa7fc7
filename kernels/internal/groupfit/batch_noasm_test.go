//go:build purego || !(amd64 || arm64)

package groupfit

func vectorKernels() []string { return nil }

func evalLanesWith(string, *float32, int, *laneArgs, *laneOut) {}

func evalLanesWeightedWith(string, *float32, *float32, int, *laneArgs, *laneOut) {}
