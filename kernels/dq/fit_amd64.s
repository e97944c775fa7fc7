//go:build !purego

#include "textflag.h"

// subs: n at 128, x at 256, xx at 384, q at 512, qq at 640, xq at 768,
// s at 896, b at 1024 (16 float64 each), sc at 1280, mc at 1344 (16
// int32 each). Four sub-blocks per YMM, in order; every float64 operation
// is the Go twin's (no fused products).

DATA ·oneF64<>+0(SB)/8, $0x3ff0000000000000
GLOBL ·oneF64<>(SB), RODATA|NOPTR, $8
DATA ·tinyF64<>+0(SB)/8, $0x3e112e0be826d695 // 1e-9
GLOBL ·tinyF64<>(SB), RODATA|NOPTR, $8
DATA ·two63F64<>+0(SB)/8, $0x43e0000000000000 // 2^63
GLOBL ·two63F64<>(SB), RODATA|NOPTR, $8
DATA ·signF64<>+0(SB)/8, $0x8000000000000000
GLOBL ·signF64<>(SB), RODATA|NOPTR, $8
DATA ·keyMask<>+0(SB)/8, $0xfffffffffffffffc
GLOBL ·keyMask<>(SB), RODATA|NOPTR, $8

// func refitAVX2(f *subs, on *[16]bool, groups int, omega float64, relax bool)
TEXT ·refitAVX2(SB), NOSPLIT, $0-33
	MOVQ         f+0(FP), AX
	MOVQ         on+8(FP), BX
	MOVQ         groups+16(FP), CX
	VBROADCASTSD omega+24(FP), Y15
	VBROADCASTSD ·tinyF64<>(SB), Y14
	VBROADCASTSD ·oneF64<>(SB), Y12
	VXORPD       Y13, Y13, Y13
	MOVBLZX      relax+32(FP), R9    // omega != 1 (no legacy SSE here: it stalls after YMM writes)
	XORQ         DX, DX

refitLoop:
	MOVL         (BX), R8
	VMOVD        R8, X0
	VPMOVZXBQ    X0, Y0
	VPCMPEQQ     Y13, Y0, Y0         // off: on[j] false
	VMOVUPD      128(AX)(DX*1), Y1   // n
	VMOVUPD      512(AX)(DX*1), Y2   // q
	VMOVUPD      640(AX)(DX*1), Y3   // qq
	VMOVUPD      256(AX)(DX*1), Y4   // x
	VMOVUPD      768(AX)(DX*1), Y5   // xq
	VMULPD       Y3, Y1, Y6          // n·qq
	VMULPD       Y2, Y2, Y7          // q·q
	VSUBPD       Y7, Y6, Y6          // det
	VMULPD       Y14, Y1, Y7
	VMULPD       Y3, Y7, Y7          // 1e-9·n·qq
	VCMPPD       $0x1e, Y7, Y6, Y7   // det > 1e-9·n·qq
	VCMPPD       $0x16, Y13, Y1, Y8  // !(n <= 0)
	VANDPD       Y8, Y7, Y7
	VANDNPD      Y7, Y0, Y7          // ok: on and fitted
	VCMPPD       $0x1e, Y13, Y1, Y8  // n > 0
	VCMPPD       $0x00, Y13, Y3, Y9  // qq == 0
	VANDPD       Y9, Y8, Y8
	VANDNPD      Y8, Y0, Y8          // z: on and every code 0
	VDIVPD       Y1, Y4, Y9          // x/n
	VDIVPD       Y6, Y12, Y6         // id = 1/det
	VMULPD       Y5, Y1, Y10         // n·xq
	VMULPD       Y4, Y2, Y11         // q·x
	VSUBPD       Y11, Y10, Y10
	VMULPD       Y6, Y10, Y10        // s'
	VMULPD       Y4, Y3, Y11         // qq·x
	VMULPD       Y5, Y2, Y1          // q·xq
	VSUBPD       Y1, Y11, Y11
	VMULPD       Y6, Y11, Y11        // b'
	VMOVUPD      896(AX)(DX*1), Y1   // s
	VMOVUPD      1024(AX)(DX*1), Y2  // b
	TESTB        R9, R9
	JZ           refitMove
	VSUBPD       Y1, Y10, Y10
	VMULPD       Y10, Y15, Y10
	VADDPD       Y10, Y1, Y10        // s + ω·(s' - s)
	VSUBPD       Y2, Y11, Y11
	VMULPD       Y11, Y15, Y11
	VADDPD       Y11, Y2, Y11        // b + ω·(b' - b)

refitMove:
	VCMPPD       $0x11, Y13, Y10, Y3 // s' < 0
	VANDNPD      Y10, Y3, Y10        // s' = 0
	VBLENDVPD    Y3, Y9, Y11, Y11    // b' = x/n
	VBLENDVPD    Y7, Y10, Y1, Y1
	VBLENDVPD    Y8, Y9, Y2, Y2
	VBLENDVPD    Y7, Y11, Y2, Y2
	VMOVUPD      Y1, 896(AX)(DX*1)
	VMOVUPD      Y2, 1024(AX)(DX*1)
	ADDQ         $4, BX
	ADDQ         $32, DX
	DECQ         CX
	JNZ          refitLoop
	VZEROUPPER
	RET

// ERRKEY turns the float64 errors in r into chooseCodes' keys with index
// idx (Y15: the zero vector; Y14: keyMask; Y9 scratch).
#define ERRKEY(r, idx) \
	VPCMPGTQ r, Y15, Y9 \
	VPANDN   r, Y9, r \
	VPAND    Y14, r, r \
	MOVQ     $idx, R8 \
	VMOVQ    R8, X9 \
	VPBROADCASTQ X9, Y9 \
	VPOR     Y9, r, r

// KEYMIN: a = min(a, b) of non-negative int64 keys (Y9 scratch).
#define KEYMIN(a, b) \
	VPCMPGTQ  b, a, Y9 \
	VBLENDVPD Y9, b, a, a

// func chooseCodesAVX2(f *subs, groups int, id, idm, pm float64, df, dmf float32)
TEXT ·chooseCodesAVX2(SB), NOSPLIT, $0-48
	MOVQ         f+0(FP), AX
	MOVQ         groups+8(FP), CX
	XORQ         DX, DX              // float64 offset
	XORQ         SI, SI              // int32 offset

codesLoop:
	VXORPD       Y15, Y15, Y15
	VBROADCASTSD pm+32(FP), Y14
	VBROADCASTSD ·two63F64<>(SB), Y13
	VBROADCASTSD ·oneF64<>(SB), Y12
	// s0, s1 = clamp(trunc(s·id)), min(s0+1, pm): Go's int64 conversion
	// is INT64_MIN for NaN and |t| ≥ 2^63, which the clamp makes 0.
	VBROADCASTSD id+16(FP), Y0
	VMULPD       896(AX)(DX*1), Y0, Y0
	VROUNDPD     $3, Y0, Y1
	VMAXPD       Y15, Y1, Y1
	VMINPD       Y14, Y1, Y1
	VCMPPD       $0x11, Y13, Y0, Y0  // t < 2^63 (false for NaN)
	VANDPD       Y0, Y1, Y1          // s0
	VADDPD       Y12, Y1, Y2
	VMINPD       Y14, Y2, Y2         // s1
	VBROADCASTSD ·signF64<>(SB), Y11
	VXORPD       1024(AX)(DX*1), Y11, Y0 // -b
	VBROADCASTSD idm+24(FP), Y3
	VMULPD       Y3, Y0, Y0
	VROUNDPD     $3, Y0, Y3
	VMAXPD       Y15, Y3, Y3
	VMINPD       Y14, Y3, Y3
	VCMPPD       $0x11, Y13, Y0, Y0
	VANDPD       Y0, Y3, Y3          // m0
	VADDPD       Y12, Y3, Y4
	VMINPD       Y14, Y4, Y4         // m1
	// sa, sb = float32(df·float32(s)); ma, mb = -float32(dmf·float32(m))
	VBROADCASTSS df+40(FP), X12
	VBROADCASTSS dmf+44(FP), X13
	VCVTPD2PSY   Y1, X5
	VMULPS       X12, X5, X5
	VCVTPS2PD    X5, Y5              // sa
	VCVTPD2PSY   Y2, X6
	VMULPS       X12, X6, X6
	VCVTPS2PD    X6, Y6              // sb
	VCVTPD2PSY   Y3, X7
	VMULPS       X13, X7, X7
	VCVTPS2PD    X7, Y7
	VXORPD       Y11, Y7, Y7         // ma
	VCVTPD2PSY   Y4, X8
	VMULPS       X13, X8, X8
	VCVTPS2PD    X8, Y8
	VXORPD       Y11, Y8, Y8         // mb
	// fa, fb = s·(s·qq - 2·xq); ga, gb = m·(m·n - 2·x)
	VMOVUPD      640(AX)(DX*1), Y9   // qq
	VMOVUPD      768(AX)(DX*1), Y10
	VADDPD       Y10, Y10, Y10       // 2·xq
	VMULPD       Y9, Y5, Y11
	VSUBPD       Y10, Y11, Y11
	VMULPD       Y11, Y5, Y11        // fa
	VMULPD       Y9, Y6, Y12
	VSUBPD       Y10, Y12, Y12
	VMULPD       Y12, Y6, Y12        // fb
	VMOVUPD      128(AX)(DX*1), Y9   // n
	VMOVUPD      256(AX)(DX*1), Y10
	VADDPD       Y10, Y10, Y10       // 2·x
	VMULPD       Y9, Y7, Y13
	VSUBPD       Y10, Y13, Y13
	VMULPD       Y13, Y7, Y13        // ga
	VMULPD       Y9, Y8, Y14
	VSUBPD       Y10, Y14, Y14
	VMULPD       Y14, Y8, Y14        // gb
	VMOVUPD      512(AX)(DX*1), Y9
	VADDPD       Y9, Y9, Y9          // 2·q
	VMULPD       Y5, Y9, Y5          // 2·q·sa
	VMULPD       Y6, Y9, Y6          // 2·q·sb
	VMOVUPD      384(AX)(DX*1), Y9   // xx
	VADDPD       Y11, Y9, Y11        // xx + fa
	VADDPD       Y12, Y9, Y12        // xx + fb
	VADDPD       Y13, Y11, Y0
	VMULPD       Y7, Y5, Y9
	VADDPD       Y9, Y0, Y0          // e0: (s0, m0)
	VADDPD       Y14, Y11, Y11
	VMULPD       Y8, Y5, Y9
	VADDPD       Y9, Y11, Y11        // e1: (s0, m1)
	VADDPD       Y13, Y12, Y13
	VMULPD       Y7, Y6, Y9
	VADDPD       Y9, Y13, Y13        // e2: (s1, m0)
	VADDPD       Y14, Y12, Y12
	VMULPD       Y8, Y6, Y9
	VADDPD       Y9, Y12, Y12        // e3: (s1, m1)
	VBROADCASTSD ·keyMask<>(SB), Y14
	ERRKEY(Y0, 0)
	ERRKEY(Y11, 1)
	ERRKEY(Y13, 2)
	ERRKEY(Y12, 3)
	KEYMIN(Y0, Y11)
	KEYMIN(Y13, Y12)
	KEYMIN(Y0, Y13)
	// sc = k&2 ? s1 : s0; mc = k&1 ? m1 : m0
	MOVQ         $2, R8
	VMOVQ        R8, X9
	VPBROADCASTQ X9, Y9
	VPAND        Y9, Y0, Y10
	VPCMPEQQ     Y9, Y10, Y10
	VBLENDVPD    Y10, Y2, Y1, Y1
	VCVTTPD2DQY  Y1, X1
	VMOVDQU      X1, 1280(AX)(SI*1)
	MOVQ         $1, R8
	VMOVQ        R8, X9
	VPBROADCASTQ X9, Y9
	VPAND        Y9, Y0, Y10
	VPCMPEQQ     Y9, Y10, Y10
	VBLENDVPD    Y10, Y4, Y3, Y3
	VCVTTPD2DQY  Y3, X3
	VMOVDQU      X3, 1344(AX)(SI*1)
	ADDQ         $32, DX
	ADDQ         $16, SI
	DECQ         CX
	JNZ          codesLoop
	VZEROUPPER
	RET

// func keepBestAVX2(f *subs, best *saved, on *[16]bool, groups int)
// For the sub-blocks on: e = errAt (the Go expression's order), and the
// refitted start stays where e < f.e (which becomes e), else best's fit
// and sums come back. saved: s at 0, b at 128, q at 256, qq at 384, xq
// at 512; subs.e at 1152.
TEXT ·keepBestAVX2(SB), NOSPLIT, $0-32
	MOVQ      f+0(FP), AX
	MOVQ      best+8(FP), SI
	MOVQ      on+16(FP), BX
	MOVQ      groups+24(FP), CX
	VXORPD    Y15, Y15, Y15
	VPCMPEQQ  Y14, Y14, Y14
	XORQ      DX, DX

keepLoop:
	MOVL      (BX), R8
	VMOVD     R8, X0
	VPMOVZXBQ X0, Y0
	VPCMPEQQ  Y15, Y0, Y0           // off
	VMOVUPD   896(AX)(DX*1), Y1     // s
	VMOVUPD   1024(AX)(DX*1), Y2    // b
	VMOVUPD   512(AX)(DX*1), Y3     // q
	VMOVUPD   640(AX)(DX*1), Y4     // qq
	VMOVUPD   768(AX)(DX*1), Y5     // xq
	VADDPD    Y1, Y1, Y6            // 2·s
	VMULPD    Y5, Y6, Y7
	VMOVUPD   384(AX)(DX*1), Y8
	VSUBPD    Y7, Y8, Y8            // xx - 2·s·xq
	VADDPD    Y2, Y2, Y7
	VMULPD    256(AX)(DX*1), Y7, Y7
	VSUBPD    Y7, Y8, Y8            // - 2·b·x
	VMULPD    Y1, Y1, Y7
	VMULPD    Y4, Y7, Y7
	VADDPD    Y7, Y8, Y8            // + s·s·qq
	VMULPD    Y2, Y6, Y7
	VMULPD    Y3, Y7, Y7
	VADDPD    Y7, Y8, Y8            // + 2·s·b·q
	VMULPD    128(AX)(DX*1), Y2, Y7
	VMULPD    Y2, Y7, Y7
	VADDPD    Y7, Y8, Y8            // + n·b·b: e
	VMOVUPD   1152(AX)(DX*1), Y9    // f.e
	VCMPPD    $0x11, Y9, Y8, Y10    // e < f.e
	VORPD     Y0, Y10, Y11
	VXORPD    Y14, Y11, Y11         // on and not better: restore
	VANDNPD   Y10, Y0, Y10          // on and better: keep
	VBLENDVPD Y10, Y8, Y9, Y9
	VMOVUPD   Y9, 1152(AX)(DX*1)
	VBLENDVPD Y11, 0(SI)(DX*1), Y1, Y1
	VMOVUPD   Y1, 896(AX)(DX*1)
	VBLENDVPD Y11, 128(SI)(DX*1), Y2, Y2
	VMOVUPD   Y2, 1024(AX)(DX*1)
	VBLENDVPD Y11, 256(SI)(DX*1), Y3, Y3
	VMOVUPD   Y3, 512(AX)(DX*1)
	VBLENDVPD Y11, 384(SI)(DX*1), Y4, Y4
	VMOVUPD   Y4, 640(AX)(DX*1)
	VBLENDVPD Y11, 512(SI)(DX*1), Y5, Y5
	VMOVUPD   Y5, 768(AX)(DX*1)
	ADDQ      $4, BX
	ADDQ      $32, DX
	DECQ      CX
	JNZ       keepLoop
	VZEROUPPER
	RET

// func startAVX2(f *subs, at *pass, groups int, beta, qmax float32, oneSided bool)
// The start of fit's float fit for sub-blocks 8·groups, eight per YMM in
// float32 as startGo: the (shrunk) range, s = (hi-lo)/qmax and b = lo
// into at.s and at.b, and float64(s, b) into f.s and f.b where not done.
// subs: lo at 0, hi at 64, done at 1408.
TEXT ·startAVX2(SB), NOSPLIT, $0-33
	MOVQ         f+0(FP), AX
	MOVQ         at+8(FP), BX
	MOVQ         groups+16(FP), CX
	VBROADCASTSS beta+24(FP), Y15
	VBROADCASTSS qmax+28(FP), Y14
	MOVL         $0x3f000000, R8
	VMOVD        R8, X13
	VBROADCASTSS X13, Y13            // 0.5
	VXORPD       Y12, Y12, Y12
	VPCMPEQQ     Y11, Y11, Y11
	MOVBLZX      oneSided+32(FP), R9
	XORQ         DX, DX              // float32 offset
	XORQ         SI, SI              // float64 offset
	XORQ         DI, DI              // bool offset

startLoop:
	VMOVUPS      0(AX)(DX*1), Y0     // lo
	VMOVUPS      64(AX)(DX*1), Y1    // hi
	VMULPS       Y13, Y0, Y6
	VMULPS       Y13, Y1, Y7
	VADDPS       Y7, Y6, Y6          // lo/2 + hi/2
	TESTB        R9, R9
	JZ           symmetric
	// mean = float32(x/n), the midpoint where n <= 0. The float64 masks
	// become float32 ones by conversion: all ones (a NaN) keeps its sign.
	VMOVUPD      256(AX)(SI*1), Y2
	VDIVPD       128(AX)(SI*1), Y2, Y2
	VMOVUPD      288(AX)(SI*1), Y3
	VDIVPD       160(AX)(SI*1), Y3, Y3
	VCVTPD2PSY   Y2, X2
	VCVTPD2PSY   Y3, X3
	VINSERTF128  $1, X3, Y2, Y2      // mean
	VMOVUPD      128(AX)(SI*1), Y4
	VCMPPD       $0x02, Y12, Y4, Y4  // n <= 0
	VMOVUPD      160(AX)(SI*1), Y5
	VCMPPD       $0x02, Y12, Y5, Y5
	VCVTPD2PSY   Y4, X4
	VCVTPD2PSY   Y5, X5
	VINSERTF128  $1, X5, Y4, Y4
	VBLENDVPS    Y4, Y6, Y2, Y2
	VSUBPS       Y2, Y1, Y6          // hi - mean
	VSUBPS       Y0, Y2, Y7          // mean - lo
	VCMPPS       $0x1e, Y7, Y6, Y8   // hi-mean > mean-lo: shrink hi
	VMULPS       Y15, Y6, Y9
	VADDPS       Y9, Y2, Y9
	VMULPS       Y15, Y7, Y10
	VSUBPS       Y10, Y2, Y10
	VBLENDVPS    Y8, Y9, Y1, Y1
	VBLENDVPS    Y8, Y0, Y10, Y0
	JMP          startParams

symmetric:
	VSUBPS       Y0, Y6, Y7          // c - lo
	VMULPS       Y15, Y7, Y7
	VSUBPS       Y6, Y1, Y8          // hi - c
	VMULPS       Y15, Y8, Y8
	VSUBPS       Y7, Y6, Y0
	VADDPS       Y8, Y6, Y1

startParams:
	VSUBPS       Y0, Y1, Y2
	VDIVPS       Y14, Y2, Y2         // s
	VMOVUPS      Y2, 16(BX)(DX*1)
	VMOVUPS      Y0, 80(BX)(DX*1)
	MOVL         1408(AX)(DI*1), R8
	VMOVD        R8, X3
	VPMOVZXBQ    X3, Y3
	VPCMPEQQ     Y12, Y3, Y3
	VPXOR        Y11, Y3, Y3         // done, lanes 0-3
	MOVL         1412(AX)(DI*1), R8
	VMOVD        R8, X4
	VPMOVZXBQ    X4, Y4
	VPCMPEQQ     Y12, Y4, Y4
	VPXOR        Y11, Y4, Y4         // lanes 4-7
	VCVTPS2PD    X2, Y5
	VBLENDVPD    Y3, 896(AX)(SI*1), Y5, Y5
	VMOVUPD      Y5, 896(AX)(SI*1)
	VEXTRACTF128 $1, Y2, X2
	VCVTPS2PD    X2, Y5
	VBLENDVPD    Y4, 928(AX)(SI*1), Y5, Y5
	VMOVUPD      Y5, 928(AX)(SI*1)
	VCVTPS2PD    X0, Y5
	VBLENDVPD    Y3, 1024(AX)(SI*1), Y5, Y5
	VMOVUPD      Y5, 1024(AX)(SI*1)
	VEXTRACTF128 $1, Y0, X0
	VCVTPS2PD    X0, Y5
	VBLENDVPD    Y4, 1056(AX)(SI*1), Y5, Y5
	VMOVUPD      Y5, 1056(AX)(SI*1)
	ADDQ         $32, DX
	ADDQ         $64, SI
	ADDQ         $8, DI
	DECQ         CX
	JNZ          startLoop
	VZEROUPPER
	RET
