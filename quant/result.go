package quant

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/arrowquant/arrowquant/config"
)

// Layer is the per-tensor entry of a Result.
type Layer struct {
	Name              string  `json:"name"`
	Shape             []int64 `json:"shape"`
	DType             string  `json:"dtype"`
	Params            int64   `json:"params"`
	BitWidth          int     `json:"bit_width"` // final; 16 when kept unquantized
	RequestedBitWidth int     `json:"requested_bit_width"`
	GroupSize         int     `json:"group_size"` // 0 when kept unquantized
	Method            string  `json:"method"`
	CosineSimilarity  float64 `json:"cosine_similarity"`
	RelMSE            float64 `json:"rel_mse"`
	FallbackReason    *string `json:"fallback_reason"`
	Policy            string  `json:"policy,omitempty"`     // why a tensor skipped quantization by rule
	Protection        string  `json:"protection,omitempty"` // why a tensor was quantized above the configured bit width
	Weighting         string  `json:"weighting,omitempty"`  // what weighed the parameter search's error, if anything
	// OutputCosineSimilarity (calibrated layers): the cosine of X·Wᵀ and
	// X·Ŵᵀ estimated from the calibration's per-channel second moments
	// (channels treated as uncorrelated).
	OutputCosineSimilarity *float64 `json:"output_cosine_similarity,omitempty"`
	// Smoothing (spatial quantization with calibration): the AWQ α search
	// and its outcome; nil when the tensor was not searched. Rendered as
	// text in the report.
	Smoothing *SmoothingReport `json:"smoothing,omitempty"`
	// Equalization (spatial, whole model): how channel equalization
	// rescaled this tensor; its stored values are the equalized ones.
	Equalization string `json:"equalization,omitempty"`
	Bytes        int64  `json:"bytes"` // codes, group params and channel scales (or raw values) stored

	smoothing *smoothing // the applied smoothing, for the channel_scales column
}

// Quantized reports whether the tensor went through the bit-width ladder
// (rather than being kept at 16 bits by policy).
func (l Layer) Quantized() bool { return l.Policy == "" }

// FeatureStatus says honestly whether an option did anything.
type FeatureStatus struct {
	Requested bool   `json:"requested"`
	Applied   bool   `json:"applied"`
	Reason    string `json:"reason,omitempty"`
}

// SmoothingReport is the outcome of a layer's AWQ α search: typed state
// for the program, text only in the report (String, MarshalJSON).
type SmoothingReport struct {
	Alpha  float64   // the α applied; 0 when no α lowered the estimate enough
	GainDB float64   // output-error estimate gain over α = 0, in dB
	Grid   []float64 // the α searched
	Rows   int64     // the tensor's first rows the search ran on
	text   string    // a report read back from JSON keeps its text only
}

// Applied reports whether smoothing was applied (false for a report read
// back from JSON, which keeps only its text).
func (s *SmoothingReport) Applied() bool { return s != nil && s.Alpha > 0 }

func (s *SmoothingReport) String() string {
	switch {
	case s == nil:
		return ""
	case s.text != "":
		return s.text
	case s.Alpha == 0:
		return fmt.Sprintf("AWQ smoothing searched (α in %v on the first %d rows): none lowered the output-error estimate by 1%% or more, so none is applied", s.Grid, s.Rows)
	}
	return fmt.Sprintf("AWQ smoothing α=%g (searched %v on the first %d rows; output-error estimate %.2f dB lower than α=0): quantized W·diag(s), s = mean|x|^α per input channel; channel_scales holds 1/s", s.Alpha, s.Grid, s.Rows, s.GainDB)
}

// MarshalJSON renders the report text.
func (s *SmoothingReport) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON keeps a report's text.
func (s *SmoothingReport) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &s.text) }

// Fallback is one tensor that did not stay at the requested bit width.
type Fallback struct {
	Tensor        string  `json:"tensor"`
	RequestedBits int     `json:"requested_bits"`
	FinalBits     int     `json:"final_bits"`
	Cosine        float64 `json:"cosine"`
	Reason        string  `json:"reason"`
}

// Result is the outcome of quantizing a model: the guide's keys plus the
// per-tensor layers. Printed by `quantize --json`, written to report.json.
type Result struct {
	QuantizedPath       string  `json:"quantized_path"`
	ModelSizeMB         float64 `json:"model_size_mb"`
	CosineSimilarity    float64 `json:"cosine_similarity"`
	MinCosineSimilarity float64 `json:"min_cosine_similarity"`
	CompressionRatio    float64 `json:"compression_ratio"`
	CompressionBasis    string  `json:"compression_basis"`
	FallbackOccurred    bool    `json:"fallback_occurred"`
	ActualBitWidth      int     `json:"actual_bit_width"`
	FallbackReason      *string `json:"fallback_reason"`
	Modality            string  `json:"modality"`        // "" when it could not be detected
	ModalitySource      string  `json:"modality_source"` // the evidence, or why there was none
	ModalityEffect      string  `json:"modality_effect"` // what the modality changed (ModalityEffect)
	BitWidth            int     `json:"bit_width"`
	GroupSize           int     `json:"group_size"`
	Method              string  `json:"method"`
	Target              string  `json:"target,omitempty"` // "gguf" with target gguf (methods then chosen per tensor)
	QuantizationTimeS   float64 `json:"quantization_time_s"`

	NumTensors      int     `json:"num_tensors"`
	NumParams       int64   `json:"num_params"`
	SourceBytes     int64   `json:"source_bytes"`
	ArtifactBytes   int64   `json:"artifact_bytes"`
	QuantizedParams int64   `json:"quantized_params"`
	BitsPerWeight   float64 `json:"bits_per_weight"` // over all params, every stored byte of codes and params

	// Fallbacks lists every quantized tensor that ended at another bit width.
	Fallbacks []Fallback `json:"fallbacks"`

	TimeAware  FeatureStatus `json:"time_aware"`
	TimeGroups *TimeGroups   `json:"time_groups"` // null when enable_time_aware is false
	Spatial    FeatureStatus `json:"spatial"`
	// Equalization: the layer pairs channel equalization changed (null
	// when enable_spatial is off; streamed sources are equalized too).
	Equalization *Equalization `json:"equalization"`
	Streaming    FeatureStatus `json:"streaming"`
	Warnings     []string      `json:"warnings"`

	Config config.DiffusionQuantConfig `json:"config"`
	Layers []Layer                     `json:"layers"`
}

// JSON renders the result as indented JSON (with "<" and ">" as is).
func (r *Result) JSON() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil { // only NaN/Inf could do this; summarize guards against them
		panic(err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}

// summarize fills the model-level keys from the layers.
func (r *Result) summarize() {
	r.NumTensors = len(r.Layers)
	r.Fallbacks = []Fallback{}
	var weighted, weight float64
	r.MinCosineSimilarity = 1
	r.ActualBitWidth = 0
	counts := map[int]int{}
	var fell []Layer
	for _, l := range r.Layers {
		r.NumParams += l.Params
		if !l.Quantized() {
			continue
		}
		r.QuantizedParams += l.Params
		weighted += l.CosineSimilarity * float64(l.Params)
		weight += float64(l.Params)
		r.MinCosineSimilarity = math.Min(r.MinCosineSimilarity, l.CosineSimilarity)
		r.ActualBitWidth = max(r.ActualBitWidth, l.BitWidth)
		if l.BitWidth != l.RequestedBitWidth {
			counts[l.BitWidth]++
			fell = append(fell, l)
			r.Fallbacks = append(r.Fallbacks, Fallback{
				Tensor: l.Name, RequestedBits: l.RequestedBitWidth, FinalBits: l.BitWidth,
				Cosine: l.CosineSimilarity, Reason: deref(l.FallbackReason),
			})
		}
	}
	r.CosineSimilarity = 1
	if weight > 0 {
		r.CosineSimilarity = weighted / weight
	} else {
		r.ActualBitWidth = r.BitWidth
	}
	r.FallbackOccurred = len(fell) > 0
	r.FallbackReason = nil
	if r.FallbackOccurred {
		var parts []string
		widths := make([]int, 0, len(counts))
		for w := range counts {
			widths = append(widths, w)
		}
		sort.Ints(widths)
		for _, w := range widths {
			parts = append(parts, fmt.Sprintf("%d to %s", counts[w], bitsName(w)))
		}
		worst := fell[0]
		for _, l := range fell {
			if l.FallbackReason != nil && worst.FallbackReason != nil && l.CosineSimilarity < worst.CosineSimilarity {
				worst = l
			}
		}
		s := fmt.Sprintf("%d of %d quantized tensors fell back from %s (%s); e.g. %s: %s",
			len(fell), countQuantized(r.Layers), bitsName(r.BitWidth), strings.Join(parts, ", "), worst.Name, deref(worst.FallbackReason))
		r.FallbackReason = &s
	}
}

func countQuantized(ls []Layer) int {
	n := 0
	for _, l := range ls {
		if l.Quantized() {
			n++
		}
	}
	return n
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func bitsName(bits int) string {
	if bits == 16 {
		return "FP16"
	}
	return fmt.Sprintf("INT%d", bits)
}

// AccuracyError is a fail_fast stop: a tensor's cosine is below min_accuracy.
type AccuracyError struct {
	Tensor    string
	BitWidth  int
	Cosine    float64
	Threshold float64
}

func (e *AccuracyError) Error() string {
	return fmt.Sprintf("fail_fast: tensor %q at INT%d has cosine similarity %.6f < min_accuracy %g (disable fail_fast to fall back to more bits)",
		e.Tensor, e.BitWidth, e.Cosine, e.Threshold)
}

// TensorError names the tensor (and element position) of a data problem.
type TensorError struct {
	Tensor string
	Err    error
}

func (e *TensorError) Error() string { return fmt.Sprintf("tensor %q: %v", e.Tensor, e.Err) }
func (e *TensorError) Unwrap() error { return e.Err }

// ErrNonFinite is matched (errors.Is) by errors about NaN/Inf values.
var ErrNonFinite = errors.New("non-finite value")
