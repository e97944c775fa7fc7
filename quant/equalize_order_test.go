package quant

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

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

// releaseCounter is a tensor that counts its releases.
type releaseCounter struct {
	Tensor
	released *int
}

func (r releaseCounter) Release() { *r.released++ }

// twoBlocks is the tensors of two Llama blocks of width 64, in file
// order, each counting its releases in released[name].
func twoBlocks(released map[string]*int) []Tensor {
	var ts []Tensor
	for l := range 2 {
		for _, suf := range []string{"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
			"post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"} {
			shape := []int64{64, 64}
			if strings.HasSuffix(suf, "norm.weight") {
				shape = []int64{64}
			}
			v := make([]float32, schema.NumElements(shape))
			for i := range v {
				v[i] = float32((i*(l+3))%11) - 5 + float32(i%64)/8
			}
			name := fmt.Sprintf("model.layers.%d.%s", l, suf)
			released[name] = new(int)
			ts = append(ts, releaseCounter{SliceTensor(TensorMeta{Name: name, Shape: shape, DType: schema.DTypeF32}, v), released[name]})
		}
	}
	return ts
}

// gatedSource yields tensors in order; before tensors[gateAt] it waits
// for gate to close, and at failAt it fails.
type gatedSource struct {
	tensors        []Tensor
	i              int
	gateAt, failAt int
	gate           chan struct{}
}

func (s *gatedSource) Next(ctx context.Context) (Tensor, error) {
	if s.i == s.gateAt {
		<-s.gate
	}
	if s.i == s.failAt {
		return nil, errors.New("the source failed")
	}
	if s.i == len(s.tensors) {
		return nil, io.EOF
	}
	s.i++
	return s.tensors[s.i-1], nil
}

// eachTensor calls fn for every tensor of src in order, failing t on a
// source error.
func eachTensor(t *testing.T, src Source, fn func(Tensor)) {
	t.Helper()
	for {
		tn, err := src.Next(context.Background())
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		fn(tn)
	}
}

func consideredPairs(eq *equalizer) int {
	eq.mu.RLock()
	defer eq.mu.RUnlock()
	return eq.res.Considered
}

// The next block is read and planned while the current one is handed
// out, without waiting for another Next; the tensors come out in source
// order, then io.EOF.
func TestEqualizingSourcePlansTheNextBlockAhead(t *testing.T) {
	released := map[string]*int{}
	tensors := twoBlocks(released)
	eq := newEqualizer(memory.DefaultAllocator, 32)
	gated := &gatedSource{tensors: tensors, gateAt: 9, failAt: -1, gate: make(chan struct{})}
	src := newEqualizingSource(gated, eq)
	type result struct {
		t   Tensor
		err error
	}
	firstCh := make(chan result, 1)
	go func() {
		tn, err := src.Next(context.Background())
		firstCh <- result{tn, err}
	}()
	var r result
	select {
	case r = <-firstCh:
	case <-time.After(10 * time.Second):
		t.Fatal("the first Next waited for the second block to be read")
	}
	first, err := r.t, r.err
	if err != nil || first.Meta().Name != tensors[0].Meta().Name {
		t.Fatalf("first Next: %v, %v", first, err)
	}
	close(gated.gate)
	deadline := time.Now().Add(10 * time.Second)
	for consideredPairs(eq) < 6 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := consideredPairs(eq); n != 6 {
		t.Fatalf("after the first Next, %d pairs planned, want both blocks' 6", n)
	}
	got := []string{first.Meta().Name}
	eachTensor(t, src, func(tn Tensor) { got = append(got, tn.Meta().Name) })
	for i, tn := range tensors {
		if i >= len(got) || got[i] != tn.Meta().Name {
			t.Fatalf("yielded %v, want the source order", got)
		}
	}
	if len(got) != len(tensors) {
		t.Fatalf("yielded %d tensors, want %d", len(got), len(tensors))
	}
	src.Release()
	for name, n := range released {
		if *n != 0 {
			t.Errorf("%s: released %d times by the source after it was handed out", name, *n)
		}
	}
}

// A run that stops early releases, once, every tensor the source read
// and never handed out (the rest of a block, and those read ahead before
// the source failed), and none it handed out.
func TestEqualizingSourceReleasesWhatItDidNotHandOut(t *testing.T) {
	released := map[string]*int{}
	tensors := twoBlocks(released)
	eq := newEqualizer(memory.DefaultAllocator, 32)
	const failAt = 12 // the second block's fourth tensor
	src := newEqualizingSource(&gatedSource{tensors: tensors, gateAt: -1, failAt: failAt}, eq)
	handed := map[string]bool{}
	for range 3 {
		tn, err := src.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		handed[tn.Meta().Name] = true
	}
	src.Release()
	for i, tn := range tensors {
		name := tn.Meta().Name
		n := released[name]
		want := 1
		if handed[name] || i >= failAt {
			want = 0
		}
		if *n != want {
			t.Errorf("%s: released %d times, want %d", name, *n, want)
		}
	}
}
