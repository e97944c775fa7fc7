package methods_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/internal/methodtest"
)

// Every method's quantize functions (plain and weighted) give the same
// output for fp16 and bf16 rows, decoded block by block inside the
// kernel, as for the float32 values they hold: rows of several 4096-value
// blocks and a ragged end.
func TestHalfInputsAreTheirFloat32Values(t *testing.T) {
	e := methodtest.NewEnv(t)
	type format struct {
		name  string
		round func(float32) float32
		list  func(...[]float32) arrow.Array
	}
	formats := []format{
		{"fp16", func(v float32) float32 { return fp.HalfToFloat32(fp.Float32ToHalf(v)) }, e.ListF16},
		{"bf16", func(v float32) float32 { return fp.BF16ToFloat32(fp.Float32ToBF16(v)) }, e.ListBF16},
	}
	x1, x2 := methodtest.Normal(3*4096+1000, 3), methodtest.Laplace(5000, 4)
	w1, w2 := make([]float32, len(x1)), make([]float32, len(x2))
	for i := range w1 {
		w1[i] = float32(1 + i%5)
	}
	for i := range w2 {
		w2[i] = float32(1 + i%9)
	}
	weights := e.ListF32(w1, w2)
	defer weights.Release()
	set := methodtest.Set()
	for _, f := range formats {
		r1, r2 := make([]float32, len(x1)), make([]float32, len(x2))
		for i, v := range x1 {
			r1[i] = f.round(v)
		}
		for i, v := range x2 {
			r2[i] = f.round(v)
		}
		half, f32 := f.list(r1, r2), e.ListF32(r1, r2)
		for _, name := range set.Names() {
			m, _ := set.Lookup(name)
			for k, fn := range m.QuantizeFuncs() {
				for _, bits := range []int{2, 4} {
					opts := &kernels.QuantOptions{Bits: bits, GroupSize: 64}
					args := func(v arrow.Array) []arrow.Array {
						if k == 1 {
							return []arrow.Array{v, weights}
						}
						return []arrow.Array{v}
					}
					got := e.MustCall(fn, opts, args(half)...)
					want := e.MustCall(fn, opts, args(f32)...)
					if !array.Equal(got, want) {
						t.Fatalf("%s INT%d, %s input: differs from its float32 values", fn, bits, f.name)
					}
					got.Release()
					want.Release()
				}
			}
		}
		half.Release()
		f32.Release()
	}
}
