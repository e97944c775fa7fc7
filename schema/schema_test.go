package schema

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
)

func TestInputSchemaPerDType(t *testing.T) {
	for dtype, want := range map[string]arrow.Type{DTypeF32: arrow.FLOAT32, DTypeF16: arrow.FLOAT16, DTypeBF16: arrow.UINT16, DTypeF64: arrow.FLOAT32} {
		vt, err := ValueType(dtype)
		if err != nil || vt.ID() != want {
			t.Fatalf("%s: %v %v", dtype, vt, err)
		}
		if err := CheckInput(Input(vt)); err != nil {
			t.Errorf("%s: own schema rejected: %v", dtype, err)
		}
	}
	if _, err := ValueType("I64"); err == nil || !strings.Contains(err.Error(), `"I64"`) {
		t.Errorf("I64: %v", err)
	}
}

func TestCheckInputNamesTheColumn(t *testing.T) {
	bad := arrow.NewSchema([]arrow.Field{
		{Name: ColName, Type: arrow.BinaryTypes.String},
		{Name: ColShape, Type: arrow.ListOf(arrow.PrimitiveTypes.Int64)},
		{Name: ColDType, Type: arrow.BinaryTypes.String},
		{Name: ColChunkOffset, Type: arrow.PrimitiveTypes.Int64},
		{Name: ColValues, Type: arrow.ListOf(arrow.PrimitiveTypes.Float64)},
	}, nil)
	if err := CheckInput(bad); err == nil || !strings.Contains(err.Error(), `"values"`) {
		t.Fatalf("got %v", err)
	}
	missing := arrow.NewSchema(bad.Fields()[:3], nil)
	if err := CheckInput(missing); err == nil || !strings.Contains(err.Error(), ColChunkOffset) {
		t.Fatalf("got %v", err)
	}
}

func TestQuantizedSchema(t *testing.T) {
	s := Quantized(map[string]string{MetaFormatVersion: FormatVersion})
	if err := CheckQuantized(s); err != nil {
		t.Fatal(err)
	}
	if s.Field(IdxCodes).Name != ColCodes || s.Field(IdxFallbackReason).Name != ColFallbackReason ||
		s.Field(IdxGroupParams).Name != ColGroupParams || s.Field(IdxChannelScales).Name != ColChannelScales {
		t.Fatal("column index constants out of sync with the fields")
	}
	v1 := arrow.NewSchema(s.Fields()[:numFieldsV1], &arrow.Metadata{})
	v1md := arrow.MetadataFrom(map[string]string{MetaFormatVersion: "1"})
	v1 = arrow.NewSchema(v1.Fields(), &v1md)
	if err := CheckQuantized(v1); err != nil {
		t.Fatalf("version 1 must stay readable: %v", err)
	}
	v1as2 := arrow.NewSchema(v1.Fields(), nil)
	if err := CheckQuantized(v1as2); err == nil || !strings.Contains(err.Error(), "14 columns, want 16") {
		t.Fatalf("got %v", err)
	}
	future := Quantized(map[string]string{MetaFormatVersion: "99"})
	if err := CheckQuantized(future); err == nil || !strings.Contains(err.Error(), "99") {
		t.Fatalf("got %v", err)
	}
}
