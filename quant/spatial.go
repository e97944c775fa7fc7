package quant

import (
	"context"
	"fmt"
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/schema"
)

// Spatial quantization, AWQ-style activation smoothing for weight-only
// quantization: a [out, in] weight whose layer has calibration data is
// quantized as W·diag(s) with s_j = a_j^α (a_j = E|x_j|, each time group
// weighted equally), its error weighted by importance_j / s_j² so that the
// search minimizes the layer's estimated output error Σ_j E[x_j²](W−Ŵ)²_ij.
// The artifact stores 1/s per input channel (channel_scales, on the
// tensor's first row); readers multiply after dequantizing, so they get W
// back without touching any other tensor. α is searched per layer on the
// tensor's first chunk; α = 0 (no smoothing) is a candidate, so smoothing
// is applied only where the estimate says it pays.

// alphaGrid are the smoothing exponents searched per layer; on the
// diffusion fixture the best lie in 0.1-0.3 (AWQ's own grid spans [0, 1]).
var alphaGrid = []float64{0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1}

// minSmoothingGain: smoothing must lower the output-error estimate by at
// least 1% (0.04 dB) to be applied.
const minSmoothingGain = 0.99

// smoothing is the per-input-channel scaling of one tensor.
type smoothing struct {
	alpha float64
	scale []float32 // s: the matrix quantized is W·diag(s)
	inv   []float32 // 1/s: stored as channel_scales
}

// newSmoothing builds s = base · a^α, a^α normalized so that
// sqrt(max·min) = 1 (as AWQ does; channels with no activation get the
// smallest kept magnitude). base (channel equalization's scales) may be
// nil; with α = 0, s = base.
func newSmoothing(mag []float32, alpha float64, base []float32) *smoothing {
	n := len(base)
	if alpha > 0 {
		n = len(mag)
	}
	sm := &smoothing{alpha: alpha, scale: make([]float32, n), inv: make([]float32, n)}
	for j := range sm.scale {
		sm.scale[j] = 1
		if base != nil {
			sm.scale[j] = base[j]
		}
	}
	if alpha > 0 {
		var hi float32
		for _, v := range mag {
			hi = max(hi, v)
		}
		floor := hi * 1e-4
		pow := make([]float64, n)
		lo, top := math.Inf(1), 0.0
		for j, v := range mag {
			pow[j] = math.Pow(float64(max(v, floor)), alpha)
			lo, top = min(lo, pow[j]), max(top, pow[j])
		}
		norm := math.Sqrt(lo * top)
		for j := range sm.scale {
			sm.scale[j] = float32(float64(sm.scale[j]) * pow[j] / norm)
		}
	}
	for j, v := range sm.scale {
		sm.inv[j] = 1 / v
	}
	return sm
}

// errorWeights are the search weights in the smoothed domain,
// importance_j / s_j², so the weighted error equals the output-error
// estimate of W.
func (sm *smoothing) errorWeights(importance []float32) []float32 {
	w := make([]float32, len(importance))
	for j, v := range importance {
		w[j] = v / (sm.scale[j] * sm.scale[j])
	}
	return w
}

// smoothable reports the activation magnitudes of a tensor that spatial
// quantization may smooth: a 2-D weight of a calibrated layer.
func (p *pipeline) smoothable(meta TensorMeta) []float32 {
	if !p.o.Config.EnableSpatial || p.gguf {
		return nil // target gguf: no AWQ smoothing (its scales do not fold)
	}
	if ls := p.calibrated(meta); ls != nil {
		return ls.ChannelMagnitude()
	}
	return nil
}

// searchAlpha picks α from alphaGrid by the output-error estimate on the
// tensor's first rows (up to one chunk), on top of channel equalization's
// scales (base, may be nil). When α = 0 wins it returns the base
// smoothing (nil without base). note describes the choice for the
// layer's report.
func (p *pipeline) searchAlpha(ctx context.Context, t Tensor, bits int, importance, mag, base []float32) (best *smoothing, rep *SmoothingReport, err error) {
	meta := t.Meta()
	in := meta.Shape[1]
	rows := max(1, min(meta.Shape[0], schema.ChunkElems/in))
	head := &headTensor{Tensor: t, meta: TensorMeta{Name: meta.Name, Shape: []int64{rows, in}, DType: meta.DType}}
	baseErr, bestErr := 0.0, math.Inf(1)
	var zero *smoothing // the α = 0 candidate
	for _, alpha := range alphaGrid {
		var sm *smoothing
		w := importance
		if alpha > 0 || base != nil {
			sm = newSmoothing(mag, alpha, base)
			w = sm.errorWeights(importance)
		}
		if alpha == 0 {
			zero = sm
		}
		chunks, _, err := p.quantize(ctx, head, bits, false, w, sm, true)
		releaseChunks(chunks)
		if err != nil {
			return nil, nil, err
		}
		var out kernels.Similarity
		for i := range chunks {
			out.Add(chunks[i].output)
		}
		if alpha == 0 {
			baseErr = out.Err2
		}
		if out.Err2 < bestErr {
			best, bestErr = sm, out.Err2
		}
	}
	if best != zero && bestErr > baseErr*minSmoothingGain {
		best = zero // not worth it
	}
	rep = &SmoothingReport{Grid: alphaGrid, Rows: rows}
	if best == zero {
		return zero, rep, nil
	}
	rep.Alpha = best.alpha
	if baseErr > 0 {
		rep.GainDB = 10 * math.Log10(baseErr/bestErr)
	}
	return best, rep, nil
}

// headTensor is the first rows of a 2-D tensor.
type headTensor struct {
	Tensor
	meta TensorMeta
}

func (h *headTensor) Meta() TensorMeta { return h.meta }

// unsmoothedSimilarity compares a chunk's original values with its stored
// reconstruction times 1/s: the tensor's true cosine.
//
// The reconstruction is made and compared in pieces of whole groups (or
// super-blocks) of about 4096 elements, which stay in cache, instead of
// a chunk-long buffer written once and read twice; so are 16-bit
// original values decoded.
func unsmoothedSimilarity(x *chunkValues, c *chunk, bits, groupSize int, sm *smoothing) (kernels.Similarity, error) {
	codes := c.codes.(*array.Binary).Value(0)
	var dequantize func(off int, dst []float32) error
	var piece int
	if c.groupParams != nil {
		_, _, bpsb, err := kernels.SuperBlockLayout(bits)
		if err != nil {
			return kernels.Similarity{}, err
		}
		params := c.groupParams.(*array.Binary).Value(0)
		piece = 16 * kernels.SuperBlockElems
		dequantize = func(off int, dst []float32) error {
			sb := off / kernels.SuperBlockElems
			nsb := int(kernels.NumSuperBlocks(int64(len(dst))))
			if sb*bpsb > len(params) {
				return fmt.Errorf("group_params: %d bytes for super-block %d", len(params), sb)
			}
			p := params[sb*bpsb : min(len(params), (sb+nsb)*bpsb)]
			cd := codes[min(len(codes), off*bits/8):]
			cd = cd[:min(len(cd), int(kernels.PackedLen(int64(len(dst)), bits)))]
			return kernels.DequantizeSuperBlocks(dst, cd, p, bits)
		}
	} else {
		scales, mins := halfValues(c.scales), halfValues(c.mins)
		piece = groupSize * 8 * max(1, 512/groupSize) // whole groups, whole code bytes
		dequantize = func(off int, dst []float32) error {
			g := off / groupSize
			kernels.DequantizeGroups(dst, codes[min(len(codes), off*bits/8):], scales[g:], mins[g:], bits, groupSize)
			return nil
		}
	}
	return kernels.SimilarityOfPieces(x.len(), piece, func(off int, dst []float32) ([]float32, error) {
		if err := dequantize(off, dst); err != nil {
			return nil, err
		}
		artifact.ScaleChannels(dst, c.off+int64(off), sm.inv) // as every reader does
		return x.piece(off, len(dst)), nil
	})
}

// halfValues returns the fp16 bits of a one-row list<float16> (a view of
// its buffer).
func halfValues(a arrow.Array) []uint16 {
	return halfBits(a.(*array.List).ListValues().(*array.Float16))
}

// channelScalesArray is the channel_scales cell of a row: 1/s on the
// tensor's first row of a smoothed tensor, null otherwise.
func channelScalesArray(mem memory.Allocator, sm *smoothing, first bool) arrow.Array {
	b := array.NewListBuilder(mem, arrow.PrimitiveTypes.Float32)
	defer b.Release()
	if sm == nil || !first {
		b.AppendNull()
	} else {
		b.Append(true)
		b.ValueBuilder().(*array.Float32Builder).AppendValues(sm.inv, nil)
	}
	return b.NewArray()
}

// spatialStatus describes honestly what spatial quantization did.
func spatialStatus(requested, calibrated bool, layers []Layer, eq *Equalization) FeatureStatus {
	s := FeatureStatus{Requested: requested}
	if !requested {
		return s
	}
	var dfq string
	switch {
	case len(eq.Pairs) > 0:
		dfq = fmt.Sprintf("channel equalization (DFQ): %d of %d legal layer pairs equalized (norm -> q/k/v, post-attention norm -> gate/up, up -> down; see \"equalization\")", len(eq.Pairs), eq.Considered)
	case eq.Considered > 0:
		dfq = fmt.Sprintf("channel equalization (DFQ): none of %d legal layer pairs lowered the quantization-noise estimate by 1%% or more, so none was equalized", eq.Considered)
	default:
		dfq = "channel equalization (DFQ): no legal layer pair (norm -> q/k/v, post-attention norm -> gate/up, up -> down, by Llama-family names) in this model"
	}
	equalized := eq != nil && len(eq.Pairs) > 0
	if !calibrated {
		s.Applied = equalized
		s.Reason = "activation smoothing (AWQ) needs calibration data and none was given, so nothing was smoothed; " + dfq
		return s
	}
	searched, smoothed := 0, 0
	for _, l := range layers {
		if l.Smoothing != nil {
			searched++
		}
		if l.Smoothing.Applied() {
			smoothed++
		}
	}
	s.Applied = smoothed > 0 || equalized
	switch {
	case searched == 0:
		s.Reason = "no quantized 2-D weight matched a calibrated layer with the same input channels (or its method has no weighted search), so nothing was smoothed; " + dfq
	default:
		s.Reason = fmt.Sprintf("activation smoothing (AWQ): α searched for %d calibrated weight tensors, smoothing applied to %d (per-input-channel scales in channel_scales); %s", searched, smoothed, dfq)
	}
	return s
}
