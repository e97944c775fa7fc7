package quant_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/calib"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/quant/quanttest"
	"github.com/arrowquant/arrowquant/schema"
)

// listedSource is a Source that can list its tensors up front, as a model
// directory can.
type listedSource struct {
	quant.Source
	metas []quant.TensorMeta
}

func (s listedSource) Tensors() []quant.TensorMeta { return s.metas }

func writeCalib(t *testing.T, layer string, channels, rows int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "calib.jsonl")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for i := 0; i < rows; i++ {
		x := make([]float32, channels)
		for j := range x {
			x[j] = float32((i+j)%7) - 3
		}
		enc.Encode(map[string]any{"layer": layer, "timestep": float64(i), "activation": x})
	}
	return p
}

func runCalibrated(t *testing.T, calibration string, listed bool, opts func(*quant.Options)) (*quant.Result, int, error) {
	t.Helper()
	meta := quant.TensorMeta{Name: "blk.proj.weight", Shape: []int64{64, 128}, DType: schema.DTypeF32}
	w := make([]float32, 64*128)
	for i := range w {
		w[i] = float32(i%13) - 6
	}
	var src quant.Source = quant.SliceSource(quant.SliceTensor(meta, w))
	if listed {
		src = listedSource{src, []quant.TensorMeta{meta}}
	}
	cfg := config.Default()
	cfg.BitWidth, cfg.MinAccuracy, cfg.NumTimeGroups, cfg.CalibrationSamples = 4, 0, 2, 32
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	o := quant.Options{Config: cfg, Modality: "image", Mem: mem, Calibration: calibration}
	if opts != nil {
		opts(&o)
	}
	sink := &quanttest.RecordSink{}
	defer sink.Release()
	res, _, err := quant.Run(context.Background(), o, src, sink)
	return res, len(sink.Records), err
}

func TestCalibrationFromAnotherModelIsRefused(t *testing.T) {
	wrong := writeCalib(t, "blk.proj", 96, 8) // the weight has 128 input channels
	for _, listed := range []bool{true, false} {
		_, written, err := runCalibrated(t, wrong, listed, nil)
		var me *calib.MismatchError
		if !errors.As(err, &me) || !strings.Contains(err.Error(), `layer "blk.proj": activations of 96 values, weight "blk.proj.weight" has 128 input channels`) {
			t.Fatalf("listed %v: err %v", listed, err)
		}
		if written != 0 { // listed: before the first tensor; streamed: at the mismatched weight
			t.Errorf("listed %v: %d batches written before the refusal", listed, written)
		}
	}
	_, _, err := runCalibrated(t, writeCalib(t, "other.layer", 128, 8), false, nil)
	if !errors.As(err, new(*calib.MismatchError)) || !strings.Contains(err.Error(), `0 of 1 layers match`) {
		t.Fatalf("no layer matches: %v", err)
	}
}

func TestCalibrationWarnings(t *testing.T) {
	// Matches, but 8 rows for calibration_samples 32.
	res, _, err := runCalibrated(t, writeCalib(t, "blk.proj", 128, 8), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(res.Warnings, "\n")
	if !strings.Contains(joined, "1 of 1 layers have fewer rows than calibration_samples 32 (as few as 8)") {
		t.Errorf("warnings %q", res.Warnings)
	}
	if res.Layers[0].Weighting == "" {
		t.Error("the matched layer was not weighted")
	}
}

func TestCalibrationTimestepsOutsideTheModel(t *testing.T) {
	_, _, err := runCalibrated(t, writeCalib(t, "blk.proj", 128, 40), true, func(o *quant.Options) {
		o.MaxTimestep, o.TimestepFrom = 20, "num_train_timesteps 20 in config.json"
	})
	var fe *calib.FormatError
	if !errors.As(err, &fe) || fe.Row != 21 || !strings.Contains(err.Error(), "timestep 21 is outside the model's range [0, 20]") {
		t.Fatalf("err %v", err)
	}
}

// A streamed upload whose later weight does not match stops there, and the
// error is the mismatch, not the cancellation the tensors in flight saw.
func TestStreamedMismatchIsTheError(t *testing.T) {
	cal := writeCalib(t, "late.proj", 96, 8)
	var tensors []quant.Tensor
	for i := 0; i < 6; i++ {
		w := make([]float32, 512*512)
		for j := range w {
			w[j] = float32((i+j)%17) - 8
		}
		tensors = append(tensors, quant.SliceTensor(quant.TensorMeta{Name: fmt.Sprintf("early%d.weight", i), Shape: []int64{512, 512}, DType: schema.DTypeF32}, w))
	}
	tensors = append(tensors, quant.SliceTensor(quant.TensorMeta{Name: "late.proj.weight", Shape: []int64{4, 128}, DType: schema.DTypeF32}, make([]float32, 512)))
	cfg := config.Default()
	cfg.BitWidth, cfg.MinAccuracy, cfg.NumThreads = 2, 0, 4
	for round := 0; round < 5; round++ {
		sink := &quanttest.RecordSink{}
		_, _, err := quant.Run(context.Background(), quant.Options{Config: cfg, Modality: "image", Calibration: cal}, quant.SliceSource(tensors...), sink)
		sink.Release()
		if !errors.As(err, new(*calib.MismatchError)) {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}
