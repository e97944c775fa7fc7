package calib

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
)

// Options of Collect.
type Options struct {
	NumTimeGroups   int // timestep range split into this many equal-width groups (num_time_groups)
	SamplesPerLayer int // rows used per layer at most, drawn evenly across time groups (calibration_samples)
	// MaxTimestep, when > 0, is the model's last timestep: a row outside
	// [0, MaxTimestep] is refused. TimestepFrom says where it comes from.
	MaxTimestep  float64
	TimestepFrom string
}

// TimeGroup is a timestep interval [Start, End) (the last one includes End).
type TimeGroup struct {
	ID    int     `json:"id"`
	Start float64 `json:"timestep_start"`
	End   float64 `json:"timestep_end"`
}

// ActParams are INT8 asymmetric activation quantization parameters:
// q = clamp(round(x/Scale) + Zero, 0, 255), x ≈ (q - Zero) * Scale.
type ActParams struct {
	Scale float32 `json:"scale"`
	Zero  int32   `json:"zero"`
}

// GroupStats summarizes one layer's inputs in one time group.
type GroupStats struct {
	Rows      int       `json:"rows"`       // rows sampled for the channel statistics (calibration_samples)
	RangeRows int       `json:"range_rows"` // rows the range (Min, Max, Act) comes from: all of the group's
	MeanAbs   []float32 `json:"-"`          // per input channel E|x|
	MeanSq    []float32 `json:"-"`          // per input channel E[x²]
	Min       float32   `json:"min"`
	Max       float32   `json:"max"`
	Act       ActParams `json:"int8"`
}

// LayerStats holds one layer's statistics per time group (Rows is 0 for a
// group without samples).
type LayerStats struct {
	Layer         string       `json:"layer"`
	Channels      int          `json:"channels"`
	RowsAvailable int          `json:"rows_available"` // the layer's rows in the file
	Groups        []GroupStats `json:"groups"`
}

// Stats is the reduced calibration data of a file.
type Stats struct {
	File       string                 `json:"file"`
	TimeGroups []TimeGroup            `json:"time_groups"`
	Layers     map[string]*LayerStats `json:"-"`
	RowsRead   int64                  `json:"rows_read"`
	RowsUsed   int64                  `json:"rows_used"`
}

// Collect reads path twice: first to learn the timestep range, the layers
// and their rows per time group, then to accumulate the selected rows.
func Collect(path string, o Options) (*Stats, error) {
	if o.NumTimeGroups < 1 || o.SamplesPerLayer < 1 {
		return nil, fmt.Errorf("calibration: need num_time_groups >= 1 and calibration_samples >= 1")
	}
	type layerScan struct {
		channels  int
		timesteps []float64
	}
	scan := map[string]*layerScan{}
	var order []string
	lo, hi := math.Inf(1), math.Inf(-1)
	var rows int64
	err := each(path, func(r Row, i int64) error {
		if r.Layer == "" {
			return &FormatError{File: path, Row: i, Reason: "empty layer name"}
		}
		if math.IsNaN(r.Timestep) || math.IsInf(r.Timestep, 0) {
			return &FormatError{File: path, Row: i, Reason: "timestep is not finite"}
		}
		if o.MaxTimestep > 0 && (r.Timestep < 0 || r.Timestep > o.MaxTimestep) {
			return &FormatError{File: path, Row: i, Reason: fmt.Sprintf("layer %q: timestep %v is outside the model's range [0, %v] (%s)", r.Layer, r.Timestep, o.MaxTimestep, o.TimestepFrom)}
		}
		if len(r.Activation) == 0 {
			return &FormatError{File: path, Row: i, Reason: fmt.Sprintf("layer %q: empty activation", r.Layer)}
		}
		for j, v := range r.Activation {
			if v-v != 0 {
				return &FormatError{File: path, Row: i, Reason: fmt.Sprintf("layer %q: activation[%d] is %v", r.Layer, j, v)}
			}
		}
		s := scan[r.Layer]
		if s == nil {
			s = &layerScan{channels: len(r.Activation)}
			scan[r.Layer] = s
			order = append(order, r.Layer)
		}
		if len(r.Activation) != s.channels {
			return &FormatError{File: path, Row: i, Reason: fmt.Sprintf("layer %q: activation has %d values, earlier rows %d", r.Layer, len(r.Activation), s.channels)}
		}
		s.timesteps = append(s.timesteps, r.Timestep)
		lo, hi = math.Min(lo, r.Timestep), math.Max(hi, r.Timestep)
		rows++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if rows == 0 {
		return nil, &FormatError{File: path, Row: -1, Reason: "no rows"}
	}
	// A finite range: the group of t in [lo, hi] is then an index in
	// [0, G) (int of an infinite or NaN quotient is not).
	if math.IsInf(hi-lo, 0) {
		return nil, &FormatError{File: path, Row: -1, Reason: fmt.Sprintf("timesteps from %v to %v: the range overflows float64", lo, hi)}
	}
	st := &Stats{File: path, Layers: map[string]*LayerStats{}, RowsRead: rows}
	G := o.NumTimeGroups
	width := (hi - lo) / float64(G)
	for g := 0; g < G; g++ {
		st.TimeGroups = append(st.TimeGroups, TimeGroup{ID: g, Start: lo + float64(g)*width, End: lo + float64(g+1)*width})
	}
	st.TimeGroups[G-1].End = hi
	group := func(t float64) int {
		if width == 0 {
			return 0
		}
		return max(0, min(G-1, int((t-lo)/width)))
	}

	// Choose, per layer, which of its rows (by ordinal) to use.
	selected := map[string]map[int]int{} // layer -> row ordinal -> group
	for _, name := range order {
		s := scan[name]
		byGroup := make([][]int, G)
		for k, t := range s.timesteps {
			g := group(t)
			byGroup[g] = append(byGroup[g], k)
		}
		quota := fill(o.SamplesPerLayer, byGroup)
		sel := map[int]int{}
		for g, idx := range byGroup {
			q := quota[g]
			for k := 0; k < q; k++ {
				sel[idx[(2*k+1)*len(idx)/(2*q)]] = g
			}
		}
		selected[name] = sel
		ls := &LayerStats{Layer: name, Channels: s.channels, RowsAvailable: len(s.timesteps), Groups: make([]GroupStats, G)}
		for g := range ls.Groups {
			gs := &ls.Groups[g]
			gs.MeanAbs, gs.MeanSq = make([]float32, s.channels), make([]float32, s.channels)
			gs.Min, gs.Max = float32(math.Inf(1)), float32(math.Inf(-1))
		}
		st.Layers[name] = ls
	}

	// Second pass: accumulate the selected rows.
	seen := map[string]int{}
	sums := map[string][][2][]float64{} // per layer, per group: sum|x|, sum x²
	err = each(path, func(r Row, _ int64) error {
		k := seen[r.Layer]
		seen[r.Layer] = k + 1
		ls := st.Layers[r.Layer]
		// The activation range of a group comes from every row of the
		// group, not only the sampled ones: a range estimated from a few
		// vectors clips the tails (measured on the digits DiT: per-group
		// INT8 params from 8 vectors per timestep lost 8 dB against one
		// range over all timesteps; docs/DIFFUSION.md).
		rg := &ls.Groups[group(r.Timestep)]
		rg.RangeRows++
		for _, v := range r.Activation {
			rg.Min, rg.Max = min(rg.Min, v), max(rg.Max, v)
		}
		if r.Range != nil { // the whole call's range, when the file records it
			rg.Min, rg.Max = min(rg.Min, r.Range[0]), max(rg.Max, r.Range[1])
		}
		g, ok := selected[r.Layer][k]
		if !ok {
			return nil
		}
		if sums[r.Layer] == nil {
			sums[r.Layer] = make([][2][]float64, G)
		}
		acc := &sums[r.Layer][g]
		if acc[0] == nil {
			acc[0], acc[1] = make([]float64, ls.Channels), make([]float64, ls.Channels)
		}
		gs := &ls.Groups[g]
		gs.Rows++
		for j, v := range r.Activation {
			a := math.Abs(float64(v))
			acc[0][j] += a
			acc[1][j] += float64(v) * float64(v)
		}
		st.RowsUsed++
		return nil
	})
	if err != nil {
		return nil, err
	}
	for name, ls := range st.Layers {
		for g := range ls.Groups {
			gs := &ls.Groups[g]
			if gs.RangeRows == 0 {
				gs.Min, gs.Max = 0, 0
			} else {
				gs.Act = int8Params(gs.Min, gs.Max)
			}
			if gs.Rows == 0 {
				continue
			}
			acc := sums[name][g]
			for j := range gs.MeanAbs {
				gs.MeanAbs[j] = float32(acc[0][j] / float64(gs.Rows))
				// E[x²] of float32 values can exceed float32 (|x| > 1.8e19): saturate.
				gs.MeanSq[j] = float32(min(acc[1][j]/float64(gs.Rows), math.MaxFloat32))
			}
		}
	}
	return st, nil
}

// fill spreads n samples over the groups as evenly as their rows allow.
func fill(n int, groups [][]int) []int {
	q := make([]int, len(groups))
	for n > 0 {
		progress := false
		for g := range groups {
			if n > 0 && q[g] < len(groups[g]) {
				q[g]++
				n--
				progress = true
			}
		}
		if !progress {
			break
		}
	}
	return q
}

// int8Params covers [min(lo,0), max(hi,0)] with 256 levels, zero exact.
// The range is taken in float64 (hi - lo overflows float32 beyond 3.4e38)
// and the scale is at least the smallest float32 (a range of a few
// subnormals would round it to 0).
func int8Params(lo, hi float32) ActParams {
	lo, hi = min(lo, 0), max(hi, 0)
	if hi == lo {
		return ActParams{Scale: 1, Zero: 0}
	}
	scale := max(float32((float64(hi)-float64(lo))/255), math.SmallestNonzeroFloat32)
	zero := math.Round(float64(-lo) / float64(scale))
	return ActParams{Scale: scale, Zero: int32(max(0, min(255, zero)))}
}

// Importance is a per-input-channel weight for the layer's weight
// quantization error: E[x²] per channel, each time group normalized to
// mean 1 and the groups averaged with equal weight, so the timesteps where
// inputs are largest do not drown the rest. nil without samples.
func (l *LayerStats) Importance() []float32 {
	return l.equalGroupMean(func(g *GroupStats) []float32 { return g.MeanSq })
}

// ChannelMagnitude is E|x| per input channel with the same equal weight
// per time group as Importance: the activation magnitude that AWQ-style
// smoothing scales by. nil without samples.
func (l *LayerStats) ChannelMagnitude() []float32 {
	return l.equalGroupMean(func(g *GroupStats) []float32 { return g.MeanAbs })
}

// equalGroupMean averages a per-channel statistic over the time groups
// with samples, each group normalized to mean 1 first.
func (l *LayerStats) equalGroupMean(stat func(*GroupStats) []float32) []float32 {
	acc := make([]float64, l.Channels)
	used := 0
	for i := range l.Groups {
		g := &l.Groups[i]
		if g.Rows == 0 {
			continue
		}
		vals := stat(g)
		var mean float64
		for _, v := range vals {
			mean += float64(v)
		}
		mean /= float64(len(vals))
		if mean == 0 {
			continue
		}
		for j, v := range vals {
			acc[j] += float64(v) / mean
		}
		used++
	}
	if used == 0 {
		return nil
	}
	out := make([]float32, l.Channels)
	for j, v := range acc {
		out[j] = float32(v / float64(used))
	}
	return out
}

// LayerNames lists the layers, sorted.
func (s *Stats) LayerNames() []string {
	names := make([]string, 0, len(s.Layers))
	for n := range s.Layers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func each(path string, fn func(Row, int64) error) error {
	r, err := Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	for i := int64(0); ; i++ {
		row, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(row, i); err != nil {
			return err
		}
	}
}
