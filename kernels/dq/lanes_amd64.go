//go:build !purego

package dq

import "golang.org/x/sys/cpu"

// useAVX2 selects lanes_amd64.s's kernels (else their Go twins).
var useAVX2 = cpu.X86.HasAVX2

func statsLanes(lb *laneBlock, p *laneParams, o *laneSums) {
	if useAVX2 {
		statsLanesAVX2(lb, p, o)
		return
	}
	statsLanesGo(lb, p, o)
}

func momentsLanes(lb *laneBlock, o *laneSums) {
	if useAVX2 {
		momentsLanesAVX2(lb, o)
		return
	}
	momentsLanesGo(lb, o)
}

// statsLanesAVX2 is statsLanesGo: per lane the same float32 code and
// the same float64 products and sums, row by row (no FMA).
//
//go:noescape
func statsLanesAVX2(lb *laneBlock, p *laneParams, o *laneSums)

// momentsLanesAVX2 is momentsLanesGo.
//
//go:noescape
func momentsLanesAVX2(lb *laneBlock, o *laneSums)

// vectorLanes reports whether statsLanes and momentsLanes run vector code.
func vectorLanes() bool { return useAVX2 }
