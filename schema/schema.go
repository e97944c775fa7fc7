// Package schema defines the Arrow schemas ArrowQuant reads and writes:
// FP weights going in (one row per tensor chunk) and quantized tensors
// coming out (one row per tensor chunk), plus the schema-level metadata
// keys of an artifact. docs/FORMAT.md documents them for other readers.
package schema

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
)

// FormatName and FormatVersion identify an ArrowQuant artifact.
const (
	FormatName    = "arrowquant"
	FormatVersion = "2"
)

// ReadableVersions are the artifact format versions this build reads.
// Version 1 lacks the group_params and channel_scales columns (readers
// treat them as null).
var ReadableVersions = []string{"1", "2"}

// Schema-level metadata keys of the quantized schema. JSON values are UTF-8 JSON text.
const (
	MetaFormat        = "arrowquant.format"         // FormatName
	MetaFormatVersion = "arrowquant.format_version" // FormatVersion
	MetaConfig        = "arrowquant.config"         // JSON: the effective DiffusionQuantConfig
	MetaModality      = "arrowquant.modality"       // text | code | image | audio
	MetaTimeGroups    = "arrowquant.time_groups"    // JSON: time-aware metadata (see FORMAT.md)
	MetaReport        = "arrowquant.report"         // JSON: the quantization result
	MetaModelName     = "arrowquant.model"          // model name (directory or Flight name)
	MetaIndex         = "arrowquant.index"          // JSON: per tensor, its batches (see FORMAT.md)
	MetaEqualization  = "arrowquant.equalization"   // JSON: layer pairs changed by channel equalization, or null
)

// ChunkElems is the most elements one row holds. Every row but a tensor's
// last starts at a multiple of it, so rows never split a group; one record
// batch holds one row. Readers must not rely on the value.
const ChunkElems = 1 << 20

// Source dtypes of input tensors, named as in safetensors.
const (
	DTypeF32  = "F32"
	DTypeF16  = "F16"
	DTypeBF16 = "BF16"
	DTypeF64  = "F64"
)

// Input column names.
const (
	ColName        = "name"
	ColShape       = "shape"
	ColDType       = "dtype"
	ColChunkOffset = "chunk_offset"
	ColValues      = "values"
)

// ValueType is the native Arrow element type carrying a source dtype over
// the wire: float32, float16, or uint16 holding bfloat16 bits (Arrow has no
// bfloat16 type). F64 sources are sent as float32. Any dtype may also be
// sent widened to float32 (a stream has one schema, so a model mixing
// dtypes travels as float32); the dtype column keeps the source dtype.
func ValueType(dtype string) (arrow.DataType, error) {
	switch dtype {
	case DTypeF32, DTypeF64:
		return arrow.PrimitiveTypes.Float32, nil
	case DTypeF16:
		return arrow.FixedWidthTypes.Float16, nil
	case DTypeBF16:
		return arrow.PrimitiveTypes.Uint16, nil
	}
	return nil, fmt.Errorf("schema: unsupported dtype %q (want F32, F16, BF16 or F64)", dtype)
}

// Input is the schema of FP weights going in for one value type: each
// row is a contiguous chunk of a tensor, flattened in row-major order,
// starting at element chunk_offset.
func Input(valueType arrow.DataType) *arrow.Schema {
	return arrow.NewSchema([]arrow.Field{
		{Name: ColName, Type: arrow.BinaryTypes.String},
		{Name: ColShape, Type: arrow.ListOf(arrow.PrimitiveTypes.Int64)},
		{Name: ColDType, Type: arrow.BinaryTypes.String},
		{Name: ColChunkOffset, Type: arrow.PrimitiveTypes.Int64},
		{Name: ColValues, Type: arrow.ListOf(valueType)},
	}, nil)
}

// CheckInput verifies that s has the input schema's columns and types,
// naming the first column that does not.
func CheckInput(s *arrow.Schema) error {
	want := []struct {
		name string
		ok   func(arrow.DataType) bool
		desc string
	}{
		{ColName, func(t arrow.DataType) bool { return t.ID() == arrow.STRING || t.ID() == arrow.LARGE_STRING }, "utf8"},
		{ColShape, isIntList, "list<int64>"},
		{ColDType, func(t arrow.DataType) bool { return t.ID() == arrow.STRING || t.ID() == arrow.LARGE_STRING }, "utf8"},
		{ColChunkOffset, func(t arrow.DataType) bool { return t.ID() == arrow.INT64 }, "int64"},
		{ColValues, isValueList, "list<float32|float16|uint16>"},
	}
	for _, w := range want {
		idx := s.FieldIndices(w.name)
		if len(idx) != 1 {
			return fmt.Errorf("schema: input needs exactly one column %q (%s)", w.name, w.desc)
		}
		if t := s.Field(idx[0]).Type; !w.ok(t) {
			return fmt.Errorf("schema: input column %q has type %s, want %s", w.name, t, w.desc)
		}
	}
	return nil
}

func isIntList(t arrow.DataType) bool {
	l, ok := t.(*arrow.ListType)
	return ok && l.Elem().ID() == arrow.INT64
}

func isValueList(t arrow.DataType) bool {
	l, ok := t.(*arrow.ListType)
	if !ok {
		return false
	}
	switch l.Elem().ID() {
	case arrow.FLOAT32, arrow.FLOAT16, arrow.UINT16:
		return true
	}
	return false
}

// Quantized column names.
const (
	ColChunkElems        = "chunk_elems"
	ColMethod            = "method"
	ColBitWidth          = "bit_width"
	ColGroupSize         = "group_size"
	ColCodes             = "codes"
	ColScales            = "scales"
	ColMins              = "mins"
	ColCosine            = "cosine"
	ColRequestedBitWidth = "requested_bit_width"
	ColFallbackReason    = "fallback_reason"
	ColGroupParams       = "group_params"
	ColChannelScales     = "channel_scales"
)

// SuperBlockElems is the number of elements per super-block of rows with
// double-quantized group parameters (group_params not null; see FORMAT.md).
const SuperBlockElems = 256

// Methods of rows that are not quantized: codes hold the raw little-endian
// 16-bit values of the named format and bit_width is 16.
const (
	MethodRawF16  = "fp16"
	MethodRawBF16 = "bf16"
)

// Column indices of the quantized schema.
const (
	IdxName = iota
	IdxShape
	IdxDType
	IdxChunkOffset
	IdxChunkElems
	IdxMethod
	IdxBitWidth
	IdxGroupSize
	IdxCodes
	IdxScales
	IdxMins
	IdxCosine
	IdxRequestedBitWidth
	IdxFallbackReason
	// Version 2 columns.
	IdxGroupParams   // binary, null unless the row's params are double-quantized super-blocks
	IdxChannelScales // list<float32>, non-null only on the first row of a smoothed tensor
)

// numFieldsV1 is the column count of format version 1 (no group_params,
// channel_scales).
const numFieldsV1 = 14

var quantizedFields = []arrow.Field{
	{Name: ColName, Type: arrow.BinaryTypes.String},
	{Name: ColShape, Type: arrow.ListOf(arrow.PrimitiveTypes.Int64)},
	{Name: ColDType, Type: arrow.BinaryTypes.String},
	{Name: ColChunkOffset, Type: arrow.PrimitiveTypes.Int64},
	{Name: ColChunkElems, Type: arrow.PrimitiveTypes.Int64},
	{Name: ColMethod, Type: arrow.BinaryTypes.String},
	{Name: ColBitWidth, Type: arrow.PrimitiveTypes.Int8},
	{Name: ColGroupSize, Type: arrow.PrimitiveTypes.Int32},
	{Name: ColCodes, Type: arrow.BinaryTypes.Binary},
	{Name: ColScales, Type: arrow.ListOf(arrow.FixedWidthTypes.Float16)},
	{Name: ColMins, Type: arrow.ListOf(arrow.FixedWidthTypes.Float16)},
	{Name: ColCosine, Type: arrow.PrimitiveTypes.Float64},
	{Name: ColRequestedBitWidth, Type: arrow.PrimitiveTypes.Int8},
	{Name: ColFallbackReason, Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: ColGroupParams, Type: arrow.BinaryTypes.Binary, Nullable: true},
	{Name: ColChannelScales, Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true},
}

// Quantized is the schema of quantized tensors with the given schema-level
// metadata (nil for none): one row per tensor chunk; tensor-level columns
// (shape, cosine, fallback) repeat on every chunk row of a tensor.
func Quantized(meta map[string]string) *arrow.Schema {
	var md *arrow.Metadata
	if meta != nil {
		m := arrow.MetadataFrom(meta)
		md = &m
	}
	return arrow.NewSchema(quantizedFields, md)
}

// CheckQuantized verifies that s is a quantized schema of a version this
// code reads (see ReadableVersions; a schema without a version is read as
// the current one).
func CheckQuantized(s *arrow.Schema) error {
	want := len(quantizedFields)
	if v, ok := s.Metadata().GetValue(MetaFormatVersion); ok {
		switch v {
		case "1":
			want = numFieldsV1
		case FormatVersion:
		default:
			return fmt.Errorf("schema: artifact format version %s, this build reads versions %v", v, ReadableVersions)
		}
	}
	if s.NumFields() != want {
		return fmt.Errorf("schema: artifact has %d columns, want %d", s.NumFields(), want)
	}
	for i, f := range quantizedFields[:want] {
		if g := s.Field(i); g.Name != f.Name || !arrow.TypeEqual(g.Type, f.Type) {
			return fmt.Errorf("schema: artifact column %d is %s %s, want %s %s", i, g.Name, g.Type, f.Name, f.Type)
		}
	}
	return nil
}

// Dequantized is the schema of a dequantized float32 stream (DoGet and
// readers without our kernels): one row per tensor chunk.
func Dequantized() *arrow.Schema { return Input(arrow.PrimitiveTypes.Float32) }

// TensorEntry locates one tensor's batches in an artifact; the list of
// entries, in file order, is the MetaIndex metadata.
type TensorEntry struct {
	Name       string  `json:"name"`
	Shape      []int64 `json:"shape"`
	DType      string  `json:"dtype"`
	Method     string  `json:"method"`
	BitWidth   int     `json:"bit_width"`
	GroupSize  int     `json:"group_size"`
	FirstBatch int     `json:"first_batch"`
	NumBatches int     `json:"num_batches"`
}

// NumElements is the product of the shape (1 for a scalar).
func (t TensorEntry) NumElements() int64 { return NumElements(t.Shape) }

// NumElements is the product of a shape (1 for a scalar).
func NumElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// NumChunks is the number of rows a tensor of n elements occupies.
func NumChunks(n int64) int64 { return max(1, (n+ChunkElems-1)/ChunkElems) }
