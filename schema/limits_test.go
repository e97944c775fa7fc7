package schema

import (
	"strings"
	"testing"
)

func TestCheckShape(t *testing.T) {
	ok := map[string][]int64{"scalar": {}, "empty": {0}, "empty2": {0, 16}, "matrix": {3584, 18944}}
	for name, s := range ok {
		n, err := CheckShape(s)
		if err != nil || n != NumElements(s) {
			t.Errorf("%s: CheckShape(%v) = %d, %v", name, s, n, err)
		}
	}
	bad := map[string][]int64{
		"wraps to 0":   {1 << 32, 1 << 32},
		"wraps to 8":   {1<<61 + 1, 8},
		"negative":     {4, -2},
		"too many dim": make([]int64, MaxDims+1),
	}
	for name, s := range bad {
		if n, err := CheckShape(s); err == nil {
			t.Errorf("%s: CheckShape(%v) = %d, accepted", name, s, n)
		}
	}
}

func TestCheckTensorName(t *testing.T) {
	for _, n := range []string{"model.layers.0.mlp.up_proj.weight", "ünïcode.weight", strings.Repeat("a", MaxTensorNameLen)} {
		if err := CheckTensorName(n); err != nil {
			t.Errorf("CheckTensorName(%.20q) = %v", n, err)
		}
	}
	for _, n := range []string{"", strings.Repeat("a", MaxTensorNameLen+1), "bad\xffutf8", "nul\x00name", "new\nline"} {
		if err := CheckTensorName(n); err == nil {
			t.Errorf("CheckTensorName(%.20q) accepted", n)
		}
	}
}
