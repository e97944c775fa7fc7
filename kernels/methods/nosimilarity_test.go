package methods_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/internal/methodtest"
)

// Every method's quantize functions, plain and weighted, give the same
// codes and params with NoSimilarity as without, and then similarity
// columns that are null in every row (not measured; never a made-up
// cosine).
func TestNoSimilarityKeepsTheCodes(t *testing.T) {
	e := methodtest.NewEnv(t)
	x1, x2 := methodtest.Normal(3000, 1), methodtest.Laplace(777, 2)
	w1, w2 := make([]float32, len(x1)), make([]float32, len(x2))
	for i := range w1 {
		w1[i] = float32(1 + i%7)
	}
	for i := range w2 {
		w2[i] = float32(1 + i%3)
	}
	values, weights := e.ListF32(x1, x2), e.ListF32(w1, w2)
	defer values.Release()
	defer weights.Release()
	set := methodtest.Set()
	for _, name := range set.Names() {
		m, err := set.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		type call struct {
			fn   string
			args []arrow.Array
		}
		calls := []call{{m.QuantizeFunc(), []arrow.Array{values}}}
		if m.Weighted() {
			calls = append(calls, call{m.WeightedQuantizeFunc(), []arrow.Array{values, weights}})
		}
		for _, bits := range []int{2, 4, 8} {
			for _, c := range calls {
				with := e.MustCall(c.fn, &kernels.QuantOptions{Bits: bits, GroupSize: 64}, c.args...).(*array.Struct)
				without := e.MustCall(c.fn, &kernels.QuantOptions{Bits: bits, GroupSize: 64, NoSimilarity: true}, c.args...).(*array.Struct)
				for f := 0; f < with.NumField(); f++ {
					if _, sim := with.Field(f).(*array.Struct); sim {
						if s := without.Field(f); s.NullN() != s.Len() {
							t.Fatalf("%s INT%d: similarity column %d has %d of %d rows null with NoSimilarity, want all", c.fn, bits, f, s.NullN(), s.Len())
						}
						ws := with.Field(f)
						if n := ws.(*array.Struct).Field(6).(*array.Int64).Value(0); ws.NullN() != 0 || n != int64(len(x1)) {
							t.Fatalf("%s INT%d: similarity column %d: %d nulls, n %d, want 0 and %d", c.fn, bits, f, ws.NullN(), n, len(x1))
						}
						continue
					}
					if !array.Equal(with.Field(f), without.Field(f)) {
						t.Fatalf("%s INT%d: field %d differs with NoSimilarity", c.fn, bits, f)
					}
				}
				with.Release()
				without.Release()
			}
		}
	}
}
