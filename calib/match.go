package calib

import (
	"fmt"
	"sort"
	"strings"
)

// MismatchError says calibration data does not belong to the model: a
// captured layer whose weight "<layer>.weight" has other input channels
// than the captured activations, or no captured layer with a weight at all.
type MismatchError struct {
	File       string
	Layers     int      // layers in the calibration data
	Matched    int      // layers whose weight exists with the captured channels (-1: not counted)
	Mismatches []string // the first mismatches, described
	Total      int      // mismatches in all
}

func (e *MismatchError) Error() string {
	more := ""
	if e.Total > len(e.Mismatches) {
		more = fmt.Sprintf("; and %d more", e.Total-len(e.Mismatches))
	}
	matched := ""
	if e.Matched >= 0 {
		matched = fmt.Sprintf("%d of %d layers match", e.Matched, e.Layers)
	} else {
		matched = "each layer's input must match"
	}
	return fmt.Sprintf("calibration data %s does not match the model (%s a weight \"<layer>.weight\" of [out, in] with in = the activation length): %s%s",
		e.File, matched, strings.Join(e.Mismatches, "; "), more)
}

// CheckWeight refuses at once a weight "<layer>.weight" of [out, in]
// whose layer was captured with other than in values (Matched is then -1:
// the other tensors are not known yet).
func (s *Stats) CheckWeight(name string, shape []int64) error {
	base, ok := strings.CutSuffix(name, ".weight")
	if !ok || len(shape) != 2 {
		return nil
	}
	ls, ok := s.Layers[base]
	if !ok || shape[1] == int64(ls.Channels) {
		return nil
	}
	msg := fmt.Sprintf("layer %q: activations of %d values, weight %q has %d input channels (shape %v)", base, ls.Channels, name, shape[1], shape)
	return &MismatchError{File: s.File, Layers: len(s.Layers), Matched: -1, Mismatches: []string{msg}, Total: 1}
}

// maxListed bounds the mismatches an error or warning lists.
const maxListed = 5

// MatchResult is how calibration layers meet the model's weights.
type MatchResult struct {
	Matched []string // layers with a weight of the captured input channels
	Missing []string // layers with no [out, in] weight "<layer>.weight" in the model
}

// Match checks the layers against the model's tensors (shape by name, ok
// false for an absent name). A layer whose weight exists with other input
// channels, or no layer matching at all, is a *MismatchError; layers with
// no [out, in] weight (captured elsewhere, a convolution) are returned as
// Missing.
func (s *Stats) Match(shape func(name string) ([]int64, bool)) (MatchResult, error) {
	var res MatchResult
	var bad []string
	for _, name := range s.LayerNames() {
		ls := s.Layers[name]
		sh, ok := shape(name + ".weight")
		switch {
		case !ok || len(sh) != 2: // e.g. a convolution: captured, but nothing uses it
			res.Missing = append(res.Missing, name)
		case sh[1] != int64(ls.Channels):
			bad = append(bad, fmt.Sprintf("layer %q: activations of %d values, weight %q has %d input channels (shape %v)", name, ls.Channels, name+".weight", sh[1], sh))
		default:
			res.Matched = append(res.Matched, name)
		}
	}
	if len(bad) == 0 && len(res.Matched) > 0 {
		return res, nil
	}
	if len(res.Matched) == 0 {
		for _, name := range res.Missing {
			bad = append(bad, fmt.Sprintf("layer %q: the model has no [out, in] tensor %q", name, name+".weight"))
		}
	}
	e := &MismatchError{File: s.File, Layers: len(s.Layers), Matched: len(res.Matched), Total: len(bad)}
	e.Mismatches = bad[:min(len(bad), maxListed)]
	return res, e
}

// MissingWarning describes layers without a weight, or "" when none.
func (s *Stats) MissingWarning(missing []string) string {
	if len(missing) == 0 {
		return ""
	}
	sort.Strings(missing)
	listed := missing[:min(len(missing), maxListed)]
	return fmt.Sprintf("calibration data %s: %d of %d layers have no [out, in] weight \"<layer>.weight\" in the model and were not used (%s)",
		s.File, len(missing), len(s.Layers), strings.Join(quoteAll(listed), ", ")+ellipsis(len(missing) > len(listed)))
}

// ShortWarning says which layers had fewer rows than calibration_samples
// (their statistics use every row they have), or "" when none.
func (s *Stats) ShortWarning(samples int) string {
	var short []string
	fewest := samples
	for _, name := range s.LayerNames() {
		if n := s.Layers[name].RowsAvailable; n < samples {
			short = append(short, name)
			fewest = min(fewest, n)
		}
	}
	if len(short) == 0 {
		return ""
	}
	listed := short[:min(len(short), maxListed)]
	return fmt.Sprintf("calibration data %s: %d of %d layers have fewer rows than calibration_samples %d (as few as %d), so their statistics come from fewer samples than asked (%s)",
		s.File, len(short), len(s.Layers), samples, fewest, strings.Join(quoteAll(listed), ", ")+ellipsis(len(short) > len(listed)))
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fmt.Sprintf("%q", n)
	}
	return out
}

func ellipsis(more bool) string {
	if more {
		return ", ..."
	}
	return ""
}
