package quant

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/fp"
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

// Column ranges and the sample rows do not depend on how many goroutines
// read the consumer.
func TestColumnRangesIndependentOfWorkers(t *testing.T) {
	rows, in := int64(3*schema.ChunkElems/1000+7), int64(1000)
	v := make([]float32, rows*in)
	s := uint64(9)
	for i := range v {
		s = s*6364136223846793005 + 1442695040888963407
		v[i] = float32(int64(s>>40)-1<<23) / (1 << 20)
	}
	tn := SliceTensor(TensorMeta{Name: "w", Shape: []int64{rows, in}, DType: schema.DTypeF32}, v)
	r1, s1, err := columnRanges(context.Background(), tn, memory.DefaultAllocator, 1)
	if err != nil {
		t.Fatal(err)
	}
	r3, s3, err := columnRanges(context.Background(), tn, memory.DefaultAllocator, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r1, r3) || !slices.Equal(s1, s3) || int64(len(s1)) != min(rows, equalizeSampleRows)*in {
		t.Fatal("column ranges differ between 1 and 3 workers")
	}
	for j := range in {
		var m float32
		for i := range rows {
			m = max(m, float32(math.Abs(float64(v[i*in+j]))))
		}
		if r1[j] != m {
			t.Fatalf("column %d: %v, want %v", j, r1[j], m)
		}
	}
}

func TestTimestepLayerNames(t *testing.T) {
	for _, n := range []string{
		"time_embed.linear_1.weight", "transformer_blocks.0.adaLN_modulation.linear.weight",
		"transformer_blocks.3.norm1.linear.weight", "transformer_blocks.3.norm1_context.linear.weight",
		"norm_out.linear.weight", "single_transformer_blocks.0.norm.linear.weight", "down_blocks.0.resnets.0.time_emb_proj.weight",
	} {
		if !IsTimestepLayer(n) {
			t.Errorf("%s: not recognised as timestep-conditioned", n)
		}
	}
	for _, n := range []string{
		"transformer_blocks.3.norm1.weight", "model.layers.0.input_layernorm.weight", "transformer_blocks.0.attn.to_q.weight",
		"model.norm.weight", "ff.net.0.proj.weight", "linear_norm.weight",
	} {
		if IsTimestepLayer(n) {
			t.Errorf("%s: taken for timestep-conditioned", n)
		}
	}
}

// Column ranges of bf16 and fp16 tensors, taken from their bit patterns,
// are those of the decoded values bit for bit (NaN for a column with a
// NaN), with any number of workers; the sample rows are the decoded ones.
func TestColumnRangesOfHalfPatterns(t *testing.T) {
	rows, in := int64(2*schema.ChunkElems/999+5), int64(999) // chunks start mid-row
	specials := []uint16{0x8000, 0x0001, 0x8001, 0x7f80, 0xff80, 0x7c00, 0xfc00, 0x03ff, 0x7bff}
	decode := map[string]func(uint16) float32{schema.DTypeBF16: fp.BF16ToFloat32, schema.DTypeF16: fp.HalfToFloat32}
	for dtype, dec := range decode {
		bits := make([]uint16, rows*in)
		s := uint64(11)
		for i := range bits {
			s = s*6364136223846793005 + 1442695040888963407
			bits[i] = uint16(s >> 48)
			if dtype == schema.DTypeF16 {
				bits[i] &^= 0x4000 // finite halves mostly, below 2
			} else {
				bits[i] = bits[i]&0x80ff | 0x3c00 // bf16 near 1/128..1/64
			}
			if s>>20%97 == 0 {
				bits[i] = specials[s>>8%uint64(len(specials))]
			}
		}
		bits[5*in+3] = 0x7fc1 // a NaN in column 3 (both formats)
		values := make([]float32, len(bits))
		for i, b := range bits {
			values[i] = dec(b)
		}
		// memTensor serves the values as these same patterns (a NaN as a NaN).
		tn := &memTensor{meta: TensorMeta{Name: "w", Shape: []int64{rows, in}, DType: dtype}, values: values}
		for _, workers := range []int{1, 3} {
			r, sample, err := columnRanges(context.Background(), tn, memory.DefaultAllocator, workers)
			if err != nil {
				t.Fatal(err)
			}
			for j := range in {
				var m float32
				for i := range rows {
					m = max(m, float32(math.Abs(float64(values[i*in+j]))))
				}
				if math.Float32bits(r[j]) != math.Float32bits(m) && !(r[j] != r[j] && m != m) {
					t.Fatalf("%s, %d workers, column %d: %v, want %v", dtype, workers, j, r[j], m)
				}
			}
			if r[3] == r[3] {
				t.Fatalf("%s: column 3 holds a NaN, range %v", dtype, r[3])
			}
			if int64(len(sample)) != min(rows, equalizeSampleRows)*in {
				t.Fatalf("%s: sample of %d values", dtype, len(sample))
			}
			for i, v := range sample {
				if w := values[i]; math.Float32bits(v) != math.Float32bits(w) && !(v != v && w != w) {
					t.Fatalf("%s: sample value %d is %v, want %v", dtype, i, v, w)
				}
			}
		}
	}
}
