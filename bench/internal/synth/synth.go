// Package synth generates the synthetic weights of the quality benchmarks:
// `make quality` (bench/quality) and `make compare` (bench/compare, the
// same-run comparison with llama.cpp) quantize the same bytes because both
// call Datasets with the same sizes.
package synth

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
)

// Defaults of both benchmarks' -n and -llm flags.
const (
	DefaultN    = 1 << 21 // samples of each i.i.d. distribution
	DefaultSide = 4096    // rows and columns of the LLM-like matrix
)

// Dataset is one weight distribution, flattened row-major in rows of Row
// elements (the i.i.d. ones in rows of 4096, like a weight matrix).
type Dataset struct {
	Name, Desc string
	Gaussian   bool
	Row        int
	X          []float32
}

// Digest is the first 16 hex digits of the SHA-256 of X's little-endian
// bytes, printed beside each table so two reports can show they measured
// the same data.
func (d Dataset) Digest() string {
	h := sha256.New()
	buf := make([]byte, 0, 4<<10)
	for i, v := range d.X {
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		if len(buf) == cap(buf) || i == len(d.X)-1 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Datasets returns N(0,1), Laplace(0,1) and Student-t(5) samples (n each)
// and the side×side LLM-like matrix, from one seeded generator, in that
// order: the same n and side give the same bytes.
func Datasets(n, side int) []Dataset {
	rng := rand.New(rand.NewPCG(20260601, 1))
	gen := func(f func() float64) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(f())
		}
		return x
	}
	row := 4096
	for row > 1 && n%row != 0 {
		row /= 2
	}
	return []Dataset{
		{"N(0,1)", fmt.Sprintf("%d i.i.d. standard normal samples", n), true, row, gen(rng.NormFloat64)},
		{"Laplace", fmt.Sprintf("%d i.i.d. Laplace(0, 1) samples", n), false, row, gen(func() float64 {
			if v := rng.ExpFloat64(); rng.IntN(2) == 0 {
				return -v
			} else {
				return v
			}
		})},
		{"Student-t(5)", fmt.Sprintf("%d i.i.d. Student-t samples, 5 degrees of freedom", n), false, row, gen(func() float64 {
			var chi2 float64
			for range 5 {
				z := rng.NormFloat64()
				chi2 += z * z
			}
			return rng.NormFloat64() / math.Sqrt(chi2/5)
		})},
		llmLike(rng, side),
	}
}

// llmLike is a side×side weight matrix (row-major, groups run along a
// row, i.e. across input channels): N(0, 0.02²) entries, each row scaled
// by exp(0.3·N(0,1)), and 0.5% of the columns (outlier input channels)
// scaled by 8 to 20.
func llmLike(rng *rand.Rand, side int) Dataset {
	col := make([]float64, side)
	outliers := 0
	for j := range col {
		col[j] = 1
		if rng.Float64() < 0.005 {
			col[j] = 8 + 12*rng.Float64()
			outliers++
		}
	}
	x := make([]float32, side*side)
	for r := 0; r < side; r++ {
		rs := 0.02 * math.Exp(0.3*rng.NormFloat64())
		row := x[r*side : (r+1)*side]
		for j := range row {
			row[j] = float32(rng.NormFloat64() * rs * col[j])
		}
	}
	return Dataset{
		Name: "LLM-like",
		Desc: fmt.Sprintf("%d×%d matrix: N(0, 0.02²) entries, rows scaled by exp(0.3·N(0,1)), %d of %d columns (outlier input channels) ×8..20", side, side, outliers, side),
		Row:  side,
		X:    x,
	}
}
