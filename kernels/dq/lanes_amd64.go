//go:build !purego

package dq

import "golang.org/x/sys/cpu"

// useAVX2 selects lanes_amd64.s's kernels (else their Go twins).
var useAVX2 = cpu.X86.HasAVX2

// statsLanes and statsLanesU serve lockstep.stats' portable pass only:
// with AVX2 the pass kernels (statsPass, statsPassU) run every pass.
func statsLanes(lb *laneBlock, p *laneParams, o *laneSums) { statsLanesGo(lb, p, o) }

func statsLanesU(lb *laneBlock, p *laneParams, o *laneSumsU) { statsLanesUGo(lb, p, o) }

func momentsLanes(lb *laneBlock, o *laneSums) {
	if useAVX2 {
		momentsLanesAVX2(lb, o)
		return
	}
	momentsLanesGo(lb, o)
}

// transpose8 is laneBlock.load's transposition of g = 8·blocks
// elements of 8 sub-blocks, stride elements apart.
func transpose8(dst, src []float32, stride, blocks int) bool {
	if !useAVX2 {
		return false
	}
	_ = src[7*stride+8*blocks-1]
	_ = dst[64*blocks-1]
	transpose8AVX2(&dst[0], &src[0], 4*stride, blocks)
	return true
}

//go:noescape
func transpose8AVX2(dst, src *float32, stride, blocks int)

func momentsLanesU(lb *laneBlock, o *laneSumsU) {
	if useAVX2 && lb.rows%2 == 0 {
		momentsLanesUAVX2(lb, o)
		return
	}
	momentsLanesUGo(lb, o)
}

// momentsLanesUAVX2 is momentsLanesUGo for an even number of rows.
//
//go:noescape
func momentsLanesUAVX2(lb *laneBlock, o *laneSumsU)

// momentsLanesAVX2 is momentsLanesGo.
//
//go:noescape
func momentsLanesAVX2(lb *laneBlock, o *laneSums)

// vectorLanes reports whether the stats passes and momentsLanes run
// vector code.
func vectorLanes() bool { return useAVX2 }

// statsPassU is lockstep.stats' unweighted pass of the lane group of
// sub-blocks j0..j0+7 into f (see statsPassUAVX2: statsLanesUGo's sums
// with codeSums' operations; the clamp before truncation agrees for the
// inv < maxInv it is used with), when it has a vector kernel for it (ok).
func statsPassU(lb *laneBlock, p *laneParams, at *pass, j0 int, f *subs) (slow uint32, ok bool) {
	if !useAVX2 || lb.rows%8 != 0 {
		return 0, false
	}
	return statsPassUAVX2(lb, p, at, j0, f), true
}

//go:noescape
func statsPassUAVX2(lb *laneBlock, p *laneParams, at *pass, j0 int, f *subs) (slow uint32)

// statsPass is lockstep.stats' weighted pass of the lane group of
// sub-blocks j0..j0+7 into f (see statsPassAVX2), when it has a vector
// kernel for it (true).
func statsPass(lb *laneBlock, p *laneParams, at *pass, j0 int, f *subs) bool {
	if !useAVX2 {
		return false
	}
	if p.qmax <= 15 {
		statsPass4AVX2(lb, p, at, j0, f)
	} else {
		statsPassAVX2(lb, p, at, j0, f)
	}
	return true
}

//go:noescape
func statsPassAVX2(lb *laneBlock, p *laneParams, at *pass, j0 int, f *subs)

//go:noescape
func statsPass4AVX2(lb *laneBlock, p *laneParams, at *pass, j0 int, f *subs)
