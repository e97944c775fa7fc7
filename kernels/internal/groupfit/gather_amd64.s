//go:build !purego

#include "textflag.h"
#include "transpose_amd64.h"

// harmlessStats is the Stats gatherStepAVX2 reads for lanes outside the
// mask: N 1, every other sum 0, Scale 1, Min 0 (as stepLanes' Go loop).
DATA harmlessStats<>+0(SB)/8, $0
DATA harmlessStats<>+8(SB)/8, $0
DATA harmlessStats<>+16(SB)/8, $0
DATA harmlessStats<>+24(SB)/8, $0
DATA harmlessStats<>+32(SB)/8, $0
DATA harmlessStats<>+40(SB)/8, $0x3ff0000000000000
DATA harmlessStats<>+48(SB)/8, $0x000000003f800000
DATA harmlessStats<>+56(SB)/8, $0
GLOBL harmlessStats<>(SB), RODATA|NOPTR, $64

// func gatherStepAVX2(base *[8]*Stats, om *[8]float64, mask uint8, a *stepArgs)
// stepLanes' inputs of every lane from *base[k] (lanes outside mask: the
// harmless Stats) into a: n 0, q 64, qq 128, r 192, rq 256, scale 320,
// min 384, omega 448 (float64 [8] each; Scale and Min widened; omega
// copied from om for every lane). Stats: Err 0, R 8, RQ 16, Q 24, QQ 32,
// N 40, Scale 48, Min 52. Two halves of 4 lanes: BX (base) moves on by
// 32, DI (a) by 32, R12 (mask) shifts by 4.

// LOADLANE(j, a, b): lane j's Stats (or the harmless one) into a (Err R
// RQ Q) and b (QQ N (Scale, Min) (ScaleH, MinH, ...)).
#define LOADLANE(j, a, b) \
	MOVQ (8*j)(BX), R8; \
	BTQ $j, R12; \
	CMOVQCC R13, R8; \
	VMOVUPD 0(R8), a; \
	VMOVUPD 32(R8), b

TEXT ·gatherStepAVX2(SB), NOSPLIT, $0-32
	LEAQ harmlessStats<>(SB), R13
	MOVQ base+0(FP), BX
	MOVQ om+8(FP), SI
	MOVBQZX mask+16(FP), R12
	MOVQ a+24(FP), DI
	MOVQ DI, R9 // the first half's a

half:
	LOADLANE(0, Y0, Y4)
	LOADLANE(1, Y1, Y5)
	LOADLANE(2, Y2, Y6)
	LOADLANE(3, Y3, Y7)
	TRANSPOSE(Y0, Y1, Y2, Y3) // rows Err, R, RQ, Q
	VMOVUPD Y13, 192(DI) // r
	VMOVUPD Y14, 256(DI) // rq
	VMOVUPD Y15, 64(DI)  // q
	TRANSPOSE(Y4, Y5, Y6, Y7) // rows QQ, N, (Scale, Min), (ScaleH, MinH, ...)
	VMOVUPD Y12, 128(DI) // qq
	VMOVUPD Y13, 0(DI)   // n
	VMOVAPD Y14, Y12     // (Scale, Min) of lanes 0-3
	VEXTRACTF128 $1, Y12, X13
	VSHUFPS $0x88, X13, X12, X14 // Scale 0-3
	VSHUFPS $0xDD, X13, X12, X15 // Min 0-3
	VCVTPS2PD X14, Y14
	VCVTPS2PD X15, Y15
	VMOVUPD Y14, 320(DI) // scale
	VMOVUPD Y15, 384(DI) // min
	CMPQ DI, R9
	JNE  omega // the second half
	ADDQ $32, BX
	ADDQ $32, DI
	SHRQ $4, R12
	JMP  half

omega:
	VMOVUPD 0(SI), Y0
	VMOVUPD 32(SI), Y1
	VMOVUPD Y0, 448(R9)
	VMOVUPD Y1, 480(R9)
	VZEROUPPER
	RET
