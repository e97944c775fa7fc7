package artifact

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/internal/fsutil"
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
	f, err := fsutil.OpenRegular(path)
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

// Dequantizer reconstructs the float32 values of quantized batches. A
// tensor smoothed by spatial quantization carries its channel scales on
// its first row only (they apply to all its rows), so a tensor's batches
// must be given first row first, as they are stored.
type Dequantizer struct {
	mem           memory.Allocator
	tensor        string    // tensor whose channel scales are held
	channelScales []float32 // nil when that tensor is not smoothed
}

// NewDequantizer returns a Dequantizer allocating from mem.
func NewDequantizer(mem memory.Allocator) *Dequantizer { return &Dequantizer{mem: mem} }

// Batch reconstructs every row of a quantized batch (one list<float32>
// row per chunk). Every row of a batch belongs to one tensor, so shares
// its method, bit width and group size.
func (d *Dequantizer) Batch(ctx context.Context, rec arrow.RecordBatch) (*array.List, error) {
	if rec.NumRows() == 0 {
		return nil, fmt.Errorf("artifact: empty batch")
	}
	name := rec.Column(schema.IdxName).(*array.String).Value(0)
	vals, err := d.decode(ctx, rec)
	if err != nil {
		return nil, fmt.Errorf("artifact: dequantize %s: %w", name, err)
	}
	if err := d.unsmooth(rec, name, vals); err != nil {
		vals.Release()
		return nil, fmt.Errorf("artifact: dequantize %s: %w", name, err)
	}
	return vals, nil
}

// decode reconstructs the stored (possibly smoothed) values.
func (d *Dequantizer) decode(ctx context.Context, rec arrow.RecordBatch) (*array.List, error) {
	method := rec.Column(schema.IdxMethod).(*array.String).Value(0)
	elems := rec.Column(schema.IdxChunkElems).(*array.Int64)
	codes := rec.Column(schema.IdxCodes).(*array.Binary)
	switch method {
	case schema.MethodRawF16, schema.MethodRawBF16:
		return decodeRaw(d.mem, method, codes, elems)
	}
	bits := int(rec.Column(schema.IdxBitWidth).(*array.Int8).Value(0))
	gs := int(rec.Column(schema.IdxGroupSize).(*array.Int32).Value(0))
	ctx = compute.WithAllocator(kernels.NewContext(ctx), d.mem)
	fn := kernels.FuncDequantize
	args := []compute.Datum{compute.NewDatum(codes), compute.NewDatum(rec.Column(schema.IdxScales)),
		compute.NewDatum(rec.Column(schema.IdxMins)), compute.NewDatum(elems)}
	if gp := groupParams(rec); gp != nil {
		for _, a := range args {
			a.Release()
		}
		fn = kernels.FuncDequantizeSuperBlock
		args = []compute.Datum{compute.NewDatum(codes), compute.NewDatum(gp), compute.NewDatum(elems)}
	}
	defer func() {
		for _, a := range args {
			a.Release()
		}
	}()
	out, err := compute.CallFunction(ctx, fn, &kernels.QuantOptions{Bits: bits, GroupSize: gs}, args...)
	if err != nil {
		return nil, err
	}
	defer out.Release()
	return out.(*compute.ArrayDatum).MakeArray().(*array.List), nil
}

// groupParams is the batch's group_params column when its rows hold
// double-quantized super-block params (nil for fp16 scale/min rows and
// for version-1 batches).
func groupParams(rec arrow.RecordBatch) arrow.Array {
	if rec.NumCols() <= schema.IdxGroupParams {
		return nil
	}
	gp := rec.Column(schema.IdxGroupParams)
	if gp.IsNull(0) {
		return nil
	}
	return gp
}

// unsmooth multiplies element k of a row starting at chunk_offset off by
// channel_scales[(off+k) mod len], the scales of the tensor's first row.
func (d *Dequantizer) unsmooth(rec arrow.RecordBatch, name string, vals *array.List) error {
	offsets := rec.Column(schema.IdxChunkOffset).(*array.Int64)
	var cs *array.List
	if rec.NumCols() > schema.IdxChannelScales {
		cs = rec.Column(schema.IdxChannelScales).(*array.List)
	}
	flat := vals.ListValues().(*array.Float32).Float32Values()
	for i := 0; i < int(rec.NumRows()); i++ {
		off := offsets.Value(i)
		if off == 0 {
			d.tensor, d.channelScales = name, nil
			if cs != nil && cs.IsValid(i) {
				s, e := cs.ValueOffsets(i)
				d.channelScales = append([]float32(nil), cs.ListValues().(*array.Float32).Float32Values()[s:e]...)
				if len(d.channelScales) == 0 {
					return fmt.Errorf("empty channel_scales on row 0")
				}
			}
		} else if d.tensor != name {
			return fmt.Errorf("row at chunk_offset %d read before the tensor's first row (which holds its channel scales, if any)", off)
		} else if cs != nil && cs.IsValid(i) {
			return fmt.Errorf("channel_scales on the row at chunk_offset %d: only a tensor's first row may hold them", off)
		}
		if d.channelScales == nil {
			continue
		}
		s, e := vals.ValueOffsets(i)
		ScaleChannels(flat[s:e], off, d.channelScales)
	}
	return nil
}

// ScaleChannels multiplies v[k], element off+k of a row-major tensor whose
// rows have len(scales) elements, by scales[(off+k) mod len(scales)] (in
// float32): the channel-scale rule of FORMAT.md.
func ScaleChannels(v []float32, off int64, scales []float32) {
	c := int64(len(scales))
	k := off % c
	for j := range v {
		v[j] *= scales[k]
		if k++; k == c {
			k = 0
		}
	}
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
