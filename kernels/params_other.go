//go:build purego || !amd64

package kernels

const useF16C = false

func rangeParamsF16C(lo, hi *[ParamLanes]float32, beta, qmax float32, shrink bool, scales, mins *[ParamLanes]uint16) (bad uint8) {
	panic("unreachable")
}
