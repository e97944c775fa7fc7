package quant

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/safe"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/schema"
)

// Channel equalization (DFQ-style, calibration-free) between the legal
// layer pairs of a Llama-family block:
//
//	input_layernorm γ          -> self_attn.{q,k,v}_proj
//	post_attention_layernorm γ -> mlp.{gate,up}_proj
//	mlp.up_proj (output rows)  -> mlp.down_proj
//
// The consumers are quantized as W·diag(s), s_j = (c / r_j)^β with r_j
// the pair's max |W_ij| over the rows of all its consumers and c their
// geometric mean, so their input-channel ranges even out and groups waste
// fewer levels on outlier columns. The artifact stores 1/s as each
// consumer's channel_scales, so a reader gets W back; because s is shared
// by the pair's consumers, a runtime may instead fold 1/s into the
// producer (γ/s, or up_proj's rows /s) once at load time: the DFQ
// rescaling, at no cost per token. The output error is the same either
// way. β is chosen per pair from equalizationBetas by the output-noise
// estimate of per-group uniform quantization on sample rows (noise ∝ the
// group's range², weighted by γ_j²/s_j², or 1/s_j² after up_proj), and a
// pair is equalized only when that estimate drops by at least 1%. The
// source is read ahead past a block's pair members, which are held back
// until the block is complete, so streamed uploads are equalized too.

// equalizationBetas are the exponents tried per pair (0 = leave as is).
var equalizationBetas = []float64{0, 0.25, 0.5, 0.75, 1}

// equalizeSampleRows is how many rows of each consumer the estimate reads.
const equalizeSampleRows = 64

// pairSuffixes are the names, within a block, of every pair member.
var pairSuffixes = []string{
	"input_layernorm.weight", "post_attention_layernorm.weight",
	"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
	"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
}

// pairMember returns the block prefix of a pair member's name.
func pairMember(name string) (string, bool) {
	for _, suf := range pairSuffixes {
		if prefix, ok := strings.CutSuffix(name, suf); ok {
			return prefix, true
		}
	}
	return "", false
}

// lookupFunc finds a tensor by name.
type lookupFunc func(name string) (Tensor, bool)

// Equalization is what channel equalization did: the result's
// "equalization" and the artifact's arrowquant.equalization metadata.
type Equalization struct {
	Pairs []EqualizedPair `json:"pairs"`
	// Considered is the number of legal pairs found by name and shape.
	Considered int `json:"considered"`
}

// EqualizedPair is one equalized layer pair.
type EqualizedPair struct {
	Producer  string   `json:"producer"`  // norm weight, or up_proj (rows scaled by 1/s)
	Consumers []string `json:"consumers"` // weights whose input channels are scaled by s
	Channels  int      `json:"channels"`
	Beta      float64  `json:"beta"`
	// EstimatedGainDB is the drop of the output-noise estimate on sample rows.
	EstimatedGainDB float64 `json:"estimated_gain_db"`
}

// legalPair is a producer and the consumers of its output channels.
type legalPair struct {
	producer  string
	consumers []string
	norm      bool // producer is a 1-D norm weight (else up_proj rows)
}

// findPairs lists the legal pairs among names by name and shape.
func findPairs(lookup lookupFunc, names []string) []legalPair {
	var pairs []legalPair
	shape := func(name string) ([]int64, bool) {
		t, ok := lookup(name)
		if !ok {
			return nil, false
		}
		return t.Meta().Shape, true
	}
	consumersOK := func(in int64, cs []string) bool {
		for _, c := range cs {
			s, ok := shape(c)
			if !ok || len(s) != 2 || s[1] != in {
				return false
			}
		}
		return true
	}
	for _, name := range names {
		for _, rule := range []struct {
			suffix    string
			consumers []string
		}{
			{"input_layernorm.weight", []string{"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"}},
			{"post_attention_layernorm.weight", []string{"mlp.gate_proj.weight", "mlp.up_proj.weight"}},
		} {
			prefix, ok := strings.CutSuffix(name, rule.suffix)
			if !ok {
				continue
			}
			s, _ := shape(name)
			cs := make([]string, len(rule.consumers))
			for i, c := range rule.consumers {
				cs[i] = prefix + c
			}
			if len(s) == 1 && consumersOK(s[0], cs) {
				pairs = append(pairs, legalPair{producer: name, consumers: cs, norm: true})
			}
		}
		if prefix, ok := strings.CutSuffix(name, "mlp.up_proj.weight"); ok {
			up, _ := shape(name)
			down := prefix + "mlp.down_proj.weight"
			if len(up) == 2 && consumersOK(up[0], []string{down}) {
				if ds, _ := shape(down); ds[0] == up[1] {
					pairs = append(pairs, legalPair{producer: name, consumers: []string{down}})
				}
			}
		}
	}
	return pairs
}

// channelScaling is what equalization decided for a tensor.
type channelScaling struct {
	scale      []float32 // consumers: quantize W·diag(scale); nil for producers
	importance []float32 // consumers of a norm: γ² (their input's relative power), else nil
	notes      []string
}

// equalizer holds the plan: per tensor name, its scaling. The source
// plans blocks while earlier tensors are being quantized, so the map is
// guarded. A tensor's scaling must be final before the tensor is yielded
// to the pipeline (its quantization reads it): yield records that, and a
// plan touching a yielded tensor is refused (ErrPlanAfterYield) instead
// of changing scales under a running quantization.
type equalizer struct {
	mu        sync.RWMutex
	scale     map[string]*channelScaling
	yielded   map[string]bool
	res       *Equalization
	mem       memory.Allocator
	groupSize int // of the configured bit width's method, for the noise estimate
	workers   int // goroutines reading a consumer's columns while planning
	// normOnly keeps only pairs whose producer is a norm (target gguf:
	// their scales fold exactly into it; up_proj's rows would change).
	normOnly bool
}

func newEqualizer(mem memory.Allocator, groupSize int) *equalizer {
	return &equalizer{workers: 1, scale: map[string]*channelScaling{}, yielded: map[string]bool{}, res: &Equalization{Pairs: []EqualizedPair{}}, mem: mem, groupSize: groupSize}
}

// ErrPlanAfterYield is a plan for a tensor already handed to the
// pipeline: an ordering bug in the source.
var ErrPlanAfterYield = errors.New("equalization planned after the tensor was yielded")

// yield marks name as handed to the pipeline: its scaling is final.
func (e *equalizer) yield(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.yielded[name] = true
}

func (e *equalizer) scaling(name string) *channelScaling {
	if e == nil {
		return nil
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.scale[name]
}

// plan reads the consumers of every legal pair among the given tensors
// (column ranges over all rows, plus sample rows) and decides β per pair.
func (eq *equalizer) plan(ctx context.Context, tensors map[string]Tensor) error {
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	lookup := func(name string) (Tensor, bool) { t, ok := tensors[name]; return t, ok }
	pairs := findPairs(lookup, names)
	if eq.normOnly {
		kept := pairs[:0]
		for _, pr := range pairs {
			if pr.norm {
				kept = append(kept, pr)
			}
		}
		pairs = kept
	}
	mem, groupSize, res := eq.mem, eq.groupSize, eq.res
	eq.mu.Lock()
	for _, pr := range pairs {
		for _, name := range append([]string{pr.producer}, pr.consumers...) {
			if eq.yielded[name] {
				eq.mu.Unlock()
				return fmt.Errorf("%w: %s", ErrPlanAfterYield, name)
			}
		}
	}
	res.Considered += len(pairs)
	eq.mu.Unlock()
	get := func(name string) *channelScaling {
		eq.mu.Lock()
		defer eq.mu.Unlock()
		if eq.scale[name] == nil {
			eq.scale[name] = &channelScaling{}
		}
		return eq.scale[name]
	}
	for _, pr := range pairs {
		if err := ctx.Err(); err != nil {
			return err
		}
		var ranges []float32
		var samples [][]float32 // per consumer: sample rows, row-major
		for _, c := range pr.consumers {
			t, _ := lookup(c)
			r, sample, err := columnRanges(ctx, t, mem, eq.workers)
			if err != nil {
				return err
			}
			if ranges == nil {
				ranges = r
			} else {
				for j, v := range r {
					ranges[j] = max(ranges[j], v)
				}
			}
			samples = append(samples, sample)
		}
		var gamma []float32
		if pr.norm {
			t, _ := lookup(pr.producer)
			g, err := readAll(ctx, t, mem)
			if err != nil {
				return err
			}
			gamma = g
		}
		in := len(ranges)
		cost := func(s []float32) float64 {
			w := make([]float64, in) // output weight of a unit error in column j
			for j := range w {
				inv := 1 / float64(s[j])
				if gamma != nil {
					inv *= float64(gamma[j])
				}
				w[j] = inv * inv
			}
			var total float64
			for _, x := range samples {
				total += groupNoise(x, in, groupSize, s, w)
			}
			return total
		}
		base := cost(ones(in))
		bestBeta, best := 0.0, base
		var bestS []float32
		for _, beta := range equalizationBetas[1:] {
			s := equalizingScales(ranges, beta)
			if c := cost(s); c < best {
				bestBeta, best, bestS = beta, c, s
			}
		}
		if bestS == nil || best > 0.99*base {
			continue
		}
		for _, c := range pr.consumers {
			cs := get(c)
			cs.scale = bestS
			if gamma != nil {
				cs.importance = make([]float32, in)
				for j, g := range gamma {
					cs.importance[j] = g * g
				}
			}
			cs.notes = append(cs.notes, fmt.Sprintf("input channels equalized with producer %s (DFQ, β=%g): quantized as W·diag(s), channel_scales = 1/s, which a runtime may fold into the producer", pr.producer, bestBeta))
		}
		fold := "γ/s"
		if !pr.norm {
			fold = "its output rows ×1/s"
		}
		get(pr.producer).notes = append(get(pr.producer).notes, fmt.Sprintf("producer of equalized %s (DFQ, β=%g): stored unchanged; when its consumers' channel_scales are identical, a runtime may fold them into it (%s) and skip them", strings.Join(pr.consumers, ", "), bestBeta, fold))
		eq.mu.Lock()
		res.Pairs = append(res.Pairs, EqualizedPair{Producer: pr.producer, Consumers: pr.consumers, Channels: in,
			Beta: bestBeta, EstimatedGainDB: 10 * math.Log10(base/best)})
		eq.mu.Unlock()
	}
	return nil
}

// equalizingSource yields src's tensors in order, holding back a block's
// pair members (and whatever follows them) until the block is complete
// and planned, so every consumer's scaling is known when it is yielded.
// While a block's tensors are being yielded and quantized, the next
// block is read and planned in the background, so the pipeline does not
// wait for planning at each block.
type equalizingSource struct {
	src Source
	eq  *equalizer
	// Owned by advance (run by one goroutine at a time):
	groups  map[string]map[string]Tensor // incomplete blocks: prefix -> members so far
	pending []Tensor                     // read, not yet handed out
	eof     bool
	// Owned by Next:
	ready []Tensor            // planned, not yet yielded
	ahead chan plannedTensors // the next tensors, planned in the background; nil when none is under way
}

// plannedTensors is one advance's outcome.
type plannedTensors struct {
	tensors []Tensor
	err     error
}

func newEqualizingSource(src Source, eq *equalizer) *equalizingSource {
	return &equalizingSource{src: src, eq: eq, groups: map[string]map[string]Tensor{}}
}

func (s *equalizingSource) Next(ctx context.Context) (Tensor, error) {
	if len(s.ready) == 0 {
		var next plannedTensors
		if s.ahead != nil {
			select {
			case next = <-s.ahead:
				s.ahead = nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		} else {
			next.tensors, next.err = s.advance(ctx)
		}
		if next.err != nil {
			return nil, next.err
		}
		s.ready = next.tensors
		ahead := make(chan plannedTensors, 1)
		s.ahead = ahead
		go func() {
			var next plannedTensors
			defer func() { ahead <- next }()
			defer safe.Recover("plan channel equalization", &next.err)
			next.tensors, next.err = s.advance(ctx)
		}()
	}
	t := s.ready[0]
	s.ready = s.ready[1:]
	s.eq.yield(t.Meta().Name)
	return t, nil
}

// advance reads src up to the end of the next complete block (or of
// src), plans it, and returns the tensors read: those are ready to be
// yielded. io.EOF once src is exhausted and everything was returned.
func (s *equalizingSource) advance(ctx context.Context) ([]Tensor, error) {
	for {
		if s.eof {
			return nil, io.EOF
		}
		t, err := s.src.Next(ctx)
		if err == io.EOF {
			s.eof = true
			for _, prefix := range sortedKeys(s.groups) { // blocks lacking members: plan what is there
				if err := s.eq.plan(ctx, s.groups[prefix]); err != nil {
					return nil, err
				}
			}
			s.groups = nil
			if len(s.pending) > 0 {
				return s.takePending(), nil
			}
			return nil, io.EOF
		}
		if err != nil {
			return nil, err
		}
		name := t.Meta().Name
		s.pending = append(s.pending, t)
		if prefix, ok := pairMember(name); ok {
			g := s.groups[prefix]
			if g == nil {
				g = map[string]Tensor{}
				s.groups[prefix] = g
			}
			g[name] = t
			if len(g) == len(pairSuffixes) {
				if err := s.eq.plan(ctx, g); err != nil {
					return nil, err
				}
				delete(s.groups, prefix)
			}
		}
		if len(s.groups) == 0 {
			return s.takePending(), nil
		}
	}
}

func (s *equalizingSource) takePending() []Tensor {
	out := s.pending
	s.pending = nil
	return out
}

// Release waits for the background planning and releases every tensor
// read and not handed out (a run that stopped early).
func (s *equalizingSource) Release() {
	if s.ahead != nil {
		next := <-s.ahead
		s.ahead = nil
		s.ready = append(s.ready, next.tensors...)
	}
	for _, t := range append(s.ready, s.takePending()...) {
		releaseTensor(t)
	}
	s.ready = nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func ones(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

// equalizingScales is s_j = (c/r_j)^β, c the geometric mean of the
// non-zero r, clamped to [2^-8, 2^8]; 1 for all-zero columns.
func equalizingScales(r []float32, beta float64) []float32 {
	var logSum float64
	n := 0
	for _, v := range r {
		if v > 0 {
			logSum += math.Log(float64(v))
			n++
		}
	}
	s := ones(len(r))
	if n == 0 {
		return s
	}
	c := math.Exp(logSum / float64(n))
	for j, v := range r {
		if v > 0 {
			s[j] = float32(math.Min(256, math.Max(1.0/256, math.Pow(c/float64(v), beta))))
		}
	}
	return s
}

// groupNoise estimates the output noise of per-group uniform quantization
// of the rows x·diag(s) (row length in, groups along the row): Σ over
// groups of range² · Σ_j w_j.
func groupNoise(x []float32, in, groupSize int, s []float32, w []float64) float64 {
	var total float64
	for r := 0; r+in <= len(x); r += in {
		row := x[r : r+in]
		for g := 0; g < in; g += groupSize {
			end := min(in, g+groupSize)
			lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
			var ws float64
			for j := g; j < end; j++ {
				v := row[j] * s[j]
				lo, hi = min(lo, v), max(hi, v)
				ws += w[j]
			}
			d := float64(hi - lo)
			total += d * d * ws
		}
	}
	return total
}

// columnRanges reads a 2-D tensor once: max |W_ij| per column, and its
// first equalizeSampleRows rows.
func columnRanges(ctx context.Context, t Tensor, mem memory.Allocator, workers int) ([]float32, []float32, error) {
	meta := t.Meta()
	rows, in := meta.Shape[0], meta.Shape[1]
	sampleN := min(rows, equalizeSampleRows) * in
	sample := make([]float32, sampleN)
	n := meta.NumElements()
	chunks := schema.NumChunks(n)
	workers = max(1, min(workers, int(chunks)))
	// Each worker keeps its own maxima over chunks i, i+workers, ...; max is
	// exact and order-free, so the result does not depend on workers.
	part := make([][]float32, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer safe.Recover(fmt.Sprintf("column ranges of %q", meta.Name), &errs[w])
			r := make([]float32, in)
			var r16 []uint16 // 16-bit sources: magnitude patterns, decoded at the end
			var decode func(uint16) float32
			for c := int64(w); c < chunks; c += int64(workers) {
				off := c * schema.ChunkElems
				rec, err := t.ReadChunk(ctx, mem, off, min(schema.ChunkElems, n-off))
				if err != nil {
					errs[w] = &TensorError{Tensor: meta.Name, Err: err}
					return
				}
				if bits, dec := halfPatterns(rec); bits != nil {
					if r16 == nil {
						r16, decode = make([]uint16, in), dec
					}
					foldRows(r16, bits, int(off%in), kernels.MagnitudeMaxInto)
				} else {
					x, done := chunkFloat32(rec)
					absMaxRows(r, x, int(off%in))
					done()
				}
				if off < sampleN {
					x, done := chunkFloat32(rec)
					copy(sample[off:], x)
					done()
				}
				rec.Release()
			}
			for j, b := range r16 {
				r[j] = max(r[j], decode(b))
			}
			part[w] = r
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	r := part[0]
	for _, p := range part[1:] {
		for j, v := range p {
			r[j] = max(r[j], v)
		}
	}
	return r, sample, nil
}

// readAll reads a (small) tensor's values.
func readAll(ctx context.Context, t Tensor, mem memory.Allocator) ([]float32, error) {
	meta := t.Meta()
	rec, err := t.ReadChunk(ctx, mem, 0, meta.NumElements())
	if err != nil {
		return nil, &TensorError{Tensor: meta.Name, Err: err}
	}
	defer rec.Release()
	x, done := chunkFloat32(rec)
	defer done()
	return append([]float32(nil), x...), nil
}

// halfPatterns returns the bit patterns of a one-row input record of
// 16-bit floats (bf16, fp16) and their decoder; nil for other types.
func halfPatterns(rec arrow.RecordBatch) ([]uint16, func(uint16) float32) {
	v := valuesOf(rec)
	return v.bits, v.decodeOne
}

// foldRows folds x, the elements of a row-major matrix of len(r) columns
// starting at column j0, into r with fold (r[j] = max(r[j], |x[k]|) for
// each x[k] of column j: kernels.AbsMaxInto, or MagnitudeMaxInto on
// 16-bit patterns), row segment by row segment.
func foldRows[T any](r, x []T, j0 int, fold func(r, x []T)) {
	for len(x) > 0 {
		seg := x[:min(len(x), len(r)-j0)]
		fold(r[j0:j0+len(seg)], seg)
		x, j0 = x[len(seg):], 0
	}
}

// absMaxRows is foldRows with kernels.AbsMaxInto.
func absMaxRows(r, x []float32, j0 int) { foldRows(r, x, j0, kernels.AbsMaxInto) }
