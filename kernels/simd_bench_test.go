package kernels

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkSimilarityBlocks times the fused kernels' similarity passes over
// two blocks of FusedBlockElems in cache (GB/s of the two blocks' float32
// inputs): one block at a time (SimilarityOf, whose float64 chains wait on
// their adds) against two side by side (similarityPair), and a weighted
// block's two similarities (SimilaritiesOf, one pass).
//
//	go test -run '^$' -bench SimilarityBlocks -cpu 1 ./kernels/
func BenchmarkSimilarityBlocks(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := func() []float32 {
		v := make([]float32, FusedBlockElems)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	a1, b1, a2, b2, w := vals(), vals(), vals(), vals(), vals()
	var sink Similarity
	b.Run("two-blocks/one-at-a-time", func(b *testing.B) {
		b.SetBytes(4 * 4 * FusedBlockElems)
		for b.Loop() {
			sink = SimilarityOf(a1, b1)
			sink = SimilarityOf(a2, b2)
		}
	})
	b.Run("two-blocks/pair", func(b *testing.B) {
		b.SetBytes(4 * 4 * FusedBlockElems)
		for b.Loop() {
			sink, _ = similarityPair(a1, b1, a2, b2)
		}
	})
	b.Run("weighted/both", func(b *testing.B) {
		b.SetBytes(3 * 4 * FusedBlockElems)
		for b.Loop() {
			sink, _ = SimilaritiesOf(a1, b1, w)
		}
	})
	_ = sink
}
