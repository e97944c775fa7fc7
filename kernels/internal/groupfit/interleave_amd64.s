//go:build !purego

#include "textflag.h"

// func interleave8AVX2(dst *float32, src *[8]*float32, quads int)
// Four pairs (8 bytes each) of each of the 8 lanes per step: two 4x4
// transposes of 64-bit elements into rows of 64 bytes.
TEXT ·interleave8AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ quads+16(FP), CX
	MOVQ 0(SI), R8
	MOVQ 8(SI), R9
	MOVQ 16(SI), R10
	MOVQ 24(SI), R11
	MOVQ 32(SI), R12
	MOVQ 40(SI), R13
	MOVQ 48(SI), BX
	MOVQ 56(SI), DX
	XORQ AX, AX
	TESTQ CX, CX
	JZ   idone

iloop:
	VMOVUPD    (R8)(AX*1), Y0
	VMOVUPD    (R9)(AX*1), Y1
	VMOVUPD    (R10)(AX*1), Y2
	VMOVUPD    (R11)(AX*1), Y3
	VMOVUPD    (R12)(AX*1), Y4
	VMOVUPD    (R13)(AX*1), Y5
	VMOVUPD    (BX)(AX*1), Y6
	VMOVUPD    (DX)(AX*1), Y7
	VUNPCKLPD  Y1, Y0, Y8           // l0p0 l1p0 | l0p2 l1p2
	VUNPCKHPD  Y1, Y0, Y9           // l0p1 l1p1 | l0p3 l1p3
	VUNPCKLPD  Y3, Y2, Y10
	VUNPCKHPD  Y3, Y2, Y11
	VUNPCKLPD  Y5, Y4, Y12
	VUNPCKHPD  Y5, Y4, Y13
	VUNPCKLPD  Y7, Y6, Y14
	VUNPCKHPD  Y7, Y6, Y15
	VPERM2F128 $0x20, Y10, Y8, Y0   // pair 0, lanes 0-3
	VPERM2F128 $0x20, Y14, Y12, Y1  // pair 0, lanes 4-7
	VPERM2F128 $0x20, Y11, Y9, Y2   // pair 1
	VPERM2F128 $0x20, Y15, Y13, Y3
	VPERM2F128 $0x31, Y10, Y8, Y4   // pair 2
	VPERM2F128 $0x31, Y14, Y12, Y5
	VPERM2F128 $0x31, Y11, Y9, Y6   // pair 3
	VPERM2F128 $0x31, Y15, Y13, Y7
	VMOVUPD    Y0, 0(DI)
	VMOVUPD    Y1, 32(DI)
	VMOVUPD    Y2, 64(DI)
	VMOVUPD    Y3, 96(DI)
	VMOVUPD    Y4, 128(DI)
	VMOVUPD    Y5, 160(DI)
	VMOVUPD    Y6, 192(DI)
	VMOVUPD    Y7, 224(DI)
	ADDQ       $32, AX
	ADDQ       $256, DI
	DECQ       CX
	JNZ        iloop

idone:
	VZEROUPPER
	RET

// func pairSumsAVX2(wt *float32, pairs int, wn *[16]float32)
// Each lane's sums of its even and of its odd elements over a layout of
// pairs rows of 16 floats, each in element order (one float32 add per
// row, as the Go loop).
TEXT ·pairSumsAVX2(SB), NOSPLIT, $0-24
	MOVQ   wt+0(FP), SI
	MOVQ   pairs+8(FP), CX
	MOVQ   wn+16(FP), DI
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	TESTQ  CX, CX
	JZ     pdone

ploop:
	VADDPS 0(SI), Y0, Y0
	VADDPS 32(SI), Y1, Y1
	ADDQ   $64, SI
	DECQ   CX
	JNZ    ploop

pdone:
	VMOVUPS Y0, 0(DI)
	VMOVUPS Y1, 32(DI)
	VZEROUPPER
	RET
