//go:build !purego

package kernels

import "golang.org/x/sys/cpu"

// useF16C selects rangeParamsF16C (params_amd64.s).
var useF16C = cpu.X86.HasAVX && cpu.X86.HasF16C

//go:noescape
func rangeParamsF16C(lo, hi *[ParamLanes]float32, beta, qmax float32, shrink bool, scales, mins *[ParamLanes]uint16) (bad uint8)
