//go:build !purego

#include "textflag.h"

// laneBlock: xt at 0, wt at 1024, rows at 2048. laneParams: b at 0, inv
// at 32, qmaxf at 64, qmax at 96. laneSums: a at 0, b at 64, c at 128 (8
// float64 each), lo at 192, hi at 224 (8 int32 each). Lanes 0-3 of a
// float64 sum are in the low YMM of its pair, 4-7 in the high.
// laneSumsU: q at 0, qq at 32, xq[r] at 64+32r, lo at 320, hi at 352.
// laneParams.on (the pass kernels' on mask) at 100.

DATA ·halves<>+0(SB)/8, $0x3f0000003f000000
DATA ·halves<>+8(SB)/8, $0x3f0000003f000000
DATA ·halves<>+16(SB)/8, $0x3f0000003f000000
DATA ·halves<>+24(SB)/8, $0x3f0000003f000000
GLOBL ·halves<>(SB), RODATA|NOPTR, $32
DATA ·ones<>+0(SB)/8, $0x3f8000003f800000
DATA ·ones<>+8(SB)/8, $0x3f8000003f800000
DATA ·ones<>+16(SB)/8, $0x3f8000003f800000
DATA ·ones<>+24(SB)/8, $0x3f8000003f800000
GLOBL ·ones<>(SB), RODATA|NOPTR, $32

// PASSPARAMS: the prologue of statsPassUAVX2 and statsPassAVX2 (their
// arguments lb, p, at, j0, f into SI, AX, BX, DX, DI): p's b and inv for
// sub-blocks j0..j0+7 from at (0 for those off, inv 0 for s 0), Y13 the
// on mask (int32 lanes, also in p.on), Y12 inv.
#define PASSPARAMS \
	MOVQ         lb+0(FP), SI; \
	MOVQ         p+8(FP), AX; \
	MOVQ         at+16(FP), BX; \
	MOVQ         j0+24(FP), DX; \
	MOVQ         f+32(FP), DI; \
	VXORPS       Y15, Y15, Y15; \
	VPMOVZXBD    (BX)(DX*1), Y13; \
	VPCMPEQD     Y15, Y13, Y13; \
	VPCMPEQD     Y14, Y14, Y14; \
	VPXOR        Y14, Y13, Y13; \
	VMOVDQU      Y13, 100(AX); \
	VMOVUPS      16(BX)(DX*4), Y10; \
	VMOVUPS      80(BX)(DX*4), Y11; \
	VANDPS       Y13, Y11, Y11; \
	VMOVUPS      Y11, 0(AX); \
	MOVL         $0x3f800000, R8; \
	VMOVD        R8, X12; \
	VBROADCASTSS X12, Y12; \
	VDIVPS       Y10, Y12, Y12; \
	VCMPPS       $0x04, Y15, Y10, Y10; \
	VANDPS       Y10, Y12, Y12; \
	VANDPS       Y13, Y12, Y12; \
	VMOVUPS      Y12, 32(AX)

// PSTORE(v, half, mask, off): float64 of v's lanes 4·half to 4·half+3
// into f's array at off(DI), except where mask (lanes off keep theirs).
#define PSTORE(v, half, mask, off) \
	VEXTRACTF128 $half, v, X10; \
	VCVTPS2PD    X10, Y10; \
	VBLENDVPD    mask, off(DI), Y10, Y10; \
	VMOVUPD      Y10, off(DI)

// WROWS(loop, done, XQ): statsPassAVX2's rows (SI the values, AX the
// params, CX the rows) into Y5/Y6 Σw·c, Y7/Y8 Σw·c·c and Y9/Y10 Σw·c·v
// (lanes 0-3/4-7); the weights follow the values at 1024(SI). Per row: t =
// (v-b)·inv + 0.5 in float32, c = clamp(int32(t), 0, qmax) (0x80000000
// when out of range), wc = float64(w)·c, then Σwc, Σwc·c, Σwc·float64(v),
// the last by XQ (XQMUL or XQFMA). wc·c is exact in float64 (24 + 16
// bits), so its sum is an FMA: the same one rounding.
#define WROWS(loop, done, XQ) \
	LEAQ         1024(SI), DX; \
	VMOVUPS      0(AX), Y0; \
	VMOVUPS      32(AX), Y1; \
	VPBROADCASTD 96(AX), Y3; \
	MOVL         $0x3f000000, BX; \
	VMOVD        BX, X2; \
	VPBROADCASTD X2, Y2; \
	VPXOR        Y4, Y4, Y4; \
	VXORPD       Y5, Y5, Y5; \
	VXORPD       Y6, Y6, Y6; \
	VXORPD       Y7, Y7, Y7; \
	VXORPD       Y8, Y8, Y8; \
	VXORPD       Y9, Y9, Y9; \
	VXORPD       Y10, Y10, Y10; \
	TESTQ        CX, CX; \
	JZ           done; \
loop: \
	VMOVUPS      (SI), Y11; \
	VSUBPS       Y0, Y11, Y12; \
	VMULPS       Y1, Y12, Y12; \
	VADDPS       Y2, Y12, Y12; \
	VCVTTPS2DQ   Y12, Y12; \
	VPMAXSD      Y4, Y12, Y12; \
	VPMINSD      Y3, Y12, Y12; \
	VCVTDQ2PD    X12, Y13; \
	VEXTRACTI128 $1, Y12, X12; \
	VCVTDQ2PD    X12, Y12; \
	VCVTPS2PD    (DX), Y14; \
	VCVTPS2PD    16(DX), Y15; \
	VMULPD       Y13, Y14, Y14; \
	VMULPD       Y12, Y15, Y15; \
	VADDPD       Y14, Y5, Y5; \
	VADDPD       Y15, Y6, Y6; \
	VFMADD231PD  Y13, Y14, Y7; \
	VFMADD231PD  Y12, Y15, Y8; \
	VCVTPS2PD    X11, Y13; \
	VEXTRACTF128 $1, Y11, X11; \
	VCVTPS2PD    X11, Y11; \
	XQ; \
	ADDQ         $32, SI; \
	ADDQ         $32, DX; \
	DECQ         CX; \
	JNZ          loop;

// XQMUL: Σwc·v with the product rounded to float64 before its sum.
#define XQMUL \
	VMULPD       Y14, Y13, Y13; \
	VMULPD       Y15, Y11, Y11; \
	VADDPD       Y13, Y9, Y9; \
	VADDPD       Y11, Y10, Y10

// XQFMA: XQMUL for c <= 15, where wc·v is exact in float64 (24 + 4 + 24
// bits), as one FMA each.
#define XQFMA \
	VFMADD231PD  Y14, Y13, Y9; \
	VFMADD231PD  Y15, Y11, Y10

// WSTORE: statsPassAVX2's sums of the lanes on into f's q, qq and xq.
#define WSTORE \
	VPMOVSXDQ    100(AX), Y11; \
	VPMOVSXDQ    116(AX), Y12; \
	VPCMPEQD     Y13, Y13, Y13; \
	VPXOR        Y13, Y11, Y11; \
	VPXOR        Y13, Y12, Y12; \
	VBLENDVPD    Y11, 512(DI), Y5, Y5; \
	VMOVUPD      Y5, 512(DI); \
	VBLENDVPD    Y12, 544(DI), Y6, Y6; \
	VMOVUPD      Y6, 544(DI); \
	VBLENDVPD    Y11, 640(DI), Y7, Y7; \
	VMOVUPD      Y7, 640(DI); \
	VBLENDVPD    Y12, 672(DI), Y8, Y8; \
	VMOVUPD      Y8, 672(DI); \
	VBLENDVPD    Y11, 768(DI), Y9, Y9; \
	VMOVUPD      Y9, 768(DI); \
	VBLENDVPD    Y12, 800(DI), Y10, Y10; \
	VMOVUPD      Y10, 800(DI)

// func momentsLanesAVX2(lb *laneBlock, o *laneSums)
TEXT ·momentsLanesAVX2(SB), NOSPLIT, $0-16
	MOVQ     lb+0(FP), SI
	MOVQ     o+8(FP), DI
	LEAQ     1024(SI), DX
	MOVQ     2048(SI), CX
	VPCMPEQD Y7, Y7, Y7
	VPSRLD   $1, Y7, Y7              // lo = MaxInt32
	VPCMPEQD Y8, Y8, Y8
	VPSLLD   $31, Y8, Y8             // hi = MinInt32
	VXORPD   Y1, Y1, Y1              // Σw
	VXORPD   Y2, Y2, Y2
	VXORPD   Y3, Y3, Y3              // Σw·v
	VXORPD   Y4, Y4, Y4
	VXORPD   Y5, Y5, Y5              // Σw·v·v
	VXORPD   Y6, Y6, Y6
	TESTQ    CX, CX
	JZ       mdone

mloop:
	VMOVUPS      (SI), Y9            // v
	VPSRAD       $31, Y9, Y10
	VPSRLD       $1, Y10, Y10
	VPXOR        Y9, Y10, Y10        // key(v)
	VPMINSD      Y10, Y7, Y7
	VPMAXSD      Y10, Y8, Y8
	VCVTPS2PD    (DX), Y11           // w
	VCVTPS2PD    16(DX), Y12
	VADDPD       Y11, Y1, Y1
	VADDPD       Y12, Y2, Y2
	VCVTPS2PD    X9, Y13
	VEXTRACTF128 $1, Y9, X9
	VCVTPS2PD    X9, Y14
	VMULPD       Y13, Y11, Y11       // w·v
	VMULPD       Y14, Y12, Y12
	VADDPD       Y11, Y3, Y3
	VADDPD       Y12, Y4, Y4
	VMULPD       Y13, Y11, Y11       // w·v·v
	VMULPD       Y14, Y12, Y12
	VADDPD       Y11, Y5, Y5
	VADDPD       Y12, Y6, Y6
	ADDQ         $32, SI
	ADDQ         $32, DX
	DECQ         CX
	JNZ          mloop

mdone:
	VMOVUPD Y1, 0(DI)
	VMOVUPD Y2, 32(DI)
	VMOVUPD Y3, 64(DI)
	VMOVUPD Y4, 96(DI)
	VMOVUPD Y5, 128(DI)
	VMOVUPD Y6, 160(DI)
	VMOVDQU Y7, 192(DI)
	VMOVDQU Y8, 224(DI)
	VZEROUPPER
	RET


// UROW: one row of statsPassUAVX2 at off(SI), its Σv·c into acc (AX the
// params, Y12 0.5, Y15 0; Y0 Σc, Y1 Σc²). The clamped t truncates in
// place (VROUNDPS: int32 and back gives the same for t in [0, qmax]);
// Σc and Σc² are FMAs (c·1 and c·c are exact: the one rounding is the
// add's), which the multiply pipes take off the add pipes.
#define UROW(off, acc) \
	VMOVUPS    off(SI), Y10; \
	VSUBPS     0(AX), Y10, Y11; \
	VMULPS     32(AX), Y11, Y11; \
	VADDPS     Y12, Y11, Y11; \
	VMAXPS     Y15, Y11, Y11; \
	VMINPS     64(AX), Y11, Y11; \
	VROUNDPS   $3, Y11, Y11; \
	VFMADD231PS ·ones<>(SB), Y11, Y0; \
	VMULPS     Y11, Y10, Y10; \
	VADDPS     Y10, acc, acc; \
	VFMADD231PS Y11, Y11, Y1

// MROW: one row of momentsLanesUAVX2 at off(SI) into Σx sum and Σx² sq
// (Y6, Y7 the range keys).
#define MROW(off, sum, sq) \
	VMOVUPS off(SI), Y10; \
	VPSRAD  $31, Y10, Y11; \
	VPSRLD  $1, Y11, Y11; \
	VPXOR   Y10, Y11, Y11; \
	VPMINSD Y11, Y6, Y6; \
	VPMAXSD Y11, Y7, Y7; \
	VADDPS  Y10, sum, sum; \
	VMULPS  Y10, Y10, Y10; \
	VADDPS  Y10, sq, sq

// UROWS: the rows of statsPassUAVX2 from SI, CX/8 blocks of 8 (label
// the loop's).
#define UROWS(label) \
label: \
	UROW(0, Y2); \
	UROW(32, Y3); \
	UROW(64, Y4); \
	UROW(96, Y5); \
	UROW(128, Y6); \
	UROW(160, Y7); \
	UROW(192, Y8); \
	UROW(224, Y9); \
	ADDQ $256, SI; \
	DECQ CX; \
	JNZ  label

// func momentsLanesUAVX2(lb *laneBlock, o *laneSumsU)
// moments' unweighted sums per lane (rows even): Y2/Y3 Σx of even/odd
// rows, Y4/Y5 Σx², Y6/Y7 the range keys.
TEXT ·momentsLanesUAVX2(SB), NOSPLIT, $0-16
	MOVQ     lb+0(FP), SI
	MOVQ     o+8(FP), DI
	MOVQ     2048(SI), CX
	SHRQ     $1, CX
	VPCMPEQD Y6, Y6, Y6
	VPSRLD   $1, Y6, Y6
	VPCMPEQD Y7, Y7, Y7
	VPSLLD   $31, Y7, Y7
	VXORPS   Y2, Y2, Y2
	VXORPS   Y3, Y3, Y3
	VXORPS   Y4, Y4, Y4
	VXORPS   Y5, Y5, Y5
	TESTQ    CX, CX
	JZ       mudone

muloop:
	MROW(0, Y2, Y4)
	MROW(32, Y3, Y5)
	ADDQ     $64, SI
	DECQ     CX
	JNZ      muloop

mudone:
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	VMOVUPS Y4, 128(DI)
	VMOVUPS Y5, 160(DI)
	VMOVDQU Y6, 320(DI)
	VMOVDQU Y7, 352(DI)
	VZEROUPPER
	RET

// func transpose8AVX2(dst, src *float32, stride, blocks int)
// For b < blocks: the 8x8 floats src[k*stride + 32b + 4i] (bytes; row k =
// sub-block k) to dst[256b + 32i + 4k] (row i = element 8b+i of every
// sub-block).
TEXT ·transpose8AVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ stride+16(FP), BX
	MOVQ blocks+24(FP), CX
	LEAQ (BX)(BX*2), DX          // 3·stride
	TESTQ CX, CX
	JZ   tdone

tloop:
	MOVQ        SI, AX
	VMOVUPS     (AX), Y0
	VMOVUPS     (AX)(BX*1), Y1
	VMOVUPS     (AX)(BX*2), Y2
	VMOVUPS     (AX)(DX*1), Y3
	LEAQ        (AX)(BX*4), AX
	VMOVUPS     (AX), Y4
	VMOVUPS     (AX)(BX*1), Y5
	VMOVUPS     (AX)(BX*2), Y6
	VMOVUPS     (AX)(DX*1), Y7
	VUNPCKLPS   Y1, Y0, Y8       // a0 b0 a1 b1 | a4 b4 a5 b5
	VUNPCKHPS   Y1, Y0, Y9       // a2 b2 a3 b3 | a6 b6 a7 b7
	VUNPCKLPS   Y3, Y2, Y10
	VUNPCKHPS   Y3, Y2, Y11
	VUNPCKLPS   Y5, Y4, Y12
	VUNPCKHPS   Y5, Y4, Y13
	VUNPCKLPS   Y7, Y6, Y14
	VUNPCKHPS   Y7, Y6, Y15
	VSHUFPS     $0x44, Y10, Y8, Y0  // a0 b0 c0 d0 | a4 b4 c4 d4
	VSHUFPS     $0xee, Y10, Y8, Y1  // a1 b1 c1 d1 | a5 ...
	VSHUFPS     $0x44, Y11, Y9, Y2  // a2 ... | a6
	VSHUFPS     $0xee, Y11, Y9, Y3  // a3 ... | a7
	VSHUFPS     $0x44, Y14, Y12, Y4 // e0 f0 g0 h0 | e4 ...
	VSHUFPS     $0xee, Y14, Y12, Y5
	VSHUFPS     $0x44, Y15, Y13, Y6
	VSHUFPS     $0xee, Y15, Y13, Y7
	VPERM2F128  $0x20, Y4, Y0, Y8   // row 0
	VPERM2F128  $0x20, Y5, Y1, Y9   // row 1
	VPERM2F128  $0x20, Y6, Y2, Y10  // row 2
	VPERM2F128  $0x20, Y7, Y3, Y11  // row 3
	VPERM2F128  $0x31, Y4, Y0, Y12  // row 4
	VPERM2F128  $0x31, Y5, Y1, Y13  // row 5
	VPERM2F128  $0x31, Y6, Y2, Y14  // row 6
	VPERM2F128  $0x31, Y7, Y3, Y15  // row 7
	VMOVUPS     Y8, 0(DI)
	VMOVUPS     Y9, 32(DI)
	VMOVUPS     Y10, 64(DI)
	VMOVUPS     Y11, 96(DI)
	VMOVUPS     Y12, 128(DI)
	VMOVUPS     Y13, 160(DI)
	VMOVUPS     Y14, 192(DI)
	VMOVUPS     Y15, 224(DI)
	ADDQ        $32, SI
	ADDQ        $256, DI
	DECQ        CX
	JNZ         tloop

tdone:
	VZEROUPPER
	RET

// func statsPassUAVX2(lb *laneBlock, p *laneParams, at *pass, j0 int, f *subs) (slow uint32)
// lockstep.stats' unweighted pass of sub-blocks j0..j0+7 (rows a
// multiple of 8, p.qmaxf set): their params from at (b and 1/s of the
// sub-blocks on, 0 for the others, as stats), statsLanesUGo's sums,
// and f's q, qq and xq of the sub-blocks on, combined as stats combines
// codeSums' lanes. slow has bit k set for a sub-block on whose 1/s is
// not below maxInv (stats' scalar loop: the caller's).
// pass: on at 0, s at 16, b at 80.
TEXT ·statsPassUAVX2(SB), NOSPLIT, $0-44
	PASSPARAMS
	MOVL         $0x501502f9, R8     // float32(maxInv)
	VMOVD        R8, X10
	VBROADCASTSS X10, Y10
	VCMPPS       $0x15, Y10, Y12, Y12 // !(inv < maxInv)
	VANDPS       Y13, Y12, Y12
	VMOVMSKPS    Y12, R8
	MOVL         R8, slow+40(FP)
	LEAQ         (DI)(DX*8), DI      // f's arrays from j0
	MOVQ         2048(SI), CX
	SHRQ         $3, CX
	VMOVUPS      ·halves<>(SB), Y12
	VXORPS       Y0, Y0, Y0
	VXORPS       Y1, Y1, Y1
	VXORPS       Y2, Y2, Y2
	VXORPS       Y3, Y3, Y3
	VXORPS       Y4, Y4, Y4
	VXORPS       Y5, Y5, Y5
	VXORPS       Y6, Y6, Y6
	VXORPS       Y7, Y7, Y7
	VXORPS       Y8, Y8, Y8
	VXORPS       Y9, Y9, Y9
	TESTQ        CX, CX
	JZ           pdone
	UROWS(ploop)

pdone:
	VADDPS       Y6, Y2, Y2
	VADDPS       Y7, Y3, Y3
	VADDPS       Y3, Y2, Y2          // (r0+r4)+(r1+r5)
	VADDPS       Y8, Y4, Y4
	VADDPS       Y9, Y5, Y5
	VADDPS       Y5, Y4, Y4          // (r2+r6)+(r3+r7)
	VPCMPEQD     Y10, Y10, Y10
	VPXOR        Y10, Y13, Y13       // off
	VPMOVSXDQ    X13, Y14            // off, lanes 0-3 as float64 masks
	VEXTRACTI128 $1, Y13, X13
	VPMOVSXDQ    X13, Y13            // lanes 4-7
	PSTORE(Y0, 0, Y14, 512)
	PSTORE(Y0, 1, Y13, 544)
	PSTORE(Y1, 0, Y14, 640)
	PSTORE(Y1, 1, Y13, 672)
	VCVTPS2PD    X2, Y10
	VCVTPS2PD    X4, Y11
	VADDPD       Y11, Y10, Y10
	VBLENDVPD    Y14, 768(DI), Y10, Y10
	VMOVUPD      Y10, 768(DI)
	VEXTRACTF128 $1, Y2, X10
	VEXTRACTF128 $1, Y4, X11
	VCVTPS2PD    X10, Y10
	VCVTPS2PD    X11, Y11
	VADDPD       Y11, Y10, Y10
	VBLENDVPD    Y13, 800(DI), Y10, Y10
	VMOVUPD      Y10, 800(DI)
	VZEROUPPER
	RET

// STATSPASS(XQ, loop, done): the body of statsPassAVX2 and
// statsPass4AVX2, with their Σwc·v by XQ.
#define STATSPASS(XQ, loop, done) \
	PASSPARAMS; \
	LEAQ         (DI)(DX*8), DI; \
	MOVQ         2048(SI), CX; \
	WROWS(loop, done, XQ); \
done: \
	WSTORE; \
	VZEROUPPER; \
	RET

// func statsPassAVX2(lb *laneBlock, p *laneParams, at *pass, j0 int, f *subs)
// lockstep.stats' weighted pass of sub-blocks j0..j0+7: their params
// from at (PASSPARAMS), statsLanesGo's sums (the same float32 code and
// float64 products and sums per lane, row by row; an FMA only where its
// product is exact), and f's q, qq and xq of the sub-blocks on (f's
// arrays from j0).
TEXT ·statsPassAVX2(SB), NOSPLIT, $0-40
	STATSPASS(XQMUL, wloop, wdone)

// func statsPass4AVX2(lb *laneBlock, p *laneParams, at *pass, j0 int, f *subs)
// statsPassAVX2 for qmax <= 15, its Σwc·v by FMA (exact products).
TEXT ·statsPass4AVX2(SB), NOSPLIT, $0-40
	STATSPASS(XQFMA, w4loop, w4done)
