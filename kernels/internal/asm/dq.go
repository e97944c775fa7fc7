package main

import (
	"bytes"
	"fmt"
)

// More NEON encodings (.4S) for the dq lockstep kernels.
var (
	scvtf = neonOp{"SCVTF", 0x4e21d800, false, ""}
	smax  = neonOp{"SMAX", 0x4ea06400, true, ""}
	smin  = neonOp{"SMIN", 0x4ea06c00, true, ""}
	fmla  = neonOp{"FMLA", 0x4e20cc00, true, ""} // Vd += Vn·Vm, one rounding
	cmlt0 = neonOp{"CMLT", 0x4ea0a800, false, "CMLT v%d.4s, v%d.4s, #0"}
	// float64 lanes (.2D)
	fadd2d = neonOp{"FADD", 0x4e60d400, true, "FADD v%d.2d, v%d.2d, v%d.2d"}
	fmul2d = neonOp{"FMUL", 0x6e60dc00, true, "FMUL v%d.2d, v%d.2d, v%d.2d"}
	fmla2d = neonOp{"FMLA", 0x4e60cc00, true, "FMLA v%d.2d, v%d.2d, v%d.2d"}
	fcvtl  = neonOp{"FCVTL", 0x0e617800, false, "FCVTL v%d.2d, v%d.2s"}   // lanes 0-1 to float64
	fcvtl2 = neonOp{"FCVTL2", 0x4e617800, false, "FCVTL2 v%d.2d, v%d.4s"} // lanes 2-3
)

// The unweighted lockstep kernels of kernels/dq (statsLanesUGo and
// momentsLanesUGo are the twins; lanes_amd64.s has their AVX2 versions).
// laneBlock: xt at 0, rows at 2048; laneParams: b at 0, inv at 32, qmax
// (int32) at 96; laneSumsU: q at 0, qq at 32, xq[r] at 64+32r, lo at 320,
// hi at 352. Each half of a row (lanes 0-3, 4-7) runs the whole loop on
// its own. Go on arm64 fuses a product into the sum it feeds (FMADD), so
// Σv·c and Σv² are FMLA here; Σc² is exact either way.
func arm64DQLanes() []byte {
	var b bytes.Buffer
	header(&b, "!purego")
	neonStatsU(&b)
	neonMomentsU(&b)
	arm64DQLanesWeighted(&b)
	return b.Bytes()
}

// statsPrologue starts a stats kernel: R0 the block, R3 the params, R4
// the sums, R2 the rows; qmax in V22, 0.5 in V24, 0 in V25.
func statsPrologue(b *bytes.Buffer, name, sums string) {
	p(b, "// func %s(lb *laneBlock, p *laneParams, o *%s)", name, sums)
	p(b, "TEXT ·%s(SB), NOSPLIT, $0-24", name)
	p(b, "\tMOVD lb+0(FP), R0")
	p(b, "\tMOVD p+8(FP), R3")
	p(b, "\tMOVD o+16(FP), R4")
	p(b, "\tMOVD 2048(R0), R2")
	p(b, "\tMOVWU 96(R3), R9")
	p(b, "\tVDUP R9, V22.S4 // qmax")
	p(b, "\tWORD $0x%08x // FMOV v24.4s, #0.5", fmovHalf|24)
	p(b, "\tVEOR V25.B16, V25.B16, V25.B16")
}

// momentsPrologue starts a moments kernel: R0 the block, R4 the sums, R2
// the rows.
func momentsPrologue(b *bytes.Buffer, name, sums string) {
	p(b, "// func %s(lb *laneBlock, o *%s)", name, sums)
	p(b, "TEXT ·%s(SB), NOSPLIT, $0-16", name)
	p(b, "\tMOVD lb+0(FP), R0")
	p(b, "\tMOVD o+8(FP), R4")
	p(b, "\tMOVD 2048(R0), R2")
}

// rangeInit sets the range keys lo (MaxInt32) and hi (MinInt32).
func rangeInit(b *bytes.Buffer, lo, hi int) {
	p(b, "\tMOVW $0x7fffffff, R9")
	p(b, "\tVDUP R9, V%d.S4 // lo = MaxInt32", lo)
	p(b, "\tMOVW $0x80000000, R9")
	p(b, "\tVDUP R9, V%d.S4 // hi = MinInt32", hi)
}

// keyRange folds the keys of x (V10, key in Vk) into lo and hi.
func keyRange(b *bytes.Buffer, k, lo, hi int) {
	v(b, cmlt0, k, 10, 0) // all ones where the sign bit is set
	p(b, "\tVUSHR $1, V%d.S4, V%d.S4", k, k)
	p(b, "\tVEOR V%d.B16, V10.B16, V%d.B16 // key(x)", k, k)
	v(b, smin, lo, lo, k)
	v(b, smax, hi, hi, k)
}

func neonStatsU(b *bytes.Buffer) {
	statsPrologue(b, "statsLanesUNEON", "laneSumsU")
	p(b, "\tLSR $3, R2")
	// V0 Σc, V1 Σc², V2-V9 Σv·c by row mod 8; V16 b, V17 inv; V10 x, V26-V27 t/c.
	for h := 0; h < 2; h++ {
		o := 16 * h
		lbl := fmt.Sprintf("su%d", h)
		p(b, "\t// lanes %d-%d", 4*h, 4*h+3)
		p(b, "\tADD $%d, R0, R5", o)
		p(b, "\tMOVD R2, R7")
		p(b, "\tADD $%d, R3, R8", o)
		p(b, "\tVLD1 (R8), [V16.S4]")
		p(b, "\tADD $%d, R3, R8", 32+o)
		p(b, "\tVLD1 (R8), [V17.S4]")
		for i := 0; i < 10; i++ {
			p(b, "\tVEOR V%d.B16, V%d.B16, V%d.B16", i, i, i)
		}
		p(b, "\tCBZ R7, %sdone", lbl)
		p(b, "%sloop:", lbl)
		for r := 0; r < 8; r++ {
			p(b, "\tVLD1 (R5), [V10.S4]")
			p(b, "\tADD $32, R5")
			t := 26
			v(b, fsub, t, 10, 16)
			v(b, fmul, t, t, 17)
			v(b, fadd, t, t, 24)
			v(b, fcvtzs, t, t, 0) // saturating; NaN -> 0
			v(b, smax, t, t, 25)
			v(b, smin, t, t, 22)
			v(b, scvtf, t, t, 0) // c
			v(b, fadd, 0, 0, t)
			v(b, fmla, 1, t, t)
			v(b, fmla, 2+r, 10, t)
		}
		p(b, "\tSUB $1, R7")
		p(b, "\tCBNZ R7, %sloop", lbl)
		p(b, "%sdone:", lbl)
		for i := 0; i < 10; i++ {
			p(b, "\tADD $%d, R4, R8", 32*i+o)
			p(b, "\tVST1 [V%d.S4], (R8)", i)
		}
	}
	p(b, "\tRET")
	p(b, "")
}

func neonMomentsU(b *bytes.Buffer) {
	momentsPrologue(b, "momentsLanesUNEON", "laneSumsU")
	p(b, "\tLSR $1, R2")
	// V0/V1 Σx even/odd rows, V2/V3 Σx², V4 lo, V5 hi keys; V10 x, V11-V12 temporaries.
	for h := 0; h < 2; h++ {
		o := 16 * h
		lbl := fmt.Sprintf("mu%d", h)
		p(b, "\t// lanes %d-%d", 4*h, 4*h+3)
		p(b, "\tADD $%d, R0, R5", o)
		p(b, "\tMOVD R2, R7")
		for i := 0; i < 4; i++ {
			p(b, "\tVEOR V%d.B16, V%d.B16, V%d.B16", i, i, i)
		}
		rangeInit(b, 4, 5)
		p(b, "\tCBZ R7, %sdone", lbl)
		p(b, "%sloop:", lbl)
		for r := 0; r < 2; r++ {
			p(b, "\tVLD1 (R5), [V10.S4]")
			p(b, "\tADD $32, R5")
			keyRange(b, 11, 4, 5)
			v(b, fadd, r, r, 10)
			v(b, fmla, 2+r, 10, 10)
		}
		p(b, "\tSUB $1, R7")
		p(b, "\tCBNZ R7, %sloop", lbl)
		p(b, "%sdone:", lbl)
		for i, off := range []int{64, 96, 128, 160, 320, 352} {
			p(b, "\tADD $%d, R4, R8", off+o)
			p(b, "\tVST1 [V%d.S4], (R8)", i)
		}
	}
	p(b, "\tRET")
	p(b, "")
}

// The weighted lockstep kernels (statsLanesGo and momentsLanesGo are the
// twins): each half of a row (4 float32 lanes) widens to two registers
// of 2 float64 lanes. Go on arm64 compiles the twins' sums as
// q = fma(w, c, q), qq = fma(w·c, c, qq), xq = fma(w·c, v, xq) and
// s = fma(w, v, s), Σw·v² = fma(w·v, v, ·): FMLA with the same operands.
// laneSums: a at 0, b at 64, c at 128 (8 float64), lo at 192, hi at 224.
func arm64DQLanesWeighted(b *bytes.Buffer) {
	neonStatsW(b)
	neonMomentsW(b)
}

func neonStatsW(b *bytes.Buffer) {
	statsPrologue(b, "statsLanesNEON", "laneSums")
	// V0-V1 Σw·c, V2-V3 Σw·c², V4-V5 Σw·c·v (float64 pairs); V20 b, V21 inv;
	// V10 x, V11 w, V26 t/c, V12-V17 widened c, w, x, V27-V28 w·c.
	for h := 0; h < 2; h++ {
		o := 16 * h
		lbl := fmt.Sprintf("sw%d", h)
		p(b, "\t// lanes %d-%d", 4*h, 4*h+3)
		p(b, "\tADD $%d, R0, R5", o)
		p(b, "\tADD $%d, R0, R6", 1024+o)
		p(b, "\tMOVD R2, R7")
		p(b, "\tADD $%d, R3, R8", o)
		p(b, "\tVLD1 (R8), [V20.S4]")
		p(b, "\tADD $%d, R3, R8", 32+o)
		p(b, "\tVLD1 (R8), [V21.S4]")
		for i := 0; i < 6; i++ {
			p(b, "\tVEOR V%d.B16, V%d.B16, V%d.B16", i, i, i)
		}
		p(b, "\tCBZ R7, %sdone", lbl)
		p(b, "%sloop:", lbl)
		p(b, "\tVLD1 (R5), [V10.S4]")
		p(b, "\tADD $32, R5")
		p(b, "\tVLD1 (R6), [V11.S4]")
		p(b, "\tADD $32, R6")
		t := 26
		v(b, fsub, t, 10, 20)
		v(b, fmul, t, t, 21)
		v(b, fadd, t, t, 24)
		v(b, fcvtzs, t, t, 0)
		v(b, smax, t, t, 25)
		v(b, smin, t, t, 22)
		v(b, scvtf, t, t, 0) // c, exact
		v(b, fcvtl, 12, t, 0)
		v(b, fcvtl2, 13, t, 0)
		v(b, fcvtl, 14, 11, 0)
		v(b, fcvtl2, 15, 11, 0)
		v(b, fcvtl, 16, 10, 0)
		v(b, fcvtl2, 17, 10, 0)
		for k := 0; k < 2; k++ {
			c, w, x, wc := 12+k, 14+k, 16+k, 27+k
			v(b, fmla2d, k, w, c)
			v(b, fmul2d, wc, w, c)
			v(b, fmla2d, 2+k, wc, c)
			v(b, fmla2d, 4+k, wc, x)
		}
		p(b, "\tSUB $1, R7")
		p(b, "\tCBNZ R7, %sloop", lbl)
		p(b, "%sdone:", lbl)
		for i, off := range []int{0, 64, 128} {
			p(b, "\tADD $%d, R4, R8", off+32*h)
			p(b, "\tVST1 [V%d.D2, V%d.D2], (R8)", 2*i, 2*i+1)
		}
	}
	p(b, "\tRET")
	p(b, "")
}

func neonMomentsW(b *bytes.Buffer) {
	momentsPrologue(b, "momentsLanesNEON", "laneSums")
	// V0-V1 Σw, V2-V3 Σw·x, V4-V5 Σw·x², V6 lo, V7 hi keys; V10 x, V11 w,
	// V12-V15 widened w, x, V26 key, V27-V28 w·x.
	for h := 0; h < 2; h++ {
		o := 16 * h
		lbl := fmt.Sprintf("mw%d", h)
		p(b, "\t// lanes %d-%d", 4*h, 4*h+3)
		p(b, "\tADD $%d, R0, R5", o)
		p(b, "\tADD $%d, R0, R6", 1024+o)
		p(b, "\tMOVD R2, R7")
		for i := 0; i < 6; i++ {
			p(b, "\tVEOR V%d.B16, V%d.B16, V%d.B16", i, i, i)
		}
		rangeInit(b, 6, 7)
		p(b, "\tCBZ R7, %sdone", lbl)
		p(b, "%sloop:", lbl)
		p(b, "\tVLD1 (R5), [V10.S4]")
		p(b, "\tADD $32, R5")
		p(b, "\tVLD1 (R6), [V11.S4]")
		p(b, "\tADD $32, R6")
		keyRange(b, 26, 6, 7)
		v(b, fcvtl, 12, 11, 0)
		v(b, fcvtl2, 13, 11, 0)
		v(b, fcvtl, 14, 10, 0)
		v(b, fcvtl2, 15, 10, 0)
		for k := 0; k < 2; k++ {
			w, x, wx := 12+k, 14+k, 27+k
			v(b, fadd2d, k, k, w)
			v(b, fmla2d, 2+k, w, x)
			v(b, fmul2d, wx, w, x)
			v(b, fmla2d, 4+k, wx, x)
		}
		p(b, "\tSUB $1, R7")
		p(b, "\tCBNZ R7, %sloop", lbl)
		p(b, "%sdone:", lbl)
		for i, off := range []int{0, 64, 128} {
			p(b, "\tADD $%d, R4, R8", off+32*h)
			p(b, "\tVST1 [V%d.D2, V%d.D2], (R8)", 2*i, 2*i+1)
		}
		p(b, "\tADD $%d, R4, R8", 192+o)
		p(b, "\tVST1 [V6.S4], (R8)")
		p(b, "\tADD $%d, R4, R8", 224+o)
		p(b, "\tVST1 [V7.S4], (R8)")
	}
	p(b, "\tRET")
	p(b, "")
}
