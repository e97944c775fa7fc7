package quant

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/fixture"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/schema"
)

// runModel quantizes a model directory in memory and returns every
// tensor dequantized, and the result.
func runModel(t *testing.T, dir string, cfg config.DiffusionQuantConfig) (map[string][]float32, *Result) {
	t.Helper()
	m, err := modelio.Open(dir, modelio.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mem := memory.NewGoAllocator()
	sink := &recordSink{}
	defer sink.release()
	res, _, err := Run(context.Background(), Options{Config: cfg, Modality: "text", Mem: mem}, ModelSource(m), sink)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	deq := artifact.NewDequantizer(mem)
	for _, rec := range sink.recs {
		name := rec.Column(schema.IdxName).(*array.String).Value(0)
		vals, err := deq.Batch(context.Background(), rec)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = append(out[name], vals.ListValues().(*array.Float32).Float32Values()...)
		vals.Release()
	}
	return out, res
}

// readModel reads every tensor of a model directory as float32.
func readModel(t *testing.T, dir string) map[string][]float32 {
	t.Helper()
	m, err := modelio.Open(dir, modelio.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	src := ModelSource(m)
	out := map[string][]float32{}
	eachTensor(t, src, func(tn Tensor) {
		var err error
		if out[tn.Meta().Name], err = readAll(context.Background(), tn, memory.NewGoAllocator()); err != nil {
			t.Fatal(err)
		}
	})
	return out
}

// Channel equalization on the generated tiny model (outlier input columns
// shared by q/k/v and gate/up, as in LLMs): the equalized model computes
// quantized with equalization is closer to the original block outputs than
// without.
func TestEqualizationLowersBlockOutputError(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := modelio.Generate(context.Background(), modelio.GenOptions{Preset: "tiny", DType: modelio.F32, Out: dir, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	orig := readModel(t, dir)
	hidden := len(orig["model.layers.1.input_layernorm.weight"])
	rng := rand.New(rand.NewPCG(1, 2))
	xs := make([][]float32, 32)
	ref := make([][]float64, len(xs))
	for k := range xs {
		xs[k] = make([]float32, hidden)
		for j := range xs[k] {
			xs[k][j] = float32(rng.NormFloat64())
		}
		ref[k] = fixture.BlockOutputs(orig, "model.layers.1.", xs[k])
	}
	outputs := func(w map[string][]float32) [][]float64 {
		out := make([][]float64, len(xs))
		for k, x := range xs {
			out[k] = fixture.BlockOutputs(w, "model.layers.1.", x)
		}
		return out
	}
	for _, bits := range []int{2, 4, 8} {
		cfg := config.Default()
		cfg.BitWidth, cfg.MinAccuracy = bits, 0
		cfg.EnableSpatial = false
		off, resOff := runModel(t, dir, cfg)
		cfg.EnableSpatial = true
		on, resOn := runModel(t, dir, cfg)
		if resOff.Equalization != nil || resOn.Equalization == nil || len(resOn.Equalization.Pairs) == 0 {
			t.Fatalf("INT%d: equalization off %+v, on %+v", bits, resOff.Equalization, resOn.Equalization)
		}
		if !strings.Contains(resOn.Spatial.Reason, "legal layer pairs equalized") || !resOn.Spatial.Applied {
			t.Fatalf("spatial status: %+v", resOn.Spatial)
		}
		sOff, sOn := fixture.SQNR(ref, outputs(off)), fixture.SQNR(ref, outputs(on))
		t.Logf("INT%d: block output SQNR without equalization %.2f dB, with %.2f dB (%+.2f; %d of %d pairs)", bits, sOff, sOn, sOn-sOff, len(resOn.Equalization.Pairs), resOn.Equalization.Considered)
		if bits < 8 && sOn < sOff+1 {
			t.Errorf("INT%d: equalization gains %.2f dB, want >= 1", bits, sOn-sOff)
		}
		for _, l := range resOn.Layers {
			if l.Name == "model.layers.1.self_attn.q_proj.weight" && !strings.Contains(l.Equalization, "input_layernorm") {
				t.Errorf("q_proj layer entry: equalization %q", l.Equalization)
			}
		}
	}

}

// Equalized consumers store channel scales, so dequantizing gives W back:
// each tensor's cosine against the original equals the reported one.
func TestEqualizedTensorsDequantizeToW(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := modelio.Generate(context.Background(), modelio.GenOptions{Preset: "tiny", DType: modelio.F32, Out: dir, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	orig := readModel(t, dir)
	cfg := config.Default()
	cfg.BitWidth, cfg.MinAccuracy = 4, 0
	got, res := runModel(t, dir, cfg)
	equalized := 0
	for _, l := range res.Layers {
		var sim kernels.Similarity
		sim = kernels.SimilarityOf(orig[l.Name], got[l.Name])
		if math.Abs(sim.Cosine()-l.CosineSimilarity) > 1e-9 {
			t.Errorf("%s: dequantized cosine %.6f, reported %.6f", l.Name, sim.Cosine(), l.CosineSimilarity)
		}
		if l.Equalization != "" && len(l.Shape) == 2 {
			equalized++
			if l.CosineSimilarity < 0.99 {
				t.Errorf("%s: cosine %.4f", l.Name, l.CosineSimilarity)
			}
		}
	}
	if equalized == 0 {
		t.Fatal("no equalized consumer")
	}
}

// absMaxRows agrees with the element-by-element fold for every start
// column and length, NaN, infinities and -0 included.
func TestAbsMaxRows(t *testing.T) {
	vals := []float32{1, -2, 0.5, float32(math.Inf(-1)), float32(math.NaN()), float32(math.Copysign(0, -1)), 3e-45, -7}
	for in := 1; in <= 5; in++ {
		for j0 := 0; j0 < in; j0++ {
			for n := 0; n <= 17; n++ {
				x := make([]float32, n)
				for i := range x {
					x[i] = vals[(i*3+j0)%len(vals)]
				}
				want, got := make([]float32, in), make([]float32, in)
				j := j0
				for _, v := range x {
					want[j] = max(want[j], float32(math.Abs(float64(v))))
					if j++; j == in {
						j = 0
					}
				}
				absMaxRows(got, x, j0)
				for k := range want {
					if math.Float32bits(want[k]) != math.Float32bits(got[k]) && !(want[k] != want[k] && got[k] != got[k]) {
						t.Fatalf("in %d j0 %d n %d: column %d got %v want %v", in, j0, n, k, got[k], want[k])
					}
				}
			}
		}
	}
}
