//go:build !(amd64 || arm64) || purego

package dq

func statsLanes(lb *laneBlock, p *laneParams, o *laneSums) { statsLanesGo(lb, p, o) }

func momentsLanes(lb *laneBlock, o *laneSums) { momentsLanesGo(lb, o) }

func vectorLanes() bool { return false }

func statsLanesU(lb *laneBlock, p *laneParams, o *laneSumsU) { statsLanesUGo(lb, p, o) }

func momentsLanesU(lb *laneBlock, o *laneSumsU) { momentsLanesUGo(lb, o) }

func transpose8(dst, src []float32, stride, blocks int) bool { return false }

func statsPassU(*laneBlock, *laneParams, *pass, int, *subs) (uint32, bool) { return 0, false }

func statsPass(*laneBlock, *laneParams, *pass, int, *subs) bool { return false }
