package quant

import (
	"context"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/bufpool"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/schema"
)

// ModelSource streams the tensors of an opened safetensors model with
// bounded reads: a chunk is read straight into an Arrow buffer.
func ModelSource(m *modelio.Model) Source { return &modelSource{m: m} }

type modelSource struct {
	m    *modelio.Model
	next int
}

func (s *modelSource) Next(ctx context.Context) (Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.next >= len(s.m.Tensors) {
		return nil, io.EOF
	}
	t := s.m.Tensors[s.next]
	s.next++
	return &modelTensor{m: s.m, info: t}, nil
}

type modelTensor struct {
	m    *modelio.Model
	info modelio.TensorInfo
}

func (t *modelTensor) Meta() TensorMeta {
	return TensorMeta{Name: t.info.Name, Shape: t.info.Shape, DType: string(t.info.DType)}
}

func (t *modelTensor) ReadChunk(ctx context.Context, mem memory.Allocator, off, n int64) (arrow.RecordBatch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	meta := t.Meta()
	vt, err := schema.ValueType(meta.DType)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", meta.Name, err)
	}
	width := vt.(arrow.FixedWidthDataType).BitWidth() / 8
	// Not zeroed first: the read (or the F64 decode) writes every byte of
	// values.Bytes(), since the value type's width is the file dtype's
	// size (F64 decodes to float32); the padding is cleared here.
	values := memory.NewResizableBuffer(bufpool.UninitOf(mem))
	defer values.Release()
	values.Resize(int(n) * width)
	clear(values.Buf()[values.Len():])
	if t.info.DType == modelio.DType(schema.DTypeF64) {
		raw := make([]byte, 8*n)
		if err := t.m.ReadRaw(t.info, off, n, raw); err != nil {
			return nil, err
		}
		fp.DecodeF64(arrow.Float32Traits.CastFromBytes(values.Bytes()), raw)
	} else if err := t.m.ReadRaw(t.info, off, n, values.Bytes()); err != nil {
		return nil, err
	}
	return InputRecord(mem, meta, off, vt, values), nil
}

// InputRecord builds a one-row schema.Input batch holding values (n
// elements of vt, raw little-endian) for the chunk at off of a tensor.
func InputRecord(mem memory.Allocator, meta TensorMeta, off int64, vt arrow.DataType, values *memory.Buffer) arrow.RecordBatch {
	width := vt.(arrow.FixedWidthDataType).BitWidth() / 8
	n := values.Len() / width
	offsets := memory.NewResizableBuffer(mem)
	offsets.Resize(8)
	o := arrow.Int32Traits.CastFromBytes(offsets.Bytes())
	o[0], o[1] = 0, int32(n)
	child := array.NewData(vt, n, []*memory.Buffer{nil, values}, nil, 0, 0)
	listType := arrow.ListOf(vt)
	listData := array.NewData(listType, 1, []*memory.Buffer{nil, offsets}, []arrow.ArrayData{child}, 0, 0)
	child.Release()
	offsets.Release()
	list := array.MakeFromData(listData)
	listData.Release()
	defer list.Release()

	cols := []arrow.Array{
		stringArray(mem, meta.Name), shapeArray(mem, meta.Shape), stringArray(mem, meta.DType), int64Array(mem, off), list,
	}
	defer func() {
		for _, c := range cols[:4] {
			c.Release()
		}
	}()
	return array.NewRecordBatch(schema.Input(vt), cols, 1)
}

// appender is an Arrow builder of T values.
type appender[T any] interface {
	Append(T)
	NewArray() arrow.Array
	Release()
}

// single builds a one-element array with b.
func single[T any](b appender[T], v T) arrow.Array {
	defer b.Release()
	b.Append(v)
	return b.NewArray()
}

func stringArray(mem memory.Allocator, v string) arrow.Array {
	return single[string](array.NewStringBuilder(mem), v)
}

func int64Array(mem memory.Allocator, v int64) arrow.Array {
	return single[int64](array.NewInt64Builder(mem), v)
}

func shapeArray(mem memory.Allocator, shape []int64) arrow.Array {
	b := array.NewListBuilder(mem, arrow.PrimitiveTypes.Int64)
	defer b.Release()
	b.Append(true)
	b.ValueBuilder().(*array.Int64Builder).AppendValues(shape, nil)
	return b.NewArray()
}
