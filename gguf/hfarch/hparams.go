package hfarch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"
)

// readJSONFile reads a JSON object; a missing file is (nil, nil).
// Other failures wrap errIO.
func readJSONFile(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errIO, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errIO, path, err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s: not a JSON object", errIO, path)
	}
	return obj, nil
}

// hparams is a parsed config.json.
type hparams map[string]any

func newHParams(cfg map[string]any) hparams {
	if cfg == nil {
		return hparams{}
	}
	return hparams(cfg)
}

// flatten moves text_config to the top level, as the converter does for
// multimodal wrappers.
func (h hparams) flatten() hparams {
	tc, ok := h["text_config"].(map[string]any)
	if !ok {
		return h
	}
	out := hparams{}
	for k, v := range h {
		out[k] = v
	}
	for k, v := range tc {
		out[k] = v
	}
	return out
}

func (h hparams) str(key string) (string, bool) {
	s, ok := h[key].(string)
	return s, ok
}

func (h hparams) strings(key string) []string {
	switch v := h[key].(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// find returns the first of keys present (non-null), like the converter's
// find_hparam.
func (h hparams) find(keys ...string) (string, any, bool) {
	for _, k := range keys {
		if v, ok := h[k]; ok && v != nil {
			return k, v, true
		}
	}
	return "", nil, false
}

// intOf converts a JSON integer; ok is false for non-integers.
func intOf(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, true
		}
		if f, err := x.Float64(); err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int64(f), true
		}
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), true
		}
	case int:
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

func floatOf(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}

// findUint finds a non-negative integer hyper-parameter that fits uint32.
func (h hparams) findUint(keys ...string) (uint32, bool, error) {
	k, v, ok := h.find(keys...)
	if !ok {
		return 0, false, nil
	}
	i, ok := intOf(v)
	if !ok || i < 0 || i > math.MaxUint32 {
		return 0, false, fmt.Errorf("%s = %v is not a non-negative 32-bit integer: %w", k, v, ErrConfig)
	}
	return uint32(i), true, nil
}

func (h hparams) findFloat(keys ...string) (float32, bool, error) {
	k, v, ok := h.find(keys...)
	if !ok {
		return 0, false, nil
	}
	f, ok := floatOf(v)
	if !ok {
		return 0, false, fmt.Errorf("%s = %v is not a number: %w", k, v, ErrConfig)
	}
	return float32(f), true, nil
}

// Hyper-parameter key lists of the converter's TextModel.set_gguf_parameters.
var (
	keysBlockCount = []string{"n_layers", "num_hidden_layers", "n_layer", "num_layers"}
	keysContext    = []string{"max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length", "model_max_length"}
	keysEmbd       = []string{"hidden_size", "n_embd", "dim"}
	keysFF         = []string{"prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size", "n_inner", "hidden_dim"}
	keysHead       = []string{"num_attention_heads", "n_head", "n_heads"}
	keysHeadKV     = []string{"num_key_value_heads", "n_kv_heads"}
	keysRopeTheta  = []string{"global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta", "rotary_emb_base"}
	keysRMSEps     = []string{"rms_norm_eps", "norm_eps"}
	keysNormEps    = []string{"layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"}
	keysExperts    = []string{"num_local_experts", "num_experts", "n_routed_experts"}
)

// generalKVs writes general.architecture, general.type, general.name,
// general.organization and general.size_label.
func generalKVs(kv *kvList, arch, name string, h hparams, params int64) {
	kv.add("general.architecture", arch)
	kv.add("general.type", "model")
	kv.add("general.name", name)
	if org := modelOrganization(h); org != "" {
		kv.add("general.organization", org)
	}
	if params > 0 {
		kv.add("general.size_label", SizeLabel(params))
	}
}

// modelID is config.json's _name_or_path when it looks like a hub id
// (at most one '/'), else the directory name.
func modelID(h hparams, dir string) (org, model string) {
	if id, ok := h.str("_name_or_path"); ok && id != "" && strings.Count(id, "/") <= 1 {
		if o, m, found := strings.Cut(id, "/"); found {
			return o, m
		}
		return "", id
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	return "", filepath.Base(abs)
}

func modelName(h hparams, dir string) string {
	_, m := modelID(h, dir)
	return idToTitle(m)
}

func modelOrganization(h hparams) string {
	if id, ok := h.str("_name_or_path"); ok && strings.Count(id, "/") == 1 {
		o, _, _ := strings.Cut(id, "/")
		return idToTitle(o)
	}
	return ""
}

var versionOrNumber = regexp.MustCompile(`^(v\d+(?:\.\d+)*|\d.*)$`)

// idToTitle is gguf-py's Metadata.id_to_title: dashes become spaces and
// all-lower-case words that are not versions or numbers are title-cased.
func idToTitle(s string) string {
	words := strings.Fields(strings.ReplaceAll(strings.TrimSpace(s), "-", " "))
	for i, w := range words {
		if isLower(w) && !versionOrNumber.MatchString(w) {
			words[i] = pyTitle(w)
		}
	}
	return strings.Join(words, " ")
}

// isLower is Python's str.islower: at least one cased letter and no
// upper-case one.
func isLower(s string) bool {
	cased := false
	for _, r := range s {
		if unicode.IsUpper(r) || unicode.IsTitle(r) {
			return false
		}
		if unicode.IsLower(r) {
			cased = true
		}
	}
	return cased
}

// pyTitle is Python's str.title: a letter after a non-letter is upper case.
func pyTitle(s string) string {
	var b strings.Builder
	prevLetter := false
	for _, r := range s {
		if unicode.IsLetter(r) {
			if prevLetter {
				b.WriteRune(unicode.ToLower(r))
			} else {
				b.WriteRune(unicode.ToTitle(r))
			}
			prevLetter = true
		} else {
			b.WriteRune(r)
			prevLetter = false
		}
	}
	return b.String()
}

// SizeLabel is gguf-py's size_label for a dense model: the parameter count
// rounded to at least two significant digits with K, M, B or T
// (7,615,616,512 → "7.6B").
func SizeLabel(params int64) string {
	p := float64(params)
	var scaled float64
	var suffix string
	switch {
	case p > 1e12:
		scaled, suffix = p*1e-12, "T"
	case p > 1e9:
		scaled, suffix = p*1e-9, "B"
	case p > 1e6:
		scaled, suffix = p*1e-6, "M"
	default:
		scaled, suffix = p*1e-3, "K"
	}
	digits := len(strings.TrimLeft(fmt.Sprintf("%d", int64(math.RoundToEven(scaled))), "0"))
	fix := max(2-digits, 0)
	return fmt.Sprintf("%.*f%s", fix, scaled, suffix)
}

// textModelParams writes what the converter's TextModel.set_gguf_parameters
// writes, in its order (general.file_type, last there, is the writer's).
func textModelParams(kv *kvList, arch string, h hparams) error {
	key := func(s string) string { return arch + "." + s }
	n, ok, err := h.findUint(keysBlockCount...)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("none of %s: %w", strings.Join(keysBlockCount, ", "), ErrConfig)
	}
	kv.add(key("block_count"), n)
	for _, p := range []struct {
		keys []string
		kv   string
	}{
		{keysContext, "context_length"},
		{keysEmbd, "embedding_length"},
		{keysFF, "feed_forward_length"},
		{keysHead, "attention.head_count"},
		{keysHeadKV, "attention.head_count_kv"},
	} {
		v, ok, err := h.findUint(p.keys...)
		if err != nil {
			return err
		}
		if ok {
			kv.add(key(p.kv), v)
		}
	}
	if c, ok := h["is_causal"].(bool); ok && !c {
		kv.add(key("attention.causal"), false)
	}

	rope := ropeParams(h)
	if rt, ok := rope["rope_type"].(string); ok {
		factor, hasFactor := floatOf(rope["factor"])
		switch {
		case rt == "linear" && hasFactor:
			kv.add(key("rope.scaling.type"), "linear")
			kv.add(key("rope.scaling.factor"), float32(factor))
		case rt == "yarn" && hasFactor:
			kv.add(key("rope.scaling.type"), "yarn")
			kv.add(key("rope.scaling.factor"), float32(factor))
			orig, ok := intOf(rope["original_max_position_embeddings"])
			if !ok || orig < 0 || orig > math.MaxUint32 {
				return fmt.Errorf("yarn rope scaling without original_max_position_embeddings: %w", ErrConfig)
			}
			kv.add(key("rope.scaling.original_context_length"), uint32(orig))
			for _, p := range []struct{ hf, gguf string }{
				{"extrapolation_factor", "rope.scaling.yarn_ext_factor"},
				{"attention_factor", "rope.scaling.yarn_attn_factor"},
				{"attn_factor", "rope.scaling.yarn_attn_factor"},
				{"beta_fast", "rope.scaling.yarn_beta_fast"},
				{"beta_slow", "rope.scaling.yarn_beta_slow"},
			} {
				if f, ok := floatOf(rope[p.hf]); ok {
					kv.add(key(p.gguf), float32(f))
				}
			}
		case rt == "default" || rt == "dynamic":
		case strings.EqualFold(rt, "llama3"), rt == "su", rt == "longrope":
			// The converter generates rope-factor tensors for these; the
			// export writes only the model's own tensors.
			return fmt.Errorf("rope_type %q needs rope-factor tensors that the export does not generate: %w", rt, ErrConfig)
		case rt != "linear" && rt != "yarn":
			return fmt.Errorf("unknown rope_type %q: %w", rt, ErrConfig)
		}
	}
	if _, ok := rope["mrope_section"]; ok {
		return fmt.Errorf("multimodal rope (mrope_section) is not in the tables: %w", ErrConfig)
	}
	if theta, ok := floatOf(rope["rope_theta"]); ok {
		kv.add(key("rope.freq_base"), float32(theta))
	}
	if f, ok, err := h.findFloat(keysRMSEps...); err != nil {
		return err
	} else if ok {
		kv.add(key("attention.layer_norm_rms_epsilon"), f)
	}
	if f, ok, err := h.findFloat(keysNormEps...); err != nil {
		return err
	} else if ok {
		kv.add(key("attention.layer_norm_epsilon"), f)
	}
	if k, _, ok := h.find(keysExperts...); ok {
		return fmt.Errorf("%s: mixture-of-experts models are not in the tables: %w", k, ErrConfig)
	}
	if hd, ok, err := h.findUint("head_dim"); err != nil {
		return err
	} else if ok {
		kv.add(key("attention.key_length"), hd)
		kv.add(key("attention.value_length"), hd)
	}
	return nil
}

// ropeParams merges rope_parameters / rope_scaling with the top-level
// rope_theta as the converter's TextModel.__init__ does.
func ropeParams(h hparams) map[string]any {
	out := map[string]any{}
	src, ok := h["rope_parameters"].(map[string]any)
	if !ok {
		src, _ = h["rope_scaling"].(map[string]any)
	}
	for k, v := range src {
		out[k] = v
	}
	if fa, ok := out["full_attention"].(map[string]any); ok {
		return fa
	}
	if _, ok := out["rope_theta"]; !ok {
		if _, v, ok := h.find(keysRopeTheta...); ok {
			out["rope_theta"] = v
		}
	}
	if _, ok := out["rope_type"]; !ok {
		if t, ok := out["type"]; ok {
			out["rope_type"] = t
		}
	}
	return out
}

// poolingKVs reads a sentence-transformers modules.json (as the
// converter's _try_set_pooling_type) and writes <arch>.pooling_type.
func poolingKVs(kv *kvList, arch, dir string) error {
	path := filepath.Join(dir, "modules.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errIO, err)
	}
	var mods []struct{ Type, Path string }
	if err := json.Unmarshal(b, &mods); err != nil {
		return fmt.Errorf("%w: %s: %w", errIO, path, err)
	}
	for _, m := range mods {
		if !strings.HasSuffix(m.Type, "Pooling") {
			continue
		}
		pcPath := filepath.Join(dir, m.Path, "config.json")
		pc, err := readJSONFile(pcPath)
		if err != nil {
			return err
		}
		if pc == nil {
			return fmt.Errorf("%s: pooling module %s has no config.json: %w", path, m.Path, ErrConfig)
		}
		var t uint32
		switch {
		case pc["pooling_mode_mean_tokens"] == true:
			t = 1
		case pc["pooling_mode_cls_token"] == true:
			t = 2
		case pc["pooling_mode_lasttoken"] == true:
			t = 3
		default:
			switch pc["pooling_mode"] {
			case "mean":
				t = 1
			case "cls":
				t = 2
			case "lasttoken":
				t = 3
			default:
				return fmt.Errorf("%s: only mean, cls and last-token pooling are supported: %w", pcPath, ErrConfig)
			}
		}
		kv.add(arch+".pooling_type", t)
		return nil
	}
	return nil
}
