package methods_test

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/internal/methodtest"
)

// A weights row shorter than its values repeats: every weighted quantize
// function gives, bit for bit, what it gives for the weights written out
// per value (periods shorter and longer than the kernels' 4096-element
// blocks, dividing the row or not); a row of more weights than values,
// or none for some values, is refused with the row named.
func TestPeriodicWeightsAreTheRepeatedOnes(t *testing.T) {
	e := methodtest.NewEnv(t)
	set := methodtest.Set()
	for _, tc := range []struct{ n, p int }{{3000, 64}, {9000, 1000}, {10000, 4999}, {8192, 8192}, {777, 5}} {
		x := methodtest.Normal(tc.n, uint64(tc.n))
		period := make([]float32, tc.p)
		for i := range period {
			period[i] = float32(1 + (i*7919)%13)
		}
		full := make([]float32, tc.n)
		for k := range full {
			full[k] = period[k%tc.p]
		}
		values, short, long := e.ListF32(x), e.ListF32(period), e.ListF32(full)
		for _, name := range set.Names() {
			m, _ := set.Lookup(name)
			if !m.Weighted() {
				continue
			}
			for _, bits := range []int{2, 4} {
				opts := &kernels.QuantOptions{Bits: bits, GroupSize: 64}
				want := e.MustCall(m.WeightedQuantizeFunc(), opts, values, long)
				got := e.MustCall(m.WeightedQuantizeFunc(), opts, values, short)
				if !array.Equal(got, want) {
					t.Fatalf("%s INT%d, %d values, period %d: differs from the weights written out", name, bits, tc.n, tc.p)
				}
				got.Release()
				want.Release()
			}
		}
		values.Release()
		short.Release()
		long.Release()
	}
	values, weights, none := e.ListF32(methodtest.Normal(100, 1)), e.ListF32(make([]float32, 101)), e.ListF32([]float32{})
	defer values.Release()
	defer weights.Release()
	defer none.Release()
	for _, w := range []*array.List{weights.(*array.List), none.(*array.List)} {
		if _, err := e.Call("lsq_quantize_weighted", &kernels.QuantOptions{Bits: 4, GroupSize: 64}, values, w); err == nil || !strings.Contains(err.Error(), "row 0") {
			t.Errorf("%d weights for 100 values: %v, want an error naming row 0", w.ListValues().Len(), err)
		}
	}
}
