package quant

import (
	"context"
	"errors"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/schema"
)

// A block planned after one of its tensors was handed to the pipeline is
// refused, never applied under a running quantization.
func TestPlanAfterYieldIsRefused(t *testing.T) {
	eq := newEqualizer(memory.DefaultAllocator, 128)
	mk := func(name string, shape ...int64) Tensor {
		n := schema.NumElements(shape)
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(i%7) - 3
		}
		return SliceTensor(TensorMeta{Name: name, Shape: shape, DType: schema.DTypeF32}, v)
	}
	block := map[string]Tensor{}
	for _, tn := range []Tensor{
		mk("model.layers.0.input_layernorm.weight", 64), mk("model.layers.0.self_attn.q_proj.weight", 64, 64),
		mk("model.layers.0.self_attn.k_proj.weight", 64, 64), mk("model.layers.0.self_attn.v_proj.weight", 64, 64),
	} {
		block[tn.Meta().Name] = tn
	}
	eq.yield("model.layers.0.self_attn.k_proj.weight")
	if err := eq.plan(context.Background(), block); !errors.Is(err, ErrPlanAfterYield) {
		t.Fatalf("plan after yield: %v, want ErrPlanAfterYield", err)
	}
	if eq.scaling("model.layers.0.self_attn.q_proj.weight") != nil {
		t.Fatal("a refused plan left scales behind")
	}
	eq2 := newEqualizer(memory.DefaultAllocator, 128)
	if err := eq2.plan(context.Background(), block); err != nil {
		t.Fatalf("plan before yield: %v", err)
	}
}
