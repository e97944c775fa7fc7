package modelio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
)

// representable rounds v to the nearest value of dt.
func representable(dt DType, v float32) float32 {
	switch dt {
	case F16:
		return fp.HalfToFloat32(fp.Float32ToHalf(v))
	case BF16:
		return fp.BF16ToFloat32(fp.Float32ToBF16(v))
	}
	return v
}

func TestRoundTripAllDTypes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	dir := t.TempDir()
	p := filepath.Join(dir, SingleFile)
	var tensors []testTensor
	for _, dt := range []DType{F32, F16, BF16, F64} {
		vals := make([]float32, 37*5)
		for i := range vals {
			vals[i] = representable(dt, float32(rng.NormFloat64()*3))
		}
		vals[0], vals[1], vals[2] = 0, -0.5, 1024 // exact everywhere
		tensors = append(tensors,
			testTensor{Name: "m." + string(dt), DType: dt, Shape: []int64{37, 5}, Vals: vals},
			testTensor{Name: "s." + string(dt), DType: dt, Shape: []int64{}, Vals: []float32{representable(dt, 3.25)}},
			testTensor{Name: "e." + string(dt), DType: dt, Shape: []int64{0, 4}, Vals: []float32{}},
		)
	}
	writeST(t, p, tensors, map[string]string{"format": "pt", "note": `quote " and <tag>`})

	m, err := Open(dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.Tensors) != len(tensors) {
		t.Fatalf("%d tensors, want %d", len(m.Tensors), len(tensors))
	}
	if m.Metadata["note"] != `quote " and <tag>` || m.Metadata["format"] != "pt" {
		t.Errorf("metadata = %v", m.Metadata)
	}
	var hdrLen uint64
	raw, _ := os.ReadFile(p)
	hdrLen = binary.LittleEndian.Uint64(raw)
	if hdrLen%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", hdrLen)
	}
	var params int64
	for i, want := range tensors {
		got := m.Tensors[i] // written order == offset order
		if got.Name != want.Name || got.DType != want.DType || !reflect.DeepEqual(got.Shape, want.Shape) {
			t.Fatalf("tensor %d = %+v, want %s %s %v", i, got, want.Name, want.DType, want.Shape)
		}
		if got.File != p {
			t.Errorf("File = %q, want %q", got.File, p)
		}
		params += int64(len(want.Vals))
		// Whole tensor, then odd windows.
		n := got.NumElements()
		buf := make([]float32, n)
		if err := m.ReadFloat32(got, 0, n, buf, nil); err != nil {
			t.Fatal(err)
		}
		for j := range buf {
			if math.Float32bits(buf[j]) != math.Float32bits(want.Vals[j]) {
				t.Fatalf("%s[%d] = %v, want %v", got.Name, j, buf[j], want.Vals[j])
			}
		}
		for _, w := range [][2]int64{{3, 7}, {n - 1, 1}, {1, n - 2}, {n, 0}} {
			if n == 0 || w[1] < 0 || w[0] > n {
				continue
			}
			dst := make([]float32, w[1])
			scratch := make([]byte, w[1]*int64(got.DType.Size()))
			if err := m.ReadFloat32(got, w[0], w[1], dst, scratch); err != nil {
				t.Fatalf("%s window %v: %v", got.Name, w, err)
			}
			for j := range dst {
				if dst[j] != want.Vals[w[0]+int64(j)] {
					t.Fatalf("%s[%d] = %v, want %v", got.Name, w[0]+int64(j), dst[j], want.Vals[w[0]+int64(j)])
				}
			}
		}
	}
	if m.NumParams() != params {
		t.Errorf("NumParams = %d, want %d", m.NumParams(), params)
	}
	var wantBytes int64
	for _, tt := range tensors {
		wantBytes += int64(len(tt.Vals) * tt.DType.Size())
	}
	if m.SourceBytes() != wantBytes || int64(len(raw)) != int64(8+hdrLen)+wantBytes {
		t.Errorf("SourceBytes = %d, file %d bytes; want data %d", m.SourceBytes(), len(raw), wantBytes)
	}
}

func TestReadBoundsChecked(t *testing.T) {
	dir := t.TempDir()
	writeST(t, filepath.Join(dir, SingleFile), []testTensor{{Name: "w", DType: F16, Shape: []int64{4}, Vals: []float32{1, 2, 3, 4}}}, nil)
	m, err := Open(dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	w := m.Tensors[0]
	buf := make([]byte, 16)
	for _, c := range [][2]int64{{-1, 1}, {0, 5}, {3, 2}, {5, 0}, {0, -1}} {
		if err := m.ReadRaw(w, c[0], c[1], buf); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("ReadRaw(%d,%d) = %v, want out of range", c[0], c[1], err)
		}
	}
	if err := m.ReadRaw(w, 0, 4, buf[:7]); err == nil {
		t.Error("short dst accepted")
	}
	forged := w
	forged.Offset += 2
	if err := m.ReadRaw(forged, 0, 1, buf); err == nil {
		t.Error("a TensorInfo not matching the model was accepted")
	}
	if err := m.ReadRaw(TensorInfo{Name: "nope"}, 0, 1, buf); err == nil {
		t.Error("unknown tensor accepted")
	}
	if err := m.ReadRaw(w, 2, 2, buf); err != nil || !bytes.Equal(buf[:4], []byte{0x00, 0x42, 0x00, 0x44}) {
		t.Errorf("ReadRaw(2,2) = % x, %v; want 00 42 00 44 (half 3, 4)", buf[:4], err)
	}
}

// TestGoldenHFBytes checks the writer against the bytes of the reference
// implementation (safetensors' Python test_serialization).
func TestGoldenHFBytes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.safetensors")
	w, err := CreateSafetensors(p, []TensorHeader{{Name: "test", DType: I32, Shape: []int64{2, 2}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	want := append([]byte("@\x00\x00\x00\x00\x00\x00\x00"+`{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}`+"    "), make([]byte, 16)...)
	if !bytes.Equal(got, want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}

func TestWriterDeclaredSize(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "o.safetensors")
	hs := []TensorHeader{{Name: "a", DType: F32, Shape: []int64{2}}, {Name: "b", DType: BF16, Shape: []int64{3}}}
	w, err := CreateSafetensors(p, hs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.Remaining() != 14 {
		t.Errorf("Remaining = %d, want 14", w.Remaining())
	}
	if _, err := w.Write(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Write(make([]byte, 5)); err == nil || n != 0 {
		t.Errorf("write beyond declared size: n=%d err=%v", n, err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "10 of 14") {
		t.Errorf("Close after short write = %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("short write left files behind: %v", ents)
	}

	for _, bad := range [][]TensorHeader{
		{{Name: "a", DType: F32, Shape: []int64{1}}, {Name: "a", DType: F32, Shape: []int64{1}}},
		{{Name: "", DType: F32}},
		{{Name: "__metadata__", DType: F32}},
		{{Name: "x", DType: "NOPE", Shape: []int64{1}}},
		{{Name: "x", DType: F32, Shape: []int64{-2}}},
	} {
		if _, err := CreateSafetensors(p, bad, nil); err == nil {
			t.Errorf("CreateSafetensors(%+v) accepted", bad)
		}
	}
}

func TestShardedDirOrderingAndAux(t *testing.T) {
	dir, s1, s2, _ := shardedFixture(t, nil)
	writeJSON(t, filepath.Join(dir, ConfigFile), map[string]any{"model_type": "llama", "hidden_size": 2})
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "README.md", "merges.txt", "pytorch_model.bin", "w.pt"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
	}
	os.Mkdir(filepath.Join(dir, "subdir"), 0o755)
	os.Symlink(filepath.Join(dir, "README.md"), filepath.Join(dir, "linked.txt"))

	m, err := Open(dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !reflect.DeepEqual(m.Shards, []string{s1, s2}) {
		t.Errorf("Shards = %v", m.Shards)
	}
	var names []string
	for _, ti := range m.Tensors {
		names = append(names, ti.Name)
	}
	if want := []string{"z.weight", "a.weight", "b.bias", "lm_head.weight"}; !reflect.DeepEqual(names, want) {
		t.Errorf("order = %v, want %v (shard order, then data offset)", names, want)
	}
	if m.Tensors[1].File != s1 || m.Tensors[2].File != s2 {
		t.Errorf("files: %+v", m.Tensors)
	}
	if m.Metadata["format"] != "pt" || m.Metadata["extra"] != "x" {
		t.Errorf("Metadata = %v", m.Metadata)
	}
	if m.Config["model_type"] != "llama" || m.Config["hidden_size"] != 2.0 {
		t.Errorf("Config = %v", m.Config)
	}
	if m.NumParams() != 6+3+2+4 || m.SourceBytes() != 12+12+4+16 {
		t.Errorf("NumParams %d SourceBytes %d", m.NumParams(), m.SourceBytes())
	}
	got := make([]float32, 3)
	if err := m.ReadFloat32(m.Tensors[0], 2, 3, got, nil); err != nil || !reflect.DeepEqual(got, []float32{3, 4, 5}) {
		t.Errorf("z.weight[2:5] = %v, %v", got, err)
	}
	if err := m.ReadFloat32(m.Tensors[2], 1, 1, got, nil); err != nil || got[0] != -8 {
		t.Errorf("b.bias[1] = %v, %v", got[0], err)
	}
	aux, err := m.AuxFiles()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"README.md", ConfigFile, "linked.txt", "merges.txt", "tokenizer.json", "tokenizer_config.json"}
	if !reflect.DeepEqual(aux, want) {
		t.Errorf("AuxFiles = %v, want %v", aux, want)
	}
	if ti, ok := m.Lookup("lm_head.weight"); !ok || ti.Shape[0] != 2 {
		t.Errorf("Lookup = %+v %v", ti, ok)
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := m.ReadFloat32(m.Tensors[0], 0, 1, got, nil); err == nil {
		t.Error("read after Close succeeded")
	}
}

func TestIndexStringMetadataMerged(t *testing.T) {
	dir, _, _, index := shardedFixture(t, nil)
	b, _ := os.ReadFile(index)
	b = bytes.Replace(b, []byte(`"total_size"`), []byte(`"producer": "unit", "total_size"`), 1)
	os.WriteFile(index, b, 0o644)
	m, err := Open(dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Metadata["producer"] != "unit" {
		t.Errorf("Metadata = %v", m.Metadata)
	}
	if _, ok := m.Metadata["total_size"]; ok {
		t.Error("non-string index metadata must not be merged")
	}
}

func TestDirForms(t *testing.T) {
	one := []testTensor{{Name: "w", DType: F32, Shape: []int64{1}, Vals: []float32{5}}}
	t.Run("diffusers", func(t *testing.T) {
		dir := t.TempDir()
		writeST(t, filepath.Join(dir, DiffusersFile), one, nil)
		writeST(t, filepath.Join(dir, "diffusion_pytorch_model.fp16.safetensors"), one, nil) // variant: ignored
		m, err := Open(dir, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if len(m.Shards) != 1 || filepath.Base(m.Shards[0]) != DiffusersFile {
			t.Errorf("Shards = %v", m.Shards)
		}
	})
	t.Run("diffusers index", func(t *testing.T) {
		dir := t.TempDir()
		writeST(t, filepath.Join(dir, "diffusion_pytorch_model-00001-of-00001.safetensors"), one, nil)
		writeJSON(t, filepath.Join(dir, DiffusersIndexFile), map[string]any{
			"weight_map": map[string]string{"w": "diffusion_pytorch_model-00001-of-00001.safetensors"}})
		m, err := Open(dir, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if len(m.Tensors) != 1 {
			t.Errorf("Tensors = %v", m.Tensors)
		}
	})
	t.Run("single other name", func(t *testing.T) {
		dir := t.TempDir()
		writeST(t, filepath.Join(dir, "weights.safetensors"), one, nil)
		m, err := Open(dir, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if filepath.Base(m.Shards[0]) != "weights.safetensors" {
			t.Errorf("Shards = %v", m.Shards)
		}
	})
	t.Run("model.safetensors wins over others", func(t *testing.T) {
		dir := t.TempDir()
		writeST(t, filepath.Join(dir, SingleFile), one, nil)
		writeST(t, filepath.Join(dir, "other.safetensors"), one, nil)
		m, err := Open(dir, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if filepath.Base(m.Shards[0]) != SingleFile {
			t.Errorf("Shards = %v", m.Shards)
		}
	})
}

func TestConcurrentReads(t *testing.T) {
	dir := t.TempDir()
	vals := make([]float32, 10000)
	for i := range vals {
		vals[i] = float32(i)
	}
	writeST(t, filepath.Join(dir, SingleFile), []testTensor{{Name: "w", DType: F32, Shape: []int64{100, 100}, Vals: vals}}, nil)
	m, err := Open(dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := make([]float32, 100)
			scratch := make([]byte, 400)
			for r := g; r < 100; r += 8 {
				if err := m.ReadFloat32(m.Tensors[0], int64(r*100), 100, dst, scratch); err != nil {
					errs <- err
					return
				}
				for j, v := range dst {
					if v != float32(r*100+j) {
						errs <- os.ErrInvalid
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestWriteIndexFormat(t *testing.T) {
	dir := t.TempDir()
	if err := WriteIndex(dir, map[string]string{"b": "m-2.safetensors", "a": "m-1.safetensors"}, 42); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, IndexFile))
	want := "{\n  \"metadata\": {\n    \"total_size\": 42\n  },\n  \"weight_map\": {\n    \"a\": \"m-1.safetensors\",\n    \"b\": \"m-2.safetensors\"\n  }\n}\n"
	if string(b) != want {
		t.Errorf("index =\n%s\nwant\n%s", b, want)
	}
	if err := WriteIndex(dir, map[string]string{"a": "../evil.safetensors"}, 1); err == nil {
		t.Error("escaping shard name accepted")
	}
}

func TestDiscoveryHints(t *testing.T) {
	root := t.TempDir()
	unet := filepath.Join(root, "unet")
	if err := os.MkdirAll(unet, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(unet, DiffusersFile), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(root, "pytorch_model.bin"), []byte("x"), 0o644)
	_, err := Open(root, OpenOptions{})
	if !errors.Is(err, ErrNoSafetensors) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"unet/", "--model " + unet, "pytorch_model.bin", "PyTorch pickles", "convert"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}
