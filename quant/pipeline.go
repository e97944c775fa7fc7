package quant

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/rs/zerolog"

	"github.com/arrowquant/arrowquant/calib"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/bufpool"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/internal/safe"
	"github.com/arrowquant/arrowquant/kernels"
	methodset "github.com/arrowquant/arrowquant/kernels/methods"
	"github.com/arrowquant/arrowquant/schema"
)

// DefaultMethod is the method name that selects the default: empty, so
// each attempt of the bit-width ladder uses DefaultMethodFor(bits) (the
// --method flag defaults to it). A non-empty name forces that method.
const DefaultMethod = ""

// Options configure one pipeline run.
type Options struct {
	Config         config.DiffusionQuantConfig // validated, effective configuration
	Modality       string                      // resolved modality (text, code, image, audio)
	ModalitySource string                      // how it was resolved ("config", "config.json model_type ...")
	Method         string                      // kernel set for every bit width; DefaultMethodFor(bits) when empty
	Mem            memory.Allocator            // nil = memory.DefaultAllocator
	Logger         zerolog.Logger
	// Progress, when set, is called after every chunk of a first attempt
	// and after every finished tensor (from several goroutines, serialized).
	Progress func(Progress)
	// Calibration is the path of calibration data, if the user gave one.
	Calibration string
	// CalibrationName names the calibration data in the result (the
	// client's file name for an upload); Calibration's path when empty.
	CalibrationName string
	// MaxTimestep, when > 0, is the model's last timestep: calibration rows
	// outside [0, MaxTimestep] are refused. TimestepFrom names its source.
	MaxTimestep  float64
	TimestepFrom string
}

func (o Options) calibrationName() string {
	if o.CalibrationName != "" {
		return o.CalibrationName
	}
	return o.Calibration
}

// ModalityEffect is what the modality changes, stated in every result:
// nothing in quantization. It is recorded in the artifact metadata and the
// result; measured on the repo's text and image models (docs/QUALITY.md,
// docs/DIFFUSION.md), the same policy serves every modality, so no choice
// depends on it and an undetected modality is not an error.
const ModalityEffect = "recorded only: text, code, image and audio models are quantized by the same policy"

// Progress is a snapshot of a run.
type Progress struct {
	TensorsDone int
	BytesDone   int64 // source bytes read by first attempts
	Last        string
}

// Stats of a run besides the Result.
type Stats struct {
	Index []schema.TensorEntry // where each tensor's batches are, for the artifact metadata
}

// Run quantizes every tensor of src into sink and returns the result
// (without the on-disk keys, which the caller fills after committing).
// Its steps: newPipeline resolves the methods and limits, prepare reads
// calibration data and wraps src for channel equalization, quantizeAll
// runs the tensors concurrently and writes them in source order, and
// finish completes the result's summary and statuses.
func Run(ctx context.Context, o Options, src Source, sink Sink) (_ *Result, _ *Stats, err error) {
	defer safe.Recover("quantization pipeline", &err)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p, err := newPipeline(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	res := p.newResult()
	if src, err = p.prepare(res, src); err != nil {
		return nil, nil, err
	}
	stats, err := p.quantizeAll(ctx, cancel, src, sink, res)
	if err != nil {
		return nil, nil, err
	}
	if err := p.checkCalibration(res); err != nil {
		return nil, nil, err
	}
	p.finish(res)
	return res, stats, nil
}

// newPipeline validates the configuration and resolves the method of
// every bit width: a named method serves every attempt of the bit-width
// ladder; an empty one picks DefaultMethodFor each attempt's bit width
// (target gguf: GGUFMethodFor, refined per tensor by methodAt).
func newPipeline(ctx context.Context, o Options) (*pipeline, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	gguf := o.Config.Target == config.TargetGGUF
	if gguf && o.Method != DefaultMethod {
		return nil, fmt.Errorf("%w: method %q: target gguf chooses the method of every tensor itself (dq, lsq INT4 g32, q8_0)", ErrMethodWithTarget, o.Method)
	}
	var methods [9]kernels.Method // by bit width
	for _, bits := range []int{2, 4, 8} {
		name := o.Method
		if name == "" {
			name = DefaultMethodFor(bits)
		}
		if gguf {
			name = GGUFMethodFor(bits)
		}
		m, err := methodset.Default().Lookup(name)
		if err != nil {
			return nil, err
		}
		methods[bits] = m
	}
	if o.Mem == nil {
		o.Mem = memory.DefaultAllocator
	}
	threads := o.Config.NumThreads
	if threads == 0 {
		threads = runtime.NumCPU()
	}
	return &pipeline{
		o: o, methods: methods, threads: threads, gguf: gguf, start: time.Now(),
		chunkSlots: make(chan struct{}, threads),
		ctx:        compute.WithAllocator(methodset.Default().Context(ctx), o.Mem),
	}, nil
}

// newResult is the result before any tensor: the request and what the
// configuration implies.
func (p *pipeline) newResult() *Result {
	o := p.o
	res := &Result{
		BitWidth: o.Config.BitWidth, GroupSize: o.Config.GroupSize, Method: p.methods[o.Config.BitWidth].Name,
		Modality: o.Modality, ModalitySource: o.ModalitySource, ModalityEffect: ModalityEffect, Config: o.Config,
		Layers: []Layer{}, Warnings: []string{}, Target: o.Config.Target,
	}
	res.TimeAware, res.Spatial, res.Streaming = p.featureStatus()
	if p.gguf {
		res.Warnings = append(res.Warnings, fmt.Sprintf("target gguf: every tensor is stored the way a GGUF type holds it exactly (docs/GGUF.md): dq super-blocks (Q2_K/Q4_K) where rows divide %d, else INT4 groups of 32 (Q4_1); the q8_0 method at INT8 (Q8_0); 16 bits where rows do not divide 32; channel equalization only into norms; group_size %d does not apply", schema.SuperBlockElems, o.Config.GroupSize))
	} else if m := p.methods[o.Config.BitWidth]; m.IsSuperBlock() {
		sub, _, _, _ := kernels.SuperBlockLayout(o.Config.BitWidth)
		res.Warnings = append(res.Warnings, fmt.Sprintf("method %s sets its own groups (sub-blocks of %d in super-blocks of %d at INT%d): group_size %d does not apply", m.Name, sub, schema.SuperBlockElems, o.Config.BitWidth, o.Config.GroupSize))
	}
	return res
}

// prepare reads the calibration statistics, sets up the time groups, and
// wraps src so channel equalization plans each block before its tensors
// are quantized.
func (p *pipeline) prepare(res *Result, src Source) (Source, error) {
	o := p.o
	if o.Calibration != "" {
		if o.Config.EnableTimeAware || o.Config.EnableSpatial {
			// Without time-aware quantization, statistics pool every timestep.
			groups := o.Config.NumTimeGroups
			if !o.Config.EnableTimeAware {
				groups = 1
			}
			cst, err := calib.Collect(o.Calibration, calib.Options{NumTimeGroups: groups, SamplesPerLayer: o.Config.CalibrationSamples,
				MaxTimestep: o.MaxTimestep, TimestepFrom: o.TimestepFrom})
			if err != nil {
				return nil, err
			}
			cst.File = o.calibrationName()
			p.calib = cst
			if w := cst.ShortWarning(o.Config.CalibrationSamples); w != "" {
				res.Warnings = append(res.Warnings, w)
			}
			if l, ok := src.(TensorLister); ok {
				if err := p.matchCalibration(res, l.Tensors()); err != nil {
					return nil, err
				}
			}
		} else {
			res.Warnings = append(res.Warnings, fmt.Sprintf("calibration data %s was not used: enable_time_aware and enable_spatial are false", o.calibrationName()))
		}
	}
	if o.Config.EnableSpatial {
		p.eq = newEqualizer(o.Mem, groupSizeOf(p.methods[o.Config.BitWidth], o.Config.BitWidth, o.Config.GroupSize))
		p.eq.normOnly = p.gguf // only pairs whose scales fold exactly into a norm
		p.eq.workers = p.threads
		res.Equalization = p.eq.res
		src = newEqualizingSource(src, p.eq)
	}
	if o.Config.EnableTimeAware {
		res.TimeGroups = newTimeGroups(o.Config.NumTimeGroups, p.calib)
	}
	return src, nil
}

// quantizeAll runs the tensors of src concurrently and writes them to
// sink in source order. Two limits bound the work in flight: inFlight
// slots (threads tensors, or 1 when streaming), each held from a tensor's
// first read until its batches are written, so finished tensors waiting
// for an earlier one cannot pile up; and p.chunkSlots (threads chunks), so
// the chunks of all tensors in flight share the cores. A reader goroutine
// starts one goroutine per tensor; this goroutine writes.
func (p *pipeline) quantizeAll(ctx context.Context, cancel context.CancelFunc, src Source, sink Sink, res *Result) (*Stats, error) {
	inFlight := p.threads
	if p.o.Config.EnableStreaming {
		inFlight = 1
	}
	jobs := make(chan *tensorJob, inFlight)
	slots := make(chan struct{}, inFlight)
	readErr := make(chan error, 1)
	go func() {
		var err error
		defer func() {
			if err != nil {
				cancel()
			}
			readErr <- err
			close(jobs)
		}()
		defer safe.Recover("read the next tensor", &err)
		err = p.startTensors(ctx, cancel, src, jobs, slots)
	}()
	stats, err := p.writeInOrder(cancel, jobs, slots, sink, res)
	// The reader's error is the cause when the jobs only saw the
	// cancellation it triggered.
	if rerr := <-readErr; err == nil || (rerr != nil && errors.Is(err, context.Canceled) && !errors.Is(rerr, context.Canceled)) {
		err = rerr
	}
	if err != nil {
		cancel() // background work of the source (planning ahead) stops
	}
	if r, ok := src.(Releaser); ok { // what it read and never handed out
		r.Release()
	}
	if err == nil {
		err = ctx.Err()
	}
	return stats, err
}

// startTensors takes a slot per tensor, then quantizes it in its own
// goroutine; the job goes to the writer in source order.
func (p *pipeline) startTensors(ctx context.Context, cancel context.CancelFunc, src Source, jobs chan<- *tensorJob, slots chan struct{}) error {
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		t, err := src.Next(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if p.calib != nil { // another model's calibration: stop at its first weight, not after the upload
			if err := p.calib.CheckWeight(t.Meta().Name, t.Meta().Shape); err != nil {
				releaseTensor(t)
				return err
			}
		}
		job := &tensorJob{t: t, done: make(chan struct{})}
		select {
		case jobs <- job:
		case <-ctx.Done():
			return nil
		}
		go func() {
			defer close(job.done)
			defer func() {
				if job.err != nil {
					cancel()
				}
			}()
			defer safe.Recover(fmt.Sprintf("quantize tensor %q", t.Meta().Name), &job.err)
			job.out, job.err = p.processTensor(p.ctx, t)
		}()
	}
}

// writeInOrder waits for each job in turn, writes its batches, records
// its layer and index entry, and frees its slot. After the first error it
// only drains the jobs.
func (p *pipeline) writeInOrder(cancel context.CancelFunc, jobs <-chan *tensorJob, slots <-chan struct{}, sink Sink, res *Result) (*Stats, error) {
	stats := &Stats{}
	var firstErr error
	batch := 0
	for job := range jobs {
		<-job.done
		if firstErr == nil && job.err != nil {
			firstErr = job.err
		}
		if job.out != nil && firstErr == nil {
			entry := job.out.entry
			entry.FirstBatch = batch
			for _, rec := range job.out.records {
				if err := sink.Write(rec); err != nil {
					firstErr = fmt.Errorf("write tensor %q: %w", entry.Name, err)
					cancel()
					break
				}
				batch++
			}
			stats.Index = append(stats.Index, entry)
			res.Layers = append(res.Layers, job.out.layer)
			res.SourceBytes += job.out.sourceBytes
			res.ArtifactBytes += job.out.layer.Bytes
			p.progress(0, job.out.layer.Name, true)
		}
		if job.out != nil {
			job.out.release()
		}
		releaseTensor(job.t)
		<-slots
	}
	return stats, firstErr
}

// finish completes the result: totals, what time-aware and spatial
// quantization did, timing and bits per weight.
func (p *pipeline) finish(res *Result) {
	res.summarize()
	if res.TimeGroups != nil {
		matched := map[string]bool{}
		weighted := 0
		for _, l := range res.Layers {
			if l.Weighting != "" {
				weighted++
			}
			if IsTimestepLayer(l.Name) && l.Protection != "" {
				res.TimeGroups.ProtectedLayers = append(res.TimeGroups.ProtectedLayers, l.Name)
			}
			if base, ok := strings.CutSuffix(l.Name, ".weight"); ok {
				if _, ok := res.TimeGroups.ActivationParams[base]; ok {
					matched[base] = true
				}
			}
		}
		res.TimeAware = timeAwareStatus(true, res.TimeGroups, matched, weighted)
	}
	res.Spatial = spatialStatus(p.o.Config.EnableSpatial, p.calib != nil, res.Layers, res.Equalization)
	res.QuantizationTimeS = time.Since(p.start).Seconds()
	if res.NumParams > 0 {
		res.BitsPerWeight = float64(res.ArtifactBytes) * 8 / float64(res.NumParams)
	}
}

// Releaser is implemented by tensors holding resources (a spool file)
// that can go once the tensor is written or abandoned.
type Releaser interface{ Release() }

func releaseTensor(t Tensor) {
	if r, ok := t.(Releaser); ok {
		r.Release()
	}
}

// calibrated returns the calibration statistics of a 2-D weight whose
// layer ("<layer>.weight") was captured with matching input channels, or
// nil: the one rule for which tensors calibration data applies to.
func (p *pipeline) calibrated(meta TensorMeta) *calib.LayerStats {
	if p.calib == nil || len(meta.Shape) != 2 {
		return nil
	}
	base, ok := strings.CutSuffix(meta.Name, ".weight")
	if !ok {
		return nil
	}
	ls, ok := p.calib.Layers[base]
	if !ok || int64(ls.Channels) != meta.Shape[1] {
		return nil
	}
	return ls
}

// importance returns the calibration importance of a calibrated weight.
func (p *pipeline) importance(meta TensorMeta) []float32 {
	if ls := p.calibrated(meta); ls != nil {
		return ls.Importance()
	}
	return nil
}

type pipeline struct {
	start time.Time
	calib *calib.Stats // nil without calibration data
	// calibMatched: the calibration layers were checked against the model.
	calibMatched bool
	eq           *equalizer // nil unless channel equalization ran
	o            Options
	methods      [9]kernels.Method // by bit width
	gguf         bool              // target gguf: methods chosen per tensor (methodAt)
	threads      int
	chunkSlots   chan struct{}
	ctx          context.Context

	progMu      sync.Mutex
	tensorsDone int
	bytesDone   atomic.Int64
}

func (p *pipeline) progress(bytes int64, name string, tensorDone bool) {
	done := p.bytesDone.Add(bytes)
	if p.o.Progress == nil {
		return
	}
	p.progMu.Lock()
	defer p.progMu.Unlock()
	if tensorDone {
		p.tensorsDone++
	}
	p.o.Progress(Progress{TensorsDone: p.tensorsDone, BytesDone: done, Last: name})
}

func (p *pipeline) featureStatus() (timeAware, spatial, streaming FeatureStatus) {
	c := p.o.Config
	timeAware = FeatureStatus{Requested: c.EnableTimeAware} // completed by timeAwareStatus at the end
	spatial = FeatureStatus{Requested: c.EnableSpatial}     // completed by spatialStatus at the end
	streaming = FeatureStatus{Requested: c.EnableStreaming, Applied: c.EnableStreaming}
	if c.EnableStreaming {
		streaming.Reason = "one tensor in flight at a time, read in chunks of " + fmt.Sprint(schema.ChunkElems) + " elements"
	} else {
		streaming.Reason = fmt.Sprintf("up to %d tensors in flight", p.threads)
	}
	return
}

type tensorJob struct {
	t    Tensor
	done chan struct{}
	out  *tensorOutput
	err  error
}

// tensorOutput is a finished tensor: its batches, layer entry and index entry.
type tensorOutput struct {
	records     []arrow.RecordBatch
	layer       Layer
	entry       schema.TensorEntry
	sourceBytes int64
	layerBytes  int64
}

func (t *tensorOutput) release() {
	for _, r := range t.records {
		r.Release()
	}
	t.records = nil
}

// chunk is one row's payload before the tensor-level columns are known.
type chunk struct {
	off, n              int64
	codes, scales, mins arrow.Array
	groupParams         arrow.Array        // super-block params (methods with a super-block format), else nil
	output              kernels.Similarity // importance-weighted sums (calibrated layers)
}

func (c *chunk) release() {
	for _, a := range []arrow.Array{c.codes, c.scales, c.mins, c.groupParams} {
		if a != nil {
			a.Release()
		}
	}
}

func releaseChunks(cs []chunk) {
	for i := range cs {
		cs[i].release()
	}
}

func dtypeSize(dtype string) int64 {
	switch dtype {
	case schema.DTypeF32:
		return 4
	case schema.DTypeF64:
		return 8
	}
	return 2
}

// processTensor plans and runs one tensor: policy, ladder, fallback.
func (p *pipeline) processTensor(ctx context.Context, t Tensor) (*tensorOutput, error) {
	meta := t.Meta()
	if _, err := schema.ValueType(meta.DType); err != nil {
		return nil, &TensorError{Tensor: meta.Name, Err: err}
	}
	cfg := p.o.Config
	n := meta.NumElements()
	layer := Layer{
		Name: meta.Name, Shape: meta.Shape, DType: meta.DType, Params: n,
		RequestedBitWidth: cfg.BitWidth,
	}
	eq := p.eq.scaling(meta.Name)
	if eq != nil {
		layer.Equalization = strings.Join(eq.notes, "; ")
	}
	log := p.o.Logger.With().Str("tensor", meta.Name).Logger()
	firstPass := true
	if len(meta.Shape) < 2 {
		layer.Policy = fmt.Sprintf("%d-D tensor (norm, bias or scalar) kept at 16 bits by policy", len(meta.Shape))
		return p.keepRaw(ctx, t, layer, firstPass)
	}
	start := cfg.BitWidth
	if cfg.EnableTimeAware && IsTimestepLayer(meta.Name) && start < 8 {
		start = 8
		layer.RequestedBitWidth = 8
		layer.Protection = fmt.Sprintf("timestep-conditioned layer kept at >= 8 bits by time-aware quantization (INT%d requested)", cfg.BitWidth)
	}
	if p.gguf {
		ne0 := meta.Shape[len(meta.Shape)-1]
		if ne0%32 != 0 {
			layer.Policy = fmt.Sprintf("target gguf: rows of %d do not divide ggml's 32-element blocks, kept at 16 bits (F16/BF16 in GGUF, llama.cpp's own fallback)", ne0)
			return p.keepRaw(ctx, t, layer, firstPass)
		}
		if start == 2 && ne0%schema.SuperBlockElems != 0 {
			start = 4
			layer.Protection = fmt.Sprintf("target gguf: rows of %d do not divide Q2_K's %d-element super-blocks, so INT4 groups of 32 (Q4_1) instead of INT2", ne0, schema.SuperBlockElems)
		}
	}
	importance := p.importance(meta)
	var reasons []string
	for bits := start; bits <= 8; bits *= 2 {
		ch := p.methodAt(meta, bits)
		sm, w, rep, err := p.attemptScaling(ctx, t, bits, ch.m, importance, eq)
		if err != nil {
			return nil, err
		}
		layer.Smoothing = rep
		weighsOutput := importance != nil && ch.m.Weighted()
		chunks, sim, err := p.quantize(ctx, t, bits, firstPass, w, sm, weighsOutput)
		firstPass = false
		var pr *kernels.ParamRangeError
		if errors.As(err, &pr) {
			releaseChunks(chunks)
			reasons = append(reasons, fmt.Sprintf("values exceed the fp16 range of group parameters (%v)", pr))
			break
		}
		if err != nil {
			return nil, err
		}
		cos := sim.Cosine()
		log.Debug().Int("bits", bits).Float64("cosine", cos).Msg("quantized")
		if cos >= cfg.MinAccuracy {
			if weighsOutput {
				how := "equal weight per time group"
				if !cfg.EnableTimeAware {
					how = "all timesteps pooled: time-aware is off; spatial smoothing's output-error objective"
				}
				layer.Weighting = fmt.Sprintf("%s search weighted by per-input-channel importance from calibration (%s)", ch.m.Name, how)
				var out kernels.Similarity
				for i := range chunks {
					out.Add(chunks[i].output)
				}
				oc := out.Cosine()
				layer.OutputCosineSimilarity = &oc
			}
			layer.BitWidth, layer.GroupSize, layer.Method = bits, groupSizeOf(ch.m, bits, ch.group), ch.m.Name
			layer.smoothing = sm
			layer.CosineSimilarity, layer.RelMSE = cos, sim.RelMSE()
			if len(reasons) > 0 {
				r := strings.Join(reasons, "; ")
				layer.FallbackReason = &r
			}
			return p.assemble(meta, layer, chunks), nil
		}
		releaseChunks(chunks)
		if cfg.FailFast {
			return nil, &AccuracyError{Tensor: meta.Name, BitWidth: bits, Cosine: cos, Threshold: cfg.MinAccuracy}
		}
		reasons = append(reasons, fmt.Sprintf("INT%d cosine %.4f < min_accuracy %g", bits, cos, cfg.MinAccuracy))
	}
	r := strings.Join(reasons, "; ") + "; kept unquantized at 16 bits"
	layer.FallbackReason = &r
	layer.Smoothing = nil
	return p.keepRaw(ctx, t, layer, firstPass)
}

// attemptScaling decides how an attempt at bits rescales the tensor and
// weighs its parameter search. Three cases, one per spatial mechanism:
//   - AWQ (calibration data, a method that weighs): α searched on top of
//     channel equalization's scales; the search weighs the output error;
//   - channel equalization alone (a pair consumer): W·diag(s), the search
//     weighing the error of W itself as the output sees it (importance, or
//     a norm's γ², or 1), unweighted when the method cannot weigh;
//   - neither: W itself, weighted by calibration importance if any.
//
// sm is nil when the tensor is not rescaled, w nil for an unweighted
// search, rep the AWQ search's report (nil when none ran).
func (p *pipeline) attemptScaling(ctx context.Context, t Tensor, bits int, m kernels.Method, importance []float32, eq *channelScaling) (sm *smoothing, w []float32, rep *SmoothingReport, err error) {
	var equalizing []float32 // channel equalization's s (pair consumers)
	if eq != nil {
		equalizing = eq.scale
	}
	if mag := p.smoothable(t.Meta()); mag != nil && importance != nil && m.Weighted() {
		if sm, rep, err = p.searchAlpha(ctx, t, bits, importance, mag, equalizing); err != nil || sm == nil {
			return sm, importance, rep, err
		}
		return sm, sm.errorWeights(importance), rep, nil
	}
	if equalizing == nil {
		return nil, importance, nil, nil
	}
	sm = newSmoothing(nil, 0, equalizing)
	if !m.Weighted() {
		return sm, nil, nil, nil
	}
	imp := importance
	if imp == nil {
		imp = eq.importance // γ²: a norm's output power per channel
	}
	if imp == nil {
		imp = ones(len(equalizing))
	}
	return sm, sm.errorWeights(imp), nil, nil
}

// forEachChunk runs fn on every chunk of t in parallel (bounded by the
// pipeline's chunk slots) and returns the per-chunk results in order.
func (p *pipeline) forEachChunk(ctx context.Context, t Tensor, countBytes bool, fn func(rec arrow.RecordBatch, c *chunk) (kernels.Similarity, error)) ([]chunk, kernels.Similarity, error) {
	meta := t.Meta()
	n := meta.NumElements()
	nc := schema.NumChunks(n)
	chunks := make([]chunk, nc)
	sims := make([]kernels.Similarity, nc)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	size := dtypeSize(meta.DType)
	arriving, _ := t.(Arriving)
	for i := int64(0); i < nc; i++ {
		if arriving != nil {
			off := i * schema.ChunkElems
			if err := arriving.WaitFor(ctx, off, min(schema.ChunkElems, n-off)); err != nil {
				fail(&TensorError{Tensor: meta.Name, Err: err})
				break
			}
		}
		select {
		case p.chunkSlots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int64) {
			var err error
			defer wg.Done()
			defer func() { <-p.chunkSlots }()
			defer func() {
				if err != nil {
					fail(err)
				}
			}()
			defer safe.Recover(fmt.Sprintf("quantize tensor %q chunk %d", meta.Name, i), &err)
			c := &chunks[i]
			c.off = i * schema.ChunkElems
			c.n = min(schema.ChunkElems, n-c.off)
			rec, rerr := t.ReadChunk(ctx, p.o.Mem, c.off, c.n)
			if rerr != nil {
				err = &TensorError{Tensor: meta.Name, Err: rerr}
				return
			}
			defer rec.Release()
			var sim kernels.Similarity
			if sim, err = fn(rec, c); err != nil {
				return
			}
			sims[i] = sim
			if countBytes {
				p.progress(c.n*size, meta.Name, false)
			}
		}(i)
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		releaseChunks(chunks)
		return nil, kernels.Similarity{}, firstErr
	}
	var total kernels.Similarity
	for _, s := range sims { // in chunk order: the sum is deterministic
		total.Add(s)
	}
	return chunks, total, nil
}

// quantize runs the method's fused kernel on every chunk at bits; with
// per-input-channel importance (calibration) and a method that supports
// it, the weighted kernel. With sm (AWQ smoothing, channel equalization)
// the kernel quantizes W·diag(s), importance then being the weights of
// that domain, and the similarity returned is that of W against the
// reconstruction times 1/s.
//
// needOutput says whether the caller reads the chunks' output
// similarity; with sm and without it, the kernel measures no similarity
// (kernels.QuantOptions.NoSimilarity): both would go unread.
func (p *pipeline) quantize(ctx context.Context, t Tensor, bits int, countBytes bool, importance []float32, sm *smoothing, needOutput bool) ([]chunk, kernels.Similarity, error) {
	meta := t.Meta()
	ch := p.methodAt(meta, bits)
	opts := &kernels.QuantOptions{Bits: bits, GroupSize: ch.group, NoSimilarity: sm != nil && !needOutput}
	m := ch.m
	weighted := importance != nil && m.Weighted()
	return p.forEachChunk(ctx, t, countBytes, func(rec arrow.RecordBatch, c *chunk) (kernels.Similarity, error) {
		args := []compute.Datum{compute.NewDatum(rec.Column(4))}
		var x chunkValues
		o := opts
		if sm != nil { // the kernel quantizes W·diag(s), scaling block by block
			x = valuesOf(rec)
			scaled := *opts
			scaled.ChannelScales, scaled.ChannelOffset = sm.scale, c.off
			o = &scaled
		}
		fn := m.QuantizeFunc()
		if weighted {
			w := channelWeights(p.o.Mem, importance, c.off, c.n)
			args = append(args, compute.NewDatum(w))
			w.Release()
			fn = m.WeightedQuantizeFunc()
		}
		defer func() {
			for _, a := range args {
				a.Release()
			}
		}()
		out, err := compute.CallFunction(p.ctx, fn, o, args...)
		if err != nil {
			return kernels.Similarity{}, tensorErr(meta, c.off, err)
		}
		defer out.Release()
		res := out.(*compute.ArrayDatum).MakeArray().(*array.Struct)
		defer res.Release()
		c.codes, c.scales, c.mins = res.Field(0), res.Field(1), res.Field(2)
		for _, a := range []arrow.Array{c.codes, c.scales, c.mins} {
			a.Retain()
		}
		if m.IsSuperBlock() {
			c.groupParams = res.Field(5)
			c.groupParams.Retain()
		}
		if weighted && !opts.NoSimilarity {
			c.output = readSimilarity(res.Field(4).(*array.Struct))
		}
		if sm != nil {
			return unsmoothedSimilarity(&x, c, bits, opts.GroupSize, sm)
		}
		return readSimilarity(res.Field(3).(*array.Struct)), nil
	})
}

// readSimilarity reads row 0 of a kernels.CosineType array.
func readSimilarity(s *array.Struct) kernels.Similarity {
	f := func(i int) float64 { return s.Field(i).(*array.Float64).Value(0) }
	return kernels.Similarity{Dot: f(2), AA: f(3), BB: f(4), Err2: f(5), N: s.Field(6).(*array.Int64).Value(0)}
}

// channelWeights is the one-row list of error weights of elements
// [off, off+n) of a row-major [out, in] matrix (element k's weight
// importance[k mod in]) in the form the weighted kernels repeat: one
// matrix row's worth (min(n, in) values), rotated to the chunk's first
// column, instead of n values.
func channelWeights(mem memory.Allocator, importance []float32, off, n int64) arrow.Array {
	in := int64(len(importance))
	return float32List(mem, int(min(n, in)), func(dst []float32) {
		j := int(off % in)
		for len(dst) > 0 {
			k := copy(dst, importance[j:])
			dst, j = dst[k:], 0
		}
	})
}

// float32List is a one-row list<float32> of n values written by fill
// straight into the array's buffer (which fill must write in full: from
// the pooled allocator it is not zeroed first).
func float32List(mem memory.Allocator, n int, fill func([]float32)) arrow.Array {
	values := memory.NewResizableBuffer(bufpool.UninitOf(mem))
	values.Resize(n * 4)
	clear(values.Buf()[n*4:]) // the padding
	fill(arrow.Float32Traits.CastFromBytes(values.Bytes()))
	offsets := memory.NewResizableBuffer(mem)
	offsets.Resize(8)
	o := arrow.Int32Traits.CastFromBytes(offsets.Bytes())
	o[0], o[1] = 0, int32(n)
	child := array.NewData(arrow.PrimitiveTypes.Float32, n, []*memory.Buffer{nil, values}, nil, 0, 0)
	data := array.NewData(arrow.ListOf(arrow.PrimitiveTypes.Float32), 1, []*memory.Buffer{nil, offsets}, []arrow.ArrayData{child}, 0, 0)
	values.Release()
	offsets.Release()
	child.Release()
	defer data.Release()
	return array.MakeFromData(data)
}

// tensorErr turns a kernel error into one naming the tensor and, for
// NaN/Inf, the element's index and coordinates.
func tensorErr(meta TensorMeta, off int64, err error) error {
	var nf *kernels.NonFiniteError
	if errors.As(err, &nf) {
		idx := off + nf.Index
		return &TensorError{Tensor: meta.Name, Err: fmt.Errorf("%w %v at element %d (index %v of shape %v)", ErrNonFinite, nf.Value, idx, coords(idx, meta.Shape), meta.Shape)}
	}
	var pr *kernels.ParamRangeError
	if errors.As(err, &pr) {
		return err
	}
	return &TensorError{Tensor: meta.Name, Err: err}
}

func coords(idx int64, shape []int64) []int64 {
	c := make([]int64, len(shape))
	for i := len(shape) - 1; i >= 0; i-- {
		if shape[i] > 0 {
			c[i] = idx % shape[i]
			idx /= shape[i]
		}
	}
	return c
}

// keepRaw stores the tensor unquantized at 16 bits: F16 and BF16 sources
// bit-exact, F32/F64 as fp16 (bf16 if a value exceeds fp16's range).
func (p *pipeline) keepRaw(ctx context.Context, t Tensor, layer Layer, countBytes bool) (*tensorOutput, error) {
	meta := t.Meta()
	method := schema.MethodRawF16
	if meta.DType == schema.DTypeBF16 {
		method = schema.MethodRawBF16
	}
	raw := func(method string, countBytes bool) ([]chunk, kernels.Similarity, error) {
		return p.forEachChunk(ctx, t, countBytes, func(rec arrow.RecordBatch, c *chunk) (kernels.Similarity, error) {
			return rawChunk(p.o.Mem, meta, rec, c, method)
		})
	}
	chunks, sim, err := raw(method, countBytes)
	if errors.Is(err, errHalfOverflow) { // an F32/F64 value beyond fp16's range: keep it as bf16
		method = schema.MethodRawBF16
		chunks, sim, err = raw(method, false)
	}
	if err != nil {
		return nil, err
	}
	layer.BitWidth, layer.GroupSize, layer.Method = 16, 0, method
	layer.CosineSimilarity, layer.RelMSE = sim.Cosine(), sim.RelMSE()
	return p.assemble(meta, layer, chunks), nil
}

// halfBits returns a float16 array's values as their bit patterns.
func halfBits(a *array.Float16) []uint16 {
	return arrow.Uint16Traits.CastFromBytes(a.Data().Buffers()[1].Bytes())[a.Data().Offset() : a.Data().Offset()+a.Len()]
}

// errHalfOverflow: a value does not fit fp16 (|x| > 65504).
var errHalfOverflow = errors.New("value beyond the fp16 range")

// chunkFloat32 returns the values of a one-row input record as float32
// (the record's own buffer when it is float32: do not modify; float16 and
// bfloat16 are decoded into a pooled buffer) and a func that
// gives the buffer back once x is no longer used.
func chunkFloat32(rec arrow.RecordBatch) (x []float32, done func()) {
	v := valuesOf(rec)
	if v.decode == nil {
		return v.f32, func() {}
	}
	out, done := bufpool.Float32s(len(v.bits))
	v.decode(out, v.bits)
	return out, done
}

// chunkValues are a one-row input record's values as stored: float32, or
// 16-bit patterns (fp16, bf16) with their decoders, decoded on demand.
type chunkValues struct {
	f32       []float32
	bits      []uint16
	decode    func(dst []float32, src []uint16) // fp.DecodeHalves or fp.DecodeBF16s
	decodeOne func(uint16) float32
	buf       []float32 // piece's decoded values
}

func valuesOf(rec arrow.RecordBatch) chunkValues {
	switch v := rec.Column(4).(*array.List).ListValues().(type) {
	case *array.Float32:
		return chunkValues{f32: v.Float32Values()}
	case *array.Float16:
		return chunkValues{bits: halfBits(v), decode: fp.DecodeHalves, decodeOne: fp.HalfToFloat32}
	case *array.Uint16:
		return chunkValues{bits: v.Uint16Values(), decode: fp.DecodeBF16s, decodeOne: fp.BF16ToFloat32}
	}
	return chunkValues{}
}

func (v *chunkValues) len() int {
	if v.decode != nil {
		return len(v.bits)
	}
	return len(v.f32)
}

// piece returns values [off, off+n): a view of float32 values, or the
// 16-bit ones decoded into v's buffer, valid until the next call.
func (v *chunkValues) piece(off, n int) []float32 {
	if v.decode == nil {
		return v.f32[off : off+n]
	}
	if cap(v.buf) < n {
		v.buf = make([]float32, n)
	}
	v.decode(v.buf[:n], v.bits[off:off+n])
	return v.buf[:n]
}

func rawChunk(mem memory.Allocator, meta TensorMeta, rec arrow.RecordBatch, c *chunk, method string) (kernels.Similarity, error) {
	orig, done := chunkFloat32(rec)
	defer done()
	for i, v := range orig {
		if v-v != 0 {
			return kernels.Similarity{}, tensorErr(meta, c.off, &kernels.NonFiniteError{Index: int64(i), Value: v})
		}
		if method == schema.MethodRawF16 && (v > 65504 || v < -65504) {
			return kernels.Similarity{}, errHalfOverflow
		}
	}
	raw := make([]byte, 2*c.n)
	if method == schema.MethodRawF16 {
		fp.EncodeHalf(raw, orig)
	} else {
		fp.EncodeBF16(raw, orig)
	}
	back, doneBack := bufpool.Float32s(int(c.n))
	defer doneBack()
	if method == schema.MethodRawF16 {
		fp.DecodeHalf(back, raw)
	} else {
		fp.DecodeBF16(back, raw)
	}
	bb := array.NewBinaryBuilder(mem, arrow.BinaryTypes.Binary)
	bb.Append(raw)
	c.codes = bb.NewArray()
	bb.Release()
	c.scales, c.mins = emptyF16List(mem), emptyF16List(mem)
	return kernels.SimilarityOf(orig, back), nil
}

func emptyF16List(mem memory.Allocator) arrow.Array {
	b := array.NewListBuilder(mem, arrow.FixedWidthTypes.Float16)
	defer b.Release()
	b.Append(true)
	return b.NewArray()
}

// assemble turns chunks into output batches now that the tensor-level
// columns (cosine, final bits, fallback) are known.
func (p *pipeline) assemble(meta TensorMeta, layer Layer, chunks []chunk) *tensorOutput {
	mem := p.o.Mem
	out := &tensorOutput{layer: layer, sourceBytes: meta.NumElements() * dtypeSize(meta.DType)}
	out.entry = schema.TensorEntry{
		Name: meta.Name, Shape: meta.Shape, DType: meta.DType, Method: layer.Method,
		BitWidth: layer.BitWidth, GroupSize: layer.GroupSize, NumBatches: len(chunks),
	}
	sch := schema.Quantized(nil)
	name, shape, dtype := stringArray(mem, meta.Name), shapeArray(mem, meta.Shape), stringArray(mem, meta.DType)
	method := stringArray(mem, layer.Method)
	defer releaseAll(name, shape, dtype, method)
	for i := range chunks {
		c := &chunks[i]
		out.out(c)
		cols := []arrow.Array{
			name, shape, dtype, int64Array(mem, c.off), int64Array(mem, c.n), method,
			int8Array(mem, int8(layer.BitWidth)), int32Array(mem, int32(layer.GroupSize)),
			c.codes, c.scales, c.mins,
			float64Array(mem, layer.CosineSimilarity), int8Array(mem, int8(layer.RequestedBitWidth)),
			nullableString(mem, layer.FallbackReason), groupParamsArray(mem, c.groupParams),
			channelScalesArray(mem, layer.smoothing, c.off == 0),
		}
		out.records = append(out.records, array.NewRecordBatch(sch, cols, 1))
		if c.off == 0 && layer.smoothing != nil {
			out.layerBytes += 4 * int64(len(layer.smoothing.inv))
		}
		releaseAll(cols[3], cols[4], cols[6], cols[7], cols[11], cols[12], cols[13], cols[14], cols[15])
		c.release()
	}
	out.layer.Bytes = out.layerBytes
	return out
}

// out accounts a chunk's stored bytes (codes and fp16 group params).
func (t *tensorOutput) out(c *chunk) {
	t.layerBytes += int64(c.codes.(*array.Binary).ValueLen(0))
	t.layerBytes += 2 * int64(c.scales.(*array.List).ListValues().Len()+c.mins.(*array.List).ListValues().Len())
	if c.groupParams != nil {
		t.layerBytes += int64(c.groupParams.(*array.Binary).ValueLen(0))
	}
}

// groupParamsArray is a row's group_params cell: the chunk's super-block
// params, or null.
func groupParamsArray(mem memory.Allocator, gp arrow.Array) arrow.Array {
	if gp != nil {
		gp.Retain()
		return gp
	}
	b := array.NewBinaryBuilder(mem, arrow.BinaryTypes.Binary)
	defer b.Release()
	b.AppendNull()
	return b.NewArray()
}

// choice is the method and group size of one attempt at one tensor.
type choice struct {
	m     kernels.Method
	group int // QuantOptions.GroupSize (super-block methods: unused)
}

// methodAt is the method and group size a tensor is quantized with at
// bits: the run's method and configured group size, or with target gguf
// the one whose rows a GGUF type holds exactly: the q8_0 method (groups of
// 32, Q8_0) at INT8; dq super-blocks (Q2_K/Q4_K) where rows divide 256;
// else INT4 groups of 32 (Q4_1) with the INT4 default method.
func (p *pipeline) methodAt(meta TensorMeta, bits int) choice {
	if !p.gguf || len(meta.Shape) == 0 {
		return choice{p.methods[bits], p.o.Config.GroupSize}
	}
	ne0 := meta.Shape[len(meta.Shape)-1]
	switch {
	case bits == 8, ne0%schema.SuperBlockElems == 0:
		return choice{p.methods[bits], 32}
	}
	m, _ := methodset.Default().Lookup(DefaultMethodFor(4))
	return choice{m, 32}
}

// groupSizeOf is the group size a method's rows report at bits: its
// sub-block size for super-block methods, else the configured one.
func groupSizeOf(m kernels.Method, bits, configured int) int {
	if m.IsSuperBlock() {
		if sub, _, _, err := kernels.SuperBlockLayout(bits); err == nil {
			return sub
		}
	}
	return configured
}

func releaseAll(as ...arrow.Array) {
	for _, a := range as {
		a.Release()
	}
}

func int8Array(mem memory.Allocator, v int8) arrow.Array {
	return single[int8](array.NewInt8Builder(mem), v)
}

func int32Array(mem memory.Allocator, v int32) arrow.Array {
	return single[int32](array.NewInt32Builder(mem), v)
}

func float64Array(mem memory.Allocator, v float64) arrow.Array {
	return single[float64](array.NewFloat64Builder(mem), v)
}

func nullableString(mem memory.Allocator, v *string) arrow.Array {
	b := array.NewStringBuilder(mem)
	defer b.Release()
	if v == nil {
		b.AppendNull()
	} else {
		b.Append(*v)
	}
	return b.NewArray()
}
