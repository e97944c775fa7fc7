package artifact

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/internal/fsutil"
	"github.com/arrowquant/arrowquant/internal/ipcguard"
	"github.com/arrowquant/arrowquant/internal/safe"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/schema"
)

// Reader reads a committed artifact file. An artifact may come from an
// untrusted peer (pull, a copied directory): NewReader checks the schema,
// the format version and the index, and Batch checks every row it
// returns, so that dequantizing a batch Batch accepted cannot fail on its
// content. Errors are *FormatError naming the file, tensor and row.
type Reader struct {
	path  string
	f     io.Closer
	fr    *ipc.FileReader
	index []schema.TensorEntry
	guard *ipcguard.File // the checked footer
	alloc *reclaimer     // the decoder's allocator

	mu      sync.Mutex // serializes Batch
	prev    int        // the batch Batch returned last (-1 for none)
	prevEnd int64      // where its chunk ended
}

// Blocks are where the record batches are in the file, from the footer
// NewReader checked (each batch's own bounds are checked when read).
func (r *Reader) Blocks() []ipcguard.Block { return r.guard.Batches }

// maxAlloc bounds one allocation of the IPC decoder: a row of
// schema.ChunkElems elements needs a few MB (its channel scales 4 bytes
// per input channel).
const maxAlloc = 256 << 20

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

// NewReader reads an artifact from f (closed by Close through c, or here
// on error; name is for messages).
func NewReader(f ReadAtSeeker, c io.Closer, name string, mem memory.Allocator) (*Reader, error) {
	fail := func(tensor string, err error) (*Reader, error) {
		return nil, &FormatError{File: name, Tensor: tensor, Row: -1, Err: err}
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		c.Close()
		return fail("", err)
	}
	guard, err := ipcguard.CheckFile(f, size)
	if err != nil {
		c.Close()
		return fail("", fmt.Errorf("not an Arrow IPC file: %w", err))
	}
	alloc := &reclaimer{Allocator: ipcguard.Capped{Allocator: mem, Max: maxAlloc}}
	var fr *ipc.FileReader
	err = alloc.call(func() (err error) {
		defer safe.Recover("reading the Arrow IPC footer", &err)
		fr, err = ipc.NewFileReader(f, ipc.WithAllocator(alloc))
		return err
	})
	if err != nil {
		c.Close()
		return fail("", fmt.Errorf("not an Arrow IPC file: %w", err))
	}
	r := &Reader{path: name, f: c, fr: fr, guard: guard, alloc: alloc, prev: -1}
	if n := fr.NumRecords(); n != len(guard.Batches) {
		r.Close()
		return fail("", fmt.Errorf("footer lists %d record batches, arrow-go read %d", len(guard.Batches), n))
	}
	md := fr.Schema().Metadata()
	if v, ok := md.GetValue(schema.MetaFormat); ok && v != schema.FormatName {
		r.Close()
		return fail("", fmt.Errorf("%s is %q, want %q", schema.MetaFormat, v, schema.FormatName))
	}
	if v, ok := md.GetValue(schema.MetaFormatVersion); ok && !slices.Contains(schema.ReadableVersions, v) {
		r.Close()
		return fail("", fmt.Errorf("%w %.20q: this build reads versions %v (a newer ArrowQuant wrote it?)", ErrVersion, v, schema.ReadableVersions))
	}
	if err := schema.CheckQuantized(fr.Schema()); err != nil {
		r.Close()
		return fail("", err)
	}
	raw, ok := md.GetValue(schema.MetaIndex)
	if !ok {
		r.Close()
		return fail("", fmt.Errorf("no %s metadata", schema.MetaIndex))
	}
	if err := json.Unmarshal([]byte(raw), &r.index); err != nil {
		r.Close()
		return fail("", fmt.Errorf("bad %s metadata: %w", schema.MetaIndex, err))
	}
	if k, err := checkIndex(r.index, fr.NumRecords()); err != nil {
		r.Close()
		tensor := ""
		if k >= 0 {
			tensor = r.index[k].Name
		}
		return fail(tensor, err)
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

// Tensors lists the tensors in file order; their batches tile the file.
func (r *Reader) Tensors() []schema.TensorEntry { return r.index }

// NumBatches is the number of record batches.
func (r *Reader) NumBatches() int { return r.fr.NumRecords() }

// Batch reads batch i, one row of a tensor, and checks it against the
// tensor's index entry; the caller releases it. Read in order (as
// callers do), batch by batch, a tensor's rows must also follow each
// other without gap or overlap.
func (r *Reader) Batch(i int) (arrow.RecordBatch, error) {
	if i < 0 || i >= r.NumBatches() {
		return nil, &FormatError{File: r.path, Row: -1, Err: fmt.Errorf("batch %d of %d", i, r.NumBatches())}
	}
	k, _ := slices.BinarySearchFunc(r.index, i, func(e schema.TensorEntry, i int) int {
		switch {
		case e.FirstBatch+e.NumBatches <= i:
			return -1
		case e.FirstBatch > i:
			return 1
		}
		return 0
	})
	e := &r.index[k] // the index tiles the batches (checkIndex)
	row := i - e.FirstBatch
	rec, err := r.readRow(i, e, row)
	if err != nil {
		return nil, &FormatError{File: r.path, Tensor: e.Name, Row: row, Err: err}
	}
	return rec, nil
}

func (r *Reader) readRow(i int, e *schema.TensorEntry, k int) (rec arrow.RecordBatch, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.guard.CheckBatch(i); err != nil {
		return nil, err
	}
	err = r.alloc.call(func() (err error) {
		defer safe.Recover(fmt.Sprintf("reading batch %d", i), &err)
		rec, err = r.fr.RecordBatchAt(i)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			rec.Release()
			rec = nil
		}
	}()
	if rec.NumRows() != 1 {
		return rec, fmt.Errorf("batch %d has %d rows, want 1", i, rec.NumRows())
	}
	cols, err := columnsOf(rec)
	if err != nil {
		return rec, err
	}
	rw, err := cols.row(0)
	if err != nil {
		return rec, err
	}
	if err := rw.checkAgainst(e, k); err != nil {
		return rec, err
	}
	if k > 0 && r.prev == i-1 && rw.off != r.prevEnd {
		return rec, fmt.Errorf("chunk_offset %d, but the previous row ended at %d", rw.off, r.prevEnd)
	}
	r.prev, r.prevEnd = i, rw.off+rw.n
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
// row per chunk). Every row of a batch must belong to one tensor and share
// its method, bit width and group size. The batch is checked first (as
// Reader.Batch does, without the index), so a malformed one is an error.
func (d *Dequantizer) Batch(ctx context.Context, rec arrow.RecordBatch) (_ *array.List, err error) {
	if rec.NumRows() == 0 {
		return nil, fmt.Errorf("artifact: empty batch")
	}
	cols, err := columnsOf(rec)
	if err != nil {
		return nil, fmt.Errorf("artifact: dequantize: %w", err)
	}
	first, err := cols.row(0)
	if err != nil {
		return nil, fmt.Errorf("artifact: dequantize %.64q: chunk_offset %d: %w", first.name, first.off, err)
	}
	for i := 1; i < int(rec.NumRows()); i++ {
		r, err := cols.row(i)
		if err == nil {
			err = sameTensor(&first, &r)
		}
		if err != nil {
			return nil, fmt.Errorf("artifact: dequantize %.64q: batch row %d (chunk_offset %d): %w", first.name, i, r.off, err)
		}
	}
	defer safe.Recover("artifact: dequantize "+strconv.Quote(first.name), &err)
	vals, err := d.decode(ctx, cols, &first)
	if err != nil {
		return nil, fmt.Errorf("artifact: dequantize %q: %w", first.name, err)
	}
	if err := d.unsmooth(cols, first.name, vals); err != nil {
		vals.Release()
		return nil, fmt.Errorf("artifact: dequantize %q: %w", first.name, err)
	}
	return vals, nil
}

// decode reconstructs the stored (possibly smoothed) values of checked rows.
func (d *Dequantizer) decode(ctx context.Context, c *batchCols, r *row) (*array.List, error) {
	if r.raw() {
		return decodeRaw(d.mem, r.method, c.codes, c.elems)
	}
	ctx = compute.WithAllocator(kernels.NewContext(ctx), d.mem)
	fn, cols := kernels.FuncDequantize, []arrow.Array{c.codes, c.scales, c.mins, c.elems}
	if r.superBlock {
		fn, cols = kernels.FuncDequantizeSuperBlock, []arrow.Array{c.codes, c.gp, c.elems}
	}
	args := make([]compute.Datum, len(cols))
	for i, a := range cols {
		args[i] = compute.NewDatum(a) // retains a
	}
	defer func() {
		for _, a := range args {
			a.Release()
		}
	}()
	out, err := compute.CallFunction(ctx, fn, &kernels.QuantOptions{Bits: r.bits, GroupSize: r.group}, args...)
	if err != nil {
		return nil, err
	}
	defer out.Release()
	return out.(*compute.ArrayDatum).MakeArray().(*array.List), nil
}

// unsmooth multiplies element k of a row starting at chunk_offset off by
// channel_scales[(off+k) mod len], the scales of the tensor's first row.
func (d *Dequantizer) unsmooth(c *batchCols, name string, vals *array.List) error {
	flat := vals.ListValues().(*array.Float32).Float32Values()
	for i := 0; i < vals.Len(); i++ {
		off := c.off.Value(i)
		if off == 0 {
			d.tensor, d.channelScales = name, nil
			if c.cs != nil && c.cs.IsValid(i) { // checked: non-empty, first row only
				s, e := c.cs.ValueOffsets(i)
				d.channelScales = append([]float32(nil), c.csVals.Float32Values()[s:e]...)
			}
		} else if d.tensor != name {
			return fmt.Errorf("row at chunk_offset %d read before the tensor's first row (which holds its channel scales, if any)", off)
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
func ScaleChannels(v []float32, off int64, scales []float32) { ScaleChannelsInto(v, v, off, scales) }

// ScaleChannelsInto is ScaleChannels of x written to dst (len(x) values;
// dst may be x).
func ScaleChannelsInto(dst, x []float32, off int64, scales []float32) {
	fp.MulPeriodicInto(dst, x, off, scales)
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
