package modelio

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Modalities understood by ArrowQuant.
const (
	ModalityText  = "text"
	ModalityCode  = "code"
	ModalityImage = "image"
	ModalityAudio = "audio"
)

// ValidModality reports whether s is text, code, image or audio.
func ValidModality(s string) bool {
	switch s {
	case ModalityText, ModalityCode, ModalityImage, ModalityAudio:
		return true
	}
	return false
}

// ModalityError reports that the modality could not be determined (or that
// a declared one is invalid). Callers go on without a modality when it is
// only undetermined (it changes no quantization choice: see
// quant.ModalityEffect).
type ModalityError struct {
	Dir    string
	Reason string
	// Invalid is set when a modality is declared (metadata, config.json)
	// but is not one of text, code, image, audio; otherwise nothing said.
	Invalid bool
}

func (e *ModalityError) Error() string {
	return fmt.Sprintf("modelio: cannot detect the modality of %s: %s; set `modality` (text, code, image or audio) "+
		"in the config file or pass --modality", e.Dir, e.Reason)
}

// DetectModality infers the modality of a model. Precedence: the
// safetensors __metadata__ "modality" (then a "modality" key in config.json);
// then the pipeline class of model_index.json (in Dir or, for a diffusers
// component folder such as unet/ whose config.json has _class_name, its
// parent); then config.json's
// _class_name, architectures and model_type. A text model whose name
// (model_type, architectures, _name_or_path or directory name) says it is a
// code model (coder, starcoder, codegen, codellama, ...) is "code".
// evidence is a short human-readable note of what decided.
func DetectModality(m *Model) (modality string, evidence string, err error) {
	return detectModality(m)
}

// DetectModalityFromConfig applies DetectModality's rules to a config.json
// received without its directory (a Flight upload); name stands in for the
// directory name and no model_index.json is consulted.
func DetectModalityFromConfig(cfg map[string]any, name string) (string, string, error) {
	return detectModality(&Model{Dir: name, Config: cfg, Metadata: map[string]string{}, remote: true})
}

func detectModality(m *Model) (modality string, evidence string, err error) {
	if v, ok := m.Metadata["modality"]; ok {
		v2 := strings.ToLower(strings.TrimSpace(v))
		if !ValidModality(v2) {
			return "", "", &ModalityError{Dir: m.Dir, Reason: fmt.Sprintf("safetensors __metadata__ modality %q is not valid", v), Invalid: true}
		}
		return v2, fmt.Sprintf("safetensors __metadata__ modality %q", v), nil
	}
	if v, ok := m.Config["modality"].(string); ok {
		v2 := strings.ToLower(strings.TrimSpace(v))
		if !ValidModality(v2) {
			return "", "", &ModalityError{Dir: m.Dir, Reason: fmt.Sprintf("config.json modality %q is not valid", v), Invalid: true}
		}
		return v2, fmt.Sprintf("config.json modality %q", v), nil
	}

	// Pipeline index first: it tells an AudioLDM UNet from an image UNet.
	// The parent's index counts only for a diffusers component folder (its
	// config.json has _class_name / _diffusers_version) or a bare folder.
	var indexes []string
	if !m.remote {
		indexes = append(indexes, filepath.Join(m.Dir, "model_index.json"))
	}
	_, isComponent := m.Config["_class_name"]
	_, hasDiffusersVersion := m.Config["_diffusers_version"]
	if !m.remote && (m.Config == nil || isComponent || hasDiffusersVersion) {
		indexes = append(indexes, filepath.Join(filepath.Dir(m.Dir), "model_index.json"))
	}
	for _, p := range indexes {
		idx, err := readJSONObject(p)
		if err != nil || idx == nil {
			continue
		}
		if cls, ok := idx["_class_name"].(string); ok {
			rel := "model_index.json"
			if filepath.Dir(p) != m.Dir {
				rel = "../model_index.json"
			}
			if mod := classModality(cls); mod != "" {
				return mod, fmt.Sprintf("%s _class_name %q", rel, cls), nil
			}
		}
	}

	cfg := m.Config
	var family, evidence2 string
	if cls, ok := cfg["_class_name"].(string); ok {
		if mod := classModality(cls); mod != "" {
			family, evidence2 = mod, fmt.Sprintf("config.json _class_name %q", cls)
		}
	}
	modelType, _ := cfg["model_type"].(string)
	if family == "" && modelType != "" {
		if mod := modelTypeModality(modelType); mod != "" {
			family, evidence2 = mod, fmt.Sprintf("config.json model_type %q", modelType)
		}
	}
	if family == "" {
		for _, a := range stringList(cfg["architectures"]) {
			if mod := classModality(a); mod != "" {
				family, evidence2 = mod, fmt.Sprintf("config.json architectures %q", a)
				break
			}
		}
	}

	// Code hints refine text models (and decide when nothing else does).
	hints := []struct{ what, name string }{{"config.json model_type", modelType}}
	for _, a := range stringList(cfg["architectures"]) {
		hints = append(hints, struct{ what, name string }{"config.json architectures", a})
	}
	if n, ok := cfg["_name_or_path"].(string); ok {
		hints = append(hints, struct{ what, name string }{"config.json _name_or_path", n})
	}
	if family == ModalityText {
		hints = append(hints, struct{ what, name string }{"directory name", filepath.Base(m.Dir)})
	}
	if family == "" || family == ModalityText {
		for _, h := range hints {
			if h.name != "" && isCodeName(h.name) {
				ev := fmt.Sprintf("%s %q", h.what, h.name)
				if family == ModalityText {
					ev = evidence2 + " + " + ev
				}
				return ModalityCode, ev, nil
			}
		}
	}
	if family != "" {
		return family, evidence2, nil
	}
	var seen []string
	if modelType != "" {
		seen = append(seen, fmt.Sprintf("model_type %q", modelType))
	}
	if a := stringList(cfg["architectures"]); len(a) > 0 {
		seen = append(seen, fmt.Sprintf("architectures %q", a))
	}
	if c, ok := cfg["_class_name"].(string); ok {
		seen = append(seen, fmt.Sprintf("_class_name %q", c))
	}
	reason := "no config.json, model_index.json or __metadata__ modality"
	if cfg != nil {
		reason = "config.json has no recognised model_type, architectures or _class_name"
		if len(seen) > 0 {
			reason = "unrecognised " + strings.Join(seen, ", ")
		}
	}
	return "", "", &ModalityError{Dir: m.Dir, Reason: reason}
}

func stringList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// classModality classifies a class name (_class_name, architectures entry,
// pipeline class). Audio is checked before image: audio pipelines reuse
// image building blocks.
func classModality(cls string) string {
	c := strings.ToLower(cls)
	switch {
	case c == "":
		return ""
	case strings.HasPrefix(c, "audioldm"), strings.HasPrefix(c, "stableaudio"), strings.HasPrefix(c, "musicldm"),
		c == "unet1dmodel", strings.HasPrefix(c, "mel"), strings.Contains(c, "audio"), strings.Contains(c, "music"),
		strings.HasPrefix(c, "dancediffusion"), strings.HasPrefix(c, "spectrogramdiffusion"),
		strings.HasPrefix(c, "whisper"), strings.HasPrefix(c, "encodec"), strings.HasPrefix(c, "wav2vec"),
		strings.HasPrefix(c, "speecht5"), strings.HasPrefix(c, "bark"):
		return ModalityAudio
	case strings.HasPrefix(c, "unet2d"), strings.HasPrefix(c, "unetspatiotemporal"), strings.HasPrefix(c, "unet3d"),
		strings.HasPrefix(c, "dit"), c == "transformer2dmodel", strings.HasPrefix(c, "sd3transformer"),
		strings.HasPrefix(c, "fluxtransformer"), strings.HasPrefix(c, "flux"), strings.HasPrefix(c, "pixart"),
		strings.HasPrefix(c, "stablediffusion"), strings.HasPrefix(c, "autoencoder"), c == "vqmodel",
		strings.HasPrefix(c, "controlnet"), strings.HasPrefix(c, "kandinsky"), strings.HasPrefix(c, "sana"),
		strings.HasPrefix(c, "hunyuandit"), strings.HasPrefix(c, "lumina"), strings.HasPrefix(c, "latentconsistency"),
		strings.HasPrefix(c, "ddpm"), strings.HasPrefix(c, "ddim"), strings.HasPrefix(c, "latentdiffusion"),
		strings.HasPrefix(c, "wuerstchen"), strings.HasPrefix(c, "stablecascade"), strings.HasPrefix(c, "auraflow"),
		strings.HasPrefix(c, "if") && strings.HasSuffix(c, "pipeline"):
		return ModalityImage
	case strings.HasSuffix(c, "forcausallm"), strings.HasSuffix(c, "formaskedlm"), strings.HasSuffix(c, "lmheadmodel"),
		c == "dreammodel", strings.HasPrefix(c, "llada"), strings.HasSuffix(c, "forconditionalgeneration") && !strings.Contains(c, "vision"):
		return ModalityText
	}
	return ""
}

// textModelTypes are config.json model_type values of text models (lower case).
var textModelTypes = map[string]bool{
	"dream": true, "llada": true, "llama": true, "qwen": true, "qwen2": true, "qwen2_moe": true, "qwen3": true,
	"qwen3_moe": true, "mistral": true, "mixtral": true, "gpt2": true, "gpt_neox": true, "gptj": true, "gpt_neo": true,
	"phi": true, "phi3": true, "gemma": true, "gemma2": true, "gemma3_text": true, "falcon": true, "opt": true,
	"bloom": true, "mpt": true, "olmo": true, "olmo2": true, "deepseek_v2": true, "deepseek_v3": true, "internlm2": true,
	"baichuan": true, "chatglm": true, "stablelm": true, "starcoder2": true, "gpt_bigcode": true, "codegen": true,
	"bert": true, "roberta": true, "modernbert": true, "t5": true, "mdm": true, "sdar": true,
}

func modelTypeModality(mt string) string {
	t := strings.ToLower(mt)
	switch {
	case textModelTypes[t]:
		return ModalityText
	case strings.Contains(t, "audio"), strings.Contains(t, "music"), t == "whisper", t == "encodec", t == "musicgen":
		return ModalityAudio
	case strings.HasPrefix(t, "dit"), strings.HasPrefix(t, "unet"), strings.Contains(t, "stable-diffusion"),
		strings.Contains(t, "stable_diffusion"):
		return ModalityImage
	}
	return ""
}

// isCodeName reports whether a model name marks a code model. Whole tokens
// "code"/"coder" only, so "decoder", "encoder" or "codec" do not match.
func isCodeName(name string) bool {
	n := strings.ToLower(name)
	for _, s := range []string{"starcoder", "codegen", "codellama", "code_llama", "codeqwen", "codestral",
		"codegemma", "bigcode", "codet5", "deepseek-coder", "deepseekcoder", "wizardcoder"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	for _, tok := range strings.FieldsFunc(n, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}) {
		if tok == "code" || tok == "coder" {
			return true
		}
	}
	// CamelCase class names such as "DreamCoderModel".
	return strings.Contains(name, "Coder") && !strings.Contains(name, "Decoder") && !strings.Contains(name, "Encoder")
}
