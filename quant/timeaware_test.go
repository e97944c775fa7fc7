package quant

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/schema"
)

// A synthetic diffusion layer whose input statistics shift with the
// timestep: per-channel activation scales vary, and a few outlier
// channels grow at late timesteps. Weighting the parameter search by
// calibration importance must lower the output error X·Wᵀ vs X·Ŵᵀ.
func TestTimeAwareLowersOutputError(t *testing.T) {
	const out, in, groups = 128, 512, 4
	rng := rand.New(rand.NewPCG(5, 6))
	w := make([]float32, out*in)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * 0.02)
	}
	base := make([]float64, in)
	for j := range base {
		base[j] = math.Exp(0.5 * rng.NormFloat64())
	}
	sample := func(ts float64) []float32 {
		x := make([]float32, in)
		for j := range x {
			s := base[j]
			if j%64 == 0 { // outlier channels, strongest late in the schedule
				s *= 1 + 30*ts
			}
			x[j] = float32(rng.NormFloat64() * s)
		}
		return x
	}
	dir := t.TempDir()
	calPath := filepath.Join(dir, "calib.jsonl")
	f, _ := os.Create(calPath)
	enc := json.NewEncoder(f)
	for k := 0; k < 256; k++ {
		ts := float64(k) / 255
		enc.Encode(map[string]any{"layer": "blk.proj", "timestep": ts, "activation": sample(ts)})
	}
	f.Close()

	var outputCos *float64
	quantized := func(calibration string) []float32 {
		cfg := config.Default()
		cfg.BitWidth, cfg.MinAccuracy, cfg.NumTimeGroups, cfg.CalibrationSamples = 2, 0, groups, 256
		sink := &collectSink{}
		defer sink.release()
		tensor := &memTensor{TensorMeta{"blk.proj.weight", []int64{out, in}, schema.DTypeF32}, w}
		res, _, err := Run(context.Background(), Options{Config: cfg, Modality: "image", Mem: memory.NewGoAllocator(), Calibration: calibration},
			&memSource{tensors: []Tensor{tensor}}, sink)
		if err != nil {
			t.Fatal(err)
		}
		if calibration != "" {
			if res.Layers[0].Weighting == "" || res.Layers[0].OutputCosineSimilarity == nil {
				t.Fatalf("calibrated layer: weighting %q, output cosine %v", res.Layers[0].Weighting, res.Layers[0].OutputCosineSimilarity)
			}
			outputCos = res.Layers[0].OutputCosineSimilarity
		} else if res.Layers[0].OutputCosineSimilarity != nil {
			t.Fatal("output cosine without calibration data")
		}
		rec := sink.recs[0]
		codes := rec.Column(schema.IdxCodes).(*array.Binary).Value(0)
		halves := func(c int) []uint16 {
			l := rec.Column(c).(*array.List)
			var h []uint16
			for _, v := range l.ListValues().(*array.Float16).Values() {
				h = append(h, v.Uint16())
			}
			return h
		}
		what := make([]float32, out*in)
		kernels.DequantizeGroups(what, codes, halves(schema.IdxScales), halves(schema.IdxMins), 2, cfg.GroupSize)
		return what
	}
	agnostic, aware := quantized(""), quantized(calPath)

	// Held-out activations per time group: output SQNR of each variant.
	var gainSum, dot, yy, bb float64
	for g := 0; g < groups; g++ {
		var sig, errA, errB float64
		for k := 0; k < 64; k++ {
			ts := (float64(g) + rng.Float64()) / groups
			x := sample(ts)
			for o := 0; o < out; o++ {
				var y, ya, yb float64
				row := o * in
				for j, xv := range x {
					y += float64(xv) * float64(w[row+j])
					ya += float64(xv) * float64(agnostic[row+j])
					yb += float64(xv) * float64(aware[row+j])
				}
				sig += y * y
				dot, yy, bb = dot+y*yb, yy+y*y, bb+yb*yb
				errA += (y - ya) * (y - ya)
				errB += (y - yb) * (y - yb)
			}
		}
		sqnrA, sqnrB := 10*math.Log10(sig/errA), 10*math.Log10(sig/errB)
		t.Logf("time group %d: output SQNR time-agnostic %.2f dB, time-aware %.2f dB (%+.2f)", g, sqnrA, sqnrB, sqnrB-sqnrA)
		if sqnrB < sqnrA-0.1 {
			t.Errorf("time group %d: time-aware output SQNR %.2f dB below time-agnostic %.2f dB", g, sqnrB, sqnrA)
		}
		gainSum += sqnrB - sqnrA
	}
	measured := dot / math.Sqrt(yy*bb)
	t.Logf("output cosine: reported %.4f (from calibration moments), measured on held-out activations %.4f", *outputCos, measured)
	if math.Abs(*outputCos-measured) > 0.02 {
		t.Errorf("reported output cosine %.4f, measured %.4f", *outputCos, measured)
	}
	if gainSum/groups < 1 {
		t.Errorf("mean output SQNR gain %.2f dB, want >= 1 dB", gainSum/groups)
	}
}
