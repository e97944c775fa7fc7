// Package quant is ArrowQuant's quantization pipeline: it takes tensors
// from a Source (a safetensors directory, a Flight DoPut stream), plans
// each one (bit width, method, policy for 1-D and fallback), runs the
// registered Arrow kernels, checks cosine similarity, walks the fallback
// ladder, and hands quantized record batches to a Sink in source order.
// It knows nothing of gRPC or of where the batches are stored.
package quant

import (
	"context"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/schema"
)

// TensorMeta describes a source tensor.
type TensorMeta struct {
	Name  string
	Shape []int64
	DType string // schema.DTypeF32, F16, BF16 or F64
}

// NumElements is the product of the shape.
func (m TensorMeta) NumElements() int64 { return schema.NumElements(m.Shape) }

// Tensor is one source tensor whose values can be read, and read again
// (the fallback ladder re-reads a tensor at a wider bit width).
type Tensor interface {
	Meta() TensorMeta
	// ReadChunk returns elements [off, off+n) as a one-row record batch of
	// schema.Input for the tensor's value type. The caller releases it.
	ReadChunk(ctx context.Context, mem memory.Allocator, off, n int64) (arrow.RecordBatch, error)
}

// Arriving is implemented by tensors whose data is still arriving (a DoPut
// spool): WaitFor returns once [off, off+n) can be read without waiting.
// The pipeline waits there before taking one of its chunk slots, so a
// chunk that has not arrived never holds a core another chunk could use.
type Arriving interface {
	WaitFor(ctx context.Context, off, n int64) error
}

// Source yields tensors in order; Next returns io.EOF after the last.
type Source interface {
	Next(ctx context.Context) (Tensor, error)
}

// Sink receives quantized batches (schema.Quantized) in source order.
// It must not keep rec past the call without retaining it.
type Sink interface {
	Write(rec arrow.RecordBatch) error
}
