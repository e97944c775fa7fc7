// Package quanttest runs the quantization pipeline on in-memory data for
// tests and benchmarks: a fixture layer in, its reconstruction and the
// result out.
package quanttest

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/fixture"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
)

// QuantizeFixture runs the pipeline on a synthetic fixture layer (with
// calibration data when calibration is a path) and returns the
// reconstructed weights and the result: the quality benchmark's and the
// time-aware tests' way to measure output error. method "" is the default
// per bit width.
func QuantizeFixture(l *fixture.Layer, cfg config.DiffusionQuantConfig, calibration, method string) ([]float32, *quant.Result, error) {
	mem := memory.NewGoAllocator()
	sink := &RecordSink{}
	defer sink.Release()
	t := quant.SliceTensor(quant.TensorMeta{Name: l.Name + ".weight", Shape: []int64{int64(l.Out), int64(l.In)}, DType: schema.DTypeF32}, l.W)
	res, _, err := quant.Run(context.Background(), quant.Options{Config: cfg, Modality: "image", Mem: mem, Calibration: calibration, Method: method}, quant.SliceSource(t), sink)
	if err != nil {
		return nil, nil, err
	}
	what := make([]float32, len(l.W))
	deq := artifact.NewDequantizer(mem)
	for _, rec := range sink.Records {
		off := rec.Column(schema.IdxChunkOffset).(*array.Int64).Value(0)
		if bits := rec.Column(schema.IdxBitWidth).(*array.Int8).Value(0); bits == 16 {
			return nil, nil, fmt.Errorf("fixture tensor kept unquantized")
		}
		vals, err := deq.Batch(context.Background(), rec)
		if err != nil {
			return nil, nil, err
		}
		copy(what[off:], vals.ListValues().(*array.Float32).Float32Values())
		vals.Release()
	}
	return what, res, nil
}

// RecordSink keeps the pipeline's record batches in memory.
type RecordSink struct{ Records []arrow.RecordBatch }

// Write keeps rec.
func (s *RecordSink) Write(rec arrow.RecordBatch) error {
	rec.Retain()
	s.Records = append(s.Records, rec)
	return nil
}

// Release releases every kept batch.
func (s *RecordSink) Release() {
	for _, r := range s.Records {
		r.Release()
	}
}
