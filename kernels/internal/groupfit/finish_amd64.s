//go:build !purego

#include "textflag.h"
#include "transpose_amd64.h"

DATA finishMasks<>+0(SB)/8, $0
DATA finishMasks<>+8(SB)/8, $-1
GLOBL finishMasks<>(SB), RODATA|NOPTR, $16

// finishArgs (batch.go): o 0, a 8, sh 16, mh 24, st 32, best 40, wn 48,
// n 56, wq 64, mask 72, valid 73, weighted 74.
// Stats: Err 0, R 8, RQ 16, Q 24, QQ 32, N 40, Scale 48, Min 52, ScaleH 56,
// MinH 58, Weighted 60 (64 bytes). laneOut: e 0, r 64, rq 128, q 192,
// qq 256, qi 320, qqi 384. laneArgs: s 0, m 64.
//
// The loop runs twice, lanes 0-3 then 4-7; per half the pointers move on:
// SI (laneOut) and BX (laneArgs) by 32, R14 (wn) by 32, R15/CX (sh, mh)
// by 8, DI (st) and DX (best) by 256; R12 (mask), R13 (valid) shift by 4.

// PAIRSUM(off, base, dst): float64(x[2k]) + float64(x[2k+1]) of the half's
// 4 lanes, x the float32 pairs at off(base), as Go sums them.
#define PAIRSUM(off, base, dst) \
	VCVTPS2PD off(base), dst; \
	VCVTPS2PD (off+16)(base), Y8; \
	VHADDPD Y8, dst, dst; \
	VPERMPD $0xD8, dst, dst

// INTPAIRSUM(off, dst): float64(x[2k] + x[2k+1]) of int32 pairs at
// off(SI), the int32 sum wrapping as Go's.
#define INTPAIRSUM(off, dst) \
	VMOVDQU off(SI), Y8; \
	VPHADDD Y8, Y8, Y8; \
	VPERMQ $0x08, Y8, Y8; \
	VCVTDQ2PD X8, dst

// LANEMASK(bits, j): Y8 all ones when bit j of bits is clear, else zero.
#define LANEMASK(bits, j) \
	MOVQ bits, R9; \
	SHRQ $j, R9; \
	ANDQ $1, R9; \
	XORQ $1, R9; \
	VPBROADCASTQ (R10)(R9*8), Y8

// PUT(j, rec, off): the 32 bytes rec at off in lane j's Stats: into st
// when j is in mask (R12), into best when j is better (R8); blends, so
// the other lanes' bytes are written back unchanged.
#define PUT(j, rec, off) \
	LANEMASK(R12, j); \
	VBLENDVPD Y8, (64*j+off)(DI), rec, Y9; \
	VMOVUPD Y9, (64*j+off)(DI); \
	LANEMASK(R8, j); \
	VBLENDVPD Y8, (64*j+off)(DX), rec, Y9; \
	VMOVUPD Y9, (64*j+off)(DX)

// func finishPassAVX2(f *finishArgs) (better uint8)
// evalVector's sums of every lane of mask into st[k] as Stats, and Try's
// keeping of the best: lanes of mask that are not valid or whose Err is
// not >= best[k].Err get st[k] as their best (a NaN Err wins, as in Go).
TEXT ·finishPassAVX2(SB), NOSPLIT, $0-9
	LEAQ finishMasks<>(SB), R10 // (before R15 is set: a global access may clobber it)
	MOVQ f+0(FP), AX
	MOVQ 0(AX), SI
	MOVQ 8(AX), BX
	MOVQ 16(AX), R15
	MOVQ 24(AX), CX
	MOVQ 32(AX), DI
	MOVQ 40(AX), DX
	MOVQ 48(AX), R14
	MOVBQZX 72(AX), R12
	MOVBQZX 73(AX), R13
	XORQ R11, R11 // better, lanes 0-3

half:
	PAIRSUM(0, SI, Y0) // Err
	VMOVSD 0(DX), X9
	VMOVHPD 64(DX), X9, X9
	VMOVSD 128(DX), X10
	VMOVHPD 192(DX), X10, X10
	VINSERTF128 $1, X10, Y9, Y9
	VCMPPD $13, Y9, Y0, Y9 // Err >= best Err (false for NaN)
	VMOVMSKPD Y9, R8
	ANDQ R13, R8 // valid and not better
	NOTQ R8
	ANDQ R12, R8
	ANDQ $15, R8 // this half's better lanes
	PAIRSUM(64, SI, Y1)  // R
	PAIRSUM(128, SI, Y2) // RQ
	CMPB 74(AX), $0
	JEQ  unweighted
	PAIRSUM(192, SI, Y3)  // Q
	PAIRSUM(256, SI, Y4)  // QQ
	PAIRSUM(0, R14, Y5)   // N
	JMP  params

unweighted:
	INTPAIRSUM(320, Y3) // Q
	INTPAIRSUM(384, Y4) // QQ
	VBROADCASTSD 56(AX), Y5 // N

params:
	VMOVUPS 0(BX), Y8
	VMOVUPS 64(BX), Y9
	VUNPCKLPS Y9, Y8, Y10
	VUNPCKHPS Y9, Y8, Y11
	VBLENDPD $0x0A, Y11, Y10, Y6 // (Scale, Min) of each lane
	VMOVQ 0(R15), X8
	VMOVQ 0(CX), X9
	VPUNPCKLWD X9, X8, X8
	VPMOVZXDQ X8, Y7
	VPBROADCASTQ 64(AX), Y8
	VPOR Y8, Y7, Y7 // (ScaleH, MinH, Weighted) of each lane

	TRANSPOSE(Y0, Y1, Y2, Y3) // Err R RQ Q
	PUT(0, Y12, 0)
	PUT(1, Y13, 0)
	PUT(2, Y14, 0)
	PUT(3, Y15, 0)
	TRANSPOSE(Y4, Y5, Y6, Y7) // QQ N (Scale, Min) (ScaleH, MinH, Weighted)
	PUT(0, Y12, 32)
	PUT(1, Y13, 32)
	PUT(2, Y14, 32)
	PUT(3, Y15, 32)

	CMPQ SI, 0(AX)
	JNE  done // the second half
	MOVQ R8, R11
	ADDQ $32, SI
	ADDQ $32, BX
	ADDQ $32, R14
	ADDQ $8, R15
	ADDQ $8, CX
	ADDQ $256, DI
	ADDQ $256, DX
	SHRQ $4, R12
	SHRQ $4, R13
	JMP  half

done:
	SHLQ $4, R8
	ORQ  R8, R11
	MOVB R11, better+8(FP)
	VZEROUPPER
	RET
