package main

import (
	"bytes"
	"fmt"
)

// More NEON encodings (.4S) for the dq lockstep kernels.
var (
	scvtf = neonOp{"SCVTF", 0x4e21d800, false}
	smax  = neonOp{"SMAX", 0x4ea06400, true}
	smin  = neonOp{"SMIN", 0x4ea06c00, true}
	fmla  = neonOp{"FMLA", 0x4e20cc00, true} // Vd += Vn·Vm, one rounding
	cmlt0 = neonOp{"CMLT", 0x4ea0a800, false}
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
	return b.Bytes()
}

func neonStatsU(b *bytes.Buffer) {
	p(b, "// func statsLanesUNEON(lb *laneBlock, p *laneParams, o *laneSumsU)")
	p(b, "TEXT ·statsLanesUNEON(SB), NOSPLIT, $0-24")
	p(b, "\tMOVD lb+0(FP), R0")
	p(b, "\tMOVD p+8(FP), R3")
	p(b, "\tMOVD o+16(FP), R4")
	p(b, "\tMOVD 2048(R0), R2")
	p(b, "\tLSR $3, R2")
	p(b, "\tMOVWU 96(R3), R9")
	p(b, "\tVDUP R9, V22.S4 // qmax")
	p(b, "\tWORD $0x%08x // FMOV v24.4s, #0.5", fmovHalf|24)
	p(b, "\tVEOR V25.B16, V25.B16, V25.B16")
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
	p(b, "// func momentsLanesUNEON(lb *laneBlock, o *laneSumsU)")
	p(b, "TEXT ·momentsLanesUNEON(SB), NOSPLIT, $0-16")
	p(b, "\tMOVD lb+0(FP), R0")
	p(b, "\tMOVD o+8(FP), R4")
	p(b, "\tMOVD 2048(R0), R2")
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
		p(b, "\tMOVW $0x7fffffff, R9")
		p(b, "\tVDUP R9, V4.S4 // lo = MaxInt32")
		p(b, "\tMOVW $0x80000000, R9")
		p(b, "\tVDUP R9, V5.S4 // hi = MinInt32")
		p(b, "\tCBZ R7, %sdone", lbl)
		p(b, "%sloop:", lbl)
		for r := 0; r < 2; r++ {
			p(b, "\tVLD1 (R5), [V10.S4]")
			p(b, "\tADD $32, R5")
			v(b, cmlt0, 11, 10, 0) // all ones where the sign bit is set
			p(b, "\tVUSHR $1, V11.S4, V11.S4")
			p(b, "\tVEOR V11.B16, V10.B16, V11.B16 // key(x)")
			v(b, smin, 4, 4, 11)
			v(b, smax, 5, 5, 11)
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
