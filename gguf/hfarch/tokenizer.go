package hfarch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Token types (gguf-py TokenType, llama.cpp's llama_token_type).
const (
	TokenNormal      int32 = 1
	TokenUnknown     int32 = 2
	TokenControl     int32 = 3
	TokenUserDefined int32 = 4
	TokenUnused      int32 = 5
	TokenByte        int32 = 6
)

// preTokenizers maps the Split regex of a byte-level BPE tokenizer.json
// (as Hugging Face writes it) to llama.cpp's tokenizer.ggml.pre name. The
// converter identifies the pre-tokenizer by hashing the token ids of a
// probe text; that needs the model's own vocabulary to match a known
// model, so hfarch matches the rule itself: the regex llama.cpp
// implements for that name (llama-vocab.cpp, llm_tokenizer_bpe).
// ignoreMerges is llama.cpp's setting for the name; tokenizer.json's
// model.ignore_merges should agree.
var preTokenizers = []struct {
	name         string
	pattern      string // "" = ByteLevel with use_regex (GPT-2's built-in regex)
	ignoreMerges bool
}{
	{name: "qwen2", pattern: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`},
	{name: "llama-bpe", pattern: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`, ignoreMerges: true},
	{name: "gpt-2", pattern: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`},
	{name: "gpt-2", pattern: ""},
}

// PreTokenizerNames lists the tokenizer.ggml.pre values hfarch writes for
// byte-level BPE.
func PreTokenizerNames() []string {
	var out []string
	for _, p := range preTokenizers {
		if len(out) == 0 || out[len(out)-1] != p.name {
			out = append(out, p.name)
		}
	}
	return out
}

type addedToken struct {
	ID         int64  `json:"id"`
	Content    string `json:"content"`
	Special    bool   `json:"special"`
	Normalized *bool  `json:"normalized"`
}

type tokenizerJSON struct {
	AddedTokens   []addedToken    `json:"added_tokens"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Model         struct {
		Type                    string          `json:"type"`
		Vocab                   json.RawMessage `json:"vocab"`
		Merges                  json.RawMessage `json:"merges"`
		UnkToken                *string         `json:"unk_token"`
		ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
		ByteFallback            bool            `json:"byte_fallback"`
		IgnoreMerges            bool            `json:"ignore_merges"`
	} `json:"model"`
}

type preTok struct {
	Type          string          `json:"type"`
	Pretokenizers []preTok        `json:"pretokenizers"`
	Pattern       json.RawMessage `json:"pattern"`
	UseRegex      *bool           `json:"use_regex"`
	AddPrefix     bool            `json:"add_prefix_space"`
}

// vocabulary is a tokenizer read from a model directory.
type vocabulary struct {
	model     string // "gpt2" | "bert"
	pre       string
	tokens    []string
	types     []int32
	merges    []string
	byteLevel bool
	warnings  []string
}

// readTokenizer reads tokenizer.json / tokenizer_config.json (and the
// special ids of config.json) and returns the tokenizer.* KVs the
// converter writes for the vocabulary style. nVocab is config.json's
// vocab_size (the token list is padded to it with [PAD<id>] tokens).
func readTokenizer(dir string, spec *archSpec, h hparams, nVocab int64) ([]KV, []string, error) {
	kind := spec.vocab
	tjPath := filepath.Join(dir, "tokenizer.json")
	raw, err := os.ReadFile(tjPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s: %w (llama.cpp needs the vocabulary in the GGUF)", tjPath, ErrNoTokenizer)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errIO, err)
	}
	var tj tokenizerJSON
	if err := json.Unmarshal(raw, &tj); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", errIO, tjPath, err)
	}
	tcPath := filepath.Join(dir, "tokenizer_config.json")
	tc, err := readJSONFile(tcPath)
	if err != nil {
		return nil, nil, err
	}

	v, err := buildVocabulary(&tj, tc, kind, nVocab)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", tjPath, err)
	}
	kv := &kvList{}
	if kind == vocabBERT {
		tv, _, err := h.findUint("type_vocab_size")
		if err != nil {
			return nil, nil, err
		}
		if tv == 0 {
			tv = 1
		}
		kv.add("tokenizer.ggml.token_type_count", tv)
	}
	if kind == vocabGPT2 {
		// LlamaModel.set_vocab writes add_space_prefix first when set.
		if ap, ok := tc["add_prefix_space"].(bool); ok && spec.name == "llama" {
			kv.add("tokenizer.ggml.add_space_prefix", ap)
		}
	}
	kv.add("tokenizer.ggml.model", v.model)
	kv.add("tokenizer.ggml.pre", v.pre)
	kv.add("tokenizer.ggml.tokens", v.tokens)
	kv.add("tokenizer.ggml.token_type", v.types)
	if err := specialVocab(kv, dir, &tj, tc, h, v, kind == vocabBERT); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", tjPath, err)
	}
	return kv.list, v.warnings, nil
}

func buildVocabulary(tj *tokenizerJSON, tc map[string]any, kind vocabKind, nVocab int64) (*vocabulary, error) {
	mtype := tj.Model.Type
	if mtype == "" { // old files leave the type out
		switch {
		case len(tj.Model.Merges) > 0:
			mtype = "BPE"
		case tj.Model.ContinuingSubwordPrefix != nil:
			mtype = "WordPiece"
		}
	}
	v := &vocabulary{}
	switch kind {
	case vocabBERT:
		if mtype != "WordPiece" {
			return nil, fmt.Errorf("model.type %q: %w: bert needs a WordPiece vocabulary", mtype, ErrTokenizer)
		}
		v.model = "bert"
		// llama.cpp reads tokenizer.ggml.pre only for BPE vocabularies; the
		// converter writes the name its probe hash finds (e.g. "bert-bge").
		v.pre = "default"
	default:
		if mtype != "BPE" {
			return nil, fmt.Errorf("model.type %q: %w: only byte-level BPE (tokenizer.ggml.model gpt2) and WordPiece (bert) are supported", mtype, ErrTokenizer)
		}
		if tj.Model.ByteFallback {
			return nil, fmt.Errorf("BPE with byte_fallback (SentencePiece-style): %w: only byte-level BPE is supported", ErrTokenizer)
		}
		pre, ignore, err := matchPreTokenizer(tj.PreTokenizer)
		if err != nil {
			return nil, err
		}
		v.model, v.pre, v.byteLevel = "gpt2", pre, true
		if ignore != tj.Model.IgnoreMerges {
			v.warnings = append(v.warnings, fmt.Sprintf("model.ignore_merges is %v but llama.cpp's %q pre-tokenizer uses %v", tj.Model.IgnoreMerges, pre, ignore))
		}
		merges, err := parseMerges(tj.Model.Merges)
		if err != nil {
			return nil, err
		}
		if len(merges) == 0 {
			return nil, fmt.Errorf("model.merges is empty: %w: llama.cpp's BPE needs merges", ErrTokenizer)
		}
		v.merges = merges
	}

	// id → token: model.vocab, then added tokens (tokenizer.json, then
	// tokenizer_config.json's added_tokens_decoder, which transformers
	// gives precedence).
	var vocab map[string]int64
	if err := json.Unmarshal(tj.Model.Vocab, &vocab); err != nil {
		return nil, fmt.Errorf("model.vocab: %w: %v", ErrTokenizer, err)
	}
	byID := map[int64]string{}
	for tok, id := range vocab {
		if id < 0 {
			return nil, fmt.Errorf("model.vocab: token %q has id %d: %w", tok, id, ErrTokenizer)
		}
		if prev, dup := byID[id]; dup {
			return nil, fmt.Errorf("model.vocab: id %d is both %q and %q: %w", id, prev, tok, ErrTokenizer)
		}
		byID[id] = tok
	}
	type addedInfo struct {
		special, normalized bool
	}
	// Hugging Face tokenizers ignores the id of an added token that is not
	// in model.vocab and gives it the next id after the vocabulary, in list
	// order (transformers, and so llama.cpp's converter, see those ids). A
	// file whose ids disagree would export a different vocabulary than the
	// model was trained with: refuse it.
	added := map[int64]addedInfo{}
	addedByContent := map[string]int64{}
	next := int64(len(vocab))
	for _, a := range tj.AddedTokens {
		if id, ok := vocab[a.Content]; ok {
			if id != a.ID {
				return nil, fmt.Errorf("added token %q has id %d but model.vocab gives it %d: %w", a.Content, a.ID, id, ErrTokenizer)
			}
		} else if _, dup := addedByContent[a.Content]; !dup {
			if a.ID != next {
				return nil, fmt.Errorf("added token %q has id %d but Hugging Face tokenizers gives it id %d "+
					"(added tokens not in model.vocab take consecutive ids after it, in list order): %w", a.Content, a.ID, next, ErrTokenizer)
			}
			next++
		}
		byID[a.ID] = a.Content
		addedByContent[a.Content] = a.ID
		added[a.ID] = addedInfo{special: a.Special, normalized: a.Normalized == nil || *a.Normalized}
	}
	if dec, ok := tc["added_tokens_decoder"].(map[string]any); ok {
		type decEntry struct {
			id      int64
			content string
			info    addedInfo
		}
		var entries []decEntry
		for k, e := range dec {
			id, err := parseID(k)
			obj, ok := e.(map[string]any)
			if err != nil || !ok {
				return nil, fmt.Errorf("tokenizer_config.json added_tokens_decoder[%q]: %w", k, ErrTokenizer)
			}
			content, _ := obj["content"].(string)
			if content == "" {
				return nil, fmt.Errorf("tokenizer_config.json added_tokens_decoder[%q] has no content: %w", k, ErrTokenizer)
			}
			special, _ := obj["special"].(bool)
			norm, hasNorm := obj["normalized"].(bool)
			entries = append(entries, decEntry{id, content, addedInfo{special: special, normalized: !hasNorm || norm}})
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].id < entries[j].id })
		for _, e := range entries {
			want, known := addedByContent[e.content]
			if !known {
				want, known = vocab[e.content]
			}
			if !known { // transformers adds it after the others
				want = next
				next++
			}
			if e.id != want {
				return nil, fmt.Errorf("tokenizer_config.json added_tokens_decoder gives %q id %d, tokenizer.json %d: %w", e.content, e.id, want, ErrTokenizer)
			}
			byID[e.id] = e.content
			added[e.id] = e.info
		}
	}
	var maxID int64 = -1
	for id := range byID {
		maxID = max(maxID, id)
	}
	if nVocab <= 0 {
		nVocab = maxID + 1
	}
	if maxID >= nVocab {
		return nil, fmt.Errorf("token id %d (%q) is not below config.json vocab_size %d: %w", maxID, byID[maxID], nVocab, ErrTokenizer)
	}

	v.tokens = make([]string, nVocab)
	v.types = make([]int32, nVocab)
	for i := int64(0); i < nVocab; i++ {
		tok, ok := byID[i]
		if !ok {
			v.tokens[i] = fmt.Sprintf("[PAD%d]", i)
			v.types[i] = TokenUnused
			continue
		}
		a, isAdded := added[i]
		switch {
		case !isAdded:
			v.types[i] = TokenNormal
		case kind == vocabDream:
			// DreamModel.get_vocab_base: the special flag alone decides.
			if a.special {
				v.types[i] = TokenControl
			} else {
				v.types[i] = TokenUserDefined
			}
		default:
			// TextModel.get_vocab_base.
			if a.special || looksSpecial(tok) {
				v.types[i] = TokenControl
			} else {
				// Pre-normalise user-defined spaces (▁ → ' ') as the converter does.
				tok = strings.ReplaceAll(tok, "\u2581", " ")
				v.types[i] = TokenUserDefined
			}
		}
		v.tokens[i] = tok
	}
	if kind == vocabBERT {
		// BertModel.set_vocab: phantom-space vocabulary.
		for i, tok := range v.tokens {
			if v.types[i] == TokenControl {
				continue
			}
			if s, ok := strings.CutPrefix(tok, "##"); ok {
				v.tokens[i] = s
			} else {
				v.tokens[i] = "\u2581" + tok
			}
		}
	}
	if v.byteLevel {
		have := map[string]bool{}
		for _, t := range v.tokens {
			have[t] = true
		}
		var missing []int
		for b, r := range byteToUnicode() {
			if !have[string(r)] {
				missing = append(missing, b)
			}
		}
		if len(missing) > 0 {
			v.warnings = append(v.warnings, fmt.Sprintf("%d of the 256 byte tokens are missing (bytes %v...)", len(missing), missing[:min(len(missing), 8)]))
		}
	}
	return v, nil
}

func parseID(s string) (int64, error) {
	var id int64
	if _, err := fmt.Sscanf(s, "%d", &id); err != nil || id < 0 || fmt.Sprint(id) != s {
		return 0, fmt.Errorf("bad id %q", s)
	}
	return id, nil
}

// looksSpecial is the converter's does_token_look_special.
func looksSpecial(t string) bool {
	switch t {
	case "<pad>", "<mask>", "<2mass>", "[@BOS@]":
		return true
	}
	if strings.HasPrefix(t, "<|") && strings.HasSuffix(t, "|>") {
		return true
	}
	if strings.HasPrefix(t, "<｜") && strings.HasSuffix(t, "｜>") {
		return true
	}
	return strings.HasPrefix(t, "<unused") && strings.HasSuffix(t, ">")
}

// matchPreTokenizer finds the llama.cpp pre-tokenizer of a byte-level BPE
// pre_tokenizer: a ByteLevel step (use_regex: GPT-2's regex) or a Split
// by regex followed by ByteLevel without regex.
func matchPreTokenizer(raw json.RawMessage) (string, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, fmt.Errorf("no pre_tokenizer: %w: byte-level BPE needs a ByteLevel pre-tokenizer", ErrTokenizer)
	}
	var top preTok
	if err := json.Unmarshal(raw, &top); err != nil {
		return "", false, fmt.Errorf("pre_tokenizer: %w: %v", ErrTokenizer, err)
	}
	steps := []preTok{top}
	if top.Type == "Sequence" {
		steps = top.Pretokenizers
	}
	var pattern *string
	byteLevel, byteRegex := false, false
	for _, s := range steps {
		switch s.Type {
		case "Split":
			var p struct{ Regex, String *string }
			if err := json.Unmarshal(s.Pattern, &p); err != nil || p.Regex == nil || pattern != nil {
				return "", false, fmt.Errorf("pre_tokenizer Split %s: %w: want one Split by Regex", s.Pattern, ErrTokenizer)
			}
			pattern = p.Regex
		case "ByteLevel":
			byteLevel = true
			byteRegex = s.UseRegex == nil || *s.UseRegex
			if s.AddPrefix {
				return "", false, fmt.Errorf("pre_tokenizer ByteLevel with add_prefix_space: %w: llama.cpp's BPE adds no prefix space", ErrTokenizer)
			}
		default:
			return "", false, fmt.Errorf("pre_tokenizer step %q: %w: byte-level BPE with a Split regex is supported", s.Type, ErrTokenizer)
		}
	}
	if !byteLevel {
		return "", false, fmt.Errorf("BPE without a ByteLevel pre-tokenizer: %w: only byte-level BPE (GPT-2 style) is supported", ErrTokenizer)
	}
	want := ""
	switch {
	case pattern != nil && byteRegex:
		return "", false, fmt.Errorf("pre_tokenizer splits twice (Split and ByteLevel use_regex): %w", ErrTokenizer)
	case pattern != nil:
		want = *pattern
	case !byteRegex:
		return "", false, fmt.Errorf("pre_tokenizer ByteLevel without regex and no Split: %w", ErrTokenizer)
	}
	for _, p := range preTokenizers {
		if p.pattern == want {
			return p.name, p.ignoreMerges, nil
		}
	}
	return "", false, fmt.Errorf("pre-tokenizer regex %q: %w: no llama.cpp pre-tokenizer in the table matches it (known: %s)",
		want, ErrTokenizer, strings.Join(PreTokenizerNames(), ", "))
}

// parseMerges accepts "a b" strings or [a, b] pairs (transformers ≥ 4.45);
// spaces inside pair parts are written as U+0120 like gguf-py does.
func parseMerges(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("model.merges: %w: %v", ErrTokenizer, err)
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		it = bytes.TrimSpace(it)
		if len(it) > 0 && it[0] == '"' {
			var s string
			if err := json.Unmarshal(it, &s); err != nil {
				return nil, fmt.Errorf("model.merges[%d]: %w: %v", i, ErrTokenizer, err)
			}
			if a, b, ok := strings.Cut(s, " "); !ok || a == "" || b == "" || strings.Contains(b, " ") {
				return nil, fmt.Errorf("model.merges[%d] = %q: %w: want two parts separated by one space", i, s, ErrTokenizer)
			}
			out = append(out, s)
			continue
		}
		var pair []string
		if err := json.Unmarshal(it, &pair); err != nil || len(pair) != 2 || pair[0] == "" || pair[1] == "" {
			return nil, fmt.Errorf("model.merges[%d] = %s: %w: want \"a b\" or [\"a\", \"b\"]", i, it, ErrTokenizer)
		}
		enc := func(s string) string { return strings.ReplaceAll(s, " ", "\u0120") }
		out = append(out, enc(pair[0])+" "+enc(pair[1]))
	}
	return out, nil
}

// specialKeys are the GGUF keys of gguf-py SpecialVocab's token types
// ("cls" has none and is skipped, as gguf-py does).
var specialKeys = map[string]string{
	"bos":  "tokenizer.ggml.bos_token_id",
	"eos":  "tokenizer.ggml.eos_token_id",
	"unk":  "tokenizer.ggml.unknown_token_id",
	"sep":  "tokenizer.ggml.seperator_token_id",
	"pad":  "tokenizer.ggml.padding_token_id",
	"mask": "tokenizer.ggml.mask_token_id",
	"eot":  "tokenizer.ggml.eot_token_id",
	"eom":  "tokenizer.ggml.eom_token_id",
}

var addKeys = map[string]string{
	"bos": "tokenizer.ggml.add_bos_token",
	"eos": "tokenizer.ggml.add_eos_token",
	"sep": "tokenizer.ggml.add_sep_token",
}

type templatePiece struct {
	SpecialToken *struct{ ID string } `json:"SpecialToken"`
	Sequence     *struct{ ID string } `json:"Sequence"`
}

func (p templatePiece) special() string {
	if p.SpecialToken == nil {
		return ""
	}
	return p.SpecialToken.ID
}

func (p templatePiece) sequence() string {
	if p.Sequence == nil {
		return ""
	}
	return p.Sequence.ID
}

// specialVocab writes what gguf-py's SpecialVocab (load_merges=True)
// writes: merges, special token ids (tokenizer_config.json's *_token
// strings looked up among tokenizer.json's added tokens, then
// config.json's *_token_id), add_{bos,eos,sep}_token (tokenizer_config.json,
// else read off the post-processor's template) and the chat template.
// limitToVocab drops ids ≥ the token count (BertModel passes n_vocab).
func specialVocab(kv *kvList, dir string, tj *tokenizerJSON, tcIn map[string]any, h hparams, v *vocabulary, limitToVocab bool) error {
	if v.merges != nil {
		kv.add("tokenizer.ggml.merges", v.merges)
	}
	types := []string{"bos", "eos", "unk", "sep", "pad", "cls", "mask"}
	hasTC := len(tcIn) > 0
	tc := map[string]any{} // gguf-py edits its copy of tokenizer_config
	for k, val := range tcIn {
		tc[k] = val
	}
	tokenStr := func(key string) string {
		switch e := tc[key].(type) {
		case string:
			return e
		case map[string]any:
			s, _ := e["content"].(string)
			return s
		}
		return ""
	}
	ids := map[string]int64{}
	var order []string
	set := func(typ string, id int64) {
		if _, done := ids[typ]; done || id < 0 || (limitToVocab && id >= int64(len(v.tokens))) {
			return
		}
		ids[typ] = id
		order = append(order, typ)
	}
	adds := map[string]bool{}
	var addOrder []string
	setAdd := func(typ string, b bool) {
		if _, done := adds[typ]; !done {
			addOrder = append(addOrder, typ)
		}
		adds[typ] = b
	}

	bos, cls, eos, sep := tokenStr("bos_token"), tokenStr("cls_token"), tokenStr("eos_token"), tokenStr("sep_token")
	if bos == "" && cls != "" && hasTC {
		bos, tc["bos_token"] = cls, cls
	}
	if eos == "" && sep != "" && hasTC {
		eos, tc["eos_token"] = sep, sep
	}
	var procs []json.RawMessage
	if len(tj.PostProcessor) > 0 && string(tj.PostProcessor) != "null" {
		var pp struct {
			Processors []json.RawMessage `json:"processors"`
		}
		if err := json.Unmarshal(tj.PostProcessor, &pp); err != nil {
			return fmt.Errorf("post_processor: %w: %v", ErrTokenizer, err)
		}
		procs = pp.Processors
		if procs == nil {
			procs = []json.RawMessage{tj.PostProcessor}
		}
	}
	for _, raw := range procs {
		var p struct {
			Type   string          `json:"type"`
			Single []templatePiece `json:"single"`
			Pair   []templatePiece `json:"pair"`
			Cls    []any           `json:"cls"`
			Sep    []any           `json:"sep"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return fmt.Errorf("post_processor: %w: %v", ErrTokenizer, err)
		}
		switch p.Type {
		case "RobertaProcessing":
			setAdd("bos", true)
			setAdd("eos", true)
			setAdd("sep", true)
			if cls == "" && hasTC && len(p.Cls) > 0 {
				cls, _ = p.Cls[0].(string)
				tc["cls_token"] = cls
			}
			if sep == "" && hasTC && len(p.Sep) > 0 {
				sep, _ = p.Sep[0].(string)
				tc["sep_token"] = sep
			}
		case "TemplateProcessing":
			// gguf-py's crude reading of simple templates.
			first, last := "", ""
			if len(p.Single) > 1 {
				if first = p.Single[0].special(); first != "" {
					if !hasTC {
						bos = first
					}
					setAdd("bos", first == bos || first == cls)
				}
				if last = p.Single[len(p.Single)-1].special(); last != "" {
					if !hasTC {
						eos = last
					} else if last != eos {
						if !slices.Contains(types, "eot") {
							types = append(types, "eot")
							tc["eot_token"] = eos
						} else if !slices.Contains(types, "eom") {
							types = append(types, "eom")
							tc["eom_token"] = eos
						}
						eos, tc["eos_token"] = last, last
					}
					setAdd("eos", last == eos)
				}
			}
			pair := p.Pair
			if len(pair) > 0 {
				start, stop := 0, len(pair)
				if first != "" && pair[0].special() == first {
					start = 1
				}
				if last != "" && pair[len(pair)-1].special() == last {
					stop--
				}
				if start < stop {
					pair = pair[start:stop]
				} else {
					pair = nil
				}
				if len(pair) > 2 && pair[0].sequence() == "A" && pair[len(pair)-1].sequence() == "B" {
					inner := pair[1 : len(pair)-1]
					addSep := false
					if e := inner[0].special(); e != "" && (e == sep || e == eos) && last == "" {
						addSep = true
					}
					if len(inner) == 2 {
						if e := inner[1].special(); e != "" && (e == sep || e == eos) {
							addSep = true
						}
					}
					setAdd("sep", addSep)
					if addSep && sep == "" && hasTC {
						sep, tc["sep_token"] = eos, eos
					}
				}
			}
		}
	}
	if hasTC {
		for _, typ := range types {
			if b, ok := tc["add_"+typ+"_token"].(bool); ok {
				setAdd(typ, b)
			}
			content := tokenStr(typ + "_token")
			if content == "" {
				continue
			}
			for _, a := range tj.AddedTokens {
				if a.Content == content {
					set(typ, a.ID)
					break
				}
			}
		}
	}
	for _, typ := range types {
		if id, ok := intOf(h[typ+"_token_id"]); ok {
			set(typ, id)
		}
	}
	for _, typ := range order {
		if key := specialKeys[typ]; key != "" {
			kv.add(key, uint32(ids[typ]))
		}
	}
	for _, typ := range addOrder {
		if key, ok := addKeys[typ]; ok {
			kv.add(key, adds[typ])
		}
	}

	// Chat template: tokenizer_config.json's, else chat_template.jinja /
	// chat_template.json (gguf-py reads them only with a tokenizer_config.json).
	if hasTC {
		var tmpl string
		ok := false
		switch ct := tc["chat_template"].(type) {
		case string:
			tmpl, ok = ct, true
		case []any:
			return fmt.Errorf("tokenizer_config.json: a list of named chat templates is not supported: %w", ErrTokenizer)
		case nil:
			if b, err := os.ReadFile(filepath.Join(dir, "chat_template.jinja")); err == nil {
				tmpl, ok = string(b), true
			} else if ctj, err := readJSONFile(filepath.Join(dir, "chat_template.json")); err == nil && ctj != nil {
				tmpl, ok = ctj["chat_template"].(string)
			}
		}
		if ok {
			kv.add("tokenizer.chat_template", tmpl)
		}
	}
	return nil
}

// byteToUnicode is GPT-2's byte → printable rune table of byte-level BPE.
func byteToUnicode() [256]rune {
	var t [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			t[b] = rune(b)
		} else {
			t[b] = rune(256 + n)
			n++
		}
	}
	return t
}
