package main

import "bytes"

// The interleaved evaluation kernels of groupfit (evalLanesGo and
// evalLanesWeightedGo are the twins). Arguments (see groupfit.laneArgs,
// laneOut): per lane 2k+p of a 16-float row, s at 0, m at 64, inv at 128,
// qmax at 192 (bytes); sums e 0, r 64, rq 128, q 192, qq 256 (weighted,
// float32), qi 320, qqi 384 (unweighted, int32).
//
// Per element, as groupfit.code and Eval:
//
//	t = float32(float32(x - m) * inv) + 0.5; f = trunc(clamp(t, 0, qmax))
//	d = x - (float32(f * s) + m)
//	unweighted: e += d*d; r += d; rq += d*f; qi += int(f); qqi += int(f*f)
//	weighted:   wd = w*d; wf = w*f; e += wd*d; r += wd; rq += wd*f; q += wf; qq += wf*f
//
// each product rounded to float32 before its sum (no FMA), each lane's
// sums accumulated row by row in order. A sum of a plain term (r += d,
// q += f, and their weighted forms) is an FMA with 1.0 instead of an add:
// t·1 is t exactly, so the one rounding is the add's, and the sum leaves
// the add pipes (which bound these kernels on Zen 3) for the multiply
// pipes.
const (
	offS, offM, offInv, offQmax    = 0, 64, 128, 192
	offE, offR, offRQ, offQ, offQQ = 0, 64, 128, 192, 256
	offQi, offQQi                  = 320, 384
	rowBytes                       = 64 // 16 float32 lanes

	weightedSig   = "(xt, wt *float32, rows int, a *laneArgs, o *laneOut)"
	unweightedSig = "(xt *float32, rows int, a *laneArgs, o *laneOut)"

	zeroMaxComment    = "// t < 0, -0 -> +0 (the zero is the operand returned on equality)"
	truncComment      = "// f = trunc(t)"
	dComment          = "// d = x - (float32(f*s) + m)"
	weightLoadComment = "// w"
	halfSym, zeroSym  = "·half<>(SB)", "·zero<>(SB)"
	oneSym            = "·one<>(SB)"
)

func amd64EvalLanes() []byte {
	var b bytes.Buffer
	header(&b, "!purego")
	vector32(&b, "half", "$0x3f0000003f000000")
	vector32(&b, "zero", "$0")
	vector32(&b, "one", "$0x3f8000003f800000")
	p(&b, "")
	avx2(&b, avx2Int)
	avx2(&b, avx2F32Q)
	avx2(&b, avx2Weighted)
	avx512(&b, false)
	avx512(&b, true)
	return b.Bytes()
}

// vector32 emits a 32-byte read-only constant ·name<> of four 8-byte
// words, each word.
func vector32(b *bytes.Buffer, name, word string) {
	for off := 0; off < 32; off += 8 {
		p(b, "DATA ·%s<>+%d(SB)/8, %s", name, off, word)
	}
	p(b, "GLOBL ·%s<>(SB), RODATA|NOPTR, $32", name)
}

func prologue(b *bytes.Buffer, name string, weighted bool) {
	if weighted {
		p(b, "// func %s%s", name, weightedSig)
		p(b, "TEXT ·%s(SB), NOSPLIT, $0-40", name)
		p(b, "\tMOVQ xt+0(FP), SI")
		p(b, "\tMOVQ wt+8(FP), DX")
		p(b, "\tMOVQ rows+16(FP), CX")
		p(b, "\tMOVQ a+24(FP), AX")
		p(b, "\tMOVQ o+32(FP), DI")
		return
	}
	p(b, "// func %s%s", name, unweightedSig)
	p(b, "TEXT ·%s(SB), NOSPLIT, $0-32", name)
	p(b, "\tMOVQ xt+0(FP), SI")
	p(b, "\tMOVQ rows+8(FP), CX")
	p(b, "\tMOVQ a+16(FP), AX")
	p(b, "\tMOVQ o+24(FP), DI")
}

// avx2Kind selects one of the AVX2 evaluation kernels.
type avx2Kind int

const (
	avx2Int      avx2Kind = iota // unweighted, code sums in int32 (any length)
	avx2F32Q                     // unweighted, code sums in float32 (see below)
	avx2Weighted                 // weighted
)

// avx2: two YMM halves per row (lanes 0-7, 8-15), params as memory
// operands; Y0-Y4 and Y5-Y9 the sums of the halves, Y10-Y15 temporaries.
//
// avx2F32Q is for groups whose code sums stay below 2^24 (rows·qmax² <
// 2^24, checked by the caller): Σq and Σq² are summed as float32, exact
// for such integers (Σq² by FMA: f·f and the sum are exact, so its one
// rounding is none), and converted to int32 at the end; 0 and 0.5 are
// held in Y15 and Y14. Two conversions and two integer adds fewer per
// vector than avx2Int.
func avx2(b *bytes.Buffer, kind avx2Kind) {
	weighted := kind == avx2Weighted
	name := [...]string{avx2Int: "evalLanesAVX2", avx2F32Q: "evalLanesF32QAVX2", avx2Weighted: "evalLanesWeightedAVX2"}[kind]
	prologue(b, name, weighted)
	for i := 0; i < 10; i++ {
		p(b, "\tVXORPS Y%d, Y%d, Y%d", i, i, i)
	}
	half, zero := halfSym, zeroSym
	if kind == avx2F32Q {
		p(b, "\tVXORPS Y15, Y15, Y15")
		p(b, "\tVMOVUPS %s, Y14", halfSym)
		half, zero = "Y14", "Y15"
	}
	p(b, "\tTESTQ CX, CX")
	p(b, "\tJZ    done")
	p(b, "loop:")
	for h := 0; h < 2; h++ {
		o := 32 * h
		e, r, rq, q, qq := 5*h, 5*h+1, 5*h+2, 5*h+3, 5*h+4
		p(b, "\tVMOVUPS    %d(SI), Y10", o)
		p(b, "\tVSUBPS     %d(AX), Y10, Y11", offM+o)
		p(b, "\tVMULPS     %d(AX), Y11, Y11", offInv+o)
		p(b, "\tVADDPS     %s, Y11, Y11", half)
		p(b, "\tVMAXPS     %s, Y11, Y11 %s", zero, zeroMaxComment)
		p(b, "\tVMINPS     %d(AX), Y11, Y11", offQmax+o)
		p(b, "\tVROUNDPS   $3, Y11, Y11 %s", truncComment)
		p(b, "\tVMULPS     %d(AX), Y11, Y12", offS+o)
		p(b, "\tVADDPS     %d(AX), Y12, Y12", offM+o)
		p(b, "\tVSUBPS     Y12, Y10, Y12 %s", dComment)
		if weighted {
			p(b, "\tVMOVUPS    %d(DX), Y10 %s", o, weightLoadComment)
			p(b, "\tVMULPS     Y12, Y10, Y13")
			p(b, "\tVMULPS     Y11, Y10, Y14")
			p(b, "\tVMULPS     Y12, Y13, Y15")
			p(b, "\tVADDPS     Y15, Y%d, Y%d", e, e)
			p(b, "\tVFMADD231PS %s, Y13, Y%d", oneSym, r)
			p(b, "\tVMULPS     Y11, Y13, Y15")
			p(b, "\tVADDPS     Y15, Y%d, Y%d", rq, rq)
			p(b, "\tVFMADD231PS %s, Y14, Y%d", oneSym, q)
			p(b, "\tVMULPS     Y11, Y14, Y15")
			p(b, "\tVADDPS     Y15, Y%d, Y%d", qq, qq)
			continue
		}
		p(b, "\tVMULPS     Y12, Y12, Y13")
		p(b, "\tVADDPS     Y13, Y%d, Y%d", e, e)
		p(b, "\tVFMADD231PS %s, Y12, Y%d", oneSym, r)
		p(b, "\tVMULPS     Y11, Y12, Y13")
		p(b, "\tVADDPS     Y13, Y%d, Y%d", rq, rq)
		if kind == avx2F32Q {
			p(b, "\tVFMADD231PS %s, Y11, Y%d", oneSym, q)
			p(b, "\tVFMADD231PS Y11, Y11, Y%d", qq)
			continue
		}
		p(b, "\tVCVTTPS2DQ Y11, Y13")
		p(b, "\tVPADDD     Y13, Y%d, Y%d", q, q)
		p(b, "\tVMULPS     Y11, Y11, Y14")
		p(b, "\tVCVTTPS2DQ Y14, Y14")
		p(b, "\tVPADDD     Y14, Y%d, Y%d", qq, qq)
	}
	p(b, "\tADDQ $%d, SI", rowBytes)
	if weighted {
		p(b, "\tADDQ $%d, DX", rowBytes)
	}
	p(b, "\tDECQ CX")
	p(b, "\tJNZ  loop")
	p(b, "done:")
	qo, qqo := offQi, offQQi
	if weighted {
		qo, qqo = offQ, offQQ
	}
	if kind == avx2F32Q {
		for _, r := range []int{3, 4, 8, 9} {
			p(b, "\tVCVTTPS2DQ Y%d, Y%d", r, r)
		}
	}
	for i, off := range []int{offE, offR, offRQ, qo, qqo} {
		p(b, "\tVMOVUPS Y%d, %d(DI)", i, off)
		p(b, "\tVMOVUPS Y%d, %d(DI)", i+5, off+32)
	}
	p(b, "\tVZEROUPPER")
	p(b, "\tRET")
	p(b, "")
}

// avx512: one ZMM per row (16 lanes), params in Z16-Z21, sums Z0-Z4,
// temporaries Z5-Z10.
func avx512(b *bytes.Buffer, weighted bool) {
	name := "evalLanesAVX512"
	if weighted {
		name = "evalLanesWeightedAVX512"
	}
	prologue(b, name, weighted)
	for i := 0; i < 5; i++ {
		p(b, "\tVPXORD Z%d, Z%d, Z%d", i, i, i)
	}
	p(b, "\tVMOVUPS %d(AX), Z16", offS)
	p(b, "\tVMOVUPS %d(AX), Z17", offM)
	p(b, "\tVMOVUPS %d(AX), Z18", offInv)
	p(b, "\tVMOVUPS %d(AX), Z21", offQmax)
	p(b, "\tVBROADCASTSS %s, Z19", halfSym)
	p(b, "\tVPXORD Z20, Z20, Z20")
	p(b, "\tTESTQ CX, CX")
	p(b, "\tJZ    done")
	p(b, "loop:")
	p(b, "\tVMOVUPS    (SI), Z5")
	p(b, "\tVSUBPS     Z17, Z5, Z6")
	p(b, "\tVMULPS     Z18, Z6, Z6")
	p(b, "\tVADDPS     Z19, Z6, Z6")
	p(b, "\tVMAXPS     Z20, Z6, Z6 %s", zeroMaxComment)
	p(b, "\tVMINPS     Z21, Z6, Z6")
	p(b, "\tVRNDSCALEPS $11, Z6, Z6 // f = trunc(t) (imm 0b1011: truncate, no precision exception)")
	p(b, "\tVMULPS     Z16, Z6, Z7")
	p(b, "\tVADDPS     Z17, Z7, Z7")
	p(b, "\tVSUBPS     Z7, Z5, Z7 %s", dComment)
	if !weighted {
		p(b, "\tVMULPS     Z7, Z7, Z8")
		p(b, "\tVADDPS     Z8, Z0, Z0")
		p(b, "\tVADDPS     Z7, Z1, Z1")
		p(b, "\tVMULPS     Z6, Z7, Z8")
		p(b, "\tVADDPS     Z8, Z2, Z2")
		p(b, "\tVCVTTPS2DQ Z6, Z8")
		p(b, "\tVPADDD     Z8, Z3, Z3")
		p(b, "\tVMULPS     Z6, Z6, Z9")
		p(b, "\tVCVTTPS2DQ Z9, Z9")
		p(b, "\tVPADDD     Z9, Z4, Z4")
	} else {
		p(b, "\tVMOVUPS    (DX), Z5 %s", weightLoadComment)
		p(b, "\tVMULPS     Z7, Z5, Z8")
		p(b, "\tVMULPS     Z6, Z5, Z9")
		p(b, "\tVMULPS     Z7, Z8, Z10")
		p(b, "\tVADDPS     Z10, Z0, Z0")
		p(b, "\tVADDPS     Z8, Z1, Z1")
		p(b, "\tVMULPS     Z6, Z8, Z10")
		p(b, "\tVADDPS     Z10, Z2, Z2")
		p(b, "\tVADDPS     Z9, Z3, Z3")
		p(b, "\tVMULPS     Z6, Z9, Z10")
		p(b, "\tVADDPS     Z10, Z4, Z4")
	}
	p(b, "\tADDQ $%d, SI", rowBytes)
	if weighted {
		p(b, "\tADDQ $%d, DX", rowBytes)
	}
	p(b, "\tDECQ CX")
	p(b, "\tJNZ  loop")
	p(b, "done:")
	qo, qqo := offQi, offQQi
	if weighted {
		qo, qqo = offQ, offQQ
	}
	for i, off := range []int{offE, offR, offRQ, qo, qqo} {
		p(b, "\tVMOVUPS Z%d, %d(DI)", i, off)
	}
	p(b, "\tVZEROUPPER")
	p(b, "\tRET")
	p(b, "")
}
