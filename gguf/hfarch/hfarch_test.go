package hfarch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/arrowquant/arrowquant/modelio"
)

var (
	presetMu   sync.Mutex
	presetDirs = map[string]string{}
	presetRoot string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if presetRoot != "" {
		os.RemoveAll(presetRoot)
	}
	os.Exit(code)
}

// genPreset returns a directory holding a synthetic preset's JSON files
// (config, tokenizer; generated once per test binary, copied per call)
// and the preset's tensors.
func genPreset(t *testing.T, preset string) (string, []TensorInfo) {
	t.Helper()
	presetMu.Lock()
	src, ok := presetDirs[preset]
	if !ok {
		var err error
		if presetRoot == "" {
			if presetRoot, err = os.MkdirTemp("", "hfarch-presets-"); err != nil {
				presetMu.Unlock()
				t.Fatal(err)
			}
		}
		src = filepath.Join(presetRoot, preset)
		err = modelio.Generate(context.Background(), modelio.GenOptions{Preset: preset, Out: src, Seed: 1})
		if err != nil {
			presetMu.Unlock()
			t.Fatal(err)
		}
		presetDirs[preset] = src
	}
	presetMu.Unlock()
	dir := filepath.Join(t.TempDir(), preset)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	hs, _, err := modelio.GenLayout(preset)
	if err != nil {
		t.Fatal(err)
	}
	return dir, headers(hs)
}

func headers(hs []modelio.TensorHeader) []TensorInfo {
	out := make([]TensorInfo, len(hs))
	for i, h := range hs {
		out[i] = TensorInfo{Name: h.Name, Shape: h.Shape}
	}
	return out
}

func keys(a *Arch) []string {
	var out []string
	for _, kv := range a.KVs {
		out = append(out, kv.Key)
	}
	return out
}

// wantKV checks a KV's Go type and value.
func wantKV(t *testing.T, a *Arch, key string, want any) {
	t.Helper()
	got, ok := a.Lookup(key)
	if !ok {
		t.Errorf("%s missing", key)
		return
	}
	if fmt.Sprintf("%T %v", got, got) != fmt.Sprintf("%T %v", want, want) {
		t.Errorf("%s = %T %v, want %T %v", key, got, got, want, want)
	}
}

func kvStrings(t *testing.T, a *Arch, key string) []string {
	t.Helper()
	v, _ := a.Lookup(key)
	s, ok := v.([]string)
	if !ok {
		t.Fatalf("%s is %T", key, v)
	}
	return s
}

func kvInts(t *testing.T, a *Arch, key string) []int32 {
	t.Helper()
	v, _ := a.Lookup(key)
	s, ok := v.([]int32)
	if !ok {
		t.Fatalf("%s is %T", key, v)
	}
	return s
}

func TestDescribeTinyDream(t *testing.T) {
	dir, tensors := genPreset(t, "tiny")
	a, err := Describe(dir, tensors, Options{Runnable: true})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "dream" || a.HFClass != "DreamModel" || !a.Known || !a.Runnable || len(a.Warnings) > 0 {
		t.Errorf("arch %q %q known %v runnable %v warnings %v", a.Name, a.HFClass, a.Known, a.Runnable, a.Warnings)
	}
	// The converter's order: general.*, TextModel's hparams, DreamModel's,
	// then the vocabulary and SpecialVocab (ids in discovery order).
	wantKeys := []string{
		"general.architecture", "general.type", "general.name", "general.size_label",
		"dream.block_count", "dream.context_length", "dream.embedding_length", "dream.feed_forward_length",
		"dream.attention.head_count", "dream.attention.head_count_kv", "dream.rope.freq_base",
		"dream.attention.layer_norm_rms_epsilon", "dream.attention.causal", "tokenizer.ggml.mask_token_id",
		"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
		"tokenizer.ggml.merges", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
		"tokenizer.ggml.bos_token_id", "tokenizer.chat_template",
	}
	if got := keys(a); !slices.Equal(got, wantKeys) {
		t.Errorf("keys:\n got %q\nwant %q", got, wantKeys)
	}
	wantKV(t, a, "general.architecture", "dream")
	wantKV(t, a, "general.type", "model")
	wantKV(t, a, "general.name", "Tiny")
	wantKV(t, a, "general.size_label", "2.0M")
	wantKV(t, a, "dream.block_count", uint32(2))
	wantKV(t, a, "dream.context_length", uint32(4096))
	wantKV(t, a, "dream.embedding_length", uint32(256))
	wantKV(t, a, "dream.feed_forward_length", uint32(704))
	wantKV(t, a, "dream.attention.head_count", uint32(4))
	wantKV(t, a, "dream.attention.head_count_kv", uint32(2))
	wantKV(t, a, "dream.rope.freq_base", float32(1e6))
	wantKV(t, a, "dream.attention.layer_norm_rms_epsilon", float32(1e-6))
	wantKV(t, a, "dream.attention.causal", false)
	wantKV(t, a, "tokenizer.ggml.mask_token_id", uint32(1023))
	wantKV(t, a, "tokenizer.ggml.model", "gpt2")
	wantKV(t, a, "tokenizer.ggml.pre", "qwen2")
	wantKV(t, a, "tokenizer.ggml.eos_token_id", uint32(1020))
	wantKV(t, a, "tokenizer.ggml.padding_token_id", uint32(1020))
	wantKV(t, a, "tokenizer.ggml.bos_token_id", uint32(1020))
	toks, types := kvStrings(t, a, "tokenizer.ggml.tokens"), kvInts(t, a, "tokenizer.ggml.token_type")
	if len(toks) != 1024 || len(types) != 1024 {
		t.Fatalf("%d tokens, %d types", len(toks), len(types))
	}
	for id, want := range map[int]string{0: "!", 220: "Ġ", 198: "Ċ", 256: "Ġt", 1020: "<|endoftext|>", 1023: "<|mask|>"} {
		if toks[id] != want {
			t.Errorf("token %d = %q, want %q", id, toks[id], want)
		}
	}
	for id, typ := range types {
		want := TokenNormal
		if id >= 1020 {
			want = TokenControl
		}
		if typ != want {
			t.Errorf("token %d %q type %d, want %d", id, toks[id], typ, want)
		}
	}
	if m := kvStrings(t, a, "tokenizer.ggml.merges"); len(m) != 764 || m[0] != "Ġ t" || m[3] != "Ġt he" {
		t.Errorf("%d merges, first %q", len(m), m[:4])
	}
	if ct, _ := a.Lookup("tokenizer.chat_template"); !strings.Contains(ct.(string), "<|im_start|>") {
		t.Errorf("chat template %q", ct)
	}

	// Tensor names: the Qwen2 layout, biases included, nothing permuted.
	want := map[string]string{
		"model.embed_tokens.weight":                       "token_embd.weight",
		"model.layers.0.self_attn.q_proj.weight":          "blk.0.attn_q.weight",
		"model.layers.0.self_attn.q_proj.bias":            "blk.0.attn_q.bias",
		"model.layers.1.self_attn.k_proj.bias":            "blk.1.attn_k.bias",
		"model.layers.1.self_attn.v_proj.weight":          "blk.1.attn_v.weight",
		"model.layers.1.self_attn.o_proj.weight":          "blk.1.attn_output.weight",
		"model.layers.0.mlp.gate_proj.weight":             "blk.0.ffn_gate.weight",
		"model.layers.0.mlp.up_proj.weight":               "blk.0.ffn_up.weight",
		"model.layers.1.mlp.down_proj.weight":             "blk.1.ffn_down.weight",
		"model.layers.1.input_layernorm.weight":           "blk.1.attn_norm.weight",
		"model.layers.0.post_attention_layernorm.weight":  "blk.0.ffn_norm.weight",
		"model.norm.weight":                               "output_norm.weight",
		"lm_head.weight":                                  "output.weight",
		"model.layers.0.self_attn.rotary_emb.inv_freq.xx": "",
	}
	for hf, g := range want {
		got, ok := a.TensorName(hf)
		if g == "" {
			if ok {
				t.Errorf("%s mapped to %s", hf, got)
			}
			continue
		}
		if !ok || got != g {
			t.Errorf("%s → %q %v, want %q", hf, got, ok, g)
		}
	}
	if len(a.Tensors) != len(tensors) {
		t.Errorf("%d mappings for %d tensors", len(a.Tensors), len(tensors))
	}
	for _, m := range a.Tensors {
		if m.Permute != nil || m.Drop {
			t.Errorf("%s: permute %v drop %v", m.HF, m.Permute, m.Drop)
		}
	}
}

func TestDescribeTinyLlama(t *testing.T) {
	dir, tensors := genPreset(t, "tiny-llama")
	a, err := Describe(dir, tensors, Options{Runnable: true, Name: "Tiny Llama Test"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "llama" || !a.Runnable || len(a.Warnings) > 0 {
		t.Errorf("arch %q runnable %v warnings %v", a.Name, a.Runnable, a.Warnings)
	}
	wantKeys := []string{
		"general.architecture", "general.type", "general.name", "general.size_label",
		"llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
		"llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
		"llama.attention.layer_norm_rms_epsilon", "llama.attention.key_length", "llama.attention.value_length",
		"llama.vocab_size", "llama.rope.dimension_count",
		"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
		"tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
		"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_sep_token", "tokenizer.chat_template",
	}
	if got := keys(a); !slices.Equal(got, wantKeys) {
		t.Errorf("keys:\n got %q\nwant %q", got, wantKeys)
	}
	wantKV(t, a, "general.name", "Tiny Llama Test")
	wantKV(t, a, "llama.rope.freq_base", float32(500000))
	wantKV(t, a, "llama.attention.layer_norm_rms_epsilon", float32(1e-5))
	wantKV(t, a, "llama.attention.key_length", uint32(64))
	wantKV(t, a, "llama.vocab_size", uint32(1024))
	wantKV(t, a, "llama.rope.dimension_count", uint32(64))
	wantKV(t, a, "tokenizer.ggml.pre", "llama-bpe")
	wantKV(t, a, "tokenizer.ggml.bos_token_id", uint32(1019))
	wantKV(t, a, "tokenizer.ggml.eos_token_id", uint32(1023))
	wantKV(t, a, "tokenizer.ggml.add_bos_token", true)
	wantKV(t, a, "tokenizer.ggml.add_sep_token", false)
	if toks := kvStrings(t, a, "tokenizer.ggml.tokens"); len(toks) != 1024 || toks[1019] != "<|begin_of_text|>" || toks[1023] != "<|eot_id|>" {
		t.Errorf("tokens: %d, %q %q", len(toks), toks[1019], toks[1023])
	}
	if m := kvStrings(t, a, "tokenizer.ggml.merges"); len(m) != 763 { // written as pairs in tokenizer.json
		t.Errorf("%d merges", len(m))
	}
	for _, m := range a.Tensors {
		var want *RopePermutation
		switch {
		case strings.HasSuffix(m.HF, "q_proj.weight"):
			want = &RopePermutation{Heads: 4, HeadDim: 64}
		case strings.HasSuffix(m.HF, "k_proj.weight"):
			want = &RopePermutation{Heads: 2, HeadDim: 64}
		}
		if (want == nil) != (m.Permute == nil) || (want != nil && *want != *m.Permute) {
			t.Errorf("%s: permutation %v, want %v", m.HF, m.Permute, want)
		}
	}
	if n, _ := a.TensorName("model.layers.1.self_attn.k_proj.weight"); n != "blk.1.attn_k.weight" {
		t.Errorf("k_proj → %q", n)
	}
	// The exporter's view: no general.architecture in the KVs, row orders.
	for _, kv := range a.PlanKVs() {
		if kv.Key == "general.architecture" {
			t.Error("PlanKVs has general.architecture")
		}
	}
	if n := len(a.PlanKVs()); n != len(a.KVs)-1 {
		t.Errorf("PlanKVs has %d of %d KVs", n, len(a.KVs))
	}
	perm := a.RowOrder("model.layers.0.self_attn.k_proj.weight", []int64{128, 256})
	if len(perm) != 128 || perm[0] != 0 || perm[1] != 32 || perm[2] != 1 || perm[64] != 64 || perm[65] != 96 {
		t.Errorf("k_proj row order %v", perm[:4])
	}
	if a.RowOrder("model.layers.0.self_attn.v_proj.weight", []int64{128, 256}) != nil ||
		a.RowOrder("model.layers.0.self_attn.k_proj.weight", []int64{256, 256}) != nil {
		t.Error("row order for a tensor without one")
	}
}

// The Dream 7B layout (339 tensors) without writing 15 GB: config.json
// only, no tokenizer.
func TestDescribeDream7BLayout(t *testing.T) {
	hs, cfg, err := modelio.GenLayout("dream-7b")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "Dream-v0-Instruct-7B")
	os.Mkdir(dir, 0o755)
	b, _ := json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	tensors := headers(hs)

	if _, err := Describe(dir, tensors, Options{Runnable: true}); !errors.Is(err, ErrNoTokenizer) ||
		!strings.Contains(err.Error(), filepath.Join(dir, "tokenizer.json")) {
		t.Errorf("runnable without tokenizer: %v", err)
	}
	a, err := Describe(dir, tensors, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "dream" || !a.Known || a.Runnable || len(a.Warnings) != 1 || !strings.Contains(a.Warnings[0], "no tokenizer") {
		t.Errorf("arch %q known %v runnable %v warnings %q", a.Name, a.Known, a.Runnable, a.Warnings)
	}
	wantKV(t, a, "general.name", "Dream v0 Instruct 7B")
	wantKV(t, a, "general.size_label", "7.6B")
	wantKV(t, a, "dream.block_count", uint32(28))
	wantKV(t, a, "dream.context_length", uint32(131072))
	wantKV(t, a, "dream.embedding_length", uint32(3584))
	wantKV(t, a, "dream.feed_forward_length", uint32(18944))
	wantKV(t, a, "dream.attention.head_count", uint32(28))
	wantKV(t, a, "dream.attention.head_count_kv", uint32(4))
	wantKV(t, a, "tokenizer.ggml.mask_token_id", uint32(151666))
	if _, ok := a.Lookup("tokenizer.ggml.model"); ok {
		t.Error("tokenizer KVs without a tokenizer")
	}
	seen := map[string]bool{}
	for _, m := range a.Tensors {
		if m.Drop || m.Permute != nil || seen[m.GGUF] {
			t.Errorf("%s → %q drop %v permute %v (dup %v)", m.HF, m.GGUF, m.Drop, m.Permute, seen[m.GGUF])
		}
		seen[m.GGUF] = true
	}
	if len(seen) != 339 || !seen["blk.27.ffn_down.weight"] || !seen["blk.27.attn_v.bias"] || !seen["output.weight"] {
		t.Errorf("%d distinct names", len(seen))
	}
}

func TestDescribeBERT(t *testing.T) {
	dir := filepath.Join("testdata", "bert-tiny")
	ts := []TensorInfo{
		{"embeddings.position_ids", []int64{1, 32}},
		{"embeddings.word_embeddings.weight", []int64{48, 64}},
		{"embeddings.position_embeddings.weight", []int64{32, 64}},
		{"embeddings.token_type_embeddings.weight", []int64{2, 64}},
		{"embeddings.LayerNorm.weight", []int64{64}},
		{"embeddings.LayerNorm.bias", []int64{64}},
		{"pooler.dense.weight", []int64{64, 64}},
		{"pooler.dense.bias", []int64{64}},
	}
	for l := 0; l < 2; l++ {
		p := fmt.Sprintf("encoder.layer.%d.", l)
		for _, n := range []string{"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"} {
			ts = append(ts, TensorInfo{p + n + ".weight", []int64{64, 64}}, TensorInfo{p + n + ".bias", []int64{64}})
		}
		ts = append(ts,
			TensorInfo{p + "attention.output.LayerNorm.gamma", []int64{64}}, TensorInfo{p + "attention.output.LayerNorm.beta", []int64{64}},
			TensorInfo{p + "intermediate.dense.weight", []int64{128, 64}}, TensorInfo{p + "intermediate.dense.bias", []int64{128}},
			TensorInfo{p + "output.dense.weight", []int64{64, 128}}, TensorInfo{p + "output.dense.bias", []int64{64}},
			TensorInfo{p + "output.LayerNorm.weight", []int64{64}}, TensorInfo{p + "output.LayerNorm.bias", []int64{64}})
	}
	a, err := Describe(dir, ts, Options{Runnable: true})
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{
		"general.architecture", "general.type", "general.name", "general.size_label",
		"bert.block_count", "bert.context_length", "bert.embedding_length", "bert.feed_forward_length",
		"bert.attention.head_count", "bert.attention.layer_norm_epsilon", "bert.attention.causal",
		"tokenizer.ggml.token_type_count", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
		"tokenizer.ggml.token_type",
		// gguf-py SpecialVocab(n_vocab=48) on these files: bos 2, eos 3, unk 1, sep 3, pad 0, mask 4,
		// add bos/eos True, add sep False.
		"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
		"tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.mask_token_id",
		"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_sep_token",
	}
	if got := keys(a); !slices.Equal(got, wantKeys) {
		t.Errorf("keys:\n got %q\nwant %q", got, wantKeys)
	}
	wantKV(t, a, "bert.attention.layer_norm_epsilon", float32(1e-12))
	wantKV(t, a, "bert.attention.causal", false)
	wantKV(t, a, "tokenizer.ggml.token_type_count", uint32(2))
	wantKV(t, a, "tokenizer.ggml.model", "bert")
	for k, v := range map[string]uint32{"bos": 2, "eos": 3, "unknown": 1, "seperator": 3, "padding": 0, "mask": 4} {
		wantKV(t, a, "tokenizer.ggml."+k+"_token_id", v)
	}
	wantKV(t, a, "tokenizer.ggml.add_bos_token", true)
	wantKV(t, a, "tokenizer.ggml.add_eos_token", true)
	wantKV(t, a, "tokenizer.ggml.add_sep_token", false)
	toks, types := kvStrings(t, a, "tokenizer.ggml.tokens"), kvInts(t, a, "tokenizer.ggml.token_type")
	if len(toks) != 48 {
		t.Fatalf("%d tokens", len(toks))
	}
	// Phantom-space vocabulary (every non-control token, [PAD<id>] fillers too,
	// as BertModel.set_vocab does); control tokens as they are.
	for id, w := range map[int]struct {
		tok string
		typ int32
	}{0: {"[PAD]", TokenControl}, 4: {"[MASK]", TokenControl}, 10: {"\u2581the", TokenNormal},
		22: {"ize", TokenNormal}, 39: {"\u2581time", TokenNormal}, 40: {"\u2581[PAD40]", TokenUnused}, 47: {"\u2581[PAD47]", TokenUnused}} {
		if toks[id] != w.tok || types[id] != w.typ {
			t.Errorf("token %d = %q type %d, want %q %d", id, toks[id], types[id], w.tok, w.typ)
		}
	}
	names := map[string]string{
		"embeddings.position_ids":                          "",
		"pooler.dense.weight":                              "",
		"embeddings.word_embeddings.weight":                "token_embd.weight",
		"embeddings.position_embeddings.weight":            "position_embd.weight",
		"embeddings.token_type_embeddings.weight":          "token_types.weight",
		"embeddings.LayerNorm.bias":                        "token_embd_norm.bias",
		"encoder.layer.1.attention.self.key.bias":          "blk.1.attn_k.bias",
		"encoder.layer.0.attention.output.dense.weight":    "blk.0.attn_output.weight",
		"encoder.layer.0.attention.output.LayerNorm.gamma": "blk.0.attn_output_norm.weight",
		"encoder.layer.0.attention.output.LayerNorm.beta":  "blk.0.attn_output_norm.bias",
		"encoder.layer.1.intermediate.dense.weight":        "blk.1.ffn_up.weight",
		"encoder.layer.1.output.dense.bias":                "blk.1.ffn_down.bias",
		"encoder.layer.1.output.LayerNorm.weight":          "blk.1.layer_output_norm.weight",
	}
	for hf, want := range names {
		m, ok := a.Mapping(hf)
		if !ok || m.Drop != (want == "") || m.GGUF != want {
			t.Errorf("%s → %+v, want %q", hf, m, want)
		}
	}

	// BertForMaskedLM checkpoints: "bert." prefix, MLM head dropped.
	var mlm []TensorInfo
	for _, x := range ts {
		if !strings.HasPrefix(x.Name, "pooler") {
			mlm = append(mlm, TensorInfo{"bert." + x.Name, x.Shape})
		}
	}
	mlm = append(mlm, TensorInfo{"cls.predictions.bias", []int64{48}}, TensorInfo{"cls.predictions.transform.dense.weight", []int64{64, 64}})
	a, err = Describe(dir, mlm, Options{Runnable: true})
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := a.TensorName("bert.encoder.layer.0.attention.self.query.weight"); !ok || n != "blk.0.attn_q.weight" {
		t.Errorf("bert.-prefixed query → %q", n)
	}
	if m, _ := a.Mapping("cls.predictions.transform.dense.weight"); !m.Drop {
		t.Error("MLM head not dropped")
	}
}

// editedTiny returns a preset's files with edits applied.
func editedTiny(t *testing.T, preset string, edit func(dir string)) (string, []TensorInfo) {
	t.Helper()
	dir, ts := genPreset(t, preset)
	if edit != nil {
		edit(dir)
	}
	return dir, ts
}

func editJSON(t *testing.T, path string, f func(m map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, _ = json.Marshal(m)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDescribeUnknownArchitectures(t *testing.T) {
	dir := t.TempDir()
	unet := filepath.Join(dir, "unet")
	os.Mkdir(unet, 0o755)
	os.WriteFile(filepath.Join(unet, "config.json"), []byte(`{"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.30.0", "in_channels": 4}`), 0o644)
	ts := []TensorInfo{{"conv_in.weight", []int64{320, 4, 3, 3}}, {"time_embedding.linear_1.weight", []int64{1280, 320}}}
	a, err := Describe(unet, ts, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "unet2dconditionmodel" || a.Known || a.Runnable || a.HFClass != "UNet2DConditionModel" {
		t.Errorf("unet: %+v", a)
	}
	if got := keys(a); !slices.Equal(got, []string{"general.architecture", "general.type", "general.name", "general.size_label"}) {
		t.Errorf("keys %q", got)
	}
	wantKV(t, a, "general.architecture", "unet2dconditionmodel")
	wantKV(t, a, "general.size_label", "421K")
	for _, x := range ts {
		if n, ok := a.TensorName(x.Name); !ok || n != x.Name {
			t.Errorf("%s → %q", x.Name, n)
		}
	}
	_, err = Describe(unet, ts, Options{Runnable: true})
	if !errors.Is(err, ErrUnknownArch) || !strings.Contains(err.Error(), `_class_name "UNet2DConditionModel"`) ||
		!strings.Contains(err.Error(), "llama, qwen2, dream, bert") || !strings.Contains(err.Error(), "LlamaForCausalLM") {
		t.Errorf("runnable unet: %v", err)
	}

	// ComfyUI-GGUF families by tensor names: a diffusers SDXL UNet is
	// "sdxl", an SD 1.x one "sd1"; the diffusers Flux layout is refused by
	// ComfyUI-GGUF (a warning, config name kept).
	sdxl := append(slices.Clone(ts), TensorInfo{"down_blocks.0.downsamplers.0.conv.weight", []int64{320, 320, 3, 3}},
		TensorInfo{"add_embedding.linear_1.weight", []int64{1280, 2816}})
	if a, err := Describe(unet, sdxl, Options{}); err != nil || a.Name != "sdxl" || len(a.Warnings) != 1 {
		t.Errorf("sdxl: %v %+v", err, a)
	}
	if a, err := Describe(unet, sdxl[:3], Options{}); err != nil || a.Name != "sd1" {
		t.Errorf("sd1: %v %+v", err, a)
	}
	ref := []TensorInfo{{"model.diffusion_model.double_blocks.0.img_attn.proj.weight", []int64{3072, 3072}}}
	if a, err := Describe(unet, ref, Options{}); err != nil || a.Name != "flux" {
		t.Errorf("flux reference layout: %v %+v", err, a)
	}
	os.WriteFile(filepath.Join(unet, "config.json"), []byte(`{"_class_name": "FluxTransformer2DModel"}`), 0o644)
	dflux := []TensorInfo{{"transformer_blocks.0.attn.norm_added_k.weight", []int64{128}}}
	if a, err := Describe(unet, dflux, Options{}); err != nil || a.Name != "fluxtransformer2dmodel" || len(a.Warnings) != 2 ||
		!strings.Contains(a.Warnings[0], "ComfyUI-GGUF refuses") {
		t.Errorf("diffusers flux: %v %+v", err, a)
	}

	// A text model with a model_type but no row.
	t5 := filepath.Join(dir, "t5")
	os.Mkdir(t5, 0o755)
	os.WriteFile(filepath.Join(t5, "config.json"), []byte(`{"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "_name_or_path": "google/flan-t5-small"}`), 0o644)
	a, err = Describe(t5, ts[:1], Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantKV(t, a, "general.architecture", "t5")
	wantKV(t, a, "general.name", "Flan T5 Small")
	wantKV(t, a, "general.organization", "Google")
	if _, err := Describe(t5, ts[:1], Options{Runnable: true}); !errors.Is(err, ErrUnknownArch) || !strings.Contains(err.Error(), "T5ForConditionalGeneration") {
		t.Errorf("runnable t5: %v", err)
	}

	// No config.json at all.
	bare := filepath.Join(dir, "bare")
	os.Mkdir(bare, 0o755)
	a, err = Describe(bare, ts[:1], Options{})
	if err != nil || a.Name != "unknown" || len(a.Warnings) != 2 {
		t.Errorf("bare: %v %+v", err, a)
	}
	// A malformed config.json is an error in every mode.
	os.WriteFile(filepath.Join(bare, "config.json"), []byte(`{"model_type": `), 0o644)
	if _, err := Describe(bare, ts[:1], Options{}); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("malformed config: %v", err)
	}
}

func TestDescribeTensorErrors(t *testing.T) {
	dir, ts := editedTiny(t, "tiny-llama", nil)
	drop := func(name string) []TensorInfo {
		var out []TensorInfo
		for _, x := range ts {
			if x.Name != name {
				out = append(out, x)
			}
		}
		return out
	}
	cases := []struct {
		name    string
		tensors []TensorInfo
		err     error
		msg     []string
	}{
		{"missing", drop("model.layers.1.mlp.down_proj.weight"), ErrMissingTensor,
			[]string{"blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"}},
		{"missing norm", drop("model.norm.weight"), ErrMissingTensor, []string{"output_norm.weight", "model.norm.weight"}},
		{"unmapped", append(slices.Clone(ts), TensorInfo{"model.layers.0.mlp.experts.0.w1.weight", []int64{8, 256}}), ErrUnmapped,
			[]string{"model.layers.0.mlp.experts.0.w1.weight", "llama"}},
		{"block beyond layers", append(slices.Clone(ts), TensorInfo{"model.layers.2.input_layernorm.weight", []int64{256}}), ErrUnmapped,
			[]string{"model.layers.2.input_layernorm.weight", "2 layers"}},
		{"shape", append(drop("model.layers.0.self_attn.k_proj.weight"), TensorInfo{"model.layers.0.self_attn.k_proj.weight", []int64{256, 256}}),
			ErrShape, []string{"model.layers.0.self_attn.k_proj.weight", "[128 256]"}},
	}
	for _, c := range cases {
		_, err := Describe(dir, c.tensors, Options{Runnable: true})
		if !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
			continue
		}
		for _, m := range c.msg {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("%s: %q does not name %q", c.name, err, m)
			}
		}
		// Without Runnable: original names and a warning saying why.
		a, err := Describe(dir, c.tensors, Options{})
		if err != nil || a.Known || a.Runnable || a.Name != "llama" || len(a.Warnings) != 1 || !strings.Contains(a.Warnings[0], c.msg[0]) {
			t.Errorf("%s, not runnable: %v %+v", c.name, err, a)
			continue
		}
		if n, _ := a.TensorName(c.tensors[0].Name); n != c.tensors[0].Name {
			t.Errorf("%s: fallback renamed %s to %s", c.name, c.tensors[0].Name, n)
		}
	}
	// Tied embeddings: no lm_head is fine (llama.cpp reuses token_embd).
	if a, err := Describe(dir, drop("lm_head.weight"), Options{Runnable: true}); err != nil || !a.Runnable {
		t.Errorf("tied embeddings: %v", err)
	}
	// A LlamaModel checkpoint (no "model." prefix, no lm_head).
	var bare []TensorInfo
	for _, x := range drop("lm_head.weight") {
		bare = append(bare, TensorInfo{strings.TrimPrefix(x.Name, "model."), x.Shape})
	}
	if a, err := Describe(dir, bare, Options{Runnable: true}); err != nil {
		t.Error(err)
	} else if n, _ := a.TensorName("layers.0.self_attn.q_proj.weight"); n != "blk.0.attn_q.weight" {
		t.Errorf("unprefixed q_proj → %q", n)
	}
	// rotary_emb.inv_freq buffers are dropped.
	a, err := Describe(dir, append(slices.Clone(ts), TensorInfo{"model.layers.0.self_attn.rotary_emb.inv_freq", []int64{32}}), Options{Runnable: true})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := a.Mapping("model.layers.0.self_attn.rotary_emb.inv_freq"); !m.Drop {
		t.Errorf("inv_freq: %+v", m)
	}
}

func TestDescribeConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(m map[string]any)
		msg  string
	}{
		{"llama3 rope", func(m map[string]any) {
			m["rope_scaling"] = map[string]any{"rope_type": "llama3", "factor": 8.0}
		}, `rope_type "llama3"`},
		{"moe", func(m map[string]any) { m["num_local_experts"] = 8 }, "num_local_experts"},
		{"no layers", func(m map[string]any) { delete(m, "num_hidden_layers") }, "num_hidden_layers"},
		{"fractional heads", func(m map[string]any) { m["num_attention_heads"] = 4.5 }, "num_attention_heads"},
		{"heads vs kv", func(m map[string]any) { m["num_key_value_heads"] = 3 }, "key/value heads"},
	} {
		dir, ts := editedTiny(t, "tiny-llama", func(dir string) { editJSON(t, filepath.Join(dir, "config.json"), c.edit) })
		_, err := Describe(dir, ts, Options{Runnable: true})
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), "config.json") {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// Linear rope scaling is written as the converter does.
	dir, ts := editedTiny(t, "tiny-llama", func(dir string) {
		editJSON(t, filepath.Join(dir, "config.json"), func(m map[string]any) {
			m["rope_scaling"] = map[string]any{"type": "linear", "factor": 2.0}
		})
	})
	a, err := Describe(dir, ts, Options{Runnable: true})
	if err != nil {
		t.Fatal(err)
	}
	wantKV(t, a, "llama.rope.scaling.type", "linear")
	wantKV(t, a, "llama.rope.scaling.factor", float32(2))
}

func TestDescribeTokenizerErrors(t *testing.T) {
	tokPath := func(dir string) string { return filepath.Join(dir, "tokenizer.json") }
	for _, c := range []struct {
		name   string
		preset string
		edit   func(m map[string]any)
		err    error
		msg    string
	}{
		{"unigram", "tiny", func(m map[string]any) {
			m["model"] = map[string]any{"type": "Unigram", "vocab": []any{[]any{"a", -1.0}}}
		}, ErrTokenizer, `model.type "Unigram"`},
		{"sentencepiece bpe", "tiny", func(m map[string]any) {
			m["model"].(map[string]any)["byte_fallback"] = true
		}, ErrTokenizer, "byte_fallback"},
		{"no byte level", "tiny", func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "▁"}
		}, ErrTokenizer, "Metaspace"},
		{"unknown regex", "tiny-llama", func(m map[string]any) {
			pt := m["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any)[0].(map[string]any)
			pt["pattern"] = map[string]any{"Regex": `\w+|\s+`}
		}, ErrTokenizer, `\\w+|\\s+`},
		{"no merges", "tiny", func(m map[string]any) { m["model"].(map[string]any)["merges"] = []any{} }, ErrTokenizer, "merges is empty"},
		{"bad merge", "tiny", func(m map[string]any) {
			m["model"].(map[string]any)["merges"] = []any{"a b c"}
		}, ErrTokenizer, `"a b c"`},
		{"added token id", "tiny", func(m map[string]any) {
			m["added_tokens"].([]any)[3].(map[string]any)["id"] = 1030.0
		}, ErrTokenizer, "gives it id 1023"},
		{"id past vocab_size", "tiny-llama", func(m map[string]any) {
			m["added_tokens"] = append(m["added_tokens"].([]any), map[string]any{"id": 1024, "content": "<|extra|>", "special": true})
		}, ErrTokenizer, "vocab_size 1024"},
		{"word piece for llama", "tiny-llama", func(m map[string]any) {
			m["model"] = map[string]any{"type": "WordPiece", "vocab": map[string]any{"a": 0}, "continuing_subword_prefix": "##"}
		}, ErrTokenizer, `"WordPiece"`},
	} {
		dir, ts := editedTiny(t, c.preset, func(dir string) { editJSON(t, tokPath(dir), c.edit) })
		_, err := Describe(dir, ts, Options{Runnable: true})
		if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), tokPath(dir)) {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		// Not runnable: mapped names, no tokenizer, a warning.
		a, err := Describe(dir, ts, Options{})
		if err != nil || !a.Known || a.Runnable || len(a.Warnings) != 1 || !strings.Contains(a.Warnings[0], c.msg) {
			t.Errorf("%s, not runnable: %v %+v", c.name, err, a)
		}
		if _, ok := a.Lookup("tokenizer.ggml.tokens"); ok {
			t.Errorf("%s: tokens written", c.name)
		}
	}
	// A tokenizer.json that is not JSON is an error in every mode.
	dir, ts := editedTiny(t, "tiny", func(dir string) { os.WriteFile(tokPath(dir), []byte("{"), 0o644) })
	if _, err := Describe(dir, ts, Options{}); err == nil || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Errorf("malformed tokenizer.json: %v", err)
	}
}

func TestTokenizerVariants(t *testing.T) {
	// Old-style "a b" merges and pair merges with spaces inside (U+0120).
	m, err := parseMerges(json.RawMessage(`[["a b", "c"], ["Ġx", "y"]]`))
	if err != nil || !slices.Equal(m, []string{"aĠb c", "Ġx y"}) {
		t.Errorf("pair merges: %q %v", m, err)
	}
	// GPT-2's own pre-tokenizer: ByteLevel with its regex.
	pre, ignore, err := matchPreTokenizer(json.RawMessage(`{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}`))
	if err != nil || pre != "gpt-2" || ignore {
		t.Errorf("gpt-2: %q %v %v", pre, ignore, err)
	}
	// User-defined added tokens and padded vocabularies.
	dir, ts := editedTiny(t, "tiny", func(dir string) {
		editJSON(t, filepath.Join(dir, "tokenizer.json"), func(m map[string]any) {
			at := m["added_tokens"].([]any)
			at[1].(map[string]any)["special"] = false              // <|im_start|>: looks special → control (TextModel), user-defined (Dream)
			at[2].(map[string]any)["special"] = false              // <|im_end|>
			at[2].(map[string]any)["content"] = "hello\u2581world" // user-defined, ▁ → space for TextModel
			m["added_tokens"] = at[:3]                             // drop <|mask|>: id 1023 becomes [PAD1023]
		})
		editJSON(t, filepath.Join(dir, "tokenizer_config.json"), func(m map[string]any) {
			delete(m, "added_tokens_decoder")
		})
	})
	a, err := Describe(dir, ts, Options{Runnable: true})
	if err != nil {
		t.Fatal(err)
	}
	toks, types := kvStrings(t, a, "tokenizer.ggml.tokens"), kvInts(t, a, "tokenizer.ggml.token_type")
	if toks[1021] != "<|im_start|>" || types[1021] != TokenUserDefined || toks[1022] != "hello\u2581world" || types[1022] != TokenUserDefined ||
		toks[1023] != "[PAD1023]" || types[1023] != TokenUnused {
		t.Errorf("dream vocab: %q %d, %q %d, %q %d", toks[1021], types[1021], toks[1022], types[1022], toks[1023], types[1023])
	}
	// The same vocabulary through the generic (Qwen2/Llama) rules.
	editJSON(t, filepath.Join(dir, "config.json"), func(m map[string]any) {
		m["architectures"] = []any{"Qwen2ForCausalLM"}
		m["model_type"] = "qwen2"
	})
	a, err = Describe(dir, ts, Options{Runnable: true})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "qwen2" {
		t.Errorf("arch %q", a.Name)
	}
	if _, ok := a.Lookup("qwen2.attention.causal"); ok {
		t.Error("qwen2 is causal")
	}
	toks, types = kvStrings(t, a, "tokenizer.ggml.tokens"), kvInts(t, a, "tokenizer.ggml.token_type")
	if types[1021] != TokenControl || toks[1022] != "hello world" || types[1022] != TokenUserDefined {
		t.Errorf("qwen2 vocab: %q %d, %q %d", toks[1021], types[1021], toks[1022], types[1022])
	}
	// chat_template.jinja beside tokenizer_config.json.
	editJSON(t, filepath.Join(dir, "tokenizer_config.json"), func(m map[string]any) { delete(m, "chat_template") })
	os.WriteFile(filepath.Join(dir, "chat_template.jinja"), []byte("{{ messages }}"), 0o644)
	a, err = Describe(dir, ts, Options{Runnable: true})
	if err != nil {
		t.Fatal(err)
	}
	wantKV(t, a, "tokenizer.chat_template", "{{ messages }}")
}

func TestRopePermutation(t *testing.T) {
	// LlamaModel.permute: reshape(heads, 2, d/2, cols).swapaxes(1, 2).
	p := RopePermutation{Heads: 3, HeadDim: 8}
	var got []int64
	for d := int64(0); d < p.Rows(); d++ {
		got = append(got, p.SourceRow(d))
	}
	var want []int64
	for h := int64(0); h < 3; h++ {
		for i := int64(0); i < 4; i++ {
			for j := int64(0); j < 2; j++ {
				want = append(want, h*8+j*4+i)
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("source rows %v, want %v", got, want)
	}
	// Apply moves whole rows of any byte size (float or quantized blocks).
	src := make([]byte, 24*3)
	for r := range 24 {
		src[3*r], src[3*r+1], src[3*r+2] = byte(r), byte(r), byte(r)
	}
	dst := make([]byte, len(src))
	if err := p.Apply(dst, src, 3); err != nil {
		t.Fatal(err)
	}
	for d := range 24 {
		if dst[3*d] != byte(want[d]) || dst[3*d+2] != byte(want[d]) {
			t.Fatalf("row %d holds %d, want %d", d, dst[3*d], want[d])
		}
	}
	if err := p.Apply(dst[:3], src, 3); err == nil {
		t.Error("short destination accepted")
	}
	if err := (RopePermutation{Heads: 2, HeadDim: 8}).check([]int64{24, 5}); err == nil {
		t.Error("shape mismatch accepted")
	}
}

func TestNamesAndLabels(t *testing.T) {
	for in, want := range map[string]string{
		"Dream-v0-Instruct-7B": "Dream v0 Instruct 7B", "tiny": "Tiny", "tiny-llama": "Tiny Llama",
		"Meta-Llama-3-8B": "Meta Llama 3 8B", "flan-t5-small": "Flan T5 Small", "v2-model": "v2 Model",
	} {
		if got := idToTitle(in); got != want {
			t.Errorf("idToTitle(%q) = %q, want %q", in, got, want)
		}
	}
	// gguf.size_label for dense models.
	for n, want := range map[int64]string{7_615_616_512: "7.6B", 2_000_000: "2.0M", 1_999_999: "2.0M", 420_160: "420K",
		999: "1.0K", 12_500_000_000: "12B", 1_500_000_000_000: "1.5T", 115_000_000: "115M"} {
		if got := SizeLabel(n); got != want {
			t.Errorf("SizeLabel(%d) = %q, want %q", n, got, want)
		}
	}
}
