package quant

import (
	"context"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/fp"
)

// SliceTensor is a tensor held in memory as float32 values (a test, a
// benchmark, an embedding program).
func SliceTensor(meta TensorMeta, values []float32) Tensor {
	return &sliceTensor{meta: meta, values: values}
}

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

// SliceSource yields tensors in order.
func SliceSource(tensors ...Tensor) Source { return &sliceSource{tensors: tensors} }

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
