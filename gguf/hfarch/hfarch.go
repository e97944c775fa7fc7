// Package hfarch maps a Hugging Face model directory (config.json, tokenizer
// files, tensor names and shapes) onto llama.cpp's GGUF conventions: the
// architecture name, the hyper-parameter and tokenizer key/value pairs and
// the tensor names, as llama.cpp's own converter (convert_hf_to_gguf.py and
// gguf-py) writes them. It is the "architecture plan" of the GGUF export.
//
// One table row per architecture (tables.go): llama, qwen2, dream, bert.
// A model whose architecture has no row (UNets, DiTs, audio models) keeps
// its tensor names (what ComfyUI-GGUF and stable-diffusion.cpp load), and
// general.architecture is the ComfyUI-GGUF family its tensor names
// identify ("sd1", "sdxl", "flux", ...: ComfyUI-GGUF's UNet loader refuses
// any other value), else config.json's model_type or _class_name, lower
// case.
//
// The package depends on the standard library only.
package hfarch

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// TensorInfo is one tensor of the source model: its Hugging Face name and
// its PyTorch shape (outermost dimension first, e.g. [out, in]).
type TensorInfo struct {
	Name  string
	Shape []int64
}

// Options controls Describe.
type Options struct {
	// Runnable demands a file llama.cpp can run: a known architecture, a
	// supported tokenizer, every tensor mapped and every tensor the
	// architecture needs present. Without it Describe degrades (original
	// tensor names, no tokenizer) and says why in Arch.Warnings.
	Runnable bool
	// Name overrides general.name (default: from config.json _name_or_path
	// or the directory name, as gguf-py's Metadata heuristics do).
	Name string
}

// KV is one GGUF metadata pair. Value is one of uint32, int32, float32,
// bool, string, []string or []int32: the GGUF value type llama.cpp's
// converter uses for that key (GGUF types 4, 5, 6, 7, 8, and arrays of 8
// and 5).
type KV struct {
	Key   string
	Value any
}

// TensorMapping says what becomes of one source tensor.
type TensorMapping struct {
	HF   string // source (Hugging Face) name
	GGUF string // GGUF name; "" when Drop
	// Drop: the tensor is not exported (buffers llama.cpp recomputes, such
	// as rotary_emb.inv_freq, or heads it does not use, such as BERT's
	// pooler and MLM head), as llama.cpp's converter skips them.
	Drop bool
	// Permute, when non-nil, is the row permutation the export must apply
	// (llama's q/k rope layout). See RopePermutation.
	Permute *RopePermutation
}

// Arch is the architecture plan of one model.
type Arch struct {
	// Name is the GGUF general.architecture ("llama", "qwen2", "dream",
	// "bert", or for an unknown architecture config.json's model_type or
	// _class_name).
	Name string
	// HFClass is config.json's architectures[0] (or _class_name).
	HFClass string
	// Known: a table row matched and the tensors carry llama.cpp names.
	Known bool
	// Runnable: Known, with a tokenizer, every tensor mapped and every
	// required tensor present: llama.cpp can load the file.
	Runnable bool
	// KVs in the order llama.cpp's converter writes them: general.*, then
	// <arch>.*, then tokenizer.*. general.alignment, general.file_type and
	// general.quantization_version depend on the written tensors and are
	// the writer's.
	KVs []KV
	// Tensors: one entry per input tensor, in input order.
	Tensors []TensorMapping
	// Warnings: why the plan is not runnable, and other notes.
	Warnings []string

	byHF map[string]int
}

// Mapping returns the mapping of a source tensor.
func (a *Arch) Mapping(hf string) (TensorMapping, bool) {
	i, ok := a.byHF[hf]
	if !ok {
		return TensorMapping{}, false
	}
	return a.Tensors[i], true
}

// TensorName returns the GGUF name of a source tensor; false when the
// tensor is dropped or was not in the list given to Describe.
func (a *Arch) TensorName(hf string) (string, bool) {
	m, ok := a.Mapping(hf)
	if !ok || m.Drop {
		return "", false
	}
	return m.GGUF, true
}

// ExporterKeys are the keys the GGUF exporter (package gguf) writes itself
// and refuses from a plan.
var ExporterKeys = []string{"general.architecture", "general.alignment", "general.quantization_version", "general.file_type"}

// PlanKVs returns the KVs for the exporter's Plan.KVs: all but the keys it
// writes itself (general.architecture is Plan.Arch = a.Name).
func (a *Arch) PlanKVs() []KV {
	var out []KV
	for _, kv := range a.KVs {
		if !slices.Contains(ExporterKeys, kv.Key) {
			out = append(out, kv)
		}
	}
	return out
}

// RowOrder returns, for a tensor llama.cpp needs permuted, the source row
// of each exported row (row i of the GGUF tensor is source row perm[i]);
// nil otherwise. Its signature is the exporter's Plan.RowOrder. shape is
// the tensor's PyTorch shape; a shape that does not fit the permutation
// gives nil (Describe has checked the shapes it was given).
func (a *Arch) RowOrder(hf string, shape []int64) []int {
	m, ok := a.Mapping(hf)
	if !ok || m.Permute == nil || m.Permute.check(shape) != nil {
		return nil
	}
	perm := make([]int, m.Permute.Rows())
	for i := range perm {
		perm[i] = int(m.Permute.SourceRow(int64(i)))
	}
	return perm
}

// Lookup returns the value of a KV.
func (a *Arch) Lookup(key string) (any, bool) {
	for _, kv := range a.KVs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// Errors, for errors.Is. Each returned error wraps one of them and names
// the file, key or tensor at fault.
var (
	ErrUnknownArch   = errors.New("architecture has no llama.cpp mapping")
	ErrTokenizer     = errors.New("unsupported or invalid tokenizer")
	ErrNoTokenizer   = errors.New("no tokenizer")
	ErrUnmapped      = errors.New("tensor has no llama.cpp name")
	ErrMissingTensor = errors.New("tensor required by llama.cpp is missing")
	ErrShape         = errors.New("tensor shape does not match config.json")
	ErrConfig        = errors.New("invalid or incomplete config.json")
)

// Known lists the GGUF architectures with a table row.
func Known() []string {
	out := make([]string, len(archTable))
	for i, s := range archTable {
		out[i] = s.name
	}
	return out
}

// KnownClasses lists the config.json architectures entries recognised.
func KnownClasses() []string {
	var out []string
	for _, s := range archTable {
		out = append(out, s.hfClasses...)
	}
	return out
}

// Describe builds the architecture plan of the model in modelDir, whose
// tensors are given (names and PyTorch shapes).
func Describe(modelDir string, tensors []TensorInfo, opts Options) (*Arch, error) {
	cfgPath := filepath.Join(modelDir, "config.json")
	cfg, err := readJSONFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("hfarch: %w", err)
	}
	h := newHParams(cfg)
	spec, hfClass := findArch(h)
	a := &Arch{HFClass: hfClass}
	name := opts.Name
	if name == "" {
		name = modelName(h, modelDir)
	}
	if spec == nil {
		if opts.Runnable {
			what := describeIdentity(h)
			return nil, fmt.Errorf("hfarch: %s: %s: %w (known: %s; config.json architectures: %s)",
				cfgPath, what, ErrUnknownArch, strings.Join(Known(), ", "), strings.Join(KnownClasses(), ", "))
		}
		return generic(a, h, tensors, name, modelDir, "no table row for "+describeIdentity(h)), nil
	}

	plan, err := describeKnown(spec, h, modelDir, tensors, name, opts)
	if err == nil {
		plan.HFClass = hfClass
		return plan, nil
	}
	if opts.Runnable || errors.Is(err, errIO) {
		return nil, fmt.Errorf("hfarch: %w", err)
	}
	return generic(a, h, tensors, name, modelDir, fmt.Sprintf("%s tensors keep their Hugging Face names: %v", spec.name, err)), nil
}

// errIO marks errors (unreadable or malformed files) that are never
// degraded into warnings.
var errIO = errors.New("read error")

func describeIdentity(h hparams) string {
	var parts []string
	if a := h.strings("architectures"); len(a) > 0 {
		parts = append(parts, fmt.Sprintf("architectures %q", a))
	}
	if mt, ok := h.str("model_type"); ok {
		parts = append(parts, fmt.Sprintf("model_type %q", mt))
	}
	if c, ok := h.str("_class_name"); ok {
		parts = append(parts, fmt.Sprintf("_class_name %q", c))
	}
	if len(parts) == 0 {
		return "no architectures, model_type or _class_name"
	}
	return strings.Join(parts, ", ")
}

// generic is the plan of a model without a table row (or a known one
// that cannot be mapped): original tensor names, general.* keys only.
func generic(a *Arch, h hparams, tensors []TensorInfo, name, dir, why string) *Arch {
	arch, ok := h.str("model_type")
	if !ok || arch == "" {
		arch, ok = h.str("_class_name")
	}
	arch = strings.ToLower(arch)
	if a.HFClass == "" {
		a.HFClass, _ = h.str("_class_name")
	}
	names := make([]string, len(tensors))
	for i, t := range tensors {
		names[i] = t.Name
	}
	if fam, banned := comfyFamily(names); fam != "" && banned == "" {
		// ComfyUI-GGUF's loaders accept only their own family names.
		arch, ok = fam, true
	} else if banned != "" {
		a.Warnings = append(a.Warnings, fmt.Sprintf("tensor %s marks the diffusers layout of %s, which ComfyUI-GGUF refuses (it loads the reference layout)", banned, fam))
	}
	if !ok || arch == "" {
		arch = "unknown"
		a.Warnings = append(a.Warnings, "config.json has neither model_type nor _class_name: general.architecture is \"unknown\"")
	}
	a.Name = arch
	a.Known, a.Runnable = false, false
	a.Warnings = append(a.Warnings, why)
	a.byHF = map[string]int{}
	var params int64
	for _, t := range tensors {
		a.byHF[t.Name] = len(a.Tensors)
		a.Tensors = append(a.Tensors, TensorMapping{HF: t.Name, GGUF: t.Name})
		params += numElements(t.Shape)
	}
	kv := &kvList{}
	generalKVs(kv, arch, name, h, params)
	a.KVs = kv.list
	return a
}

func numElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// describeKnown maps a model of a known architecture. Errors say what
// stops it from being runnable.
func describeKnown(spec *archSpec, h hparams, dir string, tensors []TensorInfo, name string, opts Options) (*Arch, error) {
	a := &Arch{Name: spec.name, Known: true, byHF: map[string]int{}}
	h = h.flatten()
	d, err := spec.dims(h)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}

	// Tensors: names, drops, permutations, shapes, completeness.
	present := map[string]bool{}
	var params int64
	for _, t := range tensors {
		m, shape, err := spec.mapTensor(t.Name, d)
		if err != nil {
			return nil, err
		}
		if !m.Drop {
			if shape != nil && !slices.Equal(shape, t.Shape) {
				return nil, fmt.Errorf("tensor %s (%s) has shape %v, config.json implies %v: %w", t.Name, m.GGUF, t.Shape, shape, ErrShape)
			}
			if present[m.GGUF] {
				return nil, fmt.Errorf("tensor %s maps to %s, which another tensor already has: %w", t.Name, m.GGUF, ErrUnmapped)
			}
			present[m.GGUF] = true
			params += numElements(t.Shape)
			if m.Permute != nil {
				if err := m.Permute.check(t.Shape); err != nil {
					return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
				}
			}
		}
		a.byHF[t.Name] = len(a.Tensors)
		a.Tensors = append(a.Tensors, m)
	}
	for _, req := range spec.required(d) {
		if !present[req] {
			return nil, fmt.Errorf("tensor %s (from %s) is absent: %w", req, spec.hfNameOf(req), ErrMissingTensor)
		}
	}

	kv := &kvList{}
	generalKVs(kv, spec.name, name, h, params)
	if err := textModelParams(kv, spec.name, h); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	if spec.params != nil {
		if err := spec.params(kv, spec.name, h, dir); err != nil {
			return nil, err
		}
	}

	tok, warns, err := readTokenizer(dir, spec, h, d.vocab)
	switch {
	case err == nil:
		kv.list = append(kv.list, tok...)
		a.Warnings = append(a.Warnings, warns...)
		a.Runnable = true
	case errors.Is(err, errIO):
		return nil, err
	case opts.Runnable:
		return nil, err
	default:
		a.Warnings = append(a.Warnings, fmt.Sprintf("no tokenizer in the GGUF, llama.cpp cannot run it: %v", err))
	}
	// Later writes of a key replace earlier ones in place, as GGUFWriter does.
	a.KVs = kv.dedup()
	return a, nil
}

// kvList collects KVs in write order.
type kvList struct{ list []KV }

func (l *kvList) add(key string, v any) { l.list = append(l.list, KV{Key: key, Value: v}) }

// dedup keeps the first position of each key with its last value.
func (l *kvList) dedup() []KV {
	pos := map[string]int{}
	var out []KV
	for _, kv := range l.list {
		if i, ok := pos[kv.Key]; ok {
			out[i].Value = kv.Value
			continue
		}
		pos[kv.Key] = len(out)
		out = append(out, kv)
	}
	return out
}
