package main

import (
	"bytes"
	"fmt"
)

// NEON encodings of the float vector instructions Go's arm64 assembler
// does not have (all on four float32 lanes, .4S); TestEncodings checks
// them against GNU as when aarch64-linux-gnu-as is installed.
type neonOp struct {
	name string
	base uint32
	rm   bool   // three registers (else two)
	form string // GNU syntax when not "NAME vd.4s, vn.4s(, vm.4s)"
}

var (
	fadd   = neonOp{"FADD", 0x4e20d400, true, ""}
	fsub   = neonOp{"FSUB", 0x4ea0d400, true, ""}
	fmul   = neonOp{"FMUL", 0x6e20dc00, true, ""}
	fmax   = neonOp{"FMAX", 0x4e20f400, true, ""}
	fmin   = neonOp{"FMIN", 0x4ea0f400, true, ""}
	addv   = neonOp{"ADD", 0x4ea08400, true, ""} // integer lanes
	frintz = neonOp{"FRINTZ", 0x4ea19800, false, ""}
	fcvtzs = neonOp{"FCVTZS", 0x4ea1b800, false, ""}
	// FMOV Vd.4S, #0.5
	fmovHalf = uint32(0x4f03f400)
)

// enc is the instruction word of op Vd, Vn(, Vm).
func (op neonOp) enc(d, n, m int) uint32 {
	w := op.base | uint32(n)<<5 | uint32(d)
	if op.rm {
		w |= uint32(m) << 16
	}
	return w
}

// asm is the instruction in GNU syntax (for comments and the test).
func (op neonOp) asm(d, n, m int) string {
	if op.rm && op.form != "" {
		return fmt.Sprintf(op.form, d, n, m)
	}
	if op.rm {
		return fmt.Sprintf("%s v%d.4s, v%d.4s, v%d.4s", op.name, d, n, m)
	}
	if op.form != "" {
		return fmt.Sprintf(op.form, d, n)
	}
	return fmt.Sprintf("%s v%d.4s, v%d.4s", op.name, d, n)
}

// v emits op as a WORD with the instruction as a comment.
func v(b *bytes.Buffer, op neonOp, d, n, m int) {
	p(b, "\tWORD $0x%08x // %s", op.enc(d, n, m), op.asm(d, n, m))
}

// arm64EvalLanes: the two halves of a row (lanes 0-7, 8-15) are
// independent lanes, so each half runs the whole loop on its own, with
// its params in registers: s V16-V17, m V18-V19, inv V20-V21, qmax
// V22-V23, 0.5 in V24, 0 in V25; sums V0-V9 (two registers each: e, r,
// rq, q, qq), temporaries V10-V15, V26-V31.
func arm64EvalLanes() []byte {
	var b bytes.Buffer
	header(&b, "!purego")
	neon(&b, false)
	neon(&b, true)
	return b.Bytes()
}

func neon(b *bytes.Buffer, weighted bool) {
	name := "evalLanesNEON"
	if weighted {
		name = "evalLanesWeightedNEON"
	}
	if weighted {
		p(b, "// func %s%s", name, weightedSig)
		p(b, "TEXT ·%s(SB), NOSPLIT, $0-40", name)
		p(b, "\tMOVD xt+0(FP), R0")
		p(b, "\tMOVD wt+8(FP), R1")
		p(b, "\tMOVD rows+16(FP), R2")
		p(b, "\tMOVD a+24(FP), R3")
		p(b, "\tMOVD o+32(FP), R4")
	} else {
		p(b, "// func %s%s", name, unweightedSig)
		p(b, "TEXT ·%s(SB), NOSPLIT, $0-32", name)
		p(b, "\tMOVD xt+0(FP), R0")
		p(b, "\tMOVD rows+8(FP), R2")
		p(b, "\tMOVD a+16(FP), R3")
		p(b, "\tMOVD o+24(FP), R4")
	}
	p(b, "\tWORD $0x%08x // FMOV v24.4s, #0.5", fmovHalf|24)
	p(b, "\tVEOR V25.B16, V25.B16, V25.B16")
	qo, qqo := offQi, offQQi
	if weighted {
		qo, qqo = offQ, offQQ
	}
	for h := 0; h < 2; h++ {
		o := 32 * h
		lbl := fmt.Sprintf("h%d", h)
		p(b, "\t// lanes %d-%d", 8*h, 8*h+7)
		p(b, "\tADD $%d, R0, R5", o)
		if weighted {
			p(b, "\tADD $%d, R1, R6", o)
		}
		p(b, "\tMOVD R2, R7")
		for i, off := range []int{offS, offM, offInv, offQmax} {
			p(b, "\tADD $%d, R3, R8", off+o)
			p(b, "\tVLD1 (R8), [V%d.S4, V%d.S4]", 16+2*i, 17+2*i)
		}
		for i := 0; i < 10; i++ {
			p(b, "\tVEOR V%d.B16, V%d.B16, V%d.B16", i, i, i)
		}
		p(b, "\tCBZ R7, %sdone", lbl)
		p(b, "%sloop:", lbl)
		p(b, "\tVLD1 (R5), [V10.S4, V11.S4]")
		p(b, "\tADD $%d, R5", rowBytes)
		if weighted {
			p(b, "\tVLD1 (R6), [V12.S4, V13.S4] %s", weightLoadComment)
			p(b, "\tADD $%d, R6", rowBytes)
		}
		for k := 0; k < 2; k++ {
			x := 10 + k
			t, d, u := 26, 27, 28 // f, d, temporary
			e, r, rq, q, qq := k, 2+k, 4+k, 6+k, 8+k
			v(b, fsub, t, x, 18+k)
			v(b, fmul, t, t, 20+k)
			v(b, fadd, t, t, 24)
			v(b, fmax, t, t, 25)
			v(b, fmin, t, t, 22+k)
			v(b, frintz, t, t, 0) // f = trunc(t)
			v(b, fmul, d, t, 16+k)
			v(b, fadd, d, d, 18+k)
			v(b, fsub, d, x, d) // d = x - (float32(f*s) + m)
			if !weighted {
				v(b, fmul, u, d, d)
				v(b, fadd, e, e, u)
				v(b, fadd, r, r, d)
				v(b, fmul, u, d, t)
				v(b, fadd, rq, rq, u)
				v(b, fcvtzs, u, t, 0)
				v(b, addv, q, q, u)
				v(b, fmul, u, t, t)
				v(b, fcvtzs, u, u, 0)
				v(b, addv, qq, qq, u)
				continue
			}
			w, wd, wf := 12+k, 29, 30
			v(b, fmul, wd, w, d)
			v(b, fmul, wf, w, t)
			v(b, fmul, u, wd, d)
			v(b, fadd, e, e, u)
			v(b, fadd, r, r, wd)
			v(b, fmul, u, wd, t)
			v(b, fadd, rq, rq, u)
			v(b, fadd, q, q, wf)
			v(b, fmul, u, wf, t)
			v(b, fadd, qq, qq, u)
		}
		p(b, "\tSUB $1, R7")
		p(b, "\tCBNZ R7, %sloop", lbl)
		p(b, "%sdone:", lbl)
		for i, off := range []int{offE, offR, offRQ, qo, qqo} {
			p(b, "\tADD $%d, R4, R8", off+o)
			p(b, "\tVST1 [V%d.S4, V%d.S4], (R8)", 2*i, 2*i+1)
		}
	}
	p(b, "\tRET")
	p(b, "")
}
