package dq

import (
	"math"
	"math/rand/v2"
	"testing"
)

// codeSums (SSE2 on amd64) equals the portable codeSumsGo bit for bit,
// including codes clamped at both ends, NaN-free extremes and INT8.
func TestCodeSumsMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for it := range 20000 {
		n := 8 * (1 + rng.IntN(8))
		x := make([]float32, n)
		scale := float32(math.Exp(rng.NormFloat64() * 4))
		for i := range x {
			x[i] = float32(rng.NormFloat64()) * scale
		}
		qmax := float32([]int{3, 15, 255}[it%3])
		lo, hi := x[0], x[0]
		for _, v := range x {
			lo, hi = min(lo, v), max(hi, v)
		}
		// Ranges from much narrower to wider than the data, offsets
		// beyond both ends.
		w := (hi - lo) * float32(math.Exp(rng.NormFloat64()))
		b := lo + (hi-lo)*float32(rng.NormFloat64()*0.3)
		s := w / qmax
		inv := 1 / s
		if it%97 == 0 {
			inv = 0
		}
		if !(inv < maxInv) {
			continue
		}
		var l1, l2 [8]float32
		q1, qq1 := codeSums(x, b, inv, qmax, &l1)
		q2, qq2 := codeSumsGo(x, b, inv, qmax, &l2)
		if q1 != q2 || qq1 != qq2 || l1 != l2 {
			t.Fatalf("it %d: (%v %v %v) vs Go (%v %v %v)", it, q1, qq1, l1, q2, qq2, l2)
		}
	}
}
