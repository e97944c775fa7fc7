package modelio

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Expected splits are those of the Hugging Face tokenizers library's
// Split(Regex(pattern), "isolated") on the same strings.
func TestPreSplitMatchesHuggingFace(t *testing.T) {
	cases := []struct {
		in    string
		style tokStyle
		want  []string
	}{
		{"it's  12345 x.\n\n  y  ", tokQwen2, []string{"it", "'s", " ", " ", "1", "2", "3", "4", "5", " x", ".\n\n", " ", " y", "  "}},
		{"it's  12345 x.\n\n  y  ", tokLlama3, []string{"it", "'s", " ", " ", "123", "45", " x", ".\n\n", " ", " y", "  "}},
		{"don'T WE'LL 'RE 're 'x", tokQwen2, []string{"don", "'T", " WE", "'LL", " '", "RE", " '", "re", " '", "x"}},
		{"  \n  a", tokQwen2, []string{"  \n", " ", " a"}},
		{"x  \t\ty", tokLlama3, []string{"x", "  \t", "\ty"}},
		{"日本語 テスト…  ...", tokQwen2, []string{"日本語", " テスト", "…", " ", " ..."}},
	}
	for _, c := range cases {
		if got := preSplit(c.in, c.style); !slices.Equal(got, c.want) {
			t.Errorf("preSplit(%q, %d) = %q, want %q", c.in, c.style, got, c.want)
		}
	}
	// The whole corpus splits back into itself.
	for _, st := range []tokStyle{tokQwen2, tokLlama3} {
		if strings.Join(preSplit(tokCorpus, st), "") != tokCorpus {
			t.Errorf("style %d: pieces do not concatenate to the corpus", st)
		}
	}
}

type genTokenizer struct {
	AddedTokens []struct {
		ID      int64
		Content string
		Special bool
	} `json:"added_tokens"`
	PreTokenizer struct {
		Pretokenizers []struct {
			Type    string
			Pattern struct{ Regex string }
		}
	} `json:"pre_tokenizer"`
	Model struct {
		Type         string
		Vocab        map[string]int
		Merges       json.RawMessage
		IgnoreMerges bool `json:"ignore_merges"`
	}
}

func readGenTokenizer(t *testing.T, dir string) (genTokenizer, [][2]string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tj genTokenizer
	if err := json.Unmarshal(b, &tj); err != nil {
		t.Fatal(err)
	}
	var merges [][2]string
	var strs []string
	if err := json.Unmarshal(tj.Model.Merges, &strs); err == nil {
		for _, s := range strs {
			a, b, _ := strings.Cut(s, " ")
			merges = append(merges, [2]string{a, b})
		}
	} else if err := json.Unmarshal(tj.Model.Merges, &merges); err != nil {
		t.Fatal(err)
	}
	return tj, merges
}

// bpeEncode is a reference byte-level BPE encoder (lowest-rank merge
// first), for checking the generated files.
func bpeEncode(text string, style tokStyle, vocab map[string]int, merges [][2]string, ignoreMerges bool) []int {
	rank := map[[2]string]int{}
	for i, m := range merges {
		rank[m] = i
	}
	table, _ := byteUnicode()
	var ids []int
	for _, piece := range preSplit(text, style) {
		var syms []string
		var whole strings.Builder
		for _, b := range []byte(piece) {
			syms = append(syms, string(table[b]))
			whole.WriteRune(table[b])
		}
		if id, ok := vocab[whole.String()]; ok && ignoreMerges {
			ids = append(ids, id)
			continue
		}
		for {
			best, bi := -1, -1
			for k := 0; k+1 < len(syms); k++ {
				if r, ok := rank[[2]string{syms[k], syms[k+1]}]; ok && (best < 0 || r < best) {
					best, bi = r, k
				}
			}
			if bi < 0 {
				break
			}
			syms = slices.Replace(syms, bi, bi+2, syms[bi]+syms[bi+1])
		}
		for _, s := range syms {
			ids = append(ids, vocab[s])
		}
	}
	return ids
}

func TestGenTokenizers(t *testing.T) {
	for _, c := range []struct {
		preset   string
		style    tokStyle
		merges   int
		specials map[int64]string
		pattern  string
		ignore   bool
	}{
		{"tiny", tokQwen2, 764, map[int64]string{1020: "<|endoftext|>", 1021: "<|im_start|>", 1022: "<|im_end|>", 1023: "<|mask|>"}, qwen2Pattern, false},
		{"tiny-llama", tokLlama3, 763, map[int64]string{1019: "<|begin_of_text|>", 1020: "<|end_of_text|>",
			1021: "<|start_header_id|>", 1022: "<|end_header_id|>", 1023: "<|eot_id|>"}, llama3Pattern, true},
	} {
		t.Run(c.preset, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), c.preset)
			if err := Generate(t.Context(), GenOptions{Preset: c.preset, Out: dir, Seed: 1}); err != nil {
				t.Fatal(err)
			}
			tj, merges := readGenTokenizer(t, dir)
			if tj.Model.Type != "BPE" || tj.Model.IgnoreMerges != c.ignore {
				t.Errorf("model type %q ignore_merges %v", tj.Model.Type, tj.Model.IgnoreMerges)
			}
			if p := tj.PreTokenizer.Pretokenizers; len(p) != 2 || p[0].Type != "Split" || p[0].Pattern.Regex != c.pattern || p[1].Type != "ByteLevel" {
				t.Errorf("pre_tokenizer = %+v", p)
			}
			if len(tj.Model.Vocab) != 256+c.merges || len(merges) != c.merges {
				t.Fatalf("%d tokens, %d merges; want %d and %d", len(tj.Model.Vocab), len(merges), 256+c.merges, c.merges)
			}
			// GPT-2 byte order: '!' first, the space byte is Ġ = 220, newline Ċ = 198.
			if tj.Model.Vocab["!"] != 0 || tj.Model.Vocab["Ġ"] != 220 || tj.Model.Vocab["Ċ"] != 198 {
				t.Errorf("byte tokens: ! %d, Ġ %d, Ċ %d", tj.Model.Vocab["!"], tj.Model.Vocab["Ġ"], tj.Model.Vocab["Ċ"])
			}
			for k, m := range merges {
				if id, ok := tj.Model.Vocab[m[0]+m[1]]; !ok || id != 256+k {
					t.Fatalf("merge %d %q: token id %d (%v), want %d", k, m, id, ok, 256+k)
				}
			}
			if !slices.Equal(merges[:4], [][2]string{{"Ġ", "t"}, {"h", "e"}, {"Ġ", "a"}, {"Ġt", "he"}}) {
				t.Errorf("first merges %q", merges[:4])
			}
			got := map[int64]string{}
			for _, a := range tj.AddedTokens {
				if !a.Special {
					t.Errorf("added token %q not special", a.Content)
				}
				got[a.ID] = a.Content
			}
			if len(got) != len(c.specials) {
				t.Errorf("added tokens %v, want %v", got, c.specials)
			}
			for id, s := range c.specials {
				if got[id] != s {
					t.Errorf("added token %d = %q, want %q", id, got[id], s)
				}
			}
			// Token ids of the tokenizers library (0.23) on the same files.
			want := []int{299, 702, 314, 537, 666, 642, 259, 697, 298, 498, 445, 905, 13}
			if ids := bpeEncode("The river ran fast under the old stone bridge.", c.style, tj.Model.Vocab, merges, c.ignore); !slices.Equal(ids, want) {
				t.Errorf("encode = %v, want %v", ids, want)
			}
			want = []int{760, 474, 68, 220, 19, 15, 24, 21, 724, 11, 303, 281, 6, 83, 412, 733, 198}
			if ids := bpeEncode("Quantize 4096 weights, don't they?\n\n", c.style, tj.Model.Vocab, merges, c.ignore); !slices.Equal(ids, want) {
				t.Errorf("encode = %v, want %v", ids, want)
			}

			// tokenizer_config.json and config.json agree on the special ids.
			var tc map[string]any
			b, _ := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
			if err := json.Unmarshal(b, &tc); err != nil {
				t.Fatal(err)
			}
			var cfg map[string]any
			b, _ = os.ReadFile(filepath.Join(dir, ConfigFile))
			if err := json.Unmarshal(b, &cfg); err != nil {
				t.Fatal(err)
			}
			if s, ok := tc["chat_template"].(string); !ok || !strings.Contains(s, "add_generation_prompt") {
				t.Errorf("chat_template = %v", tc["chat_template"])
			}
			dec, _ := tc["added_tokens_decoder"].(map[string]any)
			if len(dec) != len(c.specials) {
				t.Errorf("added_tokens_decoder has %d entries", len(dec))
			}
			idOf := func(content string) float64 {
				for id, s := range c.specials {
					if s == content {
						return float64(id)
					}
				}
				return -1
			}
			for _, typ := range []string{"bos", "eos", "pad", "mask"} {
				tok, ok := tc[typ+"_token"].(string)
				if !ok {
					continue
				}
				if cfg[typ+"_token_id"] != idOf(tok) {
					t.Errorf("%s_token %q is id %v, config.json %s_token_id = %v", typ, tok, idOf(tok), typ, cfg[typ+"_token_id"])
				}
			}
		})
	}
}

func TestGenTinyLlamaLayout(t *testing.T) {
	hs, cfg, err := GenLayout("tiny-llama")
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2+2*9+1 {
		t.Errorf("%d tensors, want 21 (no q/k/v biases)", len(hs))
	}
	for _, h := range hs {
		if strings.HasSuffix(h.Name, ".bias") {
			t.Errorf("unexpected %s", h.Name)
		}
	}
	if cfg["model_type"] != "llama" || cfg["head_dim"] != int64(64) || cfg["rms_norm_eps"] != 1e-5 || cfg["vocab_size"] != int64(1024) {
		t.Errorf("config = %v", cfg)
	}
	if a, _ := cfg["architectures"].([]any); len(a) != 1 || a[0] != "LlamaForCausalLM" {
		t.Errorf("architectures = %v", cfg["architectures"])
	}
	// ffn_down rows are 704 long: not a multiple of 256 (K-quant fallback).
	for _, h := range hs {
		if strings.HasSuffix(h.Name, "mlp.down_proj.weight") && h.Shape[1] != 704 {
			t.Errorf("%s shape %v", h.Name, h.Shape)
		}
	}
}
