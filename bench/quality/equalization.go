package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/fixture"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/local"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/schema"
)

// equalizationSection reports channel equalization on the generated tiny
// model (Llama-family blocks whose q/k/v and gate/up share 0.5% outlier
// input columns ×8..20): the output SNR of every block's q/k/v projections
// and MLP for normalized hidden states x ~ N(0, 1), quantized with
// enable_spatial off and on (no calibration data: equalization only).
func equalizationSection(w io.Writer) error {
	dir, err := os.MkdirTemp("", "aq-quality-eq-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	model := filepath.Join(dir, "tiny")
	ctx := context.Background()
	if err := modelio.Generate(ctx, modelio.GenOptions{Preset: "tiny", DType: modelio.F32, Out: model, Seed: 3}); err != nil {
		return err
	}
	orig, err := readF32Model(model)
	if err != nil {
		return err
	}
	blocks := []string{"model.layers.0.", "model.layers.1."}
	hidden := len(orig[blocks[0]+"input_layernorm.weight"])
	rng := rand.New(rand.NewPCG(11, 12))
	xs := make([][]float32, 32)
	for k := range xs {
		xs[k] = make([]float32, hidden)
		for j := range xs[k] {
			xs[k][j] = float32(rng.NormFloat64())
		}
	}
	outputs := func(wts map[string][]float32) [][]float64 {
		var out [][]float64
		for _, b := range blocks {
			for _, x := range xs {
				out = append(out, fixture.BlockOutputs(wts, b, x))
			}
		}
		return out
	}
	ref := outputs(orig)
	fmt.Fprintf(w, "## Channel equalization: generated Llama-family blocks\n\n")
	fmt.Fprintf(w, "The `tiny` preset of `gen-model` (seed 3, F32): q/k/v and gate/up read %d hidden channels of which 0.5%% are outlier input columns ×8..20, as in LLMs. ", hidden)
	fmt.Fprintf(w, "Output SNR of both blocks' q/k/v projections and MLP against the original, on %d normalized hidden states x ~ N(0, 1) (the RMS normalization itself left out), ", len(xs))
	fmt.Fprintf(w, "quantized with the default method with `enable_spatial` off and on (no calibration data, so spatial means channel equalization only). ")
	fmt.Fprintf(w, "Asserted by `quant/equalize_test.go`.\n\n")
	fmt.Fprintf(w, "| bits | spatial off: SNR dB | spatial on: SNR dB | gain dB | pairs equalized | bits/weight off / on |\n|---|---|---|---|---|---|\n")
	for _, bits := range []int{2, 4, 8} {
		var snr [2]float64
		var bpw [2]float64
		pairs := ""
		for i, spatial := range []bool{false, true} {
			cfg := config.Default()
			cfg.BitWidth, cfg.MinAccuracy, cfg.EnableSpatial = bits, 0, spatial
			out := filepath.Join(dir, fmt.Sprintf("q%d-%v", bits, spatial))
			res, err := local.Quantize(ctx, local.QuantizeOptions{ModelDir: model, OutputDir: out, Config: cfg, Mem: memory.NewGoAllocator()})
			if err != nil {
				return err
			}
			got, err := readArtifact(out)
			if err != nil {
				return err
			}
			snr[i], bpw[i] = fixture.SQNR(ref, outputs(got)), res.BitsPerWeight
			if spatial {
				pairs = fmt.Sprintf("%d of %d", len(res.Equalization.Pairs), res.Equalization.Considered)
			}
		}
		fmt.Fprintf(w, "| %d | %.2f | %.2f | %+.2f | %s | %.3f / %.3f |\n", bits, snr[0], snr[1], snr[1]-snr[0], pairs, bpw[0], bpw[1])
	}
	fmt.Fprintln(w)
	return nil
}

// readF32Model reads every tensor of an F32 model directory.
func readF32Model(dir string) (map[string][]float32, error) {
	m, err := modelio.Open(dir, modelio.OpenOptions{})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	out := map[string][]float32{}
	for _, t := range m.Tensors {
		n := schema.NumElements(t.Shape)
		raw := make([]byte, 4*n)
		if err := m.ReadRaw(t, 0, n, raw); err != nil {
			return nil, err
		}
		v := make([]float32, n)
		fp.DecodeF32(v, raw)
		out[t.Name] = v
	}
	return out, nil
}

// readArtifact dequantizes every tensor of an output directory.
func readArtifact(dir string) (map[string][]float32, error) {
	r, err := artifact.Open(filepath.Join(dir, artifact.FileName), memory.NewGoAllocator())
	if err != nil {
		return nil, err
	}
	defer r.Close()
	deq := artifact.NewDequantizer(memory.NewGoAllocator())
	out := map[string][]float32{}
	for b := 0; b < r.NumBatches(); b++ {
		rec, err := r.Batch(b)
		if err != nil {
			return nil, err
		}
		vals, err := deq.Batch(context.Background(), rec)
		if err != nil {
			rec.Release()
			return nil, err
		}
		name := rec.Column(schema.IdxName).(*array.String).Value(0)
		out[name] = append(out[name], vals.ListValues().(*array.Float32).Float32Values()...)
		vals.Release()
		rec.Release()
	}
	return out, nil
}
