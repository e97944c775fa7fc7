package modelio

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// modalityModel builds and opens a one-tensor model in dir/sub with the
// given config.json (nil: none) and safetensors metadata.
func modalityModel(t *testing.T, sub string, cfg map[string]any, meta map[string]string, modelIndex map[string]any) *Model {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, sub)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeST(t, filepath.Join(dir, SingleFile), []testTensor{{Name: "w", DType: F32, Shape: []int64{1}, Vals: []float32{1}}}, meta)
	if cfg != nil {
		writeJSON(t, filepath.Join(dir, ConfigFile), cfg)
	}
	if modelIndex != nil {
		writeJSON(t, filepath.Join(root, "model_index.json"), modelIndex)
	}
	m, err := Open(dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestDetectModalityFamilies(t *testing.T) {
	cases := []struct {
		name     string
		sub      string
		cfg      map[string]any
		meta     map[string]string
		index    map[string]any
		want     string
		evidence string
	}{
		{"dream", "m", map[string]any{"model_type": "Dream", "architectures": []any{"DreamModel"}}, nil, nil,
			"text", `config.json model_type "Dream"`},
		{"dream architectures only", "m", map[string]any{"architectures": []any{"DreamModel"}}, nil, nil,
			"text", `architectures "DreamModel"`},
		{"llada", "m", map[string]any{"model_type": "llada", "architectures": []any{"LLaDAModelLM"}}, nil, nil, "text", "llada"},
		{"llada arch", "m", map[string]any{"architectures": []any{"LLaDAModelLM"}}, nil, nil, "text", "LLaDAModelLM"},
		{"llama", "m", map[string]any{"model_type": "llama"}, nil, nil, "text", "llama"},
		{"qwen2", "m", map[string]any{"model_type": "qwen2"}, nil, nil, "text", "qwen2"},
		{"mistral", "m", map[string]any{"model_type": "mistral"}, nil, nil, "text", "mistral"},
		{"gpt2", "m", map[string]any{"model_type": "gpt2"}, nil, nil, "text", "gpt2"},
		{"unknown type, causal lm", "m", map[string]any{"model_type": "zeta", "architectures": []any{"ZetaForCausalLM"}}, nil, nil,
			"text", "ZetaForCausalLM"},
		{"masked lm", "m", map[string]any{"architectures": []any{"FooForMaskedLM"}}, nil, nil, "text", "FooForMaskedLM"},
		{"decoder is not code", "my-decoder", map[string]any{"model_type": "llama", "_name_or_path": "org/tiny-decoder-only"}, nil, nil,
			"text", "llama"},

		{"starcoder2", "m", map[string]any{"model_type": "starcoder2"}, nil, nil, "code", "starcoder2"},
		{"gpt_bigcode", "m", map[string]any{"model_type": "gpt_bigcode", "architectures": []any{"GPTBigCodeForCausalLM"}}, nil, nil, "code", "gpt_bigcode"},
		{"codegen", "m", map[string]any{"model_type": "codegen"}, nil, nil, "code", "codegen"},
		{"codellama", "m", map[string]any{"model_type": "llama", "_name_or_path": "codellama/CodeLlama-7b-hf"}, nil, nil,
			"code", "CodeLlama-7b-hf"},
		{"qwen coder", "m", map[string]any{"model_type": "qwen2", "_name_or_path": "Qwen/Qwen2.5-Coder-7B"}, nil, nil, "code", "Coder"},
		{"deepseek-coder", "m", map[string]any{"model_type": "llama", "_name_or_path": "deepseek-ai/deepseek-coder-6.7b-base"}, nil, nil,
			"code", "deepseek-coder"},
		{"dream coder dir", "Dream-Coder-v0-Instruct-7B", map[string]any{"model_type": "Dream"}, nil, nil,
			"code", `directory name "Dream-Coder-v0-Instruct-7B"`},

		{"sd unet", "m", map[string]any{"_class_name": "UNet2DConditionModel"}, nil, nil, "image", `_class_name "UNet2DConditionModel"`},
		{"unet2d", "m", map[string]any{"_class_name": "UNet2DModel"}, nil, nil, "image", "UNet2DModel"},
		{"dit", "m", map[string]any{"_class_name": "DiTTransformer2DModel"}, nil, nil, "image", "DiT"},
		{"transformer2d", "m", map[string]any{"_class_name": "Transformer2DModel"}, nil, nil, "image", "Transformer2DModel"},
		{"sd3", "m", map[string]any{"_class_name": "SD3Transformer2DModel"}, nil, nil, "image", "SD3"},
		{"flux", "m", map[string]any{"_class_name": "FluxTransformer2DModel"}, nil, nil, "image", "Flux"},
		{"pixart", "m", map[string]any{"_class_name": "PixArtTransformer2DModel"}, nil, nil, "image", "PixArt"},
		{"vae", "m", map[string]any{"_class_name": "AutoencoderKL"}, nil, nil, "image", "AutoencoderKL"},
		{"sd pipeline unet", "unet", map[string]any{"_class_name": "UNet2DConditionModel"}, nil,
			map[string]any{"_class_name": "StableDiffusionXLPipeline"}, "image", `../model_index.json _class_name "StableDiffusionXLPipeline"`},

		{"parent index ignored for transformers models", "text_encoder", map[string]any{"model_type": "llama"}, nil,
			map[string]any{"_class_name": "AudioLDM2Pipeline"}, "text", "llama"},
		{"audioldm unet", "unet", map[string]any{"_class_name": "UNet2DConditionModel"}, nil,
			map[string]any{"_class_name": "AudioLDM2Pipeline"}, "audio", "AudioLDM2Pipeline"},
		{"stable audio dit", "m", map[string]any{"_class_name": "StableAudioDiTModel"}, nil, nil, "audio", "StableAudioDiTModel"},
		{"unet1d", "m", map[string]any{"_class_name": "UNet1DModel"}, nil, nil, "audio", "UNet1DModel"},
		{"audio-diffusion mel", "m", map[string]any{"_class_name": "Mel"}, nil, nil, "audio", "Mel"},
		{"music", "m", map[string]any{"_class_name": "MusicLDMPipeline"}, nil, nil, "audio", "MusicLDM"},

		{"metadata wins", "m", map[string]any{"model_type": "Dream"}, map[string]string{"modality": "Image"}, nil,
			"image", `__metadata__ modality "Image"`},
		{"config modality", "m", map[string]any{"model_type": "foo", "modality": "audio"}, nil, nil, "audio", `config.json modality`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := modalityModel(t, c.sub, c.cfg, c.meta, c.index)
			got, ev, err := DetectModality(m)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("modality = %q (%s), want %q", got, ev, c.want)
			}
			if !strings.Contains(ev, c.evidence) {
				t.Errorf("evidence %q does not contain %q", ev, c.evidence)
			}
		})
	}
}

func TestDetectModalityUndetectable(t *testing.T) {
	for name, c := range map[string]struct {
		cfg  map[string]any
		meta map[string]string
		want string
	}{
		"unknown model_type": {map[string]any{"model_type": "zeta", "architectures": []any{"ZetaNet"}}, nil, `"zeta"`},
		"no config":          {nil, nil, "no config.json"},
		"bad metadata":       {map[string]any{"model_type": "llama"}, map[string]string{"modality": "video"}, `"video" is not valid`},
	} {
		t.Run(name, func(t *testing.T) {
			m := modalityModel(t, "m", c.cfg, c.meta, nil)
			mod, _, err := DetectModality(m)
			var me *ModalityError
			if !errors.As(err, &me) {
				t.Fatalf("want *ModalityError, got %q, %v", mod, err)
			}
			msg := err.Error()
			for _, s := range []string{c.want, "modality", "text, code, image or audio", "--modality", m.Dir} {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q lacks %q", msg, s)
				}
			}
		})
	}
}

func TestDetectModalityFromConfig(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"model_type": "Dream", "architectures": ["DreamModel"]}`: ModalityText,
		`{"_class_name": "UNet2DConditionModel"}`:                  ModalityImage,
		`{"model_type": "llama", "_name_or_path": "codellama/x"}`:  ModalityCode,
	} {
		var m map[string]any
		if err := json.Unmarshal([]byte(cfg), &m); err != nil {
			t.Fatal(err)
		}
		got, ev, err := DetectModalityFromConfig(m, "upload")
		if err != nil || got != want || ev == "" {
			t.Errorf("%s: %q %q %v, want %s", cfg, got, ev, err, want)
		}
	}
	if _, _, err := DetectModalityFromConfig(map[string]any{"model_type": "frobnicator"}, "upload"); err == nil {
		t.Error("an unrecognised config must be an error")
	}
}
