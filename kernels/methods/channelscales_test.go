package methods_test

import (
	"errors"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/internal/methodtest"
)

// With QuantOptions.ChannelScales, every method's quantize functions
// (plain and weighted) give, bit for bit, what they give for the values
// multiplied beforehand in float32: float32 and bf16 rows, periods
// shorter and longer than the kernels' 4096-value blocks, dividing the
// row or not, with and without an offset. Other functions refuse them.
func TestChannelScalesAreTheScaledValues(t *testing.T) {
	e := methodtest.NewEnv(t)
	set := methodtest.Set()
	x1, x2 := methodtest.Normal(2*4096+1000, 5), methodtest.Laplace(3001, 6)
	for i, v := range x1 { // bf16-exact, so both inputs hold the same values
		x1[i] = fp.BF16ToFloat32(fp.Float32ToBF16(v))
	}
	for i, v := range x2 {
		x2[i] = fp.BF16ToFloat32(fp.Float32ToBF16(v))
	}
	w := methodtest.Normal(64, 7) // a repeating row per value row
	for i := range w {
		w[i] = 1 + w[i]*w[i]
	}
	weights := e.ListF32(w, w)
	defer weights.Release()
	for _, tc := range []struct {
		period int
		off    int64
	}{{64, 0}, {1000, 123457}, {4999, 3}, {5, 0}, {9000, 17}} {
		s := make([]float32, tc.period)
		for j := range s {
			s[j] = float32(0.25 + float64((j*7919)%61)/16)
		}
		scaled := func(x []float32) []float32 {
			out := make([]float32, len(x))
			for k, v := range x {
				out[k] = v * s[(tc.off+int64(k))%int64(tc.period)]
			}
			return out
		}
		want := e.ListF32(scaled(x1), scaled(x2))
		for _, in := range []arrow.Array{e.ListF32(x1, x2), e.ListBF16(x1, x2)} {
			for _, name := range set.Names() {
				m, _ := set.Lookup(name)
				for k, fn := range m.QuantizeFuncs() {
					for _, bits := range []int{2, 4} {
						args := func(v arrow.Array) []arrow.Array {
							if k == 1 {
								return []arrow.Array{v, weights}
							}
							return []arrow.Array{v}
						}
						plain := &kernels.QuantOptions{Bits: bits, GroupSize: 64}
						withScales := &kernels.QuantOptions{Bits: bits, GroupSize: 64, ChannelScales: s, ChannelOffset: tc.off}
						got := e.MustCall(fn, withScales, args(in)...)
						exp := e.MustCall(fn, plain, args(want)...)
						if !array.Equal(got, exp) {
							t.Fatalf("%s INT%d, %s input, period %d, offset %d: differs from the values scaled beforehand", fn, bits, in.DataType(), tc.period, tc.off)
						}
						got.Release()
						exp.Release()
					}
				}
			}
			in.Release()
		}
		want.Release()
	}
	values := e.ListF32(x2)
	defer values.Release()
	m, _ := set.Lookup("minmax")
	if _, err := e.Call(m.ParamsFunc(), &kernels.QuantOptions{Bits: 4, GroupSize: 64, ChannelScales: []float32{2}}, values); !errors.Is(err, kernels.ErrChannelScales) {
		t.Errorf("%s with channel scales: %v, want ErrChannelScales", m.ParamsFunc(), err)
	}
}
