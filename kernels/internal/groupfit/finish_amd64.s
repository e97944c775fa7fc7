//go:build !purego

#include "textflag.h"

DATA finishMasks<>+0(SB)/8, $0
DATA finishMasks<>+8(SB)/8, $-1
GLOBL finishMasks<>(SB), RODATA|NOPTR, $16

// finishArgs (batch_finish.go): o 0, a 8, sh 16, mh 24, st 32, best 40,
// wn 48, n 56, wq 64, mask 72, valid 73, weighted 74.
// Stats: Err 0, R 8, RQ 16, Q 24, QQ 32, N 40, Scale 48, Min 52, ScaleH 56,
// MinH 58, Weighted 60 (64 bytes). laneOut: e 0, r 64, rq 128, q 192,
// qq 256, qi 320, qqi 384. laneArgs: s 0, m 64.

// PAIRSUM(off, dst): float64(x[2k]) + float64(x[2k+1]) of lanes 4h..4h+3
// (off: the float32 pairs of those lanes in laneOut at SI), as Go sums them.
#define PAIRSUM(off, dst) \
	VCVTPS2PD off(SI), dst; \
	VCVTPS2PD (off+16)(SI), Y8; \
	VHADDPD Y8, dst, dst; \
	VPERMPD $0xD8, dst, dst

// INTPAIRSUM(off, dst): float64(x[2k] + x[2k+1]) of int32 pairs, the
// int32 sum wrapping as Go's.
#define INTPAIRSUM(off, dst) \
	VMOVDQU off(SI), Y8; \
	VPHADDD Y8, Y8, Y8; \
	VPERMQ $0x08, Y8, Y8; \
	VCVTDQ2PD X8, dst

// func finishPassAVX2(f *finishArgs) (better uint8)
// evalVector's sums of every lane of mask into st[k] as Stats, and Try's
// keeping of the best: lanes of mask that are not valid or whose Err is
// not >= best[k].Err get st[k] as their best (a NaN Err wins, as in Go).
TEXT ·finishPassAVX2(SB), NOSPLIT, $0-9
	MOVQ f+0(FP), AX
	MOVQ 0(AX), SI   // o
	MOVQ 8(AX), BX   // a
	MOVQ 32(AX), DI  // st
	MOVQ 40(AX), DX  // best
	MOVBQZX 72(AX), R12 // mask
	MOVBQZX 73(AX), R13 // valid
	XORQ R11, R11    // better

	// lanes 0-3
	PAIRSUM(0, Y0)   // Err
	VMOVSD 0(DX), X9
	VMOVHPD 64(DX), X9, X9
	VMOVSD 128(DX), X10
	VMOVHPD 192(DX), X10, X10
	VINSERTF128 $1, X10, Y9, Y9
	VCMPPD $13, Y9, Y0, Y9 // Err >= best Err (false for NaN)
	VMOVMSKPD Y9, R8
	MOVQ R13, R9
	ANDQ R9, R8  // valid and not better
	NOTQ R8
	MOVQ R12, R9
	ANDQ R9, R8
	ANDQ $15, R8 // this half's better lanes
	MOVQ R8, R9
	ORQ R9, R11
	PAIRSUM(64, Y1)  // R
	PAIRSUM(128, Y2) // RQ
	CMPB 74(AX), $0
	JEQ unweighted0
	PAIRSUM(192, Y3) // Q
	PAIRSUM(256, Y4) // QQ
	MOVQ 48(AX), CX // wn
	VCVTPS2PD 0(CX), Y5
	VCVTPS2PD 16(CX), Y8
	VHADDPD Y8, Y5, Y5
	VPERMPD $0xD8, Y5, Y5 // N
	JMP params0
unweighted0:
	INTPAIRSUM(320, Y3) // Q
	INTPAIRSUM(384, Y4) // QQ
	VBROADCASTSD 56(AX), Y5 // N
params0:
	VMOVUPS 0(BX), Y8
	VMOVUPS 64(BX), Y9
	VUNPCKLPS Y9, Y8, Y10
	VUNPCKHPS Y9, Y8, Y11
	VBLENDPD $0x0A, Y11, Y10, Y6 // (Scale, Min) of each lane
	MOVQ 16(AX), CX
	VMOVQ 0(CX), X8
	MOVQ 24(AX), CX
	VMOVQ 0(CX), X9
	VPUNPCKLWD X9, X8, X8
	VPMOVZXDQ X8, Y7
	VPBROADCASTQ 64(AX), Y8
	VPOR Y8, Y7, Y7 // (ScaleH, MinH, Weighted) of each lane
	VUNPCKLPD Y1, Y0, Y8
	VUNPCKHPD Y1, Y0, Y9
	VUNPCKLPD Y3, Y2, Y10
	VUNPCKHPD Y3, Y2, Y11
	VPERM2F128 $0x20, Y10, Y8, Y12 // lane 0
	VPERM2F128 $0x20, Y11, Y9, Y13 // lane 1
	VPERM2F128 $0x31, Y10, Y8, Y14 // lane 2
	VPERM2F128 $0x31, Y11, Y9, Y15 // lane 3
	BTQ $0, R12
	JCC skip00
	VMOVUPD Y12, 0(DI)
skip00:
	MOVQ R8, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 0(DX), Y12, Y9
	VMOVUPD Y9, 0(DX)
	BTQ $1, R12
	JCC skip01
	VMOVUPD Y13, 64(DI)
skip01:
	MOVQ R8, R9
	SHRQ $1, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 64(DX), Y13, Y9
	VMOVUPD Y9, 64(DX)
	BTQ $2, R12
	JCC skip02
	VMOVUPD Y14, 128(DI)
skip02:
	MOVQ R8, R9
	SHRQ $2, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 128(DX), Y14, Y9
	VMOVUPD Y9, 128(DX)
	BTQ $3, R12
	JCC skip03
	VMOVUPD Y15, 192(DI)
skip03:
	MOVQ R8, R9
	SHRQ $3, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 192(DX), Y15, Y9
	VMOVUPD Y9, 192(DX)
	VUNPCKLPD Y5, Y4, Y8
	VUNPCKHPD Y5, Y4, Y9
	VUNPCKLPD Y7, Y6, Y10
	VUNPCKHPD Y7, Y6, Y11
	VPERM2F128 $0x20, Y10, Y8, Y12 // lane 0
	VPERM2F128 $0x20, Y11, Y9, Y13 // lane 1
	VPERM2F128 $0x31, Y10, Y8, Y14 // lane 2
	VPERM2F128 $0x31, Y11, Y9, Y15 // lane 3
	BTQ $0, R12
	JCC skip10
	VMOVUPD Y12, 32(DI)
skip10:
	MOVQ R8, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 32(DX), Y12, Y9
	VMOVUPD Y9, 32(DX)
	BTQ $1, R12
	JCC skip11
	VMOVUPD Y13, 96(DI)
skip11:
	MOVQ R8, R9
	SHRQ $1, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 96(DX), Y13, Y9
	VMOVUPD Y9, 96(DX)
	BTQ $2, R12
	JCC skip12
	VMOVUPD Y14, 160(DI)
skip12:
	MOVQ R8, R9
	SHRQ $2, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 160(DX), Y14, Y9
	VMOVUPD Y9, 160(DX)
	BTQ $3, R12
	JCC skip13
	VMOVUPD Y15, 224(DI)
skip13:
	MOVQ R8, R9
	SHRQ $3, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 224(DX), Y15, Y9
	VMOVUPD Y9, 224(DX)
	// lanes 4-7
	PAIRSUM(32, Y0)   // Err
	VMOVSD 256(DX), X9
	VMOVHPD 320(DX), X9, X9
	VMOVSD 384(DX), X10
	VMOVHPD 448(DX), X10, X10
	VINSERTF128 $1, X10, Y9, Y9
	VCMPPD $13, Y9, Y0, Y9 // Err >= best Err (false for NaN)
	VMOVMSKPD Y9, R8
	MOVQ R13, R9
	SHRQ $4, R9
	ANDQ R9, R8  // valid and not better
	NOTQ R8
	MOVQ R12, R9
	SHRQ $4, R9
	ANDQ R9, R8
	ANDQ $15, R8 // this half's better lanes
	MOVQ R8, R9
	SHLQ $4, R9
	ORQ R9, R11
	PAIRSUM(96, Y1)  // R
	PAIRSUM(160, Y2) // RQ
	CMPB 74(AX), $0
	JEQ unweighted1
	PAIRSUM(224, Y3) // Q
	PAIRSUM(288, Y4) // QQ
	MOVQ 48(AX), CX // wn
	VCVTPS2PD 32(CX), Y5
	VCVTPS2PD 48(CX), Y8
	VHADDPD Y8, Y5, Y5
	VPERMPD $0xD8, Y5, Y5 // N
	JMP params1
unweighted1:
	INTPAIRSUM(352, Y3) // Q
	INTPAIRSUM(416, Y4) // QQ
	VBROADCASTSD 56(AX), Y5 // N
params1:
	VMOVUPS 32(BX), Y8
	VMOVUPS 96(BX), Y9
	VUNPCKLPS Y9, Y8, Y10
	VUNPCKHPS Y9, Y8, Y11
	VBLENDPD $0x0A, Y11, Y10, Y6 // (Scale, Min) of each lane
	MOVQ 16(AX), CX
	VMOVQ 8(CX), X8
	MOVQ 24(AX), CX
	VMOVQ 8(CX), X9
	VPUNPCKLWD X9, X8, X8
	VPMOVZXDQ X8, Y7
	VPBROADCASTQ 64(AX), Y8
	VPOR Y8, Y7, Y7 // (ScaleH, MinH, Weighted) of each lane
	VUNPCKLPD Y1, Y0, Y8
	VUNPCKHPD Y1, Y0, Y9
	VUNPCKLPD Y3, Y2, Y10
	VUNPCKHPD Y3, Y2, Y11
	VPERM2F128 $0x20, Y10, Y8, Y12 // lane 4
	VPERM2F128 $0x20, Y11, Y9, Y13 // lane 5
	VPERM2F128 $0x31, Y10, Y8, Y14 // lane 6
	VPERM2F128 $0x31, Y11, Y9, Y15 // lane 7
	BTQ $4, R12
	JCC skip04
	VMOVUPD Y12, 256(DI)
skip04:
	MOVQ R8, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 256(DX), Y12, Y9
	VMOVUPD Y9, 256(DX)
	BTQ $5, R12
	JCC skip05
	VMOVUPD Y13, 320(DI)
skip05:
	MOVQ R8, R9
	SHRQ $1, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 320(DX), Y13, Y9
	VMOVUPD Y9, 320(DX)
	BTQ $6, R12
	JCC skip06
	VMOVUPD Y14, 384(DI)
skip06:
	MOVQ R8, R9
	SHRQ $2, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 384(DX), Y14, Y9
	VMOVUPD Y9, 384(DX)
	BTQ $7, R12
	JCC skip07
	VMOVUPD Y15, 448(DI)
skip07:
	MOVQ R8, R9
	SHRQ $3, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 448(DX), Y15, Y9
	VMOVUPD Y9, 448(DX)
	VUNPCKLPD Y5, Y4, Y8
	VUNPCKHPD Y5, Y4, Y9
	VUNPCKLPD Y7, Y6, Y10
	VUNPCKHPD Y7, Y6, Y11
	VPERM2F128 $0x20, Y10, Y8, Y12 // lane 4
	VPERM2F128 $0x20, Y11, Y9, Y13 // lane 5
	VPERM2F128 $0x31, Y10, Y8, Y14 // lane 6
	VPERM2F128 $0x31, Y11, Y9, Y15 // lane 7
	BTQ $4, R12
	JCC skip14
	VMOVUPD Y12, 288(DI)
skip14:
	MOVQ R8, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 288(DX), Y12, Y9
	VMOVUPD Y9, 288(DX)
	BTQ $5, R12
	JCC skip15
	VMOVUPD Y13, 352(DI)
skip15:
	MOVQ R8, R9
	SHRQ $1, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 352(DX), Y13, Y9
	VMOVUPD Y9, 352(DX)
	BTQ $6, R12
	JCC skip16
	VMOVUPD Y14, 416(DI)
skip16:
	MOVQ R8, R9
	SHRQ $2, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 416(DX), Y14, Y9
	VMOVUPD Y9, 416(DX)
	BTQ $7, R12
	JCC skip17
	VMOVUPD Y15, 480(DI)
skip17:
	MOVQ R8, R9
	SHRQ $3, R9
	ANDQ $1, R9
	XORQ $1, R9 // 1: keep the best
	LEAQ finishMasks<>(SB), R10
	VPBROADCASTQ (R10)(R9*8), Y8
	VBLENDVPD Y8, 480(DX), Y15, Y9
	VMOVUPD Y9, 480(DX)
	MOVB R11, better+8(FP)
	VZEROUPPER
	RET
