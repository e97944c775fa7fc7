//go:build !purego

#include "textflag.h"

DATA stepHalfOne<>+0(SB)/8, $0x3fe0000000000000 // 0.5
GLOBL stepHalfOne<>(SB), RODATA|NOPTR, $8
DATA stepTiny<>+0(SB)/8, $0x3e112e0be826d695 // 1e-9
GLOBL stepTiny<>(SB), RODATA|NOPTR, $8
DATA stepMax<>+0(SB)/8, $0x40effc0000000000 // 65504
GLOBL stepMax<>(SB), RODATA|NOPTR, $8
DATA stepAbs<>+0(SB)/8, $0x7fffffffffffffff
GLOBL stepAbs<>(SB), RODATA|NOPTR, $8

// STEPHALF computes Step's (s, m) for the 4 lanes at byte offset off of
// the stepArgs at AX, as float32 into its s32 and m32 (at byte offset
// off/2), and Step's range test as a 4-bit mask in reg. Y12 holds the weighted flag as all-ones/zero
// lanes; Y13-Y15 the constants 0.5, 1e-9, 65504.
#define STEPHALF(off, reg) \
	VMOVUPD off+0(AX), Y0    /* N */ \
	VMOVUPD off+64(AX), Y1   /* Q */ \
	VMOVUPD off+128(AX), Y2  /* QQ */ \
	VMOVUPD off+192(AX), Y3  /* R */ \
	VMOVUPD off+256(AX), Y4  /* RQ */ \
	VMULPD Y2, Y0, Y5        /* N*QQ */ \
	VMULPD Y1, Y1, Y6        /* Q*Q */ \
	VSUBPD Y6, Y5, Y5        /* d */ \
	VMULPD Y14, Y0, Y6       /* 1e-9*N */ \
	VMULPD Y2, Y6, Y6        /* (1e-9*N)*QQ */ \
	VCMPPD $2, Y6, Y5, Y6    /* weighted: d <= 1e-9*N*QQ */ \
	VCMPPD $2, Y13, Y5, Y7   /* unweighted: d <= 0.5 */ \
	VBLENDVPD Y12, Y6, Y7, Y7 /* degenerate */ \
	VMULPD Y4, Y0, Y8        /* N*RQ */ \
	VMULPD Y3, Y1, Y9        /* Q*R */ \
	VSUBPD Y9, Y8, Y8 \
	VDIVPD Y5, Y8, Y8        /* ds */ \
	VMULPD Y3, Y2, Y9        /* QQ*R */ \
	VMULPD Y4, Y1, Y10       /* Q*RQ */ \
	VSUBPD Y10, Y9, Y9 \
	VDIVPD Y5, Y9, Y9        /* dm */ \
	VDIVPD Y0, Y3, Y10       /* degenerate dm: R/N */ \
	VXORPD Y11, Y11, Y11 \
	VCMPPD $2, Y11, Y0, Y6   /* N <= 0 */ \
	VBLENDVPD Y6, Y11, Y10, Y10 /* ... then 0 */ \
	VBLENDVPD Y7, Y11, Y8, Y8   /* degenerate: ds 0 */ \
	VBLENDVPD Y7, Y10, Y9, Y9   /* degenerate: dm */ \
	VMOVUPD off+448(AX), Y6  /* omega */ \
	VMULPD Y8, Y6, Y8 \
	VADDPD off+320(AX), Y8, Y8 /* s = Scale + omega*ds */ \
	VMULPD Y9, Y6, Y9 \
	VADDPD off+384(AX), Y9, Y9 /* m = Min + omega*dm */ \
	VCMPPD $14, Y11, Y8, Y0  /* s > 0 */ \
	VCMPPD $2, Y15, Y8, Y1   /* s <= 65504 */ \
	VANDPD Y1, Y0, Y0 \
	VBROADCASTSD stepAbs<>(SB), Y1 \
	VANDPD Y1, Y9, Y1 \
	VCMPPD $2, Y15, Y1, Y1   /* |m| <= 65504 */ \
	VANDPD Y1, Y0, Y0 \
	VMOVMSKPD Y0, reg \
	VCVTPD2PSY Y8, X8 \
	VCVTPD2PSY Y9, X9 \
	VMOVUPS X8, 512+off/2(AX) \
	VMOVUPS X9, 544+off/2(AX)

// func stepLanesAVX2(a *stepArgs, weighted bool, sh, mh *[8]uint16) (inRange uint8)
TEXT ·stepLanesAVX2(SB), NOSPLIT, $0-33
	MOVQ a+0(FP), AX
	MOVBLZX weighted+8(FP), CX
	NEGQ CX
	MOVQ CX, X12
	VPBROADCASTQ X12, Y12
	VBROADCASTSD stepHalfOne<>(SB), Y13
	VBROADCASTSD stepTiny<>(SB), Y14
	VBROADCASTSD stepMax<>(SB), Y15
	STEPHALF(0, BX)
	STEPHALF(32, DX)
	VMOVUPS 512(AX), Y4
	VMOVUPS 544(AX), Y5
	VCVTPS2PH $0, Y4, X4 // round to nearest even
	VCVTPS2PH $0, Y5, X5
	MOVQ sh+16(FP), DI
	MOVQ mh+24(FP), SI
	VMOVDQU X4, (DI)
	VMOVDQU X5, (SI)
	SHLQ $4, DX
	ORQ  DX, BX
	MOVB BX, inRange+32(FP)
	VZEROUPPER
	RET
