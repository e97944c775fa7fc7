package kernels_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/arrowquant/arrowquant/internal/fp"
	. "github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/internal/methodtest"
)

// A method is one GroupParams function in a Method value (listed in
// kernels/methods for the binary); this test-only method (symmetric
// absmax: min = -max|x|) proves that NewMethods builds its Arrow functions
// and that the shared pack/dequantize kernels serve it unchanged.
var testAbsMax = Method{Name: "testabsmax", Description: "symmetric absmax (test only)", GroupParams: absmaxParams}

func init() { methodtest.Extra = append(methodtest.Extra, testAbsMax) }

func absmaxParams(x []float32, bits, groupSize int, scales, mins []uint16, base int64) error {
	for g := 0; g*groupSize < len(x); g++ {
		grp := x[g*groupSize : min(len(x), (g+1)*groupSize)]
		var a float32
		for i, v := range grp {
			if v-v != 0 {
				return &NonFiniteError{Index: base + int64(g*groupSize+i), Value: v}
			}
			a = max(a, v, -v)
		}
		lo, hi := -a, a
		s, m, ok := MinMaxParams(lo, hi, bits)
		if !ok {
			return &ParamRangeError{Group: base/int64(groupSize) + int64(g), Min: lo, Max: hi}
		}
		scales[g], mins[g] = s, m
	}
	return nil
}

func TestPluggableMethod(t *testing.T) {
	e := newEnv(t)
	if _, ok := methodtest.Set().Functions().GetFunction("testabsmax_quantize"); !ok {
		t.Fatal("registering a method must add its fused kernel")
	}
	values := e.ListF32([]float32{-1, 0.5, 0.25, 1, -3, 3, 0, 1.5})
	defer values.Release()
	q := e.Composed("testabsmax", values, 2, 4)[0]
	for g := range q.Scales {
		s, m := fp.HalfToFloat32(q.Scales[g]), fp.HalfToFloat32(q.Mins[g])
		if m > 0 || m+3*s < -m { // symmetric range covers [-a, a]
			t.Errorf("group %d: min %v scale %v not symmetric", g, m, s)
		}
	}
	res := e.MustCall("testabsmax_quantize", &QuantOptions{Bits: 2, GroupSize: 4}, values).(*array.Struct)
	defer res.Release()
	if string(res.Field(0).(*array.Binary).Value(0)) != string(q.Codes) {
		t.Error("fused and composed kernels disagree for the plugged-in method")
	}
	found := false
	for _, m := range methodtest.Set().Names() {
		found = found || m == "testabsmax"
	}
	if !found {
		t.Error("the method set does not list the plugged-in method")
	}
}

// minmax passes the checks every method must pass (it is the baseline of
// the improvement check).
func TestMinMaxSharedChecks(t *testing.T) {
	methodtest.Run(t, MinMax.Name, MinMaxGroupParams, methodtest.Options{Baseline: true})
}
