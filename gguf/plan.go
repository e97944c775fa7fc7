// Package gguf exports an ArrowQuant artifact as a GGUF v3 file that
// llama.cpp / ggml (and stable-diffusion.cpp, ComfyUI-GGUF) load: ggml block
// types chosen per tensor, bit-exact where the artifact's math is a ggml
// type's (docs/GGUF.md), written in one streaming pass.
package gguf

import (
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/gguf/hfarch"
)

// KV is one GGUF metadata key-value pair. Value is one of uint8, int8,
// uint16, int16, uint32, int32, uint64, int64, float32, float64, bool,
// string, or a slice of one of those (a GGUF array); anything else is an
// error when the header is written.
type KV struct {
	Key   string
	Value any
}

// Plan is how a model maps onto a llama.cpp architecture: what the package
// gguf/hfarch builds from a model directory (config.json, tokenizer files)
// for the architectures it knows. A nil Plan, or a zero one, exports every
// tensor under its original name with general.architecture taken from the
// artifact's config.json (model_type, else _class_name, lower-cased): the
// behaviour for models without a known architecture (UNets, DiTs, audio),
// which ComfyUI-GGUF and stable-diffusion.cpp load by tensor name.
type Plan struct {
	// Arch is general.architecture ("llama", "qwen2", "bert", ...);
	// empty means the config.json fallback above.
	Arch string
	// KVs are added to the header after the general.* keys the exporter
	// writes (general.architecture, general.name, general.alignment,
	// general.quantization_version): hyper-parameters
	// ("<arch>.context_length", ...), tokenizer ("tokenizer.ggml.*") and
	// further general.* keys. A key given twice, or a key the exporter
	// writes itself (general.architecture, general.alignment,
	// general.quantization_version, arrowquant.*), is an error.
	KVs []KV
	// TensorName maps a Hugging Face tensor name to its GGUF name
	// ("model.layers.0.self_attn.q_proj.weight" -> "blk.0.attn_q.weight");
	// ok == false leaves the tensor out of the file (e.g. rotary
	// inv_freq buffers), and the export report lists it as skipped. Nil
	// keeps every tensor under its original name. Two tensors mapped to
	// one name are an error.
	TensorName func(hf string) (name string, ok bool)
	// RowOrder, when set and returning non-nil for a tensor, reorders its
	// rows (the outermost dimension, ggml's ne[n-1]; the elements of a
	// 1-D tensor such as a bias): row i of the exported tensor is row perm[i] of the stored
	// one, e.g. llama's Q/K head permutation. Rows keep their blocks, so a
	// reordered tensor stays exact. perm must be a permutation that maps
	// each run of rows [a, b) onto itself for small runs (a head's rows):
	// the exporter buffers one run at a time and refuses runs larger than
	// 256 MiB of exported bytes.
	RowOrder func(hf string, shape []int64) []int
}

// ArchError is a model that cannot be mapped onto a llama.cpp
// architecture as asked (unknown architecture, missing or unsupported
// tokenizer with runnable).
type ArchError struct{ Err error }

func (e *ArchError) Error() string { return e.Err.Error() }
func (e *ArchError) Unwrap() error { return e.Err }

// PlanFor builds the plan of the quantized model at input (an output
// directory, or its model.arrow, beside the model's config.json and
// tokenizer files) with gguf/hfarch: GGUF tensor names, hyper-parameters
// and tokenizer for the architectures it knows, original names for the
// others. With runnable, a model llama.cpp could not run is an
// *ArchError.
func PlanFor(input string, runnable bool) (*Plan, error) {
	dir, path := input, input
	if st, err := os.Stat(input); err == nil && st.IsDir() {
		path = filepath.Join(input, artifact.FileName)
	} else {
		dir = filepath.Dir(input)
	}
	r, err := openArtifact(path, memory.DefaultAllocator)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var ts []hfarch.TensorInfo
	for _, t := range r.Tensors() {
		ts = append(ts, hfarch.TensorInfo{Name: t.Name, Shape: t.Shape})
	}
	a, err := hfarch.Describe(dir, ts, hfarch.Options{Runnable: runnable})
	if err != nil {
		return nil, &ArchError{err}
	}
	kvs := make([]KV, 0, len(a.PlanKVs()))
	for _, kv := range a.PlanKVs() {
		kvs = append(kvs, KV{Key: kv.Key, Value: kv.Value})
	}
	return &Plan{Arch: a.Name, KVs: kvs, TensorName: a.TensorName, RowOrder: a.RowOrder}, nil
}
