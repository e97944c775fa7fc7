package quant

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/arrowquant/arrowquant/calib"
)

// Time-aware quantization. Weights are shared by every timestep; what
// changes with the timestep is the activations they meet. What is done
// here: layers conditioned on the timestep are kept at >= 8 bits, and the
// timestep range is split into num_time_groups groups that carry, when
// calibration data is given, INT8 activation parameters per layer and
// group for runtimes that quantize activations.

// timestepPatterns are name fragments of modules conditioned on the
// timestep: time-embedding MLPs, adaLN / modulation projections, and the
// per-block time projections of UNet resnets.
var timestepPatterns = []string{
	"time_embed", "time_embedding", "timestep_embed", "time_emb", "temb", "t_embedder",
	"time_proj", "time_mlp", "emb_layers", "adaln", "ada_norm", "adanorm", "modulation",
}

// adaptiveNorm matches the projection of an adaptive norm in diffusers'
// DiT, SD3 and Flux blocks (norm1.linear, norm1_context.linear,
// norm_out.linear): a plain LayerNorm has no .linear, an adaLN-Zero has
// one, fed by the timestep embedding.
var adaptiveNorm = regexp.MustCompile(`(^|\.)norm[a-z0-9_]*\.linear(\.|$)`)

// IsTimestepLayer reports whether a tensor belongs to a module conditioned
// on the diffusion timestep (matched by name, case-insensitively).
func IsTimestepLayer(name string) bool {
	n := strings.ToLower(name)
	for _, p := range timestepPatterns {
		if strings.Contains(n, p) {
			return true
		}
	}
	return adaptiveNorm.MatchString(n)
}

// TimeGroups is the time-aware metadata of a result and an artifact.
type TimeGroups struct {
	NumTimeGroups int               `json:"num_time_groups"`
	Groups        []calib.TimeGroup `json:"groups"`
	// TimestepSpace says what the group bounds are in: the calibration
	// file's timesteps, or "normalized" [0, 1] without calibration data.
	TimestepSpace string `json:"timestep_space"`
	// ActivationParams: per calibrated layer, INT8 activation parameters for
	// each time group (scale 0 where the group had no samples).
	ActivationParams map[string][]calib.ActParams `json:"activation_params"`
	Calibration      *CalibrationInfo             `json:"calibration"`
	ProtectedLayers  []string                     `json:"protected_layers"`
}

// CalibrationInfo summarizes the calibration data used.
type CalibrationInfo struct {
	File          string `json:"file"`
	RowsRead      int64  `json:"rows_read"`
	RowsUsed      int64  `json:"rows_used"`
	Layers        int    `json:"layers"`
	LayersMatched int    `json:"layers_matched"` // calibration layers with a weight tensor "<layer>.weight" in the model
}

// newTimeGroups builds the groups from calibration statistics, or evenly
// over the normalized timestep range without them.
func newTimeGroups(g int, st *calib.Stats) *TimeGroups {
	tg := &TimeGroups{NumTimeGroups: g, ActivationParams: map[string][]calib.ActParams{}, ProtectedLayers: []string{}}
	if st == nil {
		tg.TimestepSpace = "normalized"
		for i := 0; i < g; i++ {
			tg.Groups = append(tg.Groups, calib.TimeGroup{ID: i, Start: float64(i) / float64(g), End: float64(i+1) / float64(g)})
		}
		return tg
	}
	tg.TimestepSpace = "calibration"
	tg.Groups = st.TimeGroups
	tg.Calibration = &CalibrationInfo{File: st.File, RowsRead: st.RowsRead, RowsUsed: st.RowsUsed, Layers: len(st.Layers)}
	for _, name := range st.LayerNames() {
		ls := st.Layers[name]
		ps := make([]calib.ActParams, len(ls.Groups))
		for i, gs := range ls.Groups {
			if gs.Rows > 0 {
				ps[i] = gs.Act
			}
		}
		tg.ActivationParams[name] = ps
	}
	return tg
}

// timeAwareStatus describes honestly what time-aware quantization did.
func timeAwareStatus(requested bool, tg *TimeGroups, matched map[string]bool, weighted int) FeatureStatus {
	s := FeatureStatus{Requested: requested}
	if !requested {
		return s
	}
	var did, not []string
	if n := len(tg.ProtectedLayers); n > 0 {
		did = append(did, fmt.Sprintf("%d timestep-conditioned tensors kept at >= 8 bits", n))
	} else {
		not = append(not, "no timestep-conditioned layers found by name")
	}
	if tg.Calibration != nil {
		tg.Calibration.LayersMatched = len(matched)
		did = append(did, fmt.Sprintf("the time groups (%d equal-width ranges of the calibrated timesteps) carry INT8 activation parameters per layer for a runtime that quantizes activations (docs/FORMAT.md; %d layers from %s, ranges from all %d rows, channel statistics from %d; %d layers match a weight)",
			tg.NumTimeGroups, tg.Calibration.Layers, tg.Calibration.File, tg.Calibration.RowsRead, tg.Calibration.RowsUsed, len(matched)))
		if weighted > 0 {
			did = append(did, fmt.Sprintf("the parameter search of %d weight tensors weighted by per-input-channel importance (mean x² per channel, each time group with equal weight)", weighted))
		} else if len(matched) > 0 {
			not = append(not, "calibrated layers matched, but the method of their final bit width has no weighted search (minmax at INT8)")
		} else {
			not = append(not, "no weight tensor matched a calibrated layer with the same input channels, so no search was weighted")
		}
	} else {
		not = append(not, "no calibration data: time groups carry no activation parameters and weights are quantized time-agnostically")
	}
	s.Applied = len(did) > 0
	s.Reason = strings.Join(append(did, not...), "; ")
	return s
}
