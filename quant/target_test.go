package quant

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/schema"
)

// Target gguf chooses per tensor what a GGUF type holds exactly: dq where
// rows divide 256, INT4 groups of 32 otherwise (also for INT2), q8_0 at
// INT8, 16 bits where rows do not divide 32; a named method is refused.
func TestTargetGGUFChoosesPerTensor(t *testing.T) {
	mk := func(name string, shape []int64, seed uint64) Tensor {
		return &memTensor{TensorMeta{name, shape, schema.DTypeBF16}, normal(seed, int(schema.NumElements(shape)), 0.02)}
	}
	tensors := func() []Tensor {
		return []Tensor{
			mk("blk.0.rows512", []int64{64, 512}, 1),
			mk("blk.0.rows96", []int64{64, 96}, 2),
			mk("blk.0.rows20", []int64{64, 20}, 3),
			mk("blk.0.conv", []int64{8, 4, 3, 3}, 4),
			mk("time_embedding.linear_1.weight", []int64{64, 256}, 5),
		}
	}
	type want struct {
		method      string
		bits, group int
	}
	for _, c := range []struct {
		bits int
		want []want
	}{
		{4, []want{{"dq", 4, 32}, {"lsq", 4, 32}, {schema.MethodRawBF16, 16, 0}, {schema.MethodRawBF16, 16, 0}, {"q8_0", 8, 32}}},
		{2, []want{{"dq", 2, 16}, {"lsq", 4, 32}, {schema.MethodRawBF16, 16, 0}, {schema.MethodRawBF16, 16, 0}, {"q8_0", 8, 32}}},
		{8, []want{{"q8_0", 8, 32}, {"q8_0", 8, 32}, {schema.MethodRawBF16, 16, 0}, {schema.MethodRawBF16, 16, 0}, {"q8_0", 8, 32}}},
	} {
		cfg := config.FromProfile(config.Local)
		cfg.BitWidth, cfg.Target, cfg.MinAccuracy = c.bits, config.TargetGGUF, 0
		res, _, _, err := run(t, cfg, tensors()...)
		if err != nil {
			t.Fatal(err)
		}
		if res.Target != "gguf" || !strings.Contains(strings.Join(res.Warnings, " "), "target gguf") {
			t.Errorf("INT%d: result target %q, warnings %v", c.bits, res.Target, res.Warnings)
		}
		for i, l := range res.Layers {
			w := c.want[i]
			if l.Method != w.method || l.BitWidth != w.bits || l.GroupSize != w.group {
				t.Errorf("INT%d %s: %s INT%d g%d, want %s INT%d g%d", c.bits, l.Name, l.Method, l.BitWidth, l.GroupSize, w.method, w.bits, w.group)
			}
		}
		if c.bits == 2 && !strings.Contains(res.Layers[1].Protection, "Q2_K") || !strings.Contains(res.Layers[2].Policy, "rows of 20") {
			t.Errorf("INT%d: protection %q, policy %q", c.bits, res.Layers[1].Protection, res.Layers[2].Policy)
		}
	}
	cfg := config.FromProfile(config.Local)
	cfg.Target = config.TargetGGUF
	_, _, err := Run(context.Background(), Options{Config: cfg, Method: "dq", Mem: memory.NewGoAllocator()}, &sliceSource{tensors: tensors()}, &recordSink{})
	if !errors.Is(err, ErrMethodWithTarget) {
		t.Fatalf("named method with target gguf: %v", err)
	}
}
