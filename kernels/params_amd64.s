//go:build !purego

#include "textflag.h"

DATA paramsHalf<>+0(SB)/4, $0x3f000000 // 0.5
DATA paramsMax<>+0(SB)/4, $0x477fe000  // 65504
DATA paramsNegMax<>+0(SB)/4, $0xc77fe000 // -65504
GLOBL paramsHalf<>(SB), RODATA|NOPTR, $4
GLOBL paramsMax<>(SB), RODATA|NOPTR, $4
GLOBL paramsNegMax<>(SB), RODATA|NOPTR, $4
DATA paramsInf16<>+0(SB)/8, $0x7c007c007c007c00
DATA paramsInf16<>+8(SB)/8, $0x7c007c007c007c00
GLOBL paramsInf16<>(SB), RODATA|NOPTR, $16

// func rangeParamsF16C(lo, hi *[8]float32, beta, qmax float32, shrink bool, scales, mins *[8]uint16) (bad uint8)
// RangeParamsLanes' vector path, step for step in float32 (no fused
// products), with F16C's directed roundings for HalfRoundDown (the min)
// and HalfRoundUp (the scale); bad has bit k set where lane k's params
// are out of fp16's range (then 0, 0), as MinMaxParams' !ok.
TEXT ·rangeParamsF16C(SB), NOSPLIT, $0-49
	MOVQ lo+0(FP), AX
	MOVQ hi+8(FP), BX
	MOVQ scales+32(FP), DI
	MOVQ mins+40(FP), SI
	VMOVUPS (AX), Y0 // lo
	VMOVUPS (BX), Y1 // hi
	MOVBLZX shrink+24(FP), CX
	TESTQ CX, CX
	JZ    ranged
	VBROADCASTSS beta+16(FP), Y7
	VBROADCASTSS paramsHalf<>(SB), Y6
	VMULPS Y6, Y0, Y2  // lo/2
	VMULPS Y6, Y1, Y3  // hi/2
	VADDPS Y3, Y2, Y2  // c
	VSUBPS Y0, Y2, Y3  // c - lo
	VMULPS Y7, Y3, Y3
	VSUBPS Y3, Y2, Y0  // lo = c - (c-lo)*beta
	VSUBPS Y2, Y1, Y3  // hi - c
	VMULPS Y7, Y3, Y3
	VADDPS Y3, Y2, Y1  // hi = c + (hi-c)*beta
ranged:
	// Out of range (lo < -65504 or 65504 < hi): params 0, 0.
	VBROADCASTSS paramsNegMax<>(SB), Y2
	VCMPPS $1, Y2, Y0, Y8 // lo < -65504
	VBROADCASTSS paramsMax<>(SB), Y2
	VCMPPS $1, Y1, Y2, Y9 // 65504 < hi
	VORPS  Y9, Y8, Y8
	VCVTPS2PH $1, Y0, X4 // min = HalfRoundDown(lo)
	VCVTPH2PS X4, Y5     // m
	// A constant group (hi == lo == m) needs no case of its own: hi - m
	// is +0, so is its scale.
	VSUBPS Y5, Y1, Y3 // hi - m
	VBROADCASTSS qmax+20(FP), Y2
	VDIVPS Y2, Y3, Y3
	VCVTPS2PH $2, Y3, X6 // scale = HalfRoundUp((hi-m)/qmax)
	// 32-bit lane masks to 16-bit.
	VEXTRACTF128 $1, Y8, X10
	VPACKSSDW X10, X8, X8
	// An infinite scale: params 0, 0.
	VMOVDQU paramsInf16<>(SB), X10
	VPAND  X10, X6, X11
	VPCMPEQW X10, X11, X11
	VPOR   X11, X8, X8
	VPANDN X6, X8, X6
	VPANDN X4, X8, X4
	VMOVDQU X6, (DI)
	VMOVDQU X4, (SI)
	VPACKSSWB X8, X8, X8 // a byte per lane, then a bit
	VPMOVMSKB X8, AX
	MOVB   AL, bad+48(FP)
	VZEROUPPER
	RET
