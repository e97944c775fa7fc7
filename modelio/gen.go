package modelio

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/internal/outdir"
)

// GenOptions configures Generate.
type GenOptions struct {
	Preset string // "tiny" | "tiny-llama" | "dream-7b"
	DType  DType  // BF16 (default), F16, F32
	Out    string // output directory; must not exist or be empty unless Overwrite
	Seed   int64
	// Overwrite replaces a non-empty Out that ArrowQuant created; Force
	// also one it did not create.
	Overwrite, Force bool
	Progress         func(doneBytes, totalBytes int64) // may be nil; called from one goroutine
}

// genChunkElems is the generation unit. It is part of the output's
// definition (each chunk has its own random stream): changing it changes
// the generated values.
const genChunkElems = 4 << 20

// Model families of the presets.
const (
	familyDream = "dream" // DreamModel: Qwen2 layout (q/k/v biases), bidirectional, mask token
	familyLlama = "llama" // LlamaForCausalLM: no biases, Llama 3 tokenizer conventions
)

type presetSpec struct {
	name                                      string
	family                                    string
	hidden, inter, layers, heads, kvHeads     int64
	vocab, maskToken, bosToken, eosToken, pad int64 // maskToken/pad < 0: none
	maxPos                                    int64
	shards                                    int      // 1: model.safetensors without index
	tok                                       *tokSpec // nil: no tokenizer.json
}

var presets = []presetSpec{
	// 764 learned merges (ids 256..1019), then Qwen2/Dream special tokens.
	{name: "tiny", family: familyDream, hidden: 256, inter: 704, layers: 2, heads: 4, kvHeads: 2, vocab: 1024,
		maskToken: 1023, bosToken: 1020, eosToken: 1020, pad: 1020, maxPos: 4096, shards: 1,
		tok: &tokSpec{style: tokQwen2, merges: 764, specials: []specialToken{
			{1020, "<|endoftext|>"}, {1021, "<|im_start|>"}, {1022, "<|im_end|>"}, {1023, "<|mask|>"}}}},
	// A Llama-family model llama.cpp runs: 763 merges, Llama 3 specials.
	{name: "tiny-llama", family: familyLlama, hidden: 256, inter: 704, layers: 2, heads: 4, kvHeads: 2, vocab: 1024,
		maskToken: -1, bosToken: 1019, eosToken: 1023, pad: -1, maxPos: 4096, shards: 1,
		tok: &tokSpec{style: tokLlama3, merges: 763, pairMerges: true, specials: []specialToken{
			{1019, "<|begin_of_text|>"}, {1020, "<|end_of_text|>"}, {1021, "<|start_header_id|>"},
			{1022, "<|end_header_id|>"}, {1023, "<|eot_id|>"}}}},
	{name: "dream-7b", family: familyDream, hidden: 3584, inter: 18944, layers: 28, heads: 28, kvHeads: 4, vocab: 152064,
		maskToken: 151666, bosToken: 151643, eosToken: 151643, pad: 151643, maxPos: 131072, shards: 4},
}

// Presets lists the synthetic model presets.
func Presets() []string {
	out := make([]string, len(presets))
	for i, p := range presets {
		out[i] = p.name
	}
	return out
}

func findPreset(name string) (presetSpec, error) {
	for _, p := range presets {
		if p.name == name {
			return p, nil
		}
	}
	return presetSpec{}, fmt.Errorf("modelio: unknown preset %q (known: %s)", name, strings.Join(Presets(), ", "))
}

// GenLayout returns the tensors (BF16, in file order) and the config.json
// of a preset. "dream-7b" is the exact layout of Dream-v0-Instruct-7B
// (339 tensors, 7,615,616,512 parameters); "tiny" has the same structure
// and config keys at a few MB; "tiny-llama" is a LlamaForCausalLM of the
// same size (no q/k/v biases).
func GenLayout(preset string) ([]TensorHeader, map[string]any, error) {
	p, err := findPreset(preset)
	if err != nil {
		return nil, nil, err
	}
	return p.layout(BF16), p.config(BF16), nil
}

func (p presetSpec) layout(dt DType) []TensorHeader {
	h, kv := p.hidden, p.hidden/p.heads*p.kvHeads
	t := func(name string, shape ...int64) TensorHeader {
		return TensorHeader{Name: name, DType: dt, Shape: shape}
	}
	out := []TensorHeader{t("model.embed_tokens.weight", p.vocab, h)}
	for i := int64(0); i < p.layers; i++ {
		pre := fmt.Sprintf("model.layers.%d.", i)
		if p.family == familyLlama {
			out = append(out, t(pre+"self_attn.q_proj.weight", h, h), t(pre+"self_attn.k_proj.weight", kv, h),
				t(pre+"self_attn.v_proj.weight", kv, h))
		} else {
			out = append(out,
				t(pre+"self_attn.q_proj.weight", h, h), t(pre+"self_attn.q_proj.bias", h),
				t(pre+"self_attn.k_proj.weight", kv, h), t(pre+"self_attn.k_proj.bias", kv),
				t(pre+"self_attn.v_proj.weight", kv, h), t(pre+"self_attn.v_proj.bias", kv))
		}
		out = append(out,
			t(pre+"self_attn.o_proj.weight", h, h),
			t(pre+"mlp.gate_proj.weight", p.inter, h), t(pre+"mlp.up_proj.weight", p.inter, h),
			t(pre+"mlp.down_proj.weight", h, p.inter),
			t(pre+"input_layernorm.weight", h), t(pre+"post_attention_layernorm.weight", h),
		)
	}
	return append(out, t("model.norm.weight", h), t("lm_head.weight", p.vocab, h))
}

func torchDType(dt DType) string {
	switch dt {
	case F16:
		return "float16"
	case F32:
		return "float32"
	}
	return "bfloat16"
}

func (p presetSpec) config(dt DType) map[string]any {
	if p.family == familyLlama {
		return map[string]any{
			"architectures":           []any{"LlamaForCausalLM"},
			"model_type":              "llama",
			"hidden_size":             p.hidden,
			"intermediate_size":       p.inter,
			"num_hidden_layers":       p.layers,
			"num_attention_heads":     p.heads,
			"num_key_value_heads":     p.kvHeads,
			"head_dim":                p.hidden / p.heads,
			"vocab_size":              p.vocab,
			"max_position_embeddings": p.maxPos,
			"torch_dtype":             torchDType(dt),
			"bos_token_id":            p.bosToken,
			"eos_token_id":            p.eosToken,
			"hidden_act":              "silu",
			"rms_norm_eps":            1e-5,
			"rope_theta":              500000.0,
			"rope_scaling":            nil,
			"tie_word_embeddings":     false,
			"attention_bias":          false,
			"attention_dropout":       0.0,
			"mlp_bias":                false,
			"pretraining_tp":          1,
			"initializer_range":       0.02,
			"use_cache":               true,
			"transformers_version":    "4.46.2",
		}
	}
	return map[string]any{
		"architectures":           []any{"DreamModel"},
		"model_type":              "Dream",
		"hidden_size":             p.hidden,
		"intermediate_size":       p.inter,
		"num_hidden_layers":       p.layers,
		"num_attention_heads":     p.heads,
		"num_key_value_heads":     p.kvHeads,
		"vocab_size":              p.vocab,
		"max_position_embeddings": p.maxPos,
		"torch_dtype":             torchDType(dt),
		"mask_token_id":           p.maskToken,
		"bos_token_id":            p.bosToken,
		"eos_token_id":            p.eosToken,
		"pad_token_id":            p.pad,
		"hidden_act":              "silu",
		"rms_norm_eps":            1e-6,
		"rope_theta":              1000000.0,
		"tie_word_embeddings":     false,
		"attention_dropout":       0.0,
		"initializer_range":       0.02,
		"use_cache":               false,
		"transformers_version":    "4.46.2",
	}
}

// shardSplit splits headers into n shards of roughly equal size at tensor
// boundaries (a tensor goes to the shard holding its midpoint).
func shardSplit(hs []TensorHeader, n int) [][]TensorHeader {
	if n <= 1 {
		return [][]TensorHeader{hs}
	}
	var total int64
	for _, h := range hs {
		total += h.Bytes()
	}
	out := make([][]TensorHeader, n)
	var cum int64
	for _, h := range hs {
		b := h.Bytes()
		k := int((float64(cum) + float64(b)/2) / float64(total) * float64(n))
		k = min(max(k, 0), n-1)
		cum += b
		out[k] = append(out[k], h)
	}
	// Never leave a shard empty (only possible for degenerate layouts).
	var nonEmpty [][]TensorHeader
	for _, s := range out {
		if len(s) > 0 {
			nonEmpty = append(nonEmpty, s)
		}
	}
	return nonEmpty
}

// Generate writes a synthetic model of the given preset to o.Out. Values
// are deterministic functions of (Seed, tensor name, element index): the
// same seed gives byte-identical files whatever the CPU count. The model
// is built in a temporary sibling renamed into place at the end
// (internal/outdir); on error or cancellation nothing is left.
func Generate(ctx context.Context, o GenOptions) (err error) {
	p, err := findPreset(o.Preset)
	if err != nil {
		return err
	}
	dt := o.DType
	if dt == "" {
		dt = BF16
	}
	if dt != BF16 && dt != F16 && dt != F32 {
		return fmt.Errorf("modelio: generate: dtype %q not supported (BF16, F16 or F32)", string(dt))
	}
	if o.Out == "" {
		return errors.New("modelio: generate: no output directory")
	}
	return outdir.Write(o.Out, outdir.Options{Overwrite: o.Overwrite, Force: o.Force, Command: "gen-model"}, func(tmp string) error {
		layout := p.layout(dt)
		shards := shardSplit(layout, p.shards)
		names := make([]string, len(shards))
		for i := range shards {
			names[i] = SingleFile
			if len(shards) > 1 {
				names[i] = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
			}
		}
		if err := writeGenAux(tmp, p, dt); err != nil {
			return err
		}
		meta := map[string]string{"format": "pt",
			"arrowquant.synthetic": fmt.Sprintf("preset=%s seed=%d dtype=%s", p.name, o.Seed, dt)}
		if err := runGeneration(ctx, tmp, shards, names, o.Seed, meta, o.Progress); err != nil {
			return err
		}
		if len(shards) > 1 {
			wm := map[string]string{}
			var total int64
			for i, s := range shards {
				for _, h := range s {
					wm[h.Name] = names[i]
					total += h.Bytes()
				}
			}
			if err := WriteIndex(tmp, wm, total); err != nil {
				return err
			}
		}
		return ctx.Err()
	})
}

// Chat templates of the synthetic tokenizers (ChatML for the Dream/Qwen2
// family, Llama 3's header format for the Llama family).
const (
	chatMLTemplate = `{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}` +
		`{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`
	llama3Template = `{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}` +
		`{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}`
)

func writeGenAux(dir string, p presetSpec, dt DType) error {
	type file struct {
		name string
		v    any
	}
	var files []file
	var tokJSON []byte
	var decoder orderedJSON
	if p.tok != nil {
		var err error
		if tokJSON, decoder, err = p.tok.tokenizerFiles(); err != nil {
			return err
		}
	}
	if p.family == familyLlama {
		tc := map[string]any{
			"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": p.maxPos,
			"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "clean_up_tokenization_spaces": true,
			"model_input_names": []any{"input_ids", "attention_mask"}, "chat_template": llama3Template,
			"added_tokens_decoder": decoder}
		files = []file{
			{ConfigFile, p.config(dt)},
			{"generation_config.json", map[string]any{
				"bos_token_id": p.bosToken, "eos_token_id": p.eosToken, "transformers_version": "4.46.2"}},
			{"tokenizer_config.json", tc},
		}
	} else {
		tc := map[string]any{
			"tokenizer_class": "Qwen2Tokenizer", "model_max_length": p.maxPos,
			"bos_token": nil, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "<|mask|>",
			"clean_up_tokenization_spaces": false, "padding_side": "left"}
		if p.tok != nil {
			tc["added_tokens_decoder"] = decoder
			tc["chat_template"] = chatMLTemplate
		}
		files = []file{
			{ConfigFile, p.config(dt)},
			{"generation_config.json", map[string]any{
				"bos_token_id": p.bosToken, "eos_token_id": p.eosToken, "pad_token_id": p.pad,
				"mask_token_id": p.maskToken, "transformers_version": "4.46.2"}},
			{"tokenizer_config.json", tc},
		}
	}
	for _, f := range files {
		b, err := marshalIndent(f.v)
		if err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(dir, f.name), b); err != nil {
			return err
		}
	}
	if tokJSON != nil {
		return writeFileAtomic(filepath.Join(dir, "tokenizer.json"), tokJSON)
	}
	return nil
}

// Kinds of synthetic tensors.
const (
	kindMatrix = iota // N(0, σ_row²), σ_row = 0.02·lognormal, optional outlier input columns
	kindEmbed         // N(0, 0.02²)
	kindNorm          // 1 + N(0, 0.05²), positive
	kindBias          // N(0, 0.01²)
)

// genTensor holds what is needed to produce any chunk of one tensor.
type genTensor struct {
	h        TensorHeader
	kind     int
	cols     int64
	seed     uint64
	rowScale []float32 // kindMatrix: per output row
	colScale []float32 // kindMatrix with outliers: per input column, else nil
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func nameSeed(seed int64, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return splitmix64(uint64(seed) ^ splitmix64(h.Sum64()))
}

// Stream ids of the per-tensor random streams; chunk streams use the
// chunk's first element index (< 2^62).
const (
	streamRows     = 1<<63 | 1
	streamOutliers = 1<<63 | 2
)

// outlierColumns returns the per-input-channel scale of a layer: 0.5% of
// the channels (at least one) scaled ×8..×20, shared by the projections
// reading the layer's hidden state (q/k/v and gate/up), as activation
// outliers are.
func outlierColumns(seed int64, layer string, cols int64) []float32 {
	rng := rand.New(rand.NewPCG(nameSeed(seed, layer+"#outliers"), streamOutliers))
	s := make([]float32, cols)
	for i := range s {
		s[i] = 1
	}
	n := int(math.Ceil(0.005 * float64(cols)))
	perm := rng.Perm(int(cols))
	for _, c := range perm[:n] {
		s[c] = float32(8 + 12*rng.Float64())
	}
	return s
}

func newGenTensor(h TensorHeader, seed int64, outliers map[string][]float32) *genTensor {
	g := &genTensor{h: h, seed: nameSeed(seed, h.Name)}
	name := h.Name
	switch {
	case strings.HasSuffix(name, "embed_tokens.weight"):
		g.kind = kindEmbed
	case strings.HasSuffix(name, "norm.weight"):
		g.kind = kindNorm
	case strings.HasSuffix(name, ".bias"):
		g.kind = kindBias
	case len(h.Shape) == 2:
		g.kind = kindMatrix
		rows := h.Shape[0]
		g.cols = h.Shape[1]
		rng := rand.New(rand.NewPCG(g.seed, streamRows))
		g.rowScale = make([]float32, rows)
		for r := range g.rowScale {
			g.rowScale[r] = float32(0.02 * math.Exp(0.3*rng.NormFloat64()))
		}
		for _, proj := range []string{"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.",
			"mlp.gate_proj.", "mlp.up_proj."} {
			if i := strings.Index(name, proj); i >= 0 {
				layer := name[:i]
				if outliers[layer] == nil || int64(len(outliers[layer])) != g.cols {
					outliers[layer] = outlierColumns(seed, layer, g.cols)
				}
				g.colScale = outliers[layer]
			}
		}
	default:
		g.kind = kindBias
	}
	return g
}

// fill writes elements [start, start+len(dst)) of the tensor.
func (g *genTensor) fill(dst []float32, start int64) {
	rng := rand.New(rand.NewPCG(g.seed, uint64(start)))
	switch g.kind {
	case kindEmbed:
		for i := range dst {
			dst[i] = float32(0.02 * rng.NormFloat64())
		}
	case kindBias:
		for i := range dst {
			dst[i] = float32(0.01 * rng.NormFloat64())
		}
	case kindNorm:
		for i := range dst {
			dst[i] = float32(max(1+0.05*rng.NormFloat64(), 0.05))
		}
	case kindMatrix:
		e := start
		for i := 0; i < len(dst); {
			r, c := e/g.cols, e%g.cols
			n := int(min(g.cols-c, int64(len(dst)-i)))
			rs := g.rowScale[r]
			seg := dst[i : i+n]
			if g.colScale == nil {
				for j := range seg {
					seg[j] = float32(rng.NormFloat64()) * rs
				}
			} else {
				cs := g.colScale[c : c+int64(n)]
				for j := range seg {
					seg[j] = float32(float32(rng.NormFloat64())*rs) * cs[j]
				}
			}
			i += n
			e += int64(n)
		}
	}
}

type genJob struct {
	g     *genTensor
	start int64
	n     int
	buf   []byte
	done  chan struct{}
}

// runGeneration produces the shards in dir with NumCPU generator goroutines
// and one writer; at most 2·NumCPU+2 chunk buffers exist at any time.
func runGeneration(ctx context.Context, dir string, shards [][]TensorHeader, names []string, seed int64,
	meta map[string]string, progress func(done, total int64)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := runtime.NumCPU()
	nbuf := 2*workers + 2
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- nil
	}
	ordered := make(chan *genJob, nbuf)
	work := make(chan *genJob, nbuf)
	var total int64
	for _, s := range shards {
		for _, h := range s {
			total += h.Bytes()
		}
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // producer: chunk jobs in file order
		defer wg.Done()
		defer close(work)
		defer close(ordered)
		outliers := map[string][]float32{}
		for _, s := range shards {
			for _, h := range s {
				g := newGenTensor(h, seed, outliers)
				n := TensorInfo{Shape: h.Shape}.NumElements()
				for start := int64(0); start < n; start += genChunkElems {
					var buf []byte
					select {
					case buf = <-free:
					case <-ctx.Done():
						return
					}
					j := &genJob{g: g, start: start, n: int(min(genChunkElems, n-start)), buf: buf, done: make(chan struct{})}
					ordered <- j // never blocks: capacity nbuf bounds jobs in flight
					select {
					case work <- j:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			scratch := make([]float32, genChunkElems)
			for j := range work {
				if ctx.Err() != nil { // cancelled: the writer no longer waits
					close(j.done)
					continue
				}
				esz := j.g.h.DType.Size()
				if len(j.buf) < j.n*esz {
					j.buf = make([]byte, genChunkElems*esz)
				}
				vals := scratch[:j.n]
				j.g.fill(vals, j.start)
				raw := j.buf[:j.n*esz]
				switch j.g.h.DType {
				case BF16:
					fp.EncodeBF16(raw, vals)
				case F16:
					fp.EncodeHalf(raw, vals)
				case F32:
					fp.EncodeF32(raw, vals)
				}
				close(j.done)
			}
		}()
	}

	err := writeShards(ctx, dir, shards, names, meta, ordered, free, total, progress)
	cancel()
	wg.Wait()
	return err
}

func writeShards(ctx context.Context, dir string, shards [][]TensorHeader, names []string, meta map[string]string,
	ordered <-chan *genJob, free chan<- []byte, total int64, progress func(done, total int64)) error {
	var done int64
	if progress != nil {
		progress(0, total)
	}
	for i, s := range shards {
		w, err := CreateSafetensors(filepath.Join(dir, names[i]), s, meta)
		if err != nil {
			return err
		}
		for w.Remaining() > 0 {
			var j *genJob
			select {
			case j = <-ordered:
			case <-ctx.Done():
				w.Close()
				return ctx.Err()
			}
			if j == nil {
				w.Close()
				if err := ctx.Err(); err != nil {
					return err
				}
				return errors.New("modelio: generate: producer stopped early")
			}
			select {
			case <-j.done:
			case <-ctx.Done():
				w.Close()
				return ctx.Err()
			}
			nb := j.n * j.g.h.DType.Size()
			if _, err := w.Write(j.buf[:nb]); err != nil {
				w.Close()
				return err
			}
			free <- j.buf
			done += int64(nb)
			if progress != nil {
				progress(done, total)
			}
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	return nil
}
