package artifact

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/schema"
)

// Reader reads a committed artifact file.
type Reader struct {
	path  string
	f     io.Closer
	fr    *ipc.FileReader
	index []schema.TensorEntry
}

// ReadAtSeeker is what an artifact is read from (an *os.File, a store file).
type ReadAtSeeker interface {
	io.ReaderAt
	io.ReadSeeker
}

// Open opens and checks an artifact file.
func Open(path string, mem memory.Allocator) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("artifact: %w", err)
	}
	return NewReader(f, f, path, mem)
}

// NewReader reads an artifact from f (closed by Close through c; name is
// for messages).
func NewReader(f ReadAtSeeker, c io.Closer, name string, mem memory.Allocator) (*Reader, error) {
	path := name
	fr, err := ipc.NewFileReader(f, ipc.WithAllocator(mem))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("artifact: %s is not an Arrow IPC file: %w", path, err)
	}
	r := &Reader{path: path, f: c, fr: fr}
	if err := schema.CheckQuantized(fr.Schema()); err != nil {
		r.Close()
		return nil, fmt.Errorf("artifact: %s: %w", path, err)
	}
	raw, ok := fr.Schema().Metadata().GetValue(schema.MetaIndex)
	if !ok {
		r.Close()
		return nil, fmt.Errorf("artifact: %s has no %s metadata", path, schema.MetaIndex)
	}
	if err := json.Unmarshal([]byte(raw), &r.index); err != nil {
		r.Close()
		return nil, fmt.Errorf("artifact: %s: bad %s metadata: %w", path, schema.MetaIndex, err)
	}
	for _, t := range r.index {
		if t.FirstBatch < 0 || t.NumBatches < 1 || t.FirstBatch+t.NumBatches > fr.NumRecords() {
			r.Close()
			return nil, fmt.Errorf("artifact: %s: tensor %q points at batches [%d, %d) of %d", path, t.Name, t.FirstBatch, t.FirstBatch+t.NumBatches, fr.NumRecords())
		}
	}
	return r, nil
}

// Close releases the file.
func (r *Reader) Close() error {
	r.fr.Close()
	return r.f.Close()
}

// Path is the file's path.
func (r *Reader) Path() string { return r.path }

// Schema is the artifact's schema, with its metadata.
func (r *Reader) Schema() *arrow.Schema { return r.fr.Schema() }

// Meta returns one schema-level metadata value ("" when absent).
func (r *Reader) Meta(key string) string {
	v, _ := r.fr.Schema().Metadata().GetValue(key)
	return v
}

// Tensors lists the tensors in file order.
func (r *Reader) Tensors() []schema.TensorEntry { return r.index }

// NumBatches is the number of record batches.
func (r *Reader) NumBatches() int { return r.fr.NumRecords() }

// Batch reads batch i; the caller releases it.
func (r *Reader) Batch(i int) (arrow.RecordBatch, error) {
	rec, err := r.fr.RecordBatchAt(i)
	if err != nil {
		return nil, fmt.Errorf("artifact: %s: batch %d: %w", r.path, i, err)
	}
	return rec, nil
}

// DequantizeBatch reconstructs the float32 values of every row of a
// quantized batch (one list<float32> row per chunk). Every row of a batch
// belongs to one tensor, so shares its method, bit width and group size.
func DequantizeBatch(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch) (*array.List, error) {
	if rec.NumRows() == 0 {
		return nil, fmt.Errorf("artifact: empty batch")
	}
	method := rec.Column(schema.IdxMethod).(*array.String).Value(0)
	elems := rec.Column(schema.IdxChunkElems).(*array.Int64)
	codes := rec.Column(schema.IdxCodes).(*array.Binary)
	switch method {
	case schema.MethodRawF16, schema.MethodRawBF16:
		return decodeRaw(mem, method, codes, elems)
	}
	bits := int(rec.Column(schema.IdxBitWidth).(*array.Int8).Value(0))
	gs := int(rec.Column(schema.IdxGroupSize).(*array.Int32).Value(0))
	ctx = compute.WithAllocator(kernels.NewContext(ctx), mem)
	args := []compute.Datum{
		compute.NewDatum(codes), compute.NewDatum(rec.Column(schema.IdxScales)),
		compute.NewDatum(rec.Column(schema.IdxMins)), compute.NewDatum(elems),
	}
	defer func() {
		for _, a := range args {
			a.Release()
		}
	}()
	out, err := compute.CallFunction(ctx, kernels.FuncDequantize, &kernels.QuantOptions{Bits: bits, GroupSize: gs}, args...)
	if err != nil {
		return nil, fmt.Errorf("artifact: dequantize %s: %w", rec.Column(schema.IdxName).(*array.String).Value(0), err)
	}
	defer out.Release()
	return out.(*compute.ArrayDatum).MakeArray().(*array.List), nil
}

func decodeRaw(mem memory.Allocator, method string, codes *array.Binary, elems *array.Int64) (*array.List, error) {
	b := array.NewListBuilder(mem, arrow.PrimitiveTypes.Float32)
	defer b.Release()
	vb := b.ValueBuilder().(*array.Float32Builder)
	var tmp []float32
	for i := 0; i < codes.Len(); i++ {
		raw := codes.Value(i)
		n := int(elems.Value(i))
		if len(raw) != 2*n {
			return nil, fmt.Errorf("artifact: raw row %d holds %d bytes for %d 16-bit values", i, len(raw), n)
		}
		if cap(tmp) < n {
			tmp = make([]float32, n)
		}
		tmp = tmp[:n]
		if method == schema.MethodRawF16 {
			fp.DecodeHalf(tmp, raw)
		} else {
			fp.DecodeBF16(tmp, raw)
		}
		b.Append(true)
		vb.AppendValues(tmp, nil)
	}
	return b.NewListArray(), nil
}
