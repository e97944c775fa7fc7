package gguf

import (
	"bytes"
	"encoding/binary"
	"math"
	"reflect"
	"strings"
	"testing"
)

// Every metadata value type round-trips through the writer and the
// header reader; tensor offsets are aligned to 32 and the data of each
// tensor sits at DataOffset + offset.
func TestWriterHeaderParseBack(t *testing.T) {
	kvs := []KV{
		{"general.architecture", "llama"},
		{"u8", uint8(200)}, {"i8", int8(-100)}, {"u16", uint16(60000)}, {"i16", int16(-30000)},
		{"u32", uint32(4000000000)}, {"i32", int32(-2000000000)}, {"u64", uint64(1) << 60}, {"i64", int64(-1) << 60},
		{"f32", float32(3.25)}, {"f64", math.Pi}, {"t", true}, {"f", false}, {"s", "héllo"},
		{"a.u8", []uint8{1, 2, 3}}, {"a.i32", []int32{-1, 0, 1}}, {"a.f32", []float32{0.5, -2}},
		{"a.s", []string{"a", "", "ccc"}}, {"a.b", []bool{true, false}}, {"a.u64", []uint64{}},
		{"a.i64", []int64{-5}}, {"a.f64", []float64{1e300}}, {"a.u16", []uint16{7}}, {"a.i16", []int16{-7}},
		{"a.u32", []uint32{9}}, {"a.i8", []int8{-1}},
	}
	tensors := []TensorInfo{
		{Name: "a", NE: []uint64{256, 2}, Type: Q4_K},   // 288 bytes
		{Name: "b", NE: []uint64{3}, Type: F32},         // 12 bytes -> padded to 32
		{Name: "c", NE: []uint64{32, 1, 1}, Type: Q8_0}, // 34 bytes
		{Name: "empty", NE: []uint64{0, 4}, Type: F16},  // 0 bytes
		{Name: "d", NE: []uint64{5}, Type: BF16},        // 10 bytes
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, kvs, tensors)
	if err != nil {
		t.Fatal(err)
	}
	payload := map[string][]byte{}
	for _, ti := range tensors {
		size, _ := DataBytes(ti.Type, ti.NE)
		p := bytes.Repeat([]byte{byte(len(ti.Name) + int(ti.Type))}, int(size))
		payload[ti.Name] = p
		if size == 0 {
			continue
		}
		// Written in two pieces: tensors may arrive in any split.
		if _, err := w.Write(p[:size/2]); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(p[size/2:]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != w.Size() {
		t.Fatalf("file is %d bytes, Size says %d", buf.Len(), w.Size())
	}
	f, err := ReadHeader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 3 || f.Alignment != 32 || f.DataOffset%32 != 0 {
		t.Fatalf("version %d alignment %d data offset %d", f.Version, f.Alignment, f.DataOffset)
	}
	if len(f.KVs) != len(kvs)+1 || f.KV(KeyAlignment) != uint32(32) {
		t.Fatalf("%d kvs, alignment %v", len(f.KVs), f.KV(KeyAlignment))
	}
	for i, kv := range kvs {
		if got := f.KVs[i]; got.Key != kv.Key || !reflect.DeepEqual(got.Value, kv.Value) {
			t.Errorf("kv %d: got %s = %#v, want %s = %#v", i, got.Key, got.Value, kv.Key, kv.Value)
		}
	}
	for i, ti := range f.Tensors {
		if !reflect.DeepEqual(ti.TensorInfo, tensors[i]) {
			t.Errorf("tensor %d: %+v, want %+v", i, ti.TensorInfo, tensors[i])
		}
		if ti.Offset%32 != 0 {
			t.Errorf("tensor %s at offset %d", ti.Name, ti.Offset)
		}
		start := f.DataOffset + int64(ti.Offset)
		p := payload[ti.Name]
		if got := buf.Bytes()[start : start+int64(len(p))]; !bytes.Equal(got, p) {
			t.Errorf("tensor %s data misplaced", ti.Name)
		}
	}
	// Hand-checked start of the file: magic, version 3, 5 tensors, 27 kvs,
	// then the first key's length and bytes.
	head := buf.Bytes()
	if string(head[:4]) != "GGUF" || binary.LittleEndian.Uint32(head[4:]) != 3 ||
		binary.LittleEndian.Uint64(head[8:]) != 5 || binary.LittleEndian.Uint64(head[16:]) != 27 ||
		binary.LittleEndian.Uint64(head[24:]) != 20 || string(head[32:52]) != "general.architecture" ||
		binary.LittleEndian.Uint32(head[52:]) != 8 {
		t.Fatalf("header bytes % X", head[:56])
	}
	if f.Tensors[1].Offset != 288 || f.Tensors[2].Offset != 320 || f.Tensors[3].Offset != 384 || f.Tensors[4].Offset != 384 {
		t.Fatalf("offsets %d %d %d %d", f.Tensors[1].Offset, f.Tensors[2].Offset, f.Tensors[3].Offset, f.Tensors[4].Offset)
	}
}

func TestWriterErrors(t *testing.T) {
	var buf bytes.Buffer
	one := []TensorInfo{{Name: "a", NE: []uint64{32}, Type: Q8_0}}
	for _, c := range []struct {
		kvs     []KV
		tensors []TensorInfo
		want    string
	}{
		{[]KV{{"x", 1}}, nil, "unsupported value type int"},
		{[]KV{{"x", uint8(1)}, {"x", uint8(2)}}, nil, "given twice"},
		{[]KV{{KeyAlignment, uint32(64)}}, nil, "written by the writer"},
		{nil, []TensorInfo{{Name: "a", NE: []uint64{100}, Type: Q4_K}}, "divisible by 256"},
		{nil, []TensorInfo{{Name: "a", NE: []uint64{32}, Type: F32}, {Name: "a", NE: []uint64{1}, Type: F32}}, "given twice"},
		{nil, []TensorInfo{{Name: "a", NE: []uint64{32}, Type: Type(7)}}, "unsupported tensor type"},
	} {
		if _, err := NewWriter(&buf, c.kvs, c.tensors); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: got %v, want %q", c.kvs, c.tensors, err, c.want)
		}
	}
	w, err := NewWriter(&buf, nil, one)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 35)); err == nil {
		t.Error("writing past a tensor's end must fail")
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("closing with missing data: %v", err)
	}
	if _, err := ReadHeader(bytes.NewReader([]byte("GGUF\x03\x00\x00\x00"))); err == nil {
		t.Error("truncated header accepted")
	}
	if _, err := ReadHeader(strings.NewReader("NOPE\x03\x00\x00\x00")); err == nil {
		t.Error("bad magic accepted")
	}
}
