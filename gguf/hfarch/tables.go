package hfarch

import (
	"fmt"
	"strconv"
	"strings"
)

// The architecture tables. A row says which config.json classes it takes,
// how tensor names map (gguf-py's TensorNameMap entries for that
// architecture), which tensors llama.cpp's loader requires, the tokenizer
// style and the extra hyper-parameters the converter's model class writes
// after TextModel's. Adding an architecture is adding a row.
var archTable = []*archSpec{
	{
		name:       "llama",
		hfClasses:  []string{"LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM", "LlamaModel"},
		modelTypes: []string{"llama", "mistral"},
		layout:     decoderLayout,
		vocab:      vocabGPT2,
		permuteQK:  true,
		params: func(kv *kvList, arch string, h hparams, _ string) error {
			// LlamaModel.set_gguf_parameters: vocab size and rope dimensions.
			v, ok, err := h.findUint("vocab_size")
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("config.json has no vocab_size: %w", ErrConfig)
			}
			kv.add(arch+".vocab_size", v)
			rot, ok, err := h.findUint("head_dim")
			if err != nil {
				return err
			}
			if !ok {
				hidden, _, _ := h.findUint("hidden_size")
				heads, _, _ := h.findUint("num_attention_heads")
				if heads == 0 {
					return fmt.Errorf("config.json has no num_attention_heads: %w", ErrConfig)
				}
				rot = hidden / heads
			}
			kv.add(arch+".rope.dimension_count", rot)
			return nil
		},
	},
	{
		name:       "qwen2",
		hfClasses:  []string{"Qwen2ForCausalLM", "Qwen2Model"},
		modelTypes: []string{"qwen2"},
		layout:     decoderLayout,
		vocab:      vocabGPT2,
		params: func(kv *kvList, arch string, _ hparams, dir string) error {
			return poolingKVs(kv, arch, dir)
		},
	},
	{
		// Dream 7B: Qwen2 layout, bidirectional attention, a mask token;
		// run by llama.cpp's diffusion CLI.
		name:       "dream",
		hfClasses:  []string{"DreamModel"},
		modelTypes: []string{"dream"},
		layout:     decoderLayout,
		vocab:      vocabDream,
		params: func(kv *kvList, arch string, h hparams, dir string) error {
			if err := poolingKVs(kv, arch, dir); err != nil {
				return err
			}
			kv.add(arch+".attention.causal", false)
			if m, ok, err := h.findUint("mask_token_id"); err != nil {
				return err
			} else if ok {
				kv.add("tokenizer.ggml.mask_token_id", m)
			}
			return nil
		},
	},
	{
		// BERT encoders (embeddings): WordPiece vocabulary.
		name:       "bert",
		hfClasses:  []string{"BertModel", "BertForMaskedLM", "CamembertModel"},
		modelTypes: []string{"bert"},
		layout:     bertLayout,
		vocab:      vocabBERT,
		params: func(kv *kvList, arch string, _ hparams, dir string) error {
			kv.add(arch+".attention.causal", false)
			return poolingKVs(kv, arch, dir)
		},
	},
}

// vocabKind selects the converter's vocabulary path.
type vocabKind int

const (
	vocabGPT2  vocabKind = iota // TextModel._set_vocab_gpt2 with the generic get_vocab_base
	vocabDream                  // DreamModel.get_vocab_base (special → control, else user-defined)
	vocabBERT                   // BertModel.set_vocab (WordPiece, phantom-space tokens)
)

type archSpec struct {
	name       string   // GGUF general.architecture
	hfClasses  []string // config.json architectures entries
	modelTypes []string // config.json model_type values (lower case)
	layout     *layout
	vocab      vocabKind
	permuteQK  bool // LlamaModel.permute of q/k rows (weights and biases)
	params     func(kv *kvList, arch string, h hparams, dir string) error
}

// findArch picks the row by config.json architectures[0], then by
// model_type (the converter goes by architectures alone).
func findArch(h hparams) (*archSpec, string) {
	classes := h.strings("architectures")
	hfClass := ""
	if len(classes) > 0 {
		hfClass = classes[0]
		for _, s := range archTable {
			for _, c := range s.hfClasses {
				if c == hfClass {
					return s, hfClass
				}
			}
		}
		return nil, hfClass
	}
	if mt, ok := h.str("model_type"); ok {
		for _, s := range archTable {
			for _, t := range s.modelTypes {
				if strings.EqualFold(t, mt) {
					return s, hfClass
				}
			}
		}
	}
	return nil, hfClass
}

// dims are the model dimensions the shape checks use.
type dims struct {
	layers, embd, ff, heads, headsKV, headDim, vocab, ctx, typeVocab int64
}

func (s *archSpec) dims(h hparams) (dims, error) {
	var d dims
	get := func(dst *int64, required bool, keys ...string) error {
		v, ok, err := h.findUint(keys...)
		if err != nil {
			return err
		}
		if !ok && required {
			return fmt.Errorf("none of %s: %w", strings.Join(keys, ", "), ErrConfig)
		}
		*dst = int64(v)
		return nil
	}
	if err := get(&d.layers, true, keysBlockCount...); err != nil {
		return d, err
	}
	if err := get(&d.embd, true, keysEmbd...); err != nil {
		return d, err
	}
	if err := get(&d.ff, true, keysFF...); err != nil {
		return d, err
	}
	if err := get(&d.heads, true, keysHead...); err != nil {
		return d, err
	}
	if err := get(&d.headsKV, false, keysHeadKV...); err != nil {
		return d, err
	}
	if d.headsKV == 0 {
		d.headsKV = d.heads
	}
	if err := get(&d.vocab, true, "vocab_size"); err != nil {
		return d, err
	}
	if err := get(&d.ctx, false, keysContext...); err != nil {
		return d, err
	}
	if err := get(&d.typeVocab, false, "type_vocab_size"); err != nil {
		return d, err
	}
	if d.typeVocab == 0 {
		d.typeVocab = 1
	}
	if err := get(&d.headDim, false, "head_dim"); err != nil {
		return d, err
	}
	if d.heads == 0 || d.layers == 0 || d.embd == 0 {
		return d, fmt.Errorf("zero layers, heads or hidden size: %w", ErrConfig)
	}
	if d.headDim == 0 {
		if d.embd%d.heads != 0 {
			return d, fmt.Errorf("hidden size %d is not a multiple of %d heads: %w", d.embd, d.heads, ErrConfig)
		}
		d.headDim = d.embd / d.heads
	}
	if d.heads%d.headsKV != 0 {
		return d, fmt.Errorf("%d attention heads are not a multiple of %d key/value heads: %w", d.heads, d.headsKV, ErrConfig)
	}
	return d, nil
}

// layout is an architecture's tensor-name table.
type layout struct {
	// strip: name rewrites applied first (prefix removal, gamma/beta).
	rewrite func(name string) string
	// rules: Hugging Face base name (without .weight/.bias; "{bid}" for
	// the block number) → GGUF base name, and the PyTorch shape of
	// .weight (bias: its first dimension).
	rules []rule
	// drop: base-name patterns the converter does not export.
	drop []string
	// required: GGUF names (with suffix; "{bid}" per block) llama.cpp's
	// loader creates without TENSOR_NOT_REQUIRED.
	required []string
	// perm: GGUF base names whose rows llama permutes, and the head count
	// used (q: all heads, k: key/value heads).
	perm map[string]func(d dims) int64
}

type rule struct {
	hf, gguf string
	shape    func(d dims) []int64
}

func shape(f func(d dims) []int64) func(d dims) []int64 { return f }

var decoderLayout = &layout{
	rewrite: func(n string) string {
		// LlamaModel / Qwen2Model checkpoints lack the "model." prefix.
		if !strings.HasPrefix(n, "model.") && !strings.HasPrefix(n, "lm_head.") {
			return "model." + n
		}
		return n
	},
	rules: []rule{
		{"model.embed_tokens", "token_embd", shape(func(d dims) []int64 { return []int64{d.vocab, d.embd} })},
		{"model.norm", "output_norm", shape(func(d dims) []int64 { return []int64{d.embd} })},
		{"lm_head", "output", shape(func(d dims) []int64 { return []int64{d.vocab, d.embd} })},
		{"model.layers.{bid}.input_layernorm", "blk.{bid}.attn_norm", shape(func(d dims) []int64 { return []int64{d.embd} })},
		{"model.layers.{bid}.self_attn.q_proj", "blk.{bid}.attn_q", shape(func(d dims) []int64 { return []int64{d.heads * d.headDim, d.embd} })},
		{"model.layers.{bid}.self_attn.k_proj", "blk.{bid}.attn_k", shape(func(d dims) []int64 { return []int64{d.headsKV * d.headDim, d.embd} })},
		{"model.layers.{bid}.self_attn.v_proj", "blk.{bid}.attn_v", shape(func(d dims) []int64 { return []int64{d.headsKV * d.headDim, d.embd} })},
		{"model.layers.{bid}.self_attn.o_proj", "blk.{bid}.attn_output", shape(func(d dims) []int64 { return []int64{d.embd, d.heads * d.headDim} })},
		{"model.layers.{bid}.post_attention_layernorm", "blk.{bid}.ffn_norm", shape(func(d dims) []int64 { return []int64{d.embd} })},
		{"model.layers.{bid}.mlp.gate_proj", "blk.{bid}.ffn_gate", shape(func(d dims) []int64 { return []int64{d.ff, d.embd} })},
		{"model.layers.{bid}.mlp.up_proj", "blk.{bid}.ffn_up", shape(func(d dims) []int64 { return []int64{d.ff, d.embd} })},
		{"model.layers.{bid}.mlp.down_proj", "blk.{bid}.ffn_down", shape(func(d dims) []int64 { return []int64{d.embd, d.ff} })},
	},
	drop: []string{"model.rotary_emb.inv_freq", "model.layers.{bid}.self_attn.rotary_emb.inv_freq"},
	required: []string{
		"token_embd.weight", "output_norm.weight",
		"blk.{bid}.attn_norm.weight", "blk.{bid}.attn_q.weight", "blk.{bid}.attn_k.weight", "blk.{bid}.attn_v.weight",
		"blk.{bid}.attn_output.weight", "blk.{bid}.ffn_norm.weight",
		"blk.{bid}.ffn_gate.weight", "blk.{bid}.ffn_up.weight", "blk.{bid}.ffn_down.weight",
	},
	perm: map[string]func(d dims) int64{
		"blk.{bid}.attn_q": func(d dims) int64 { return d.heads },
		"blk.{bid}.attn_k": func(d dims) int64 { return d.headsKV },
	},
}

var bertLayout = &layout{
	rewrite: func(n string) string {
		n = strings.TrimPrefix(n, "bert.")
		if s, ok := strings.CutSuffix(n, ".gamma"); ok {
			n = s + ".weight"
		} else if s, ok := strings.CutSuffix(n, ".beta"); ok {
			n = s + ".bias"
		}
		return n
	},
	rules: []rule{
		{"embeddings.word_embeddings", "token_embd", shape(func(d dims) []int64 { return []int64{d.vocab, d.embd} })},
		{"embeddings.position_embeddings", "position_embd", shape(func(d dims) []int64 { return []int64{d.ctx, d.embd} })},
		{"embeddings.token_type_embeddings", "token_types", shape(func(d dims) []int64 { return []int64{d.typeVocab, d.embd} })},
		{"embeddings.LayerNorm", "token_embd_norm", shape(func(d dims) []int64 { return []int64{d.embd} })},
		{"encoder.layer.{bid}.attention.self.query", "blk.{bid}.attn_q", shape(func(d dims) []int64 { return []int64{d.embd, d.embd} })},
		{"encoder.layer.{bid}.attention.self.key", "blk.{bid}.attn_k", shape(func(d dims) []int64 { return []int64{d.embd, d.embd} })},
		{"encoder.layer.{bid}.attention.self.value", "blk.{bid}.attn_v", shape(func(d dims) []int64 { return []int64{d.embd, d.embd} })},
		{"encoder.layer.{bid}.attention.output.dense", "blk.{bid}.attn_output", shape(func(d dims) []int64 { return []int64{d.embd, d.embd} })},
		{"encoder.layer.{bid}.attention.output.LayerNorm", "blk.{bid}.attn_output_norm", shape(func(d dims) []int64 { return []int64{d.embd} })},
		{"encoder.layer.{bid}.intermediate.dense", "blk.{bid}.ffn_up", shape(func(d dims) []int64 { return []int64{d.ff, d.embd} })},
		{"encoder.layer.{bid}.output.dense", "blk.{bid}.ffn_down", shape(func(d dims) []int64 { return []int64{d.embd, d.ff} })},
		{"encoder.layer.{bid}.output.LayerNorm", "blk.{bid}.layer_output_norm", shape(func(d dims) []int64 { return []int64{d.embd} })},
	},
	drop: []string{"embeddings.position_ids", "pooler.dense", "cls.predictions.*", "cls.seq_relationship.*"},
	required: []string{
		"token_embd.weight", "position_embd.weight", "token_embd_norm.weight", "token_embd_norm.bias",
		"blk.{bid}.attn_q.weight", "blk.{bid}.attn_k.weight", "blk.{bid}.attn_v.weight", "blk.{bid}.attn_output.weight",
		"blk.{bid}.attn_output_norm.weight", "blk.{bid}.attn_output_norm.bias",
		"blk.{bid}.ffn_up.weight", "blk.{bid}.ffn_down.weight",
		"blk.{bid}.layer_output_norm.weight", "blk.{bid}.layer_output_norm.bias",
	},
}

// matchPattern matches name against a pattern with at most one "{bid}"
// (a decimal block number) and an optional trailing ".*" wildcard.
func matchPattern(pattern, name string) (bid int64, ok bool) {
	if p, wild := strings.CutSuffix(pattern, ".*"); wild {
		return -1, name == p || strings.HasPrefix(name, p+".")
	}
	pre, post, has := strings.Cut(pattern, "{bid}")
	if !has {
		return -1, name == pattern
	}
	if !strings.HasPrefix(name, pre) || !strings.HasSuffix(name, post) || len(name) < len(pre)+len(post)+1 {
		return 0, false
	}
	num := name[len(pre) : len(name)-len(post)]
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || (len(num) > 1 && num[0] == '0') {
		return 0, false
	}
	return n, true
}

func fillBid(s string, bid int64) string {
	return strings.ReplaceAll(s, "{bid}", strconv.FormatInt(bid, 10))
}

// mapTensor maps one Hugging Face tensor name; shape is the expected
// PyTorch shape (nil when not checked).
func (s *archSpec) mapTensor(hf string, d dims) (TensorMapping, []int64, error) {
	name := s.layout.rewrite(hf)
	base, suffix := name, ""
	for _, suf := range []string{".weight", ".bias"} {
		if b, ok := strings.CutSuffix(name, suf); ok {
			base, suffix = b, suf
			break
		}
	}
	for _, p := range s.layout.drop {
		if _, ok := matchPattern(p, name); ok {
			return TensorMapping{HF: hf, Drop: true}, nil, nil
		}
		if _, ok := matchPattern(p, base); ok {
			return TensorMapping{HF: hf, Drop: true}, nil, nil
		}
	}
	if suffix != "" {
		for _, r := range s.layout.rules {
			bid, ok := matchPattern(r.hf, base)
			if !ok {
				continue
			}
			if bid >= d.layers {
				return TensorMapping{}, nil, fmt.Errorf("tensor %s is in block %d but config.json has %d layers: %w", hf, bid, d.layers, ErrUnmapped)
			}
			m := TensorMapping{HF: hf, GGUF: fillBid(r.gguf, bid) + suffix}
			var want []int64
			if r.shape != nil {
				want = r.shape(d)
				if suffix == ".bias" {
					want = want[:1]
				}
			}
			if heads, ok := s.layout.perm[r.gguf]; ok && s.permuteQK {
				m.Permute = &RopePermutation{Heads: heads(d), HeadDim: d.headDim}
			}
			return m, want, nil
		}
	}
	return TensorMapping{}, nil, fmt.Errorf("tensor %s: %w for architecture %s", hf, ErrUnmapped, s.name)
}

// required lists the GGUF tensor names llama.cpp needs.
func (s *archSpec) required(d dims) []string {
	var out []string
	for _, r := range s.layout.required {
		if strings.Contains(r, "{bid}") {
			for b := int64(0); b < d.layers; b++ {
				out = append(out, fillBid(r, b))
			}
		} else {
			out = append(out, r)
		}
	}
	return out
}

// hfNameOf names the Hugging Face tensor that supplies a GGUF name.
func (s *archSpec) hfNameOf(gguf string) string {
	base, suffix := gguf, ""
	for _, suf := range []string{".weight", ".bias"} {
		if b, ok := strings.CutSuffix(gguf, suf); ok {
			base, suffix = b, suf
		}
	}
	for _, r := range s.layout.rules {
		if bid, ok := matchPattern(r.gguf, base); ok {
			if bid < 0 {
				return r.hf + suffix
			}
			return fillBid(r.hf, bid) + suffix
		}
	}
	return "?"
}

// comfyFamilies is ComfyUI-GGUF's architecture detection (its
// tools/convert.py detect_arch, in its order): a family matches when all
// keys of one of its sets are present; a banned key marks a layout
// ComfyUI-GGUF refuses (diffusers Flux/SD3/AuraFlow). Its UNet loader
// accepts general.architecture only from this list.
var comfyFamilies = []struct {
	arch   string
	detect [][]string
	banned []string
}{
	{"flux", [][]string{{"transformer_blocks.0.attn.norm_added_k.weight"}, {"double_blocks.0.img_attn.proj.weight"}},
		[]string{"transformer_blocks.0.attn.norm_added_k.weight"}},
	{"sd3", [][]string{{"transformer_blocks.0.attn.add_q_proj.weight"}, {"joint_blocks.0.x_block.attn.qkv.weight"}},
		[]string{"transformer_blocks.0.attn.add_q_proj.weight"}},
	{"aura", [][]string{{"double_layers.3.modX.1.weight"}, {"joint_transformer_blocks.3.ff_context.out_projection.weight"}},
		[]string{"joint_transformer_blocks.3.ff_context.out_projection.weight"}},
	{"hidream", [][]string{{"caption_projection.0.linear.weight", "double_stream_blocks.0.block.ff_i.shared_experts.w3.weight"}}, nil},
	{"cosmos", [][]string{{"blocks.0.mlp.layer1.weight", "blocks.0.adaln_modulation_cross_attn.1.weight"}}, nil},
	{"ltxv", [][]string{{"adaln_single.emb.timestep_embedder.linear_2.weight", "transformer_blocks.27.scale_shift_table",
		"caption_projection.linear_2.weight"}}, nil},
	{"hyvid", [][]string{{"double_blocks.0.img_attn_proj.weight", "txt_in.individual_token_refiner.blocks.1.self_attn_qkv.weight"}}, nil},
	{"wan", [][]string{{"blocks.0.self_attn.norm_q.weight", "text_embedding.2.weight", "head.modulation"}}, nil},
	{"sdxl", [][]string{
		{"down_blocks.0.downsamplers.0.conv.weight", "add_embedding.linear_1.weight"},
		{"input_blocks.3.0.op.weight", "input_blocks.6.0.op.weight", "output_blocks.2.2.conv.weight", "output_blocks.5.2.conv.weight"},
		{"label_emb.0.0.weight"},
	}, nil},
	{"sd1", [][]string{
		{"down_blocks.0.downsamplers.0.conv.weight"},
		{"input_blocks.3.0.op.weight", "input_blocks.6.0.op.weight", "input_blocks.9.0.op.weight",
			"output_blocks.2.1.conv.weight", "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.weight"},
	}, nil},
	{"lumina2", [][]string{{"cap_embedder.1.weight", "context_refiner.0.attention.qkv.weight"}}, nil},
}

// comfyFamily returns the ComfyUI-GGUF family of a tensor-name set ("" if
// none) and the banned key found, if any. Names may carry ComfyUI's
// "model.diffusion_model." prefix.
func comfyFamily(names []string) (family, banned string) {
	have := map[string]bool{}
	for _, n := range names {
		have[strings.TrimPrefix(n, "model.diffusion_model.")] = true
	}
	for _, f := range comfyFamilies {
		for _, set := range f.detect {
			all := true
			for _, k := range set {
				all = all && have[k]
			}
			if !all {
				continue
			}
			for _, b := range f.banned {
				if have[b] {
					return f.arch, b
				}
			}
			return f.arch, ""
		}
	}
	return "", ""
}
