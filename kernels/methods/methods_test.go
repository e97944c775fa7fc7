package methods

import (
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/compute"
)

func TestDefaultHasEveryMethodAndItsKernels(t *testing.T) {
	s := Default()
	if got, want := s.Names(), []string{"clip", "dq", "lsq", "minmax", "q8_0"}; !slices.Equal(got, want) {
		t.Fatalf("methods %v, want %v", got, want)
	}
	for _, name := range s.Names() {
		m, err := s.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		fns := m.QuantizeFuncs()
		if !m.IsSuperBlock() {
			fns = append(fns, m.ParamsFunc())
		}
		for _, fn := range fns {
			if _, ok := s.Functions().GetFunction(fn); !ok {
				t.Errorf("%s: %s not registered", name, fn)
			}
		}
	}
	if _, err := s.Lookup("nope"); err == nil || !strings.Contains(err.Error(), "minmax, q8_0") {
		t.Errorf("unknown method: %v", err)
	}
	if _, ok := compute.GetFunctionRegistry().GetFunction("lsq_quantize"); ok {
		t.Error("method kernels must live in a child registry, not arrow-go's global one")
	}
}
