package quant_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/fixture"
	"github.com/arrowquant/arrowquant/quant/quanttest"
)

// Calibration weighting alone (docs/DIFFUSION.md isolates time groups on
// the trained DiT): a synthetic diffusion layer whose input statistics shift with the
// timestep: per-channel activation scales vary, and a few outlier
// channels grow at late timesteps. Weighting the parameter search by
// calibration importance must lower the output error X·Wᵀ vs X·Ŵᵀ.
func TestCalibrationWeightingLowersOutputError(t *testing.T) {
	const groups = 4
	layer := fixture.NewLayer("blk.proj", 128, 512, 5)
	calPath := filepath.Join(t.TempDir(), "calib.jsonl")
	if err := layer.WriteCalibration(calPath, 256); err != nil {
		t.Fatal(err)
	}
	var outputCos *float64
	quantized := func(calibration string) []float32 {
		cfg := config.Default()
		cfg.BitWidth, cfg.MinAccuracy, cfg.NumTimeGroups, cfg.CalibrationSamples = 2, 0, groups, 256
		what, res, err := quanttest.QuantizeFixture(layer, cfg, calibration, "")
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
		return what
	}
	agnostic, aware := quantized(""), quantized(calPath) // unweighted, calibration-weighted
	ea, err := layer.OutputError(agnostic, groups, 64)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := layer.OutputError(aware, groups, 64)
	if err != nil {
		t.Fatal(err)
	}
	var gain, cos float64
	for g := range ea {
		t.Logf("time group %d: output SQNR unweighted %.2f dB, calibration-weighted %.2f dB (%+.2f)", g, ea[g].SQNR_dB, eb[g].SQNR_dB, eb[g].SQNR_dB-ea[g].SQNR_dB)
		if eb[g].SQNR_dB < ea[g].SQNR_dB-0.1 {
			t.Errorf("time group %d: calibration-weighted output SQNR %.2f dB below unweighted %.2f dB", g, eb[g].SQNR_dB, ea[g].SQNR_dB)
		}
		gain += eb[g].SQNR_dB - ea[g].SQNR_dB
		cos += eb[g].Cosine / groups
	}
	t.Logf("output cosine: reported %.4f (from calibration moments), held-out mean over groups %.4f", *outputCos, cos)
	if math.Abs(*outputCos-cos) > 0.02 {
		t.Errorf("reported output cosine %.4f, measured %.4f", *outputCos, cos)
	}
	if gain/groups < 1 {
		t.Errorf("mean output SQNR gain %.2f dB, want >= 1 dB", gain/groups)
	}
}
