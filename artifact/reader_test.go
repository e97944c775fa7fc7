package artifact

import (
	"context"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/schema"
)

// rawRow builds a one-row batch of an fp16 row of tensor "w" [2, 3] at
// chunk offset off, with channel scales (nil = null); v1 drops the
// version-2 columns.
func rawRow(t *testing.T, mem memory.Allocator, off int64, vals []float32, scales []float32, v1 bool) arrow.RecordBatch {
	t.Helper()
	raw := make([]byte, 2*len(vals))
	fp.EncodeHalf(raw, vals)
	b := array.NewRecordBuilder(mem, schema.Quantized(nil))
	defer b.Release()
	b.Field(schema.IdxName).(*array.StringBuilder).Append("w")
	sb := b.Field(schema.IdxShape).(*array.ListBuilder)
	sb.Append(true)
	sb.ValueBuilder().(*array.Int64Builder).AppendValues([]int64{2, 3}, nil)
	b.Field(schema.IdxDType).(*array.StringBuilder).Append(schema.DTypeF16)
	b.Field(schema.IdxChunkOffset).(*array.Int64Builder).Append(off)
	b.Field(schema.IdxChunkElems).(*array.Int64Builder).Append(int64(len(vals)))
	b.Field(schema.IdxMethod).(*array.StringBuilder).Append(schema.MethodRawF16)
	b.Field(schema.IdxBitWidth).(*array.Int8Builder).Append(16)
	b.Field(schema.IdxGroupSize).(*array.Int32Builder).Append(0)
	b.Field(schema.IdxCodes).(*array.BinaryBuilder).Append(raw)
	b.Field(schema.IdxScales).(*array.ListBuilder).Append(true)
	b.Field(schema.IdxMins).(*array.ListBuilder).Append(true)
	b.Field(schema.IdxCosine).(*array.Float64Builder).Append(1)
	b.Field(schema.IdxRequestedBitWidth).(*array.Int8Builder).Append(16)
	b.Field(schema.IdxFallbackReason).(*array.StringBuilder).AppendNull()
	b.Field(schema.IdxGroupParams).(*array.BinaryBuilder).AppendNull()
	cs := b.Field(schema.IdxChannelScales).(*array.ListBuilder)
	if scales == nil {
		cs.AppendNull()
	} else {
		cs.Append(true)
		cs.ValueBuilder().(*array.Float32Builder).AppendValues(scales, nil)
	}
	rec := b.NewRecordBatch()
	if !v1 {
		return rec
	}
	defer rec.Release()
	cols := rec.Columns()[:schema.IdxGroupParams]
	return array.NewRecordBatch(arrow.NewSchema(rec.Schema().Fields()[:schema.IdxGroupParams], nil), cols, 1)
}

func values(t *testing.T, l *array.List) []float32 {
	t.Helper()
	defer l.Release()
	return append([]float32(nil), l.ListValues().(*array.Float32).Float32Values()...)
}

func TestDequantizerChannelScales(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ctx := context.Background()
	// Rows of 4 and 2 elements: the second starts mid-row (offset 4 = channel 1).
	first := rawRow(t, mem, 0, []float32{1, 2, 3, 4}, []float32{0.5, 2, 4}, false)
	second := rawRow(t, mem, 4, []float32{5, 6}, nil, false)
	defer first.Release()
	defer second.Release()
	d := NewDequantizer(mem)
	a, err := d.Batch(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Batch(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	got := append(values(t, a), values(t, b)...)
	want := []float32{0.5, 4, 12, 2, 10, 24} // element k times scales[k mod 3]
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("element %d: got %v, want %v (all %v)", i, got[i], want[i], got)
		}
	}
	// A later row without its tensor's first row cannot be reconstructed.
	if _, err := NewDequantizer(mem).Batch(ctx, second); err == nil || !strings.Contains(err.Error(), "before the tensor's first row") {
		t.Fatalf("got %v", err)
	}
	// Channel scales anywhere but the first row are refused.
	bad := rawRow(t, mem, 4, []float32{5, 6}, []float32{1, 1, 1}, false)
	defer bad.Release()
	d = NewDequantizer(mem)
	if a, err = d.Batch(ctx, first); err != nil {
		t.Fatal(err)
	}
	a.Release()
	if _, err := d.Batch(ctx, bad); err == nil || !strings.Contains(err.Error(), "only a tensor's first row") {
		t.Fatalf("got %v", err)
	}
}

func TestDequantizerReadsVersion1(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := rawRow(t, mem, 0, []float32{1, -2, 0.5}, nil, true)
	defer rec.Release()
	if rec.NumCols() != 14 {
		t.Fatalf("%d columns", rec.NumCols())
	}
	l, err := NewDequantizer(mem).Batch(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	if got := values(t, l); got[0] != 1 || got[1] != -2 || got[2] != 0.5 {
		t.Fatalf("got %v", got)
	}
}

// ScaleChannels multiplies element off+j by scales[(off+j) mod channels],
// at every offset and length, rows whole or cut.
func TestScaleChannelsRule(t *testing.T) {
	for _, c := range []int{1, 3, 4, 7, 64} {
		scales := make([]float32, c)
		for i := range scales {
			scales[i] = float32(i) + 0.5
		}
		for off := int64(0); off < 3*int64(c)+2; off++ {
			for n := 0; n < 3*c+9; n++ {
				v := make([]float32, n)
				for j := range v {
					v[j] = float32(j) - 1.25
				}
				into := make([]float32, n+1)
				into[n] = 7
				ScaleChannelsInto(into, v, off, scales)
				ScaleChannels(v, off, scales)
				for j := range v {
					if want := (float32(j) - 1.25) * scales[(off+int64(j))%int64(c)]; v[j] != want || into[j] != want {
						t.Fatalf("c %d off %d n %d: v[%d] = %v (into %v), want %v", c, off, n, j, v[j], into[j], want)
					}
				}
				if into[n] != 7 {
					t.Fatalf("c %d off %d n %d: wrote past len(x)", c, off, n)
				}
			}
		}
	}
}
