package modelio

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/internal/outdir"
)

func TestGenLayoutDream7B(t *testing.T) {
	hs, cfg, err := GenLayout("dream-7b")
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 339 {
		t.Errorf("%d tensors, want 339", len(hs))
	}
	var params, bytes int64
	shapes := map[string][]int64{}
	for _, h := range hs {
		params += TensorInfo{Shape: h.Shape}.NumElements()
		bytes += h.Bytes()
		shapes[h.Name] = h.Shape
		if h.DType != BF16 {
			t.Errorf("%s: dtype %s", h.Name, h.DType)
		}
	}
	if params != 7_615_616_512 {
		t.Errorf("params = %d, want 7,615,616,512", params)
	}
	if bytes != 2*7_615_616_512 {
		t.Errorf("bytes = %d", bytes)
	}
	for name, want := range map[string][]int64{
		"model.embed_tokens.weight":                      {152064, 3584},
		"lm_head.weight":                                 {152064, 3584},
		"model.norm.weight":                              {3584},
		"model.layers.0.self_attn.q_proj.weight":         {3584, 3584},
		"model.layers.0.self_attn.q_proj.bias":           {3584},
		"model.layers.27.self_attn.k_proj.weight":        {512, 3584},
		"model.layers.27.self_attn.v_proj.bias":          {512},
		"model.layers.13.self_attn.o_proj.weight":        {3584, 3584},
		"model.layers.5.mlp.gate_proj.weight":            {18944, 3584},
		"model.layers.5.mlp.up_proj.weight":              {18944, 3584},
		"model.layers.5.mlp.down_proj.weight":            {3584, 18944},
		"model.layers.9.input_layernorm.weight":          {3584},
		"model.layers.9.post_attention_layernorm.weight": {3584},
	} {
		if !slices.Equal(shapes[name], want) {
			t.Errorf("%s: shape %v, want %v", name, shapes[name], want)
		}
	}
	if _, ok := shapes["model.layers.28.input_layernorm.weight"]; ok {
		t.Error("layer 28 must not exist")
	}
	for k, want := range map[string]any{"model_type": "Dream", "hidden_size": int64(3584), "intermediate_size": int64(18944),
		"num_hidden_layers": int64(28), "num_attention_heads": int64(28), "num_key_value_heads": int64(4),
		"vocab_size": int64(152064), "torch_dtype": "bfloat16", "mask_token_id": int64(151666)} {
		if cfg[k] != want {
			t.Errorf("config %s = %v (%T), want %v", k, cfg[k], cfg[k], want)
		}
	}
	if a, _ := cfg["architectures"].([]any); len(a) != 1 || a[0] != "DreamModel" {
		t.Errorf("architectures = %v", cfg["architectures"])
	}

	// Four shards, roughly even, in order, covering every tensor once.
	shards := shardSplit(hs, 4)
	if len(shards) != 4 {
		t.Fatalf("%d shards", len(shards))
	}
	var all []TensorHeader
	for i, s := range shards {
		var b int64
		for _, h := range s {
			b += h.Bytes()
		}
		if frac := float64(b) / float64(bytes); frac < 0.2 || frac > 0.3 {
			t.Errorf("shard %d holds %.3f of the bytes", i+1, frac)
		}
		all = append(all, s...)
	}
	if !slices.EqualFunc(all, hs, func(a, b TensorHeader) bool { return a.Name == b.Name }) {
		t.Error("shards do not preserve the tensor order")
	}
	if _, _, err := GenLayout("gpt-5"); err == nil {
		t.Error("unknown preset accepted")
	}
	if !slices.Equal(Presets(), []string{"tiny", "tiny-llama", "dream-7b"}) {
		t.Errorf("Presets = %v", Presets())
	}
}

func genTiny(t *testing.T, seed int64, dt DType) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "tiny")
	var last, total int64
	err := Generate(context.Background(), GenOptions{Preset: "tiny", DType: dt, Out: out, Seed: seed,
		Progress: func(d, tot int64) { last, total = d, tot }})
	if err != nil {
		t.Fatal(err)
	}
	if last != total || total == 0 {
		t.Errorf("progress ended at %d/%d", last, total)
	}
	return out
}

func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func TestGenTinyDeterministic(t *testing.T) {
	a := dirFiles(t, genTiny(t, 1, ""))
	b := dirFiles(t, genTiny(t, 1, BF16))
	c := dirFiles(t, genTiny(t, 2, ""))
	want := []string{outdir.MarkerFile, ConfigFile, "generation_config.json", SingleFile, "tokenizer.json", "tokenizer_config.json"}
	var names []string
	for n := range a {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Errorf("files = %v, want %v", names, want)
	}
	for n := range a {
		if !bytes.Equal(a[n], b[n]) {
			t.Errorf("%s differs between two generations with the same seed", n)
		}
	}
	if bytes.Equal(a[SingleFile], c[SingleFile]) {
		t.Error("different seeds gave identical weights")
	}
	if n := len(a[SingleFile]); n < 2<<20 || n > 8<<20 {
		t.Errorf("tiny model is %d bytes, want a few MB", n)
	}
}

func TestGenTinyOpensAndLooksRealistic(t *testing.T) {
	out := genTiny(t, 42, "")
	m, err := Open(out, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.Tensors) != 2+2*12+1 {
		t.Errorf("%d tensors, want 27", len(m.Tensors))
	}
	hs, _, _ := GenLayout("tiny")
	for i, h := range hs {
		if m.Tensors[i].Name != h.Name || !slices.Equal(m.Tensors[i].Shape, h.Shape) || m.Tensors[i].DType != BF16 {
			t.Errorf("tensor %d = %s %v %s, want %s %v", i, m.Tensors[i].Name, m.Tensors[i].Shape, m.Tensors[i].DType, h.Name, h.Shape)
		}
	}
	if k, _ := m.Lookup("model.layers.1.self_attn.k_proj.weight"); !slices.Equal(k.Shape, []int64{128, 256}) {
		t.Errorf("k_proj shape %v, want [128 256]", k.Shape)
	}
	mod, ev, err := DetectModality(m)
	if err != nil || mod != "text" {
		t.Errorf("DetectModality = %q (%s), %v; want text", mod, ev, err)
	}
	if m.Config["torch_dtype"] != "bfloat16" || m.Config["mask_token_id"] != 1023.0 {
		t.Errorf("config = %v", m.Config)
	}

	read := func(name string) ([]float32, TensorInfo) {
		ti, ok := m.Lookup(name)
		if !ok {
			t.Fatalf("no %s", name)
		}
		v := make([]float32, ti.NumElements())
		if err := m.ReadFloat32(ti, 0, int64(len(v)), v, nil); err != nil {
			t.Fatal(err)
		}
		return v, ti
	}
	std := func(v []float32) float64 {
		var s, s2 float64
		for _, x := range v {
			s += float64(x)
			s2 += float64(x) * float64(x)
		}
		n := float64(len(v))
		return math.Sqrt(s2/n - (s/n)*(s/n))
	}
	if e, _ := read("model.embed_tokens.weight"); math.Abs(std(e)-0.02) > 0.001 {
		t.Errorf("embedding std %.4f, want ≈0.02", std(e))
	}
	if b, _ := read("model.layers.0.self_attn.q_proj.bias"); math.Abs(std(b)-0.01) > 0.002 {
		t.Errorf("bias std %.4f, want ≈0.01", std(b))
	}
	norm, _ := read("model.layers.1.input_layernorm.weight")
	var mean float64
	for _, x := range norm {
		if x <= 0 {
			t.Fatalf("norm weight %v not positive", x)
		}
		mean += float64(x) / float64(len(norm))
	}
	if math.Abs(mean-1) > 0.02 || std(norm) < 0.03 || std(norm) > 0.07 {
		t.Errorf("norm mean %.3f std %.3f, want ≈1 and ≈0.05", mean, std(norm))
	}

	// Outlier input channels in the input projections, none in o_proj.
	colMaxRatio := func(name string) float64 {
		v, ti := read(name)
		rows, cols := int(ti.Shape[0]), int(ti.Shape[1])
		mx := make([]float64, cols)
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				mx[c] = max(mx[c], math.Abs(float64(v[r*cols+c])))
			}
		}
		sorted := slices.Clone(mx)
		slices.Sort(sorted)
		return sorted[cols-1] / sorted[cols/2]
	}
	for _, name := range []string{"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight"} {
		if r := colMaxRatio(name); r <= 5 {
			t.Errorf("%s: max column |w| is %.1f× the median column, want > 5× (outlier channels)", name, r)
		}
	}
	if r := colMaxRatio("model.layers.0.self_attn.o_proj.weight"); r > 3 {
		t.Errorf("o_proj has outlier columns (ratio %.1f)", r)
	}
	// Row spread: per-row std varies (log-normal factor).
	v, ti := read("model.layers.0.mlp.down_proj.weight")
	cols := int(ti.Shape[1])
	lo, hi := math.Inf(1), 0.0
	for r := 0; r < int(ti.Shape[0]); r++ {
		s := std(v[r*cols : (r+1)*cols])
		lo, hi = min(lo, s), max(hi, s)
	}
	if hi/lo < 2 {
		t.Errorf("row std spread %.2f..%.4f too narrow", lo, hi)
	}
}

// Sharding does not change values: they depend on (seed, name, index) only.
func TestGenShardedEqualsUnsharded(t *testing.T) {
	p, _ := findPreset("tiny")
	hs := p.layout(F32)
	dir := t.TempDir()
	meta := map[string]string{"format": "pt"}
	if err := runGeneration(context.Background(), dir, [][]TensorHeader{hs}, []string{"one.safetensors"}, 5, meta, nil); err != nil {
		t.Fatal(err)
	}
	split := shardSplit(hs, 3)
	names := []string{"a-1.safetensors", "a-2.safetensors", "a-3.safetensors"}
	if err := runGeneration(context.Background(), dir, split, names, 5, meta, nil); err != nil {
		t.Fatal(err)
	}
	one, err := Open(filepath.Join(dir), OpenOptions{})
	if err == nil {
		one.Close()
		t.Fatal("several safetensors without index must not open")
	}
	read := func(file, name string) []float32 {
		f, h, err := openShard(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, ti := range h.tensors {
			if ti.Name == name {
				raw := make([]byte, ti.Bytes)
				if _, err := f.ReadAt(raw, ti.Offset); err != nil {
					t.Fatal(err)
				}
				v := make([]float32, ti.NumElements())
				fp.DecodeF32(v, raw)
				return v
			}
		}
		t.Fatalf("%s not in %s", name, file)
		return nil
	}
	for i, s := range split {
		for _, h := range s {
			if !slices.Equal(read("one.safetensors", h.Name), read(names[i], h.Name)) {
				t.Errorf("%s differs between sharded and unsharded generation", h.Name)
			}
		}
	}
}

func TestGenerateRefusesAndCancels(t *testing.T) {
	base := t.TempDir()
	out := filepath.Join(base, "m")
	os.Mkdir(out, 0o755)
	os.WriteFile(filepath.Join(out, "keep"), []byte("x"), 0o644)
	if err := Generate(context.Background(), GenOptions{Preset: "tiny", Out: out}); err == nil ||
		!errors.Is(err, outdir.ErrNotEmpty) {
		t.Errorf("non-empty out: %v", err)
	}
	if err := Generate(context.Background(), GenOptions{Preset: "tiny", Out: out, Overwrite: true}); err == nil ||
		!strings.Contains(err.Error(), "not created by ArrowQuant") {
		t.Errorf("overwrite of a directory ArrowQuant did not create: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(out, "keep")); err != nil || string(b) != "x" {
		t.Errorf("the refused directory changed: %q, %v", b, err)
	}
	for _, o := range []GenOptions{{Preset: "nope", Out: out + "2"}, {Preset: "tiny", DType: F64, Out: out + "2"}, {Preset: "tiny"}} {
		if err := Generate(context.Background(), o); err == nil {
			t.Errorf("Generate(%+v) accepted", o)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Generate(ctx, GenOptions{Preset: "tiny", Out: filepath.Join(base, "c"), Progress: func(d, tot int64) {
		calls++
		if d > 0 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled generation returned %v", err)
	}
	ents, _ := os.ReadDir(base)
	if len(ents) != 1 || ents[0].Name() != "m" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("cancelled generation left %v", names)
	}

	// An empty existing directory is fine and replaced.
	empty := filepath.Join(base, "empty")
	os.Mkdir(empty, 0o755)
	if err := Generate(context.Background(), GenOptions{Preset: "tiny", Out: empty, DType: F16}); err != nil {
		t.Fatal(err)
	}
	m, err := Open(empty, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Tensors[0].DType != F16 || m.Config["torch_dtype"] != "float16" {
		t.Errorf("F16 generation: %s %v", m.Tensors[0].DType, m.Config["torch_dtype"])
	}
}
