package artifact

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/arrowquant/arrowquant/internal/checked"
	"github.com/arrowquant/arrowquant/internal/safe"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/schema"
)

// ErrVersion is wrapped by the error for an artifact whose format version
// this build does not read (a newer one, or an unknown one).
var ErrVersion = errors.New("unsupported artifact format version")

// FormatError reports a malformed artifact: the file, and where known the
// tensor and its row (0 is the tensor's first row, which is batch
// FirstBatch of its index entry).
type FormatError struct {
	File   string
	Tensor string // "" when the problem is not one tensor's
	Row    int    // -1 when the problem is not one row's
	Err    error
}

func (e *FormatError) Error() string {
	s := "artifact " + e.File + ": "
	switch {
	case e.Tensor != "" && e.Row >= 0:
		s += fmt.Sprintf("tensor %q row %d: ", e.Tensor, e.Row)
	case e.Tensor != "":
		s += fmt.Sprintf("tensor %q: ", e.Tensor)
	case e.Row >= 0:
		s += fmt.Sprintf("row %d: ", e.Row)
	}
	return s + e.Err.Error()
}

func (e *FormatError) Unwrap() error { return e.Err }

// checkColumns verifies that a batch has the columns of format version 2,
// or the first 14 of them (version 1), with their types.
func checkColumns(s *arrow.Schema) error {
	want := schema.Quantized(nil)
	n := s.NumFields()
	if n != want.NumFields() && n != schema.IdxGroupParams {
		return fmt.Errorf("batch has %d columns, want %d (or %d for format version 1)", n, want.NumFields(), schema.IdxGroupParams)
	}
	for i := 0; i < n; i++ {
		if g, f := s.Field(i), want.Field(i); g.Name != f.Name || !arrow.TypeEqual(g.Type, f.Type) {
			return fmt.Errorf("column %d is %s %s, want %s %s", i, g.Name, g.Type, f.Name, f.Type)
		}
	}
	return nil
}

// batchCols are the typed columns of a batch that passed checkColumns;
// gp and cs are nil for version-1 batches.
type batchCols struct {
	name, dtype, method *array.String
	shape, scales, mins *array.List
	shapeVals           *array.Int64
	off, elems          *array.Int64
	bits                *array.Int8
	group               *array.Int32
	codes, gp           *array.Binary
	cs                  *array.List
	csVals              *array.Float32
}

// columnsOf checks rec's columns and values (array.ValidateRecordFull: a
// batch decoded from a file may have inconsistent buffers) and returns
// them typed.
func columnsOf(rec arrow.RecordBatch) (*batchCols, error) {
	if err := checkColumns(rec.Schema()); err != nil {
		return nil, err
	}
	if err := validateRecord(rec); err != nil {
		return nil, fmt.Errorf("invalid record batch: %w", err)
	}
	c := &batchCols{
		name:   rec.Column(schema.IdxName).(*array.String),
		shape:  rec.Column(schema.IdxShape).(*array.List),
		dtype:  rec.Column(schema.IdxDType).(*array.String),
		off:    rec.Column(schema.IdxChunkOffset).(*array.Int64),
		elems:  rec.Column(schema.IdxChunkElems).(*array.Int64),
		method: rec.Column(schema.IdxMethod).(*array.String),
		bits:   rec.Column(schema.IdxBitWidth).(*array.Int8),
		group:  rec.Column(schema.IdxGroupSize).(*array.Int32),
		codes:  rec.Column(schema.IdxCodes).(*array.Binary),
		scales: rec.Column(schema.IdxScales).(*array.List),
		mins:   rec.Column(schema.IdxMins).(*array.List),
	}
	c.shapeVals = c.shape.ListValues().(*array.Int64)
	if rec.NumCols() > schema.IdxChannelScales {
		c.gp = rec.Column(schema.IdxGroupParams).(*array.Binary)
		c.cs = rec.Column(schema.IdxChannelScales).(*array.List)
		c.csVals = c.cs.ListValues().(*array.Float32)
	}
	return c, nil
}

// validateRecord is array.ValidateRecordFull, which itself panics on some
// invalid string offsets (arrow-go v18.8.0: String.ValidateFull slices
// the data at an offset before checking it).
func validateRecord(rec arrow.RecordBatch) (err error) {
	defer safe.Recover("validating a record batch", &err)
	return array.ValidateRecordFull(rec)
}

// row is one checked row of a quantized batch.
type row struct {
	name          string
	shape         []int64
	numel         int64
	dtype         string
	off, n        int64 // chunk_offset, chunk_elems
	method        string
	bits, group   int
	superBlock    bool // group_params not null
	channelScales int  // len(channel_scales), 0 when null
}

func (r *row) raw() bool { return r.method == schema.MethodRawF16 || r.method == schema.MethodRawBF16 }

// groupSizes are the legal group sizes of per-group rows (FORMAT.md).
var groupSizes = []int{32, 64, 128, 256}

// row checks row i on its own: no nulls where a value is needed, a legal
// name, shape, dtype, bit width and group size, a chunk inside the tensor,
// and codes, scales, mins, group_params and channel_scales of the lengths
// the chunk needs. It does not know the tensor's other rows.
func (c *batchCols) row(i int) (row, error) {
	for _, col := range []struct {
		a    arrow.Array
		name string
	}{{c.name, schema.ColName}, {c.shape, schema.ColShape}, {c.dtype, schema.ColDType}, {c.off, schema.ColChunkOffset},
		{c.elems, schema.ColChunkElems}, {c.method, schema.ColMethod}, {c.bits, schema.ColBitWidth},
		{c.group, schema.ColGroupSize}, {c.codes, schema.ColCodes}, {c.scales, schema.ColScales}, {c.mins, schema.ColMins}} {
		if col.a.IsNull(i) {
			return row{}, fmt.Errorf("%s is null", col.name)
		}
	}
	r := row{name: c.name.Value(i), dtype: c.dtype.Value(i), off: c.off.Value(i), n: c.elems.Value(i),
		method: c.method.Value(i), bits: int(c.bits.Value(i)), group: int(c.group.Value(i))}
	if err := schema.CheckTensorName(r.name); err != nil {
		return r, err
	}
	s, e := c.shape.ValueOffsets(i)
	for j := s; j < e; j++ {
		if c.shapeVals.IsNull(int(j)) {
			return r, fmt.Errorf("shape has a null dimension")
		}
	}
	r.shape = c.shapeVals.Int64Values()[s:e]
	var err error
	if r.numel, err = schema.CheckShape(r.shape); err != nil {
		return r, err
	}
	if _, err := schema.ValueType(r.dtype); err != nil {
		return r, err
	}
	if r.off < 0 || r.n < 0 || r.n > schema.ChunkElems {
		return r, fmt.Errorf("chunk_offset %d, chunk_elems %d: want offset >= 0 and 0 <= elems <= %d", r.off, r.n, schema.ChunkElems)
	}
	if end, err := checked.Add(r.off, r.n); err != nil || end > r.numel {
		return r, fmt.Errorf("chunk [%d, +%d) is outside the tensor's %d elements (shape %v)", r.off, r.n, r.numel, r.shape)
	}
	codes := int64(c.codes.ValueLen(i))
	ns, ne := c.scales.ValueOffsets(i)
	nm, me := c.mins.ValueOffsets(i)
	scales, mins := ne-ns, me-nm
	r.superBlock = c.gp != nil && c.gp.IsValid(i)
	switch {
	case r.raw():
		if r.bits != 16 || r.group != 0 {
			return r, fmt.Errorf("%s row with bit_width %d and group_size %d, want 16 and 0", r.method, r.bits, r.group)
		}
		if r.superBlock || scales != 0 || mins != 0 {
			return r, fmt.Errorf("%s row with group params", r.method)
		}
		if codes != 2*r.n {
			return r, fmt.Errorf("%s row holds %d bytes for %d 16-bit values", r.method, codes, r.n)
		}
	case r.bits != 2 && r.bits != 4 && r.bits != 8:
		return r, fmt.Errorf("method %q with bit_width %d, want 2, 4 or 8", r.method, r.bits)
	case r.superBlock:
		sub, _, _, _ := kernels.SuperBlockLayout(r.bits)
		if r.group != sub {
			return r, fmt.Errorf("super-block row at %d bits with group_size %d, want %d", r.bits, r.group, sub)
		}
		if scales != 0 || mins != 0 {
			return r, fmt.Errorf("super-block row with %d scales and %d mins, want none", scales, mins)
		}
		if got, want := int64(c.gp.ValueLen(i)), kernels.SuperBlockParamsLen(r.n, r.bits); got != want {
			return r, fmt.Errorf("%d elements at %d bits need %d group_params bytes (%d super-blocks), have %d",
				r.n, r.bits, want, kernels.NumSuperBlocks(r.n), got)
		}
		if r.off%schema.SuperBlockElems != 0 {
			return r, fmt.Errorf("super-block row starts at chunk_offset %d, not a multiple of %d", r.off, schema.SuperBlockElems)
		}
	default:
		if !slices.Contains(groupSizes, r.group) {
			return r, fmt.Errorf("group_size %d, want one of %v", r.group, groupSizes)
		}
		if want := kernels.NumGroups(r.n, r.group); scales != want || mins != want {
			return r, fmt.Errorf("%d elements in groups of %d need %d scales and mins, have %d and %d", r.n, r.group, want, scales, mins)
		}
		if r.off%int64(r.group) != 0 {
			return r, fmt.Errorf("row starts at chunk_offset %d, inside a group of %d", r.off, r.group)
		}
	}
	if !r.raw() {
		if want := kernels.PackedLen(r.n, r.bits); codes != want {
			return r, fmt.Errorf("%d elements at %d bits need %d code bytes, have %d", r.n, r.bits, want, codes)
		}
	}
	if c.cs != nil && c.cs.IsValid(i) {
		s, e := c.cs.ValueOffsets(i)
		r.channelScales = int(e - s)
		switch {
		case r.off != 0:
			return r, fmt.Errorf("channel_scales on the row at chunk_offset %d: only a tensor's first row may hold them", r.off)
		case len(r.shape) != 2:
			return r, fmt.Errorf("channel_scales on a tensor of shape %v: only 2-D weights have them", r.shape)
		case int64(r.channelScales) != r.shape[1] || r.channelScales == 0:
			return r, fmt.Errorf("%d channel_scales for %d input channels", r.channelScales, r.shape[1])
		}
		for j, v := range c.csVals.Float32Values()[s:e] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return r, fmt.Errorf("channel_scales[%d] is %v", j, v)
			}
		}
	}
	return r, nil
}

// sameTensor checks that every row of a batch belongs to one tensor and
// decodes the same way (the Dequantizer decodes a batch in one call).
func sameTensor(a, b *row) error {
	switch {
	case a.name != b.name:
		return fmt.Errorf("rows of tensors %q and %q in one batch", a.name, b.name)
	case a.method != b.method || a.bits != b.bits || a.group != b.group || a.superBlock != b.superBlock:
		return fmt.Errorf("rows of one batch differ in method, bit width, group size or group_params")
	}
	return nil
}

// checkEntry checks one index entry: name, shape, dtype, method, bit
// width and group size, and a batch count that can hold the tensor in
// rows of at most schema.ChunkElems elements (at least one element each,
// or one empty row for an empty tensor).
func checkEntry(e *schema.TensorEntry) error {
	if _, err := schema.ValueType(e.DType); err != nil {
		return err
	}
	n, err := schema.CheckShape(e.Shape)
	if err != nil {
		return err
	}
	switch e.Method {
	case schema.MethodRawF16, schema.MethodRawBF16:
		if e.BitWidth != 16 || e.GroupSize != 0 {
			return fmt.Errorf("%s with bit_width %d and group_size %d, want 16 and 0", e.Method, e.BitWidth, e.GroupSize)
		}
	default:
		if e.BitWidth != 2 && e.BitWidth != 4 && e.BitWidth != 8 {
			return fmt.Errorf("method %q with bit_width %d, want 2, 4 or 8", e.Method, e.BitWidth)
		}
		sub, _, _, _ := kernels.SuperBlockLayout(e.BitWidth)
		if e.GroupSize != sub && !slices.Contains(groupSizes, e.GroupSize) {
			return fmt.Errorf("group_size %d, want one of %v (or %d for super-block rows)", e.GroupSize, groupSizes, sub)
		}
	}
	least := max(1, n/schema.ChunkElems) // schema.NumChunks without its overflow near MaxInt64
	if n > schema.ChunkElems && n%schema.ChunkElems != 0 {
		least++
	}
	if b := int64(e.NumBatches); b < least || b > max(1, n) {
		return fmt.Errorf("%d batches for %d elements", e.NumBatches, n)
	}
	return nil
}

// checkIndex checks every entry and that the entries, in file order,
// share the file's batches without gap or overlap; it returns the
// problem's entry (-1 for none or for the whole index).
func checkIndex(index []schema.TensorEntry, batches int) (int, error) {
	names := make(map[string]bool, len(index))
	next := 0
	for k := range index {
		e := &index[k]
		if err := schema.CheckTensorName(e.Name); err != nil {
			return -1, fmt.Errorf("index entry %d: %w", k, err)
		}
		if names[e.Name] {
			return k, errors.New("listed twice in the index")
		}
		names[e.Name] = true
		if err := checkEntry(e); err != nil {
			return k, fmt.Errorf("index: %w", err)
		}
		if e.FirstBatch != next || e.NumBatches > batches-next {
			return k, fmt.Errorf("index: batches [%d, +%d), want them to start at %d of %d", e.FirstBatch, e.NumBatches, next, batches)
		}
		next += e.NumBatches
	}
	if next != batches {
		return -1, fmt.Errorf("index covers %d of the file's %d batches", next, batches)
	}
	return -1, nil
}

// checkAgainst checks a row, row k of its tensor, against the tensor's
// index entry e: the same tensor and encoding, and a chunk where row k
// can be (the first row starts at 0, the last ends the tensor, only an
// empty tensor has an empty row).
func (r *row) checkAgainst(e *schema.TensorEntry, k int) error {
	switch {
	case r.name != e.Name:
		return fmt.Errorf("row of tensor %q", r.name)
	case !slices.Equal(r.shape, e.Shape) && (len(r.shape) != 0 || len(e.Shape) != 0):
		return fmt.Errorf("shape %v, the index says %v", r.shape, e.Shape)
	case r.dtype != e.DType:
		return fmt.Errorf("dtype %s, the index says %s", r.dtype, e.DType)
	case r.method != e.Method || r.bits != e.BitWidth || r.group != e.GroupSize:
		return fmt.Errorf("method %s, bit_width %d, group_size %d; the index says %s, %d, %d",
			r.method, r.bits, r.group, e.Method, e.BitWidth, e.GroupSize)
	case (k == 0) != (r.off == 0):
		return fmt.Errorf("chunk_offset %d on row %d", r.off, k)
	case r.n == 0 && r.numel != 0:
		return fmt.Errorf("empty row of a tensor of %d elements", r.numel)
	case k == e.NumBatches-1 && r.off+r.n != r.numel:
		return fmt.Errorf("last row ends at element %d of %d", r.off+r.n, r.numel)
	}
	return nil
}
