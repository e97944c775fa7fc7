// The loops BenchmarkPipes times (see doc.go): each iteration of a loopX runs
// 12 instructions of kind X on 12 independent registers, so only the pipes
// that execute X bound it.

#include "textflag.h"

// ZERO16 clears Y0-Y15.
#define ZERO16 VXORPS Y0, Y0, Y0; VXORPS Y1, Y1, Y1; VXORPS Y2, Y2, Y2; VXORPS Y3, Y3, Y3; VXORPS Y4, Y4, Y4; VXORPS Y5, Y5, Y5; VXORPS Y6, Y6, Y6; VXORPS Y7, Y7, Y7; VXORPS Y8, Y8, Y8; VXORPS Y9, Y9, Y9; VXORPS Y10, Y10, Y10; VXORPS Y11, Y11, Y11; VXORPS Y12, Y12, Y12; VXORPS Y13, Y13, Y13; VXORPS Y14, Y14, Y14; VXORPS Y15, Y15, Y15

// BIN12(ins): ins on Y0-Y11, each its own chain (ins Y15, Yr, Yr).
#define BIN12(ins) ins Y15, Y0, Y0; ins Y15, Y1, Y1; ins Y15, Y2, Y2; ins Y15, Y3, Y3; ins Y15, Y4, Y4; ins Y15, Y5, Y5; ins Y15, Y6, Y6; ins Y15, Y7, Y7; ins Y15, Y8, Y8; ins Y15, Y9, Y9; ins Y15, Y10, Y10; ins Y15, Y11, Y11
// FMA12(ins): ins on Y0-Y11, each its own chain (ins Y15, Y14, Yr).
#define FMA12(ins) ins Y15, Y14, Y0; ins Y15, Y14, Y1; ins Y15, Y14, Y2; ins Y15, Y14, Y3; ins Y15, Y14, Y4; ins Y15, Y14, Y5; ins Y15, Y14, Y6; ins Y15, Y14, Y7; ins Y15, Y14, Y8; ins Y15, Y14, Y9; ins Y15, Y14, Y10; ins Y15, Y14, Y11
// RND12(ins): ins on Y0-Y11, each its own chain (ins $3, Yr, Yr).
#define RND12(ins) ins $3, Y0, Y0; ins $3, Y1, Y1; ins $3, Y2, Y2; ins $3, Y3, Y3; ins $3, Y4, Y4; ins $3, Y5, Y5; ins $3, Y6, Y6; ins $3, Y7, Y7; ins $3, Y8, Y8; ins $3, Y9, Y9; ins $3, Y10, Y10; ins $3, Y11, Y11
// UN12(ins): ins on Y0-Y11, each its own chain (ins Yr, Yr).
#define UN12(ins) ins Y0, Y0; ins Y1, Y1; ins Y2, Y2; ins Y3, Y3; ins Y4, Y4; ins Y5, Y5; ins Y6, Y6; ins Y7, Y7; ins Y8, Y8; ins Y9, Y9; ins Y10, Y10; ins Y11, Y11
// BIN2X6(a, b): a on the even registers of Y0-Y11, b on the odd ones.
#define BIN2X6(a, b) a Y15, Y0, Y0; b Y15, Y1, Y1; a Y15, Y2, Y2; b Y15, Y3, Y3; a Y15, Y4, Y4; b Y15, Y5, Y5; a Y15, Y6, Y6; b Y15, Y7, Y7; a Y15, Y8, Y8; b Y15, Y9, Y9; a Y15, Y10, Y10; b Y15, Y11, Y11

// THROUGHPUT(body): a loop function's whole body, n+0(FP) iterations of body
// with Y0-Y15 cleared first (labels are local to each TEXT block).
#define THROUGHPUT(body) MOVQ n+0(FP), CX; ZERO16; loop: body; DECQ CX; JNZ loop; VZEROUPPER; RET

// func clockLoop(n int) int: n iterations of 8 dependent integer adds (1 cycle each).
TEXT ·clockLoop(SB), NOSPLIT, $0-16
	MOVQ n+0(FP), CX
	XORQ AX, AX
clock:
	ADDQ $1, AX
	ADDQ $1, AX
	ADDQ $1, AX
	ADDQ $1, AX
	ADDQ $1, AX
	ADDQ $1, AX
	ADDQ $1, AX
	ADDQ $1, AX
	DECQ CX
	JNZ  clock
	MOVQ AX, ret+8(FP)
	RET

// func loopAdd(n int)
TEXT ·loopAdd(SB), NOSPLIT, $0-8
	THROUGHPUT(BIN12(VADDPS))

// func loopMul(n int)
TEXT ·loopMul(SB), NOSPLIT, $0-8
	THROUGHPUT(BIN12(VMULPS))

// func loopFMA(n int)
TEXT ·loopFMA(SB), NOSPLIT, $0-8
	THROUGHPUT(FMA12(VFMADD231PS))

// func loopMax(n int)
TEXT ·loopMax(SB), NOSPLIT, $0-8
	THROUGHPUT(BIN12(VMAXPS))

// func loopRound(n int)
TEXT ·loopRound(SB), NOSPLIT, $0-8
	THROUGHPUT(RND12(VROUNDPS))

// func loopCvtt(n int)
TEXT ·loopCvtt(SB), NOSPLIT, $0-8
	THROUGHPUT(UN12(VCVTTPS2DQ))

// func loopPMaxSD(n int)
TEXT ·loopPMaxSD(SB), NOSPLIT, $0-8
	THROUGHPUT(BIN12(VPMAXSD))

// func loopAddMul(n int)
TEXT ·loopAddMul(SB), NOSPLIT, $0-8
	THROUGHPUT(BIN2X6(VADDPS, VMULPS))

// func loopMaxMul(n int)
TEXT ·loopMaxMul(SB), NOSPLIT, $0-8
	THROUGHPUT(BIN2X6(VMAXPS, VMULPS))

// func loopAddMax(n int)
TEXT ·loopAddMax(SB), NOSPLIT, $0-8
	THROUGHPUT(BIN2X6(VADDPS, VMAXPS))
