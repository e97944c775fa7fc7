package modelio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"unicode"
)

// Synthetic byte-level BPE tokenizers for the small presets: 256 byte
// tokens, merges learned deterministically from tokCorpus, and special
// tokens, written as a Hugging Face tokenizer.json that the tokenizers
// library and llama.cpp both load.

// tokStyle is the pre-tokenizer family of a synthetic tokenizer.
type tokStyle int

const (
	tokQwen2  tokStyle = iota // Qwen2 / Dream: digits one at a time, merges applied to every word
	tokLlama3                 // Llama 3: up to three digits per piece, whole-word vocabulary hits (ignore_merges)
)

// Split regexes of the Hugging Face tokenizer.json files of Qwen2 and
// Llama 3 (the patterns llama.cpp's "qwen2" and "llama-bpe" pre-tokenizers
// implement).
const (
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

type specialToken struct {
	id      int64
	content string
}

// tokSpec describes a preset's tokenizer.
type tokSpec struct {
	style tokStyle
	// specials take the ids right after the learned tokens, in order:
	// Hugging Face tokenizers gives added tokens consecutive ids after the
	// model vocabulary whatever tokenizer.json says.
	specials []specialToken
	merges   int // learned merges: normal tokens are ids [0, 256+merges)
	// pairMerges writes merges as ["a", "b"] pairs (transformers ≥ 4.45)
	// instead of "a b" strings.
	pairMerges bool
}

// preSplit splits text as the Qwen2 / Llama 3 Split regex does
// (leftmost alternative first). Go's regexp has no look-ahead, so the
// alternatives are matched by hand.
func preSplit(text string, style tokStyle) []string {
	rs := []rune(text)
	var out []string
	isL := unicode.IsLetter
	isN := unicode.IsNumber
	isS := unicode.IsSpace
	isNL := func(r rune) bool { return r == '\r' || r == '\n' }
	lower := func(r rune) rune { return unicode.ToLower(r) }
	for i := 0; i < len(rs); {
		c := rs[i]
		end := -1
		// (?i:'s|'t|'re|'ve|'m|'ll|'d)
		if c == '\'' && i+1 < len(rs) {
			a := lower(rs[i+1])
			var b rune
			if i+2 < len(rs) {
				b = lower(rs[i+2])
			}
			switch {
			case a == 's' || a == 't' || a == 'm' || a == 'd':
				end = i + 2
			case (a == 'r' || a == 'v') && b == 'e', a == 'l' && b == 'l':
				end = i + 3
			}
		}
		// [^\r\n\p{L}\p{N}]?\p{L}+
		if end < 0 {
			j := i
			if !isL(c) && !isN(c) && !isNL(c) && i+1 < len(rs) && isL(rs[i+1]) {
				j++
			}
			if isL(rs[j]) {
				for j < len(rs) && isL(rs[j]) {
					j++
				}
				end = j
			}
		}
		// \p{N} or \p{N}{1,3}
		if end < 0 && isN(c) {
			n := 1
			if style == tokLlama3 {
				n = 3
			}
			j := i
			for j < len(rs) && j-i < n && isN(rs[j]) {
				j++
			}
			end = j
		}
		//  ?[^\s\p{L}\p{N}]+[\r\n]*
		if end < 0 {
			j := i
			if rs[j] == ' ' {
				j++
			}
			k := j
			for k < len(rs) && !isS(rs[k]) && !isL(rs[k]) && !isN(rs[k]) {
				k++
			}
			if k > j {
				for k < len(rs) && isNL(rs[k]) {
					k++
				}
				end = k
			}
		}
		if end < 0 && isS(c) {
			j := i
			for j < len(rs) && isS(rs[j]) {
				j++
			}
			// \s*[\r\n]+ : up to the last newline of the run.
			last := -1
			for k := i; k < j; k++ {
				if isNL(rs[k]) {
					last = k
				}
			}
			switch {
			case last >= 0:
				end = last + 1
			case j == len(rs): // \s+(?!\S) at the end of the text
				end = j
			case j-1 > i: // \s+(?!\S): leave the last space to the next word
				end = j - 1
			default: // \s+
				end = j
			}
		}
		if end < 0 { // unreachable for the patterns above; keep progress
			end = i + 1
		}
		out = append(out, string(rs[i:end]))
		i = end
	}
	return out
}

// byteUnicode is GPT-2's byte → printable rune table, and the order of the
// 256 byte tokens (printable bytes first).
func byteUnicode() (table [256]rune, order []byte) {
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			table[b] = rune(b)
			order = append(order, byte(b))
		}
	}
	for b := 0; b < 256; b++ {
		if !((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
			table[b] = rune(256 + n)
			order = append(order, byte(b))
			n++
		}
	}
	return table, order
}

type bpeKey struct {
	style tokStyle
	n     int
}

type bpeResult struct {
	vocab  []string
	merges [][2]string
	err    error
}

var bpeCache sync.Map // bpeKey → *bpeResult (read-only)

// trainBPECached memoizes trainBPE (callers must not modify the slices).
func trainBPECached(style tokStyle, n int) ([]string, [][2]string, error) {
	k := bpeKey{style, n}
	if r, ok := bpeCache.Load(k); ok {
		res := r.(*bpeResult)
		return res.vocab, res.merges, res.err
	}
	v, m, err := trainBPE(style, n)
	bpeCache.Store(k, &bpeResult{v, m, err})
	return v, m, err
}

// trainBPE learns n merges from tokCorpus. Ties between equally frequent
// pairs go to the smallest "a b" string; a pair whose concatenation is
// already a token is skipped, so every merge adds one token.
func trainBPE(style tokStyle, n int) (vocab []string, merges [][2]string, err error) {
	table, order := byteUnicode()
	for _, b := range order {
		vocab = append(vocab, string(table[b]))
	}
	have := map[string]bool{}
	for _, v := range vocab {
		have[v] = true
	}
	counts := map[string]int{}
	var words []string
	for _, piece := range preSplit(tokCorpus, style) {
		var enc []rune
		for _, b := range []byte(piece) {
			enc = append(enc, table[b])
		}
		s := string(enc)
		if counts[s] == 0 {
			words = append(words, s)
		}
		counts[s]++
	}
	type word struct {
		syms []string
		freq int
	}
	ws := make([]word, len(words))
	for i, w := range words {
		for _, r := range w {
			ws[i].syms = append(ws[i].syms, string(r))
		}
		ws[i].freq = counts[w]
	}
	for len(merges) < n {
		pairs := map[[2]string]int{}
		for _, w := range ws {
			for k := 0; k+1 < len(w.syms); k++ {
				pairs[[2]string{w.syms[k], w.syms[k+1]}] += w.freq
			}
		}
		var best [2]string
		bestN := 0
		for p, c := range pairs {
			if have[p[0]+p[1]] {
				continue
			}
			if c > bestN || (c == bestN && p[0]+" "+p[1] < best[0]+" "+best[1]) {
				best, bestN = p, c
			}
		}
		if bestN == 0 {
			return nil, nil, fmt.Errorf("modelio: tokenizer corpus yields only %d merges, %d wanted", len(merges), n)
		}
		merged := best[0] + best[1]
		merges = append(merges, best)
		vocab = append(vocab, merged)
		have[merged] = true
		for i := range ws {
			s := ws[i].syms
			out := s[:0:0]
			for k := 0; k < len(s); k++ {
				if k+1 < len(s) && s[k] == best[0] && s[k+1] == best[1] {
					out = append(out, merged)
					k++
				} else {
					out = append(out, s[k])
				}
			}
			ws[i].syms = out
		}
	}
	return vocab, merges, nil
}

// orderedJSON writes JSON objects with keys in the given order.
type orderedJSON []kvPair

type kvPair struct {
	k string
	v any
}

func (o orderedJSON) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(p.k)
		b.Write(k)
		b.WriteByte(':')
		v, err := marshalNoEscape(p.v)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// marshalNoEscape is json.Marshal without HTML escaping (<, >, & stay as
// they are, as Hugging Face writes them).
func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// tokenizerFiles returns tokenizer.json and the added_tokens_decoder of
// tokenizer_config.json.
func (t *tokSpec) tokenizerFiles() (tokJSON []byte, decoder orderedJSON, err error) {
	vocab, merges, err := trainBPECached(t.style, t.merges)
	if err != nil {
		return nil, nil, err
	}
	vocabObj := make(orderedJSON, len(vocab))
	for i, v := range vocab {
		vocabObj[i] = kvPair{v, i}
	}
	var mergeList []any
	for _, m := range merges {
		if t.pairMerges {
			mergeList = append(mergeList, []string{m[0], m[1]})
		} else {
			mergeList = append(mergeList, m[0]+" "+m[1])
		}
	}
	var added []any
	for i, s := range t.specials {
		if s.id != int64(len(vocab)+i) {
			return nil, nil, fmt.Errorf("modelio: special token %q has id %d, want %d (right after the %d learned tokens)", s.content, s.id, len(vocab)+i, len(vocab))
		}
		added = append(added, orderedJSON{{"id", s.id}, {"content", s.content}, {"single_word", false},
			{"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}})
		decoder = append(decoder, kvPair{strconv.FormatInt(s.id, 10), orderedJSON{{"content", s.content},
			{"lstrip", false}, {"normalized", false}, {"rstrip", false}, {"single_word", false}, {"special", true}}})
	}
	pattern, ignoreMerges := qwen2Pattern, false
	if t.style == tokLlama3 {
		pattern, ignoreMerges = llama3Pattern, true
	}
	byteLevel := func(prefix, regex bool) orderedJSON {
		return orderedJSON{{"type", "ByteLevel"}, {"add_prefix_space", prefix}, {"trim_offsets", false}, {"use_regex", regex}}
	}
	var post any = byteLevel(false, false)
	var normalizer any = orderedJSON{{"type", "NFC"}}
	if t.style == tokLlama3 {
		normalizer = nil
		bos := t.specials[0]
		seq := func(id string) orderedJSON {
			return orderedJSON{{"Sequence", orderedJSON{{"id", id}, {"type_id", 0}}}}
		}
		bosTok := orderedJSON{{"SpecialToken", orderedJSON{{"id", bos.content}, {"type_id", 0}}}}
		post = orderedJSON{{"type", "Sequence"}, {"processors", []any{
			byteLevel(true, true),
			orderedJSON{{"type", "TemplateProcessing"},
				{"single", []any{bosTok, seq("A")}},
				{"pair", []any{bosTok, seq("A"), orderedJSON{{"SpecialToken", orderedJSON{{"id", bos.content}, {"type_id", 1}}}},
					orderedJSON{{"Sequence", orderedJSON{{"id", "B"}, {"type_id", 1}}}}}},
				{"special_tokens", orderedJSON{{bos.content, orderedJSON{{"id", bos.content}, {"ids", []int64{bos.id}}, {"tokens", []string{bos.content}}}}}},
			},
		}}}
	}
	doc := orderedJSON{
		{"version", "1.0"},
		{"truncation", nil},
		{"padding", nil},
		{"added_tokens", added},
		{"normalizer", normalizer},
		{"pre_tokenizer", orderedJSON{{"type", "Sequence"}, {"pretokenizers", []any{
			orderedJSON{{"type", "Split"}, {"pattern", orderedJSON{{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
			byteLevel(false, false),
		}}}},
		{"post_processor", post},
		{"decoder", byteLevel(false, false)},
		{"model", orderedJSON{
			{"type", "BPE"}, {"dropout", nil}, {"unk_token", nil}, {"continuing_subword_prefix", ""},
			{"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", ignoreMerges},
			{"vocab", vocabObj}, {"merges", mergeList},
		}},
	}
	b, err := marshalIndent(doc)
	if err != nil {
		return nil, nil, err
	}
	return b, decoder, nil
}

// marshalIndent indents like json.MarshalIndent without HTML escaping.
func marshalIndent(v any) ([]byte, error) {
	raw, err := marshalNoEscape(v)
	if err != nil {
		return nil, fmt.Errorf("modelio: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("modelio: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}
