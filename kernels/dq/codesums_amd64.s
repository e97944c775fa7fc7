//go:build !purego

#include "textflag.h"

// func codeSums(x []float32, b, inv, qmax float32, lanes *[8]float32) (q, qq float32)
TEXT ·codeSums(SB), NOSPLIT, $0-56
	MOVQ   x_base+0(FP), SI
	MOVQ   x_len+8(FP), CX
	MOVSS  b+24(FP), X0
	SHUFPS $0, X0, X0
	MOVSS  inv+28(FP), X1
	SHUFPS $0, X1, X1
	MOVSS  qmax+32(FP), X2
	SHUFPS $0, X2, X2
	MOVQ   lanes+40(FP), DI
	MOVL   $0x3f000000, AX
	MOVL   AX, X3
	SHUFPS $0, X3, X3          // 0.5
	XORPS  X4, X4              // 0
	XORPS  X5, X5              // Σc
	XORPS  X6, X6              // Σc²
	XORPS  X7, X7              // Σv·c, lanes 0-3
	XORPS  X8, X8              // Σv·c, lanes 4-7
	SHRQ   $3, CX
	JZ     done

loop:
	MOVUPS    (SI), X9
	MOVUPS    16(SI), X10
	MOVAPS    X9, X11
	MOVAPS    X10, X12
	SUBPS     X0, X11
	SUBPS     X0, X12
	MULPS     X1, X11
	MULPS     X1, X12
	ADDPS     X3, X11
	ADDPS     X3, X12
	MAXPS     X4, X11          // NaN -> 0
	MAXPS     X4, X12
	MINPS     X2, X11
	MINPS     X2, X12
	CVTTPS2PL X11, X11
	CVTTPS2PL X12, X12
	CVTPL2PS  X11, X11
	CVTPL2PS  X12, X12
	ADDPS     X11, X5
	ADDPS     X12, X5
	MULPS     X11, X9
	MULPS     X12, X10
	ADDPS     X9, X7
	ADDPS     X10, X8
	MULPS     X11, X11
	MULPS     X12, X12
	ADDPS     X11, X6
	ADDPS     X12, X6
	ADDQ      $32, SI
	DECQ      CX
	JNZ       loop

done:
	MOVUPS X7, (DI)
	MOVUPS X8, 16(DI)
	// Horizontal sums of exact small integers: any order.
	MOVHLPS X5, X9
	ADDPS   X9, X5
	MOVAPS  X5, X9
	SHUFPS  $0x55, X9, X9
	ADDSS   X9, X5
	MOVSS   X5, q+48(FP)
	MOVHLPS X6, X9
	ADDPS   X9, X6
	MOVAPS  X6, X9
	SHUFPS  $0x55, X9, X9
	ADDSS   X9, X6
	MOVSS   X6, qq+52(FP)
	RET
