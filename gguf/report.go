package gguf

import (
	"bytes"
	"encoding/json"
)

// Report is the export report: printed by `export --json` and written
// beside the output as <output>.report.json.
type Report struct {
	Input         string `json:"input"`
	Output        string `json:"output"`
	Model         string `json:"model"`
	FormatVersion string `json:"artifact_format_version"`
	Architecture  string `json:"architecture"` // general.architecture
	// ExactTensors and ReencodedTensors count the exported tensors.
	ExactTensors     int      `json:"exact_tensors"`
	ReencodedTensors int      `json:"reencoded_tensors"`
	Skipped          []string `json:"skipped"` // left out by the plan's TensorName
	Params           int64    `json:"params"`
	DataBytes        int64    `json:"data_bytes"` // tensor data, without alignment padding
	FileBytes        int64    `json:"file_bytes"`
	BitsPerWeight    float64  `json:"bits_per_weight"` // data bytes · 8 / params
	TimeS            float64  `json:"time_s"`
	// Verified: every tensor was dequantized and compared (exact ones bit
	// for bit); otherwise exact tensors' cosine is 1 by construction.
	Verified bool            `json:"verified"`
	Folds    []Fold          `json:"folds"`
	Tensors  []*TensorReport `json:"tensors"`
}

// Fold is one channel-equalization pair of the artifact and whether its
// channel scales went into the producer.
type Fold struct {
	Producer  string   `json:"producer"`
	Consumers []string `json:"consumers"`
	Folded    bool     `json:"folded"`
	Reason    string   `json:"reason,omitempty"` // why not
}

// TensorReport is one exported tensor.
type TensorReport struct {
	Name     string   `json:"name"`      // in the artifact (Hugging Face name)
	GGUFName string   `json:"gguf_name"` // in the GGUF file
	Type     Type     `json:"gguf_type"`
	NE       []uint64 `json:"ne"` // ggml order, innermost first
	Bytes    uint64   `json:"bytes"`
	Stored   string   `json:"stored"` // how the artifact stores it ("dq INT4 super-blocks", "lsq INT4 g128", "bf16")
	Exact    bool     `json:"exact"`  // ggml's dequantization gives the artifact's reconstruction bit for bit
	// How: "repack" (the same numbers in ggml's block layout), "copy"
	// (16-bit as stored), "widen" (16-bit to F32), "dequantize" (the
	// float32 reconstruction as F32), "fold" (a producer times the channel
	// scales of its consumers), or "re-encode" (our kernels on the
	// reconstruction; not exact).
	How           string `json:"how"`
	Reason        string `json:"reason"`
	ChannelScales string `json:"channel_scales,omitempty"` // "folded into the producer" or "applied (no exact fold)"
	// CosineArtifact: the exported tensor's dequantization (times channel
	// scales folded into a producer) against the artifact's
	// reconstruction. 1 for exact tensors (measured when CosineMeasured).
	CosineArtifact float64 `json:"cosine_artifact"`
	CosineMeasured bool    `json:"cosine_measured"`
	// CosineSource: against the source weights, for exact tensors: the
	// artifact's own per-tensor cosine (its rows' cosine column).
	CosineSource *float64 `json:"cosine_source,omitempty"`
	// CosineSourceBound: for re-encoded tensors, a lower bound of the
	// cosine against the source, cos(acos(artifact's) + acos(artifact's
	// reconstruction to export)): angles obey the triangle inequality.
	CosineSourceBound *float64 `json:"cosine_source_lower_bound,omitempty"`
}

// JSON renders the report as indented JSON.
func (r *Report) JSON() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(r) // cosines are finite (Similarity.Cosine guards 0/0)
	return bytes.TrimRight(buf.Bytes(), "\n")
}
