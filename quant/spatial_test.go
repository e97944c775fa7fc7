package quant_test

import (
	"path/filepath"
	"testing"

	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/fixture"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/quant/quanttest"
)

// AWQ smoothing on the diffusion fixture (outlier input channels that
// grow with the timestep): with calibration, spatial on must lower the
// held-out output error in every time group against time-aware alone,
// store channel scales, and reconstruct W (not W·diag(s)).
func TestSpatialSmoothingLowersOutputError(t *testing.T) {
	const groups = 4
	layer := fixture.NewLayer("blk.proj", 128, 512, 5)
	calPath := filepath.Join(t.TempDir(), "calib.jsonl")
	if err := layer.WriteCalibration(calPath, 256); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bits      int
		method    string
		timeAware bool
		minGain   float64 // mean dB over time groups; < 0: smoothing must not be applied
	}{{4, "", true, 0.5}, {4, "", false, 0.5}, {2, "", true, -1}, {4, "dq", true, 0}} {
		run := func(spatial bool) ([]float32, *quant.Result) {
			cfg := config.Default()
			cfg.BitWidth, cfg.MinAccuracy, cfg.NumTimeGroups, cfg.CalibrationSamples = tc.bits, 0, groups, 256
			cfg.EnableTimeAware, cfg.EnableSpatial = tc.timeAware, spatial
			what, res, err := quanttest.QuantizeFixture(layer, cfg, calPath, tc.method)
			if err != nil {
				t.Fatal(err)
			}
			return what, res
		}
		off, resOff := run(false)
		on, resOn := run(true)
		l := resOn.Layers[0]
		storesScales := l.Bytes == resOff.Layers[0].Bytes+4*int64(layer.In) // channel_scales: one float32 per input channel
		if applied := l.Smoothing.Applied(); applied != resOn.Spatial.Applied || applied != storesScales {
			t.Fatalf("INT%d %s: smoothing %q, spatial %+v", tc.bits, tc.method, l.Smoothing, resOn.Spatial)
		}
		if tc.minGain < 0 && resOn.Spatial.Applied {
			t.Errorf("INT%d %s: smoothing applied (%s), expected the α=0 candidate to win", tc.bits, tc.method, l.Smoothing)
		}
		if tc.minGain > 0 && !resOn.Spatial.Applied {
			t.Errorf("INT%d %s: smoothing not applied: %s", tc.bits, tc.method, l.Smoothing)
		}
		if resOff.Layers[0].Smoothing != nil || resOff.Spatial.Applied {
			t.Fatalf("spatial off still smoothed: %+v", resOff.Spatial)
		}
		// The tensor's cosine is of W itself: smoothing's reconstruction must be close to W.
		if l.CosineSimilarity < 0.8 {
			t.Fatalf("INT%d: weight cosine %.4f: reconstruction is not W", tc.bits, l.CosineSimilarity)
		}
		eOff, err := layer.OutputError(off, groups, 64)
		if err != nil {
			t.Fatal(err)
		}
		eOn, err := layer.OutputError(on, groups, 64)
		if err != nil {
			t.Fatal(err)
		}
		var gain float64
		for g := range eOff {
			d := eOn[g].SQNR_dB - eOff[g].SQNR_dB
			t.Logf("INT%d %s group %d: output SQNR spatial off %.2f dB, on %.2f dB (%+.2f)", tc.bits, tc.method, g, eOff[g].SQNR_dB, eOn[g].SQNR_dB, d)
			if d < -0.1 {
				t.Errorf("INT%d %s group %d: smoothing lowered output SQNR by %.2f dB", tc.bits, tc.method, g, -d)
			}
			gain += d / groups
		}
		t.Logf("INT%d %s time-aware=%v: %s; weight cosine %.4f (off %.4f); mean gain %.2f dB", tc.bits, tc.method, tc.timeAware, l.Smoothing, l.CosineSimilarity, resOff.Layers[0].CosineSimilarity, gain)
		if gain < tc.minGain {
			t.Errorf("INT%d %s: mean output SQNR gain %.2f dB, want >= %.2f", tc.bits, tc.method, gain, tc.minGain)
		}
	}
}
