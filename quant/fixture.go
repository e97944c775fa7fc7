package quant

import (
	"context"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/fixture"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/schema"
)

// QuantizeFixture runs the pipeline on a synthetic fixture layer (with
// calibration data when calibration is a path) and returns the
// reconstructed weights and the result: the quality benchmark's and the
// time-aware tests' way to measure output error.
// method "" is the default per bit width.
func QuantizeFixture(l *fixture.Layer, cfg config.DiffusionQuantConfig, calibration, method string) ([]float32, *Result, error) {
	mem := memory.NewGoAllocator()
	sink := &recordSink{}
	defer sink.release()
	t := &sliceTensor{meta: TensorMeta{Name: l.Name + ".weight", Shape: []int64{int64(l.Out), int64(l.In)}, DType: schema.DTypeF32}, values: l.W}
	res, _, err := Run(context.Background(), Options{Config: cfg, Modality: "image", Mem: mem, Calibration: calibration, Method: method}, &sliceSource{tensors: []Tensor{t}}, sink)
	if err != nil {
		return nil, nil, err
	}
	what := make([]float32, len(l.W))
	deq := artifact.NewDequantizer(mem)
	for _, rec := range sink.recs {
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

// sliceTensor serves float32 values from memory.
type sliceTensor struct {
	meta   TensorMeta
	values []float32
}

func (t *sliceTensor) Meta() TensorMeta { return t.meta }

func (t *sliceTensor) ReadChunk(_ context.Context, mem memory.Allocator, off, n int64) (arrow.RecordBatch, error) {
	buf := memory.NewResizableBuffer(mem)
	defer buf.Release()
	buf.Resize(4 * int(n))
	fp.EncodeF32(buf.Bytes(), t.values[off:off+n])
	return InputRecord(mem, t.meta, off, arrow.PrimitiveTypes.Float32, buf), nil
}

type sliceSource struct {
	tensors []Tensor
	next    int
}

func (s *sliceSource) Next(context.Context) (Tensor, error) {
	if s.next == len(s.tensors) {
		return nil, io.EOF
	}
	s.next++
	return s.tensors[s.next-1], nil
}

type recordSink struct{ recs []arrow.RecordBatch }

func (s *recordSink) Write(rec arrow.RecordBatch) error {
	rec.Retain()
	s.recs = append(s.recs, rec)
	return nil
}

func (s *recordSink) release() {
	for _, r := range s.recs {
		r.Release()
	}
}
