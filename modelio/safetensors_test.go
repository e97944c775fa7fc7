package modelio

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDTypeSize(t *testing.T) {
	cases := map[DType]int{F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, U8: 1, Bool: 1, F8E4M3: 1, "XYZ": 0}
	for d, want := range cases {
		if got := d.Size(); got != want {
			t.Errorf("%s.Size() = %d, want %d", d, got, want)
		}
	}
	for _, d := range []DType{F32, F16, BF16, F64} {
		if !d.Supported() {
			t.Errorf("%s must be supported", d)
		}
	}
	for _, d := range []DType{I64, U8, Bool, F8E4M3, "XYZ"} {
		if d.Supported() {
			t.Errorf("%s must not be supported", d)
		}
	}
	if n := (TensorInfo{Shape: []int64{}}).NumElements(); n != 1 {
		t.Errorf("scalar NumElements = %d, want 1", n)
	}
	if n := (TensorInfo{Shape: []int64{3, 0, 5}}).NumElements(); n != 0 {
		t.Errorf("empty NumElements = %d, want 0", n)
	}
}

func TestTruncatedFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, SingleFile)
	if err := os.WriteFile(p, []byte{1, 2, 3}, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, OpenOptions{})
	wantFormatError(t, err, p, "", "shorter than the 8-byte")
}

func TestHeaderLengthBeyondFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, SingleFile)
	b := make([]byte, 8+10)
	binary.LittleEndian.PutUint64(b, 11) // one byte more than present
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, OpenOptions{})
	wantFormatError(t, err, p, "", "beyond the file size")

	// A huge declared length is rejected before any allocation.
	binary.LittleEndian.PutUint64(b, 1<<62)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, OpenOptions{})
	wantFormatError(t, err, p, "", "exceeds the")
}

func TestInvalidJSONHeader(t *testing.T) {
	for name, hdr := range map[string]string{
		"garbage":  `{"a": {"dtype":`,
		"notobj":   `[1,2,3]`,
		"trailing": `{} {}`,
		"empty":    ``,
	} {
		t.Run(name, func(t *testing.T) {
			dir, p := singleDir(t, hdr, 0)
			_, err := Open(dir, OpenOptions{})
			wantFormatError(t, err, p, "", "")
			if !strings.Contains(err.Error(), "JSON") {
				t.Errorf("message %q should say the JSON is invalid", err)
			}
		})
	}
}

func TestMissingEntryFields(t *testing.T) {
	for field, hdr := range map[string]string{
		"dtype":        `{"w":{"shape":[2],"data_offsets":[0,8]}}`,
		"shape":        `{"w":{"dtype":"F32","data_offsets":[0,8]}}`,
		"data_offsets": `{"w":{"dtype":"F32","shape":[2]}}`,
	} {
		t.Run(field, func(t *testing.T) {
			dir, p := singleDir(t, hdr, 8)
			_, err := Open(dir, OpenOptions{})
			wantFormatError(t, err, p, "w", "missing "+field)
		})
	}
}

func TestDataOffsetsOutOfRange(t *testing.T) {
	cases := map[string]struct{ hdr, reason string }{
		"end beyond data": {`{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, "end beyond the data section"},
		"begin > end":     {`{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}`, "0 <= begin <= end"},
		"negative":        {`{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, "0 <= begin <= end"},
		"three values":    {`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}}`, "[begin,end]"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir, p := singleDir(t, c.hdr, 8)
			_, err := Open(dir, OpenOptions{})
			wantFormatError(t, err, p, "w", c.reason)
		})
	}
}

func TestOverlappingDataOffsets(t *testing.T) {
	hdr := `{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`
	dir, p := singleDir(t, hdr, 16)
	_, err := Open(dir, OpenOptions{})
	fe := wantFormatError(t, err, p, "b", "overlap")
	if !strings.Contains(fe.Reason, `"a"`) {
		t.Errorf("reason %q should name the other tensor", fe.Reason)
	}
}

func TestShapeProductMismatch(t *testing.T) {
	hdr := `{"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}}`
	dir, p := singleDir(t, hdr, 8)
	_, err := Open(dir, OpenOptions{})
	wantFormatError(t, err, p, "w", "shape/product mismatch")

	hdr = `{"w":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}}`
	dir, p = singleDir(t, hdr, 8)
	_, err = Open(dir, OpenOptions{})
	wantFormatError(t, err, p, "w", "negative dimension")

	hdr = `{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`
	dir, p = singleDir(t, hdr, 8)
	_, err = Open(dir, OpenOptions{})
	wantFormatError(t, err, p, "w", "overflows")
}

func TestMetadataMustBeStrings(t *testing.T) {
	hdr := `{"__metadata__":{"format":"pt","n":3},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
	dir, p := singleDir(t, hdr, 4)
	_, err := Open(dir, OpenOptions{})
	wantFormatError(t, err, p, "", `"n" is not a string`)
}

func TestDuplicateKeyInHeader(t *testing.T) {
	hdr := `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`
	dir, p := singleDir(t, hdr, 8)
	_, err := Open(dir, OpenOptions{})
	wantFormatError(t, err, p, "w", "duplicate")
}

func TestUnsupportedDType(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, SingleFile)
	writeST(t, p, []testTensor{
		{Name: "w", DType: F32, Shape: []int64{2}, Vals: []float32{1, 2}},
		{Name: "pos_ids", DType: I64, Shape: []int64{3}},
		{Name: "fp8", DType: F8E4M3, Shape: []int64{5}},
	}, nil)
	_, err := Open(dir, OpenOptions{})
	var ue *UnsupportedDTypeError
	if !errors.As(err, &ue) {
		t.Fatalf("want *UnsupportedDTypeError, got %T: %v", err, err)
	}
	if ue.File != p || ue.Tensor != "pos_ids" || ue.DType != I64 {
		t.Errorf("got %+v", ue)
	}
	if msg := err.Error(); !strings.Contains(msg, p) || !strings.Contains(msg, `"pos_ids"`) || !strings.Contains(msg, "I64") {
		t.Errorf("message %q must name file, tensor and dtype", msg)
	}

	m, err := Open(dir, OpenOptions{SkipUnsupported: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.Tensors) != 1 || m.Tensors[0].Name != "w" {
		t.Errorf("Tensors = %+v, want only w", m.Tensors)
	}
	if len(m.Skipped) != 2 || m.Skipped[0].Name != "pos_ids" || m.Skipped[1].Name != "fp8" {
		t.Errorf("Skipped = %+v", m.Skipped)
	}
	if m.NumParams() != 2 || m.SourceBytes() != 8 {
		t.Errorf("NumParams %d SourceBytes %d, want 2 and 8", m.NumParams(), m.SourceBytes())
	}
	buf := make([]float32, 3)
	if err := m.ReadFloat32(m.Skipped[0], 0, 3, buf, nil); !errors.As(err, &ue) {
		t.Errorf("ReadFloat32 of an I64 tensor: got %v, want *UnsupportedDTypeError", err)
	}
	raw := make([]byte, 24)
	if err := m.ReadRaw(m.Skipped[0], 0, 3, raw); err != nil {
		t.Errorf("ReadRaw of a skipped tensor: %v", err)
	}

	// An unknown dtype name is unsupported too (its size cannot be checked).
	dir2, p2 := singleDir(t, `{"q":{"dtype":"Q4_X","shape":[7],"data_offsets":[0,3]}}`, 3)
	_, err = Open(dir2, OpenOptions{})
	if !errors.As(err, &ue) || ue.File != p2 || ue.Tensor != "q" || ue.DType != "Q4_X" {
		t.Errorf("unknown dtype: got %v", err)
	}
}

func TestDirWithoutSafetensors(t *testing.T) {
	dir := t.TempDir()
	writeJSON(t, filepath.Join(dir, ConfigFile), map[string]any{"model_type": "llama"})
	_, err := Open(dir, OpenOptions{})
	if !errors.Is(err, ErrNoSafetensors) {
		t.Fatalf("want ErrNoSafetensors, got %v", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("message %q should name the directory", err)
	}
}

func TestMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	_, err := Open(dir, OpenOptions{})
	var pe *os.PathError
	if !errors.As(err, &pe) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want *os.PathError (not exist), got %T %v", err, err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("message %q should name the directory", err)
	}
	// A file instead of a directory.
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := Open(f, OpenOptions{}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Open(file) = %v", err)
	}
}

func TestSeveralSafetensorsWithoutIndex(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a.safetensors", "b.safetensors"} {
		writeST(t, filepath.Join(dir, n), []testTensor{{Name: n, DType: F32, Shape: []int64{1}, Vals: []float32{1}}}, nil)
	}
	_, err := Open(dir, OpenOptions{})
	fe := wantFormatError(t, err, dir, "", "no index")
	if !strings.Contains(fe.Reason, "a.safetensors, b.safetensors") {
		t.Errorf("reason %q should list the files", fe.Reason)
	}
}

// shardedFixture writes a 2-shard model with index; extra lets a test
// tamper with the weight map before it is written.
func shardedFixture(t *testing.T, tamper func(wm map[string]string)) (dir, s1, s2, index string) {
	t.Helper()
	dir = t.TempDir()
	s1 = filepath.Join(dir, "model-00001-of-00002.safetensors")
	s2 = filepath.Join(dir, "model-00002-of-00002.safetensors")
	writeST(t, s1, []testTensor{
		{Name: "z.weight", DType: BF16, Shape: []int64{2, 3}, Vals: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "a.weight", DType: F32, Shape: []int64{3}, Vals: []float32{-1, 0.5, 7}},
	}, map[string]string{"format": "pt"})
	writeST(t, s2, []testTensor{
		{Name: "b.bias", DType: F16, Shape: []int64{2}, Vals: []float32{0.25, -8}},
		{Name: "lm_head.weight", DType: F32, Shape: []int64{2, 2}, Vals: []float32{9, 8, 7, 6}},
	}, map[string]string{"format": "pt", "extra": "x"})
	wm := map[string]string{
		"z.weight": filepath.Base(s1), "a.weight": filepath.Base(s1),
		"b.bias": filepath.Base(s2), "lm_head.weight": filepath.Base(s2),
	}
	if tamper != nil {
		tamper(wm)
	}
	if err := WriteIndex(dir, wm, 12+12+4+16); err != nil {
		t.Fatal(err)
	}
	return dir, s1, s2, filepath.Join(dir, IndexFile)
}

func TestIndexNamesMissingShard(t *testing.T) {
	dir, _, _, index := shardedFixture(t, func(wm map[string]string) {
		wm["ghost.weight"] = "model-00003-of-00003.safetensors"
	})
	_, err := Open(dir, OpenOptions{})
	fe := wantFormatError(t, err, index, "ghost.weight", "does not exist")
	if !strings.Contains(fe.Reason, "model-00003-of-00003.safetensors") {
		t.Errorf("reason %q should name the shard", fe.Reason)
	}
}

func TestIndexNamesMissingTensor(t *testing.T) {
	dir, _, _, index := shardedFixture(t, func(wm map[string]string) {
		wm["ghost.weight"] = "model-00002-of-00002.safetensors"
	})
	_, err := Open(dir, OpenOptions{})
	wantFormatError(t, err, index, "ghost.weight", "not found in shard")
}

func TestTensorMissingFromIndex(t *testing.T) {
	dir, _, s2, _ := shardedFixture(t, func(wm map[string]string) { delete(wm, "b.bias") })
	_, err := Open(dir, OpenOptions{})
	wantFormatError(t, err, s2, "b.bias", "not listed")
}

func TestTensorInWrongShard(t *testing.T) {
	dir, s1, _, _ := shardedFixture(t, func(wm map[string]string) { wm["a.weight"] = "model-00002-of-00002.safetensors" })
	_, err := Open(dir, OpenOptions{})
	wantFormatError(t, err, s1, "a.weight", "maps it to")
}

func TestIndexShardPathEscape(t *testing.T) {
	dir, s1, s2, index := shardedFixture(t, nil)
	writeJSON(t, index, map[string]any{"weight_map": map[string]string{
		"z.weight": filepath.Base(s1), "a.weight": "../x.safetensors", "b.bias": filepath.Base(s2), "lm_head.weight": filepath.Base(s2)}})
	_, err := Open(dir, OpenOptions{})
	wantFormatError(t, err, index, "a.weight", "invalid shard name")
}

func TestDuplicateTensorAcrossShards(t *testing.T) {
	dir := t.TempDir()
	s1 := filepath.Join(dir, "model-00001-of-00002.safetensors")
	s2 := filepath.Join(dir, "model-00002-of-00002.safetensors")
	writeST(t, s1, []testTensor{{Name: "w", DType: F32, Shape: []int64{1}, Vals: []float32{1}}}, nil)
	writeST(t, s2, []testTensor{
		{Name: "v", DType: F32, Shape: []int64{1}, Vals: []float32{2}},
		{Name: "w", DType: F32, Shape: []int64{1}, Vals: []float32{3}},
	}, nil)
	if err := WriteIndex(dir, map[string]string{"w": filepath.Base(s1), "v": filepath.Base(s2)}, 12); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, OpenOptions{})
	fe := wantFormatError(t, err, s2, "w", "duplicate tensor name")
	if !strings.Contains(fe.Reason, s1) {
		t.Errorf("reason %q should name the other shard", fe.Reason)
	}
}
