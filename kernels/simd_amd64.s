//go:build !purego

#include "textflag.h"

// AVX2 twins of core.go's loops (simd_amd64.go says which). Every float
// operation is the Go code's, in its order, one rounding each (no FMA).

DATA ·halfs<>+0(SB)/8, $0x3f0000003f000000
DATA ·halfs<>+8(SB)/8, $0x3f0000003f000000
DATA ·halfs<>+16(SB)/8, $0x3f0000003f000000
DATA ·halfs<>+24(SB)/8, $0x3f0000003f000000
GLOBL ·halfs<>(SB), RODATA|NOPTR, $32

// shifts of the codes of one 32-bit word: 4-bit (8 codes), 2-bit (16)
DATA ·shift4<>+0(SB)/8, $0x0000000400000000
DATA ·shift4<>+8(SB)/8, $0x0000000c00000008
DATA ·shift4<>+16(SB)/8, $0x0000001400000010
DATA ·shift4<>+24(SB)/8, $0x0000001c00000018
GLOBL ·shift4<>(SB), RODATA|NOPTR, $32
DATA ·shift2<>+0(SB)/8, $0x0000000200000000
DATA ·shift2<>+8(SB)/8, $0x0000000600000004
DATA ·shift2<>+16(SB)/8, $0x0000000a00000008
DATA ·shift2<>+24(SB)/8, $0x0000000e0000000c
DATA ·shift2<>+32(SB)/8, $0x0000001200000010
DATA ·shift2<>+40(SB)/8, $0x0000001600000014
DATA ·shift2<>+48(SB)/8, $0x0000001a00000018
DATA ·shift2<>+56(SB)/8, $0x0000001e0000001c
GLOBL ·shift2<>(SB), RODATA|NOPTR, $64

// func minMaxKeysAVX2(x *float32, n int) (lo, hi int32)
// n > 0, a multiple of 8. The min and max of the order-preserving integer
// keys of x (key(v) = bits ^ (bits>>31 >>> 1): -0 below +0, NaNs beyond
// ±Inf), so they are Go's min and max of x, signed zeros included.
TEXT ·minMaxKeysAVX2(SB), NOSPLIT, $0-24
	MOVQ    x+0(FP), SI
	MOVQ    n+8(FP), CX
	VMOVDQU (SI), Y0
	VPSRAD  $31, Y0, Y1
	VPSRLD  $1, Y1, Y1
	VPXOR   Y1, Y0, Y0
	VMOVDQA Y0, Y2                // min keys
	VMOVDQA Y0, Y3                // max keys
	ADDQ    $32, SI
	SUBQ    $8, CX
	JZ      reduce

loop:
	VMOVDQU (SI), Y0
	VPSRAD  $31, Y0, Y1
	VPSRLD  $1, Y1, Y1
	VPXOR   Y1, Y0, Y0
	VPMINSD Y0, Y2, Y2
	VPMAXSD Y0, Y3, Y3
	ADDQ    $32, SI
	SUBQ    $8, CX
	JNZ     loop

reduce:
	VEXTRACTI128 $1, Y2, X0
	VPMINSD      X0, X2, X2
	VPSHUFD      $0x4e, X2, X0
	VPMINSD      X0, X2, X2
	VPSHUFD      $0xb1, X2, X0
	VPMINSD      X0, X2, X2
	VEXTRACTI128 $1, Y3, X0
	VPMAXSD      X0, X3, X3
	VPSHUFD      $0x4e, X3, X0
	VPMAXSD      X0, X3, X3
	VPSHUFD      $0xb1, X3, X0
	VPMAXSD      X0, X3, X3
	MOVL         X2, AX
	MOVL         AX, lo+16(FP)
	MOVL         X3, AX
	MOVL         AX, hi+20(FP)
	VZEROUPPER
	RET

// CODES8: the codes of the 8 values at (SI) into 8 bytes at (DI), as
// quantCode: f = trunc(clamp(float32(float32(v-m)*inv) + 0.5, 0, qmax))
// (Y13 m, Y14 inv, Y15 qmax, Y11 zero); leaves v in Y3 and f in Y4.
#define CODES8 \
	VMOVUPS      (SI), Y3; \
	VSUBPS       Y13, Y3, Y4; \
	VMULPS       Y14, Y4, Y4; \
	VADDPS       ·halfs<>(SB), Y4, Y4; \
	VMAXPS       Y11, Y4, Y4; \
	VMINPS       Y15, Y4, Y4; \
	VROUNDPS     $3, Y4, Y4; \
	VCVTTPS2DQ   Y4, Y5; \
	VEXTRACTI128 $1, Y5, X6; \
	VPACKUSDW    X6, X5, X5; \
	VPACKUSWB    X5, X5, X5; \
	MOVQ         X5, (DI)

// RECON8: CODES8, then x̂ = float32(f*s) + m of the 8 values to (DX),
// left in Y4 (Y12 s).
#define RECON8 \
	CODES8; \
	VMULPS       Y12, Y4, Y4; \
	VADDPS       Y13, Y4, Y4; \
	VMOVUPS      Y4, (DX)

// func quantReconAVX2(x *float32, n int, p *quantArgs, codes *uint8, recon *float32)
// n a multiple of 4. Per element, as quantCode and DequantizeValue:
// f = trunc(clamp(float32(float32(v-m)*inv) + 0.5, 0, qmax)), code byte
// int(f), x̂ = float32(f*s) + m.
// quantArgs: s, m, inv, qmax float32 (bytes 0, 4, 8, 12).
TEXT ·quantReconAVX2(SB), NOSPLIT, $0-40
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	MOVQ         p+16(FP), AX
	MOVQ         codes+24(FP), DI
	MOVQ         recon+32(FP), DX
	VBROADCASTSS 0(AX), Y12       // s
	VBROADCASTSS 4(AX), Y13       // m
	VBROADCASTSS 8(AX), Y14       // inv
	VBROADCASTSS 12(AX), Y15      // qmax
	VXORPS       Y11, Y11, Y11    // 0
	CMPQ         CX, $8
	JLT          tail4

loop8:
	RECON8
	ADDQ         $32, SI
	ADDQ         $8, DI
	ADDQ         $32, DX
	SUBQ         $8, CX
	CMPQ         CX, $8
	JGE          loop8

tail4:
	TESTQ        CX, CX
	JZ           done
	VMOVUPS      (SI), X3
	VSUBPS       X13, X3, X4
	VMULPS       X14, X4, X4
	VADDPS       ·halfs<>(SB), X4, X4
	VMAXPS       X11, X4, X4
	VMINPS       X15, X4, X4
	VROUNDPS     $3, X4, X4
	VCVTTPS2DQ   X4, X5
	VPACKUSDW    X5, X5, X5
	VPACKUSWB    X5, X5, X5
	MOVL         X5, (DI)
	VMULPS       X12, X4, X4
	VADDPS       X13, X4, X4
	VMOVUPS      X4, (DX)

done:
	VZEROUPPER
	RET

// GROUPS(BODY, STEP, group, loop, done): BODY then STEP R9/8 times for
// each of R8 groups (SI the values at lane 0, AX the groups' quantArgs, 16
// bytes each), with the group's s, m, inv and qmax in Y12-Y15 and 0 in
// Y11; the labels are the caller's.
#define GROUPS(BODY, STEP, group, loop, done) \
	VXORPS       Y11, Y11, Y11; \
	SHRQ         $3, R9; \
	TESTQ        R8, R8; \
	JZ           done; \
	TESTQ        R9, R9; \
	JZ           done; \
group: \
	VBROADCASTSS 0(AX), Y12; \
	VBROADCASTSS 4(AX), Y13; \
	VBROADCASTSS 8(AX), Y14; \
	VBROADCASTSS 12(AX), Y15; \
	MOVQ         R9, CX; \
loop: \
	BODY; \
	STEP; \
	DECQ         CX; \
	JNZ          loop; \
	ADDQ         $16, AX; \
	DECQ         R8; \
	JNZ          group; \
done:

// RECONSTEP and CODESTEP advance past 8 values (and their codes, and
// their reconstruction).
#define RECONSTEP \
	ADDQ $32, SI; \
	ADDQ $8, DI; \
	ADDQ $32, DX

#define CODESTEP \
	ADDQ $32, SI; \
	ADDQ $8, DI

// func quantReconGroupsAVX2(x *float32, groups, groupSize int, p *quantArgs, codes *uint8, recon *float32)
// The codes and reconstruction of groups whole groups in a row, group g
// with p[g] (groupSize a multiple of 8), as quantReconAVX2 per group. The
// similarity sums are a pass of their own (simAVX2, sim2AVX2): one loop
// doing both ran slower than the two (the sums' float64 chains and the
// codes' conversions compete for the same pipes).
TEXT ·quantReconGroupsAVX2(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), SI
	MOVQ groups+8(FP), R8
	MOVQ groupSize+16(FP), R9
	MOVQ p+24(FP), AX
	MOVQ codes+32(FP), DI
	MOVQ recon+40(FP), DX
	GROUPS(RECON8, RECONSTEP, rgroup, rgloop8, rgdone)
	VZEROUPPER
	RET

// func quantCodesGroupsAVX2(x *float32, groups, groupSize int, p *quantArgs, codes *uint8)
// quantReconGroupsAVX2's code bytes alone.
TEXT ·quantCodesGroupsAVX2(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ groups+8(FP), R8
	MOVQ groupSize+16(FP), R9
	MOVQ p+24(FP), AX
	MOVQ codes+32(FP), DI
	GROUPS(CODES8, CODESTEP, cgroup, cgloop8, cgdone)
	VZEROUPPER
	RET

// func quantCodesAVX2(x *float32, n int, p *quantArgs, codes *uint8)
// n a multiple of 8: quantReconAVX2's code bytes alone.
TEXT ·quantCodesAVX2(SB), NOSPLIT, $0-32
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	MOVQ         p+16(FP), AX
	MOVQ         codes+24(FP), DI
	VBROADCASTSS 4(AX), Y13       // m
	VBROADCASTSS 8(AX), Y14       // inv
	VBROADCASTSS 12(AX), Y15      // qmax
	VXORPS       Y11, Y11, Y11    // 0
	SHRQ         $3, CX
	JZ           qcdone

qcloop:
	CODES8
	ADDQ         $32, SI
	ADDQ         $8, DI
	DECQ         CX
	JNZ          qcloop

qcdone:
	VZEROUPPER
	RET

// func simAVX2(a, b *float32, n int, sums *simLanes)
// n a multiple of 4: SimilarityOf's four float64 lanes.
TEXT ·simAVX2(SB), NOSPLIT, $0-32
	MOVQ    a+0(FP), SI
	MOVQ    b+8(FP), DX
	MOVQ    n+16(FP), CX
	MOVQ    sums+24(FP), BX
	VMOVUPD 0(BX), Y0
	VMOVUPD 32(BX), Y1
	VMOVUPD 64(BX), Y2
	SHRQ    $2, CX
	JZ      simdone

simloop:
	VCVTPS2PD (SI), Y5
	VCVTPS2PD (DX), Y6
	VSUBPD    Y6, Y5, Y7
	VMULPD    Y5, Y5, Y5
	VADDPD    Y5, Y0, Y0
	VMULPD    Y6, Y6, Y6
	VADDPD    Y6, Y1, Y1
	VMULPD    Y7, Y7, Y7
	VADDPD    Y7, Y2, Y2
	ADDQ      $16, SI
	ADDQ      $16, DX
	DECQ      CX
	JNZ       simloop

simdone:
	VMOVUPD Y0, 0(BX)
	VMOVUPD Y1, 32(BX)
	VMOVUPD Y2, 64(BX)
	VZEROUPPER
	RET

// func dequant4AVX2(out *float32, words int, codes *uint32, s, m float32)
// 8 elements per 32-bit word of 4-bit codes: x̂ = float32(float32(q)*s) + m.
TEXT ·dequant4AVX2(SB), NOSPLIT, $0-32
	MOVQ         out+0(FP), DI
	MOVQ         words+8(FP), CX
	MOVQ         codes+16(FP), SI
	VBROADCASTSS s+24(FP), Y12
	VBROADCASTSS m+28(FP), Y13
	VMOVDQU      ·shift4<>(SB), Y14
	MOVL         $15, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, Y15
	TESTQ        CX, CX
	JZ           d4done

d4loop:
	VPBROADCASTD (SI), Y0
	VPSRLVD      Y14, Y0, Y0
	VPAND        Y15, Y0, Y0
	VCVTDQ2PS    Y0, Y0
	VMULPS       Y12, Y0, Y0
	VADDPS       Y13, Y0, Y0
	VMOVUPS      Y0, (DI)
	ADDQ         $4, SI
	ADDQ         $32, DI
	DECQ         CX
	JNZ          d4loop

d4done:
	VZEROUPPER
	RET

// func dequant2AVX2(out *float32, words int, codes *uint32, s, m float32)
// 16 elements per 32-bit word of 2-bit codes.
TEXT ·dequant2AVX2(SB), NOSPLIT, $0-32
	MOVQ         out+0(FP), DI
	MOVQ         words+8(FP), CX
	MOVQ         codes+16(FP), SI
	VBROADCASTSS s+24(FP), Y12
	VBROADCASTSS m+28(FP), Y13
	VMOVDQU      ·shift2<>(SB), Y10
	VMOVDQU      ·shift2<>+32(SB), Y11
	MOVL         $3, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, Y15
	TESTQ        CX, CX
	JZ           d2done

d2loop:
	VPBROADCASTD (SI), Y0
	VPSRLVD      Y11, Y0, Y1
	VPSRLVD      Y10, Y0, Y0
	VPAND        Y15, Y0, Y0
	VPAND        Y15, Y1, Y1
	VCVTDQ2PS    Y0, Y0
	VCVTDQ2PS    Y1, Y1
	VMULPS       Y12, Y0, Y0
	VMULPS       Y12, Y1, Y1
	VADDPS       Y13, Y0, Y0
	VADDPS       Y13, Y1, Y1
	VMOVUPS      Y0, (DI)
	VMOVUPS      Y1, 32(DI)
	ADDQ         $4, SI
	ADDQ         $64, DI
	DECQ         CX
	JNZ          d2loop

d2done:
	VZEROUPPER
	RET

// func dequant8AVX2(out *float32, n int, codes *uint8, s, m float32)
// n a multiple of 8: one byte per code.
TEXT ·dequant8AVX2(SB), NOSPLIT, $0-32
	MOVQ         out+0(FP), DI
	MOVQ         n+8(FP), CX
	MOVQ         codes+16(FP), SI
	VBROADCASTSS s+24(FP), Y12
	VBROADCASTSS m+28(FP), Y13
	SHRQ         $3, CX
	JZ           d8done

d8loop:
	VPMOVZXBD (SI), Y0
	VCVTDQ2PS Y0, Y0
	VMULPS    Y12, Y0, Y0
	VADDPS    Y13, Y0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $8, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       d8loop

d8done:
	VZEROUPPER
	RET

// func absMaxAVX2(r, x *float32, n int)
// n a multiple of 8: r[i] = max(r[i], |x[i]|), NaN where either is NaN.
// VMAXPS returns its second source (r) when either is NaN; the blend
// puts |x| back where x is NaN.
TEXT ·absMaxAVX2(SB), NOSPLIT, $0-24
	MOVQ         r+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	MOVL         $0x7fffffff, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, Y15
	SHRQ         $3, CX
	JZ           absmaxdone

absmaxloop:
	VMOVUPS   (SI), Y0
	VANDPS    Y15, Y0, Y0
	VMOVUPS   (DI), Y1
	VMAXPS    Y1, Y0, Y2
	VCMPPS    $3, Y0, Y0, Y3
	VBLENDVPS Y3, Y0, Y2, Y2
	VMOVUPS   Y2, (DI)
	ADDQ      $32, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       absmaxloop

absmaxdone:
	VZEROUPPER
	RET

// func magMaxAVX2(r, x *uint16, n int)
// n a multiple of 16: r[i] = max(r[i], x[i] &^ 0x8000), unsigned.
TEXT ·magMaxAVX2(SB), NOSPLIT, $0-24
	MOVQ         r+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	MOVL         $0x7fff, AX
	VMOVD        AX, X15
	VPBROADCASTW X15, Y15
	SHRQ         $4, CX
	JZ           magmaxdone

magmaxloop:
	VPAND   (SI), Y15, Y0
	VPMAXUW (DI), Y0, Y0
	VMOVDQU Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     magmaxloop

magmaxdone:
	VZEROUPPER
	RET

// Super-block packing (PackSuperBlock's pack4x32 and pack2x16 for a whole
// super-block): per sub-block j, code = trunc(clamp(float32((v+m[j])·
// inv[j]) + 0.5, 0, qmax)) (clamping before truncation agrees with
// superCode's int64 conversion for |t| < 2^63, which the fp16 params
// guarantee), each code shifted to its place in its 32-bit word, and the
// words' disjoint bits summed with VPHADDD.
// p: inv at 0, m at 64 (16 float32 each).

// func packSB4AVX2(dst *byte, x *float32, p *sbPackArgs)
TEXT ·packSB4AVX2(SB), NOSPLIT, $0-24
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         p+16(FP), AX
	VMOVDQU      ·shift4<>(SB), Y13
	VMOVUPS      ·halfs<>(SB), Y14
	VXORPS       Y15, Y15, Y15
	MOVL         $0x41700000, BX     // 15.0
	VMOVD        BX, X12
	VBROADCASTSS X12, Y12
	MOVQ         $8, CX

p4loop:
	VBROADCASTSS 0(AX), Y10          // inv
	VBROADCASTSS 64(AX), Y11         // m
	VADDPS       (SI), Y11, Y0
	VADDPS       32(SI), Y11, Y1
	VADDPS       64(SI), Y11, Y2
	VADDPS       96(SI), Y11, Y3
	VMULPS       Y10, Y0, Y0
	VMULPS       Y10, Y1, Y1
	VMULPS       Y10, Y2, Y2
	VMULPS       Y10, Y3, Y3
	VADDPS       Y14, Y0, Y0
	VADDPS       Y14, Y1, Y1
	VADDPS       Y14, Y2, Y2
	VADDPS       Y14, Y3, Y3
	VMAXPS       Y15, Y0, Y0         // t < 0 and NaN -> 0
	VMAXPS       Y15, Y1, Y1
	VMAXPS       Y15, Y2, Y2
	VMAXPS       Y15, Y3, Y3
	VMINPS       Y12, Y0, Y0
	VMINPS       Y12, Y1, Y1
	VMINPS       Y12, Y2, Y2
	VMINPS       Y12, Y3, Y3
	VCVTTPS2DQ   Y0, Y0
	VCVTTPS2DQ   Y1, Y1
	VCVTTPS2DQ   Y2, Y2
	VCVTTPS2DQ   Y3, Y3
	VPSLLVD      Y13, Y0, Y0
	VPSLLVD      Y13, Y1, Y1
	VPSLLVD      Y13, Y2, Y2
	VPSLLVD      Y13, Y3, Y3
	VPHADDD      Y1, Y0, Y0
	VPHADDD      Y3, Y2, Y2
	VPHADDD      Y2, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPADDD       X1, X0, X0
	VMOVDQU      X0, (DI)
	ADDQ         $4, AX
	ADDQ         $128, SI
	ADDQ         $16, DI
	DECQ         CX
	JNZ          p4loop
	VZEROUPPER
	RET


// PACK2SUB: the code word of one sub-block of 16 (1/s at inv(AX), m at
// m(AX), values at x0(SI) and x1(SI)) in every lane of out, to be summed.
#define PACK2SUB(inv, m, x0, x1, out) \
	VBROADCASTSS inv(AX), Y10; \
	VBROADCASTSS m(AX), Y11; \
	VADDPS       x0(SI), Y11, Y0; \
	VADDPS       x1(SI), Y11, Y1; \
	VMULPS       Y10, Y0, Y0; \
	VMULPS       Y10, Y1, Y1; \
	VADDPS       Y14, Y0, Y0; \
	VADDPS       Y14, Y1, Y1; \
	VMAXPS       Y15, Y0, Y0; \
	VMAXPS       Y15, Y1, Y1; \
	VMINPS       Y12, Y0, Y0; \
	VMINPS       Y12, Y1, Y1; \
	VCVTTPS2DQ   Y0, Y0; \
	VCVTTPS2DQ   Y1, Y1; \
	VPSLLVD      Y8, Y0, Y0; \
	VPSLLVD      Y9, Y1, Y1; \
	VPOR         Y1, Y0, out

// func packSB2AVX2(dst *byte, x *float32, p *sbPackArgs)
TEXT ·packSB2AVX2(SB), NOSPLIT, $0-24
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         p+16(FP), AX
	VMOVDQU      ·shift2<>(SB), Y8
	VMOVDQU      ·shift2<>+32(SB), Y9
	VMOVUPS      ·halfs<>(SB), Y14
	VXORPS       Y15, Y15, Y15
	MOVL         $0x40400000, BX     // 3.0
	VMOVD        BX, X12
	VBROADCASTSS X12, Y12
	MOVQ         $4, CX

p2loop:
	// four sub-blocks of 16: Y4-Y7 their words' codes, one word each
	PACK2SUB(0, 64, 0, 32, Y4)
	PACK2SUB(4, 68, 64, 96, Y5)
	PACK2SUB(8, 72, 128, 160, Y6)
	PACK2SUB(12, 76, 192, 224, Y7)
	VPHADDD      Y5, Y4, Y4
	VPHADDD      Y7, Y6, Y6
	VPHADDD      Y6, Y4, Y4
	VEXTRACTI128 $1, Y4, X5
	VPADDD       X5, X4, X4
	VMOVDQU      X4, (DI)
	ADDQ         $16, AX
	ADDQ         $256, SI
	ADDQ         $16, DI
	DECQ         CX
	JNZ          p2loop
	VZEROUPPER
	RET

// DQWORD4(off, dst): 8 values of 4-bit codes from the word at off(SI)
// into dst(DI) (Y15 shift4, Y12 the nibble mask, Y5 s, Y6 -m).
#define DQWORD4(off, dst) \
	VPBROADCASTD off(SI), Y0; \
	VPSRLVD      Y15, Y0, Y0; \
	VPAND        Y12, Y0, Y0; \
	VCVTDQ2PS    Y0, Y0; \
	VMULPS       Y5, Y0, Y0; \
	VADDPS       Y6, Y0, Y0; \
	VMOVUPS      Y0, dst(DI)

// SBSUBPARAMS(off, s, negm): s = float32(d·float32(Sc[j])) and -m =
// -float32(dmin·float32(Mc[j])) of sub-blocks off..off+7 (AX the params,
// Y14 d, Y13 dmin, Y11 the sign mask).
#define SBSUBPARAMS(off, s, negm) \
	VPMOVZXBD (4+off)(AX), s; \
	VCVTDQ2PS s, s; \
	VMULPS    Y14, s, s; \
	VPMOVZXBD (20+off)(AX), negm; \
	VCVTDQ2PS negm, negm; \
	VMULPS    Y13, negm, negm; \
	VXORPS    Y11, negm, negm

// func dequantSBAVX2(out *float32, codes *byte, p *SuperBlockParams, d, dmin float32, bits int)
// One whole super-block (256 values) at 4 bits (8 sub-blocks of 32) or 2
// (16 of 16), dequantSuperBlock's formula: per sub-block j, x̂ =
// float32(float32(q)·s) + (-m). SuperBlockParams: Sc at 4, Mc at 20.
TEXT ·dequantSBAVX2(SB), NOSPLIT, $0-40
	MOVQ         out+0(FP), DI
	MOVQ         codes+8(FP), SI
	MOVQ         p+16(FP), AX
	VBROADCASTSS d+24(FP), Y14
	VBROADCASTSS dmin+28(FP), Y13
	MOVQ         bits+32(FP), BX
	VPCMPEQD     Y11, Y11, Y11
	VPSLLD       $31, Y11, Y11       // sign
	VPCMPEQD     Y7, Y7, Y7
	VPSRLD       $31, Y7, Y7         // 1 in every lane
	VPXOR        Y10, Y10, Y10       // sub-block index in every lane
	CMPQ         BX, $2
	JEQ          sb2
	SBSUBPARAMS(0, Y8, Y9)
	VMOVDQU      ·shift4<>(SB), Y15
	MOVL         $15, BX
	VMOVD        BX, X12
	VPBROADCASTD X12, Y12
	MOVQ         $8, CX

sb4loop:
	VPERMPS      Y8, Y10, Y5
	VPERMPS      Y9, Y10, Y6
	DQWORD4(0, 0)
	DQWORD4(4, 32)
	DQWORD4(8, 64)
	DQWORD4(12, 96)
	VPADDD       Y7, Y10, Y10
	ADDQ         $16, SI
	ADDQ         $128, DI
	DECQ         CX
	JNZ          sb4loop
	VZEROUPPER
	RET

sb2:
	SBSUBPARAMS(0, Y8, Y9)
	SBSUBPARAMS(8, Y3, Y4)
	VMOVDQU      ·shift2<>(SB), Y15
	VMOVDQU      ·shift2<>+32(SB), Y2
	MOVL         $3, BX
	VMOVD        BX, X12
	VPBROADCASTD X12, Y12
	MOVQ         $16, CX

sb2loop:
	CMPQ         CX, $8
	JNE          sb2sub
	VMOVAPS      Y3, Y8              // sub-blocks 8-15
	VMOVAPS      Y4, Y9
	VPXOR        Y10, Y10, Y10

sb2sub:
	VPERMPS      Y8, Y10, Y5
	VPERMPS      Y9, Y10, Y6
	VPBROADCASTD (SI), Y0
	VPSRLVD      Y2, Y0, Y1
	VPSRLVD      Y15, Y0, Y0
	VPAND        Y12, Y0, Y0
	VPAND        Y12, Y1, Y1
	VCVTDQ2PS    Y0, Y0
	VCVTDQ2PS    Y1, Y1
	VMULPS       Y5, Y0, Y0
	VMULPS       Y5, Y1, Y1
	VADDPS       Y6, Y0, Y0
	VADDPS       Y6, Y1, Y1
	VMOVUPS      Y0, (DI)
	VMOVUPS      Y1, 32(DI)
	VPADDD       Y7, Y10, Y10
	ADDQ         $4, SI
	ADDQ         $64, DI
	DECQ         CX
	JNZ          sb2loop
	VZEROUPPER
	RET

// Byte-pair and byte-quad weights of packCodes' AVX2 loops: VPMADDUBSW by
// (1, 16) makes c0 | c1<<4 of a code pair; by (1, 4) then VPMADDWD by
// (1, 16) makes c0 | c1<<2 | c2<<4 | c3<<6 of a quad (codes below 2^bits:
// the sums are the ORs).
DATA ·pairW4<>+0(SB)/8, $0x1001100110011001
DATA ·pairW4<>+8(SB)/8, $0x1001100110011001
DATA ·pairW4<>+16(SB)/8, $0x1001100110011001
DATA ·pairW4<>+24(SB)/8, $0x1001100110011001
GLOBL ·pairW4<>(SB), RODATA|NOPTR, $32
DATA ·pairW2<>+0(SB)/8, $0x0401040104010401
DATA ·pairW2<>+8(SB)/8, $0x0401040104010401
DATA ·pairW2<>+16(SB)/8, $0x0401040104010401
DATA ·pairW2<>+24(SB)/8, $0x0401040104010401
GLOBL ·pairW2<>(SB), RODATA|NOPTR, $32
DATA ·quadW2<>+0(SB)/8, $0x0010000100100001
DATA ·quadW2<>+8(SB)/8, $0x0010000100100001
DATA ·quadW2<>+16(SB)/8, $0x0010000100100001
DATA ·quadW2<>+24(SB)/8, $0x0010000100100001
GLOBL ·quadW2<>(SB), RODATA|NOPTR, $32

// func packCodes4AVX2(dst *byte, codes *uint8, blocks int)
// 32 codes (one per byte, each < 16) per block into 16 bytes.
TEXT ·packCodes4AVX2(SB), NOSPLIT, $0-24
	MOVQ      dst+0(FP), DI
	MOVQ      codes+8(FP), SI
	MOVQ      blocks+16(FP), CX
	VMOVDQU   ·pairW4<>(SB), Y15
	TESTQ     CX, CX
	JZ        pc4done

pc4loop:
	VMOVDQU   (SI), Y0
	VPMADDUBSW Y15, Y0, Y0 // words c0 + 16·c1
	VPACKUSWB Y0, Y0, Y0   // bytes: 8 of each 128-bit half, twice
	VPERMQ    $0x08, Y0, Y0 // quads 0 and 2 to the low half
	VMOVDQU   X0, (DI)
	ADDQ      $32, SI
	ADDQ      $16, DI
	DECQ      CX
	JNZ       pc4loop

pc4done:
	VZEROUPPER
	RET

// func packCodes2AVX2(dst *byte, codes *uint8, blocks int)
// 32 codes (one per byte, each < 4) per block into 8 bytes.
TEXT ·packCodes2AVX2(SB), NOSPLIT, $0-24
	MOVQ      dst+0(FP), DI
	MOVQ      codes+8(FP), SI
	MOVQ      blocks+16(FP), CX
	VMOVDQU   ·pairW2<>(SB), Y15
	VMOVDQU   ·quadW2<>(SB), Y14
	TESTQ     CX, CX
	JZ        pc2done

pc2loop:
	VMOVDQU   (SI), Y0
	VPMADDUBSW Y15, Y0, Y0 // words c0 + 4·c1
	VPMADDWD  Y14, Y0, Y0  // dwords (c0 + 4·c1) + 16·(c2 + 4·c3)
	VPACKUSDW Y0, Y0, Y0   // words: 4 of each 128-bit half, twice
	VPACKUSWB Y0, Y0, Y0   // bytes: 4 of each half, four times
	VPERMQ    $0x08, Y0, Y0 // X0: the low half's 4 bytes (dword 0), the high half's (dword 2)
	VMOVD     X0, (DI)
	VPEXTRD   $2, X0, 4(DI)
	ADDQ      $32, SI
	ADDQ      $8, DI
	DECQ      CX
	JNZ       pc2loop

pc2done:
	VZEROUPPER
	RET

// func simBothAVX2(a, b, w *float32, n int, sums *simLanes, wsums *wsimLanes)
// simAVX2's sums of a and b, and the weighted sums of WeightedSimilarityOf
// (element i in lane i%4 of dot, aa, bb, ee: dot += (w·a)·b, aa += (w·a)·a,
// bb += (w·b)·b, ee += (w·d)·d with d = a-b, the products and sums in
// wsimLanes.add's order), in one pass: n a multiple of 4; the exact
// squares a² and b² of the unweighted sums as FMAs.
TEXT ·simBothAVX2(SB), NOSPLIT, $0-48
	MOVQ    a+0(FP), SI
	MOVQ    b+8(FP), DX
	MOVQ    w+16(FP), DI
	MOVQ    n+24(FP), CX
	MOVQ    sums+32(FP), AX
	MOVQ    wsums+40(FP), BX
	VMOVUPD 0(AX), Y0             // aa
	VMOVUPD 32(AX), Y1            // bb
	VMOVUPD 64(AX), Y2            // ee
	VMOVUPD 0(BX), Y3             // w: dot
	VMOVUPD 32(BX), Y4            // w: aa
	VMOVUPD 64(BX), Y5            // w: bb
	VMOVUPD 96(BX), Y6            // w: ee
	SHRQ    $2, CX
	JZ      bothdone

bothloop:
	VCVTPS2PD (SI), Y7            // a
	VCVTPS2PD (DX), Y8            // b
	VCVTPS2PD (DI), Y9            // w
	VSUBPD    Y8, Y7, Y10         // d = a-b
	VFMADD231PD Y7, Y7, Y0        // a², b²: exact, one rounding as add
	VFMADD231PD Y8, Y8, Y1
	VMULPD    Y10, Y10, Y13
	VADDPD    Y13, Y2, Y2
	VMULPD    Y7, Y9, Y14         // w·a
	VMULPD    Y8, Y14, Y15
	VADDPD    Y15, Y3, Y3
	VMULPD    Y7, Y14, Y14
	VADDPD    Y14, Y4, Y4
	VMULPD    Y8, Y9, Y11         // w·b
	VMULPD    Y8, Y11, Y11
	VADDPD    Y11, Y5, Y5
	VMULPD    Y10, Y9, Y12        // w·d
	VMULPD    Y10, Y12, Y12
	VADDPD    Y12, Y6, Y6
	ADDQ      $16, SI
	ADDQ      $16, DX
	ADDQ      $16, DI
	DECQ      CX
	JNZ       bothloop

bothdone:
	VMOVUPD Y0, 0(AX)
	VMOVUPD Y1, 32(AX)
	VMOVUPD Y2, 64(AX)
	VMOVUPD Y3, 0(BX)
	VMOVUPD Y4, 32(BX)
	VMOVUPD Y5, 64(BX)
	VMOVUPD Y6, 96(BX)
	VZEROUPPER
	RET

// func sim2AVX2(a1, b1, a2, b2 *float32, n int, s1, s2 *simLanes)
// simAVX2 of (a1, b1) into s1 and of (a2, b2) into s2, n a multiple of 4:
// each sum added in its own order, so each is simAVX2's bit for bit. The
// squares of a and b are exact in float64, so their sums are FMAs (the
// one rounding is the add's): fewer operations, and the FMA's longer
// latency is hidden by the other block's chains (one block alone is bound
// by it).
TEXT ·sim2AVX2(SB), NOSPLIT, $0-56
	MOVQ    a1+0(FP), SI
	MOVQ    b1+8(FP), DX
	MOVQ    a2+16(FP), R8
	MOVQ    b2+24(FP), R9
	MOVQ    n+32(FP), CX
	MOVQ    s1+40(FP), AX
	MOVQ    s2+48(FP), BX
	VMOVUPD 0(AX), Y0
	VMOVUPD 32(AX), Y1
	VMOVUPD 64(AX), Y2
	VMOVUPD 0(BX), Y3
	VMOVUPD 32(BX), Y4
	VMOVUPD 64(BX), Y5
	SHRQ    $2, CX
	JZ      sim2done

sim2loop:
	VCVTPS2PD (SI), Y6
	VCVTPS2PD (DX), Y7
	VSUBPD    Y7, Y6, Y8
	VFMADD231PD Y6, Y6, Y0
	VFMADD231PD Y7, Y7, Y1
	VMULPD    Y8, Y8, Y8
	VADDPD    Y8, Y2, Y2
	VCVTPS2PD (R8), Y9
	VCVTPS2PD (R9), Y10
	VSUBPD    Y10, Y9, Y11
	VFMADD231PD Y9, Y9, Y3
	VFMADD231PD Y10, Y10, Y4
	VMULPD    Y11, Y11, Y11
	VADDPD    Y11, Y5, Y5
	ADDQ      $16, SI
	ADDQ      $16, DX
	ADDQ      $16, R8
	ADDQ      $16, R9
	DECQ      CX
	JNZ       sim2loop

sim2done:
	VMOVUPD Y0, 0(AX)
	VMOVUPD Y1, 32(AX)
	VMOVUPD Y2, 64(AX)
	VMOVUPD Y3, 0(BX)
	VMOVUPD Y4, 32(BX)
	VMOVUPD Y5, 64(BX)
	VZEROUPPER
	RET
