// Command quality measures every registered quantization method on
// synthetic weights and writes a markdown report:
//
//	go run ./bench/quality -out docs/QUALITY.md
//
// For each distribution (N(0,1), Laplace, Student-t(5) and an LLM-like
// matrix with outlier input channels), method, bit width (2, 4, 8) and
// group size (32, 64, 128, 256) it runs the method's fused kernel
// (<name>_quantize, the pipeline's path) on one core over chunks of
// 1,048,576 elements and reports the cosine similarity and relative MSE
// of the stored reconstruction, the bits per weight of everything stored
// (codes plus an fp16 scale and min per group) and the quantize
// throughput in GB/s of fp32 input. Gaussian rows show beside them the
// quality limits of the project's reference facts (optimal uniform
// quantizer; per-group min/max, least-squares refit and clipping grid
// search with float params).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/bench/internal/mdsection"
	"github.com/arrowquant/arrowquant/bench/internal/synth"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/fixture"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/methods"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/quant/quanttest"
	"github.com/arrowquant/arrowquant/schema"
)

func main() {
	out := flag.String("out", "", "also write the report to this file")
	n := flag.Int("n", synth.DefaultN, "samples of each i.i.d. distribution")
	side := flag.Int("llm", synth.DefaultSide, "rows and columns of the LLM-like matrix")
	reps := flag.Int("reps", 3, "timed runs per cell (the fastest counts)")
	flag.Parse()
	runtime.GOMAXPROCS(1) // one core: throughput per core, as `go test -bench -cpu 1`

	// The comparison with llama.cpp is `make compare`'s (bench/compare):
	// kept as it is in -out, never recomputed or faked here.
	kept := mdsection.Wrap(comparisonSection, "## Same-run comparison with llama.cpp\n\nNot measured yet: run `make compare`.\n\n")
	if *out != "" {
		if old, err := os.ReadFile(*out); err == nil {
			if s, ok := mdsection.Extract(string(old), comparisonSection); ok {
				kept = s
			}
		}
	}
	var b strings.Builder
	if err := report(&b, *n, *side, *reps, kept); err != nil {
		fmt.Fprintln(os.Stderr, "quality:", err)
		os.Exit(1)
	}
	fmt.Print(b.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "quality:", err)
			os.Exit(1)
		}
	}
}

// Limits of REFERENCE §2 for N(0,1) weights: the optimal uniform
// quantizer, and per-group asymmetric quantization with float (not fp16)
// scale and min simulated on 2M samples.
var (
	optimalUniform = map[int][2]float64{2: {0.1188, 0.9387}, 4: {0.01154, 0.99421}, 8: {8.8e-5, 0.99996}}
	refMinMax      = map[[2]int]float64{{2, 32}: 0.9327, {2, 128}: 0.8964, {2, 256}: 0.8797, {4, 32}: 0.9970, {4, 128}: 0.9951, {4, 256}: 0.9941, {8, 32}: 0.99999}
	refLSQ         = map[[2]int]float64{{2, 32}: 0.9519, {2, 128}: 0.9336, {2, 256}: 0.9274}
	refGrid        = map[[2]int]float64{{2, 32}: 0.9554, {2, 128}: 0.9432, {2, 256}: 0.9404, {4, 32}: 0.9975, {4, 128}: 0.9959, {4, 256}: 0.9952}
)

// cell is one measurement.
type cell struct {
	sim     kernels.Similarity
	bytes   int64 // codes + fp16 scale and min per group
	seconds float64
}

func (c cell) bitsPerWeight() float64 { return float64(c.bytes) * 8 / float64(c.sim.N) }
func (c cell) gbps() float64          { return float64(4*c.sim.N) / c.seconds / 1e9 }

// measure runs method's fused kernel over rows (chunks) reps times.
func measure(ctx context.Context, m kernels.Method, rows arrow.Array, bits, gs, reps int) (cell, error) {
	var c cell
	opts := &kernels.QuantOptions{Bits: bits, GroupSize: gs}
	for rep := 0; rep < reps; rep++ {
		in := compute.NewDatum(rows)
		start := time.Now()
		out, err := compute.CallFunction(ctx, m.QuantizeFunc(), opts, in)
		el := time.Since(start).Seconds()
		in.Release()
		if err != nil {
			return c, fmt.Errorf("%s INT%d g%d: %w", m.Name, bits, gs, err)
		}
		res := out.(*compute.ArrayDatum).MakeArray().(*array.Struct)
		out.Release()
		if rep == 0 || el < c.seconds {
			c.seconds = el
		}
		if rep == 0 {
			codes := res.Field(0).(*array.Binary)
			c.bytes = int64(len(codes.ValueBytes())) + 4*int64(res.Field(1).(*array.List).ListValues().Len())
			s := res.Field(3).(*array.Struct)
			for i := 0; i < s.Len(); i++ {
				f := func(j int) float64 { return s.Field(j).(*array.Float64).Value(i) }
				c.sim.Add(kernels.Similarity{Dot: f(2), AA: f(3), BB: f(4), Err2: f(5), N: s.Field(6).(*array.Int64).Value(i)})
			}
		}
		res.Release()
	}
	return c, nil
}

// chunks makes a list<float32> array of x in pipeline-sized rows.
func chunks(mem memory.Allocator, x []float32) arrow.Array {
	b := array.NewListBuilder(mem, arrow.PrimitiveTypes.Float32)
	defer b.Release()
	vb := b.ValueBuilder().(*array.Float32Builder)
	for start := 0; start < len(x); start += schema.ChunkElems {
		b.Append(true)
		vb.AppendValues(x[start:min(len(x), start+schema.ChunkElems)], nil)
	}
	return b.NewArray()
}

// comparisonSection is the section of QUALITY.md that `make compare` writes.
const comparisonSection = "comparison"

func report(w io.Writer, n, side, reps int, comparison string) error {
	fmt.Fprintf(w, "# Quantization quality\n\n")
	fmt.Fprintf(w, "Generated by `go run ./bench/quality -out docs/QUALITY.md` (`make quality`) on %s/%s, runtime.NumCPU() = %d, %s, %s; do not edit by hand.\n\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(w, "Every registered method (%s) through its fused kernel `<method>_quantize` (the pipeline's path) on one core, ", strings.Join(methods.Default().Names(), ", "))
	fmt.Fprintf(w, "in rows of %d elements. Cosine and relative MSE (|x−x̂|²/|x|²) are of the stored reconstruction ", schema.ChunkElems)
	fmt.Fprintf(w, "x̂ = float32(float32(q)·scale) + min; bits/weight counts every stored byte (packed codes plus an fp16 scale and min per group); ")
	fmt.Fprintf(w, "GB/s is fp32 input per second (the fastest of %d runs). The default method of each bit width (`quant.DefaultMethodFor`, used when no method is named) is marked **bold**.\n\n", reps)
	fmt.Fprintf(w, "Gaussian rows show beside them the limits from the reference facts: the optimal uniform quantizer (clipping chosen optimally, no groups), ")
	fmt.Fprintf(w, "and per-group quantization with *float* scale and min simulated on 2M samples: plain min/max, least-squares refit (llama.cpp make_qkx style) and clipping grid search ")
	fmt.Fprintf(w, "(— where the reference has no figure). Stored params are fp16 here, so the reference columns are a slightly easier target.\n\n")
	fmt.Fprintf(w, "Defaults: INT2 `%s`, INT4 `%s`, INT8 `%s` (see `quant.DefaultMethodFor` for why); `--method` forces one method at every bit width.\n\n",
		quant.DefaultMethodFor(2), quant.DefaultMethodFor(4), quant.DefaultMethodFor(8))

	mem := memory.NewGoAllocator()
	ctx := compute.WithAllocator(methods.Default().Context(context.Background()), mem)
	var perGroup []kernels.Method
	for _, name := range methods.Default().Names() {
		m, err := methods.Default().Lookup(name)
		if err != nil {
			return err
		}
		if m.IsSuperBlock() {
			continue // its own section: fixed block sizes, params in group_params
		}
		perGroup = append(perGroup, m)
	}
	for _, d := range synth.Datasets(n, side) {
		rows := chunks(mem, d.X)
		fmt.Fprintf(w, "## %s\n\n%s.\n\n", d.Name, d.Desc)
		fmt.Fprintf(w, "| bits | group | method | bits/weight | cosine | rel MSE | GB/s |")
		if d.Gaussian {
			fmt.Fprintf(w, " optimal uniform (cos / rel MSE) | ref. min/max | ref. LSQ refit | ref. grid search |")
		}
		fmt.Fprintf(w, "\n|---|---|---|---|---|---|---|")
		if d.Gaussian {
			fmt.Fprintf(w, "---|---|---|---|")
		}
		fmt.Fprintln(w)
		for _, bits := range []int{2, 4, 8} {
			for _, gs := range []int{32, 64, 128, 256} {
				for _, m := range perGroup {
					c, err := measure(ctx, m, rows, bits, gs, reps)
					if err != nil {
						rows.Release()
						return err
					}
					name := m.Name
					if name == quant.DefaultMethodFor(bits) {
						name = "**" + name + "**"
					}
					fmt.Fprintf(w, "| %d | %d | %s | %.3f | %s | %.4g | %.3f |", bits, gs, name, c.bitsPerWeight(), cos(c.sim.Cosine()), c.sim.RelMSE(), c.gbps())
					if d.Gaussian {
						o := optimalUniform[bits]
						fmt.Fprintf(w, " %s / %.4g | %s | %s | %s |", cos(o[1]), o[0], ref(refMinMax, bits, gs), ref(refLSQ, bits, gs), ref(refGrid, bits, gs))
					}
					fmt.Fprintln(w)
				}
			}
		}
		fmt.Fprintln(w)
		rows.Release()
	}
	if err := superBlockSection(w, ctx, mem, n, side, reps); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s\n\n", comparison)
	if err := diffusionFixture(w); err != nil {
		return err
	}
	return equalizationSection(w)
}

// diffusionFixture reports output error per time group on the synthetic
// diffusion layer (internal/fixture): unweighted vs calibration-weighted, spatial
// off vs on, for the default methods and dq.
func diffusionFixture(w io.Writer) error {
	const groups, samples = 4, 64
	layer := fixture.NewLayer("blk.proj", 256, 1024, 7)
	dir, err := os.MkdirTemp("", "aq-quality-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cal := filepath.Join(dir, "calib.jsonl")
	if err := layer.WriteCalibration(cal, 512); err != nil {
		return err
	}
	fmt.Fprintf(w, "## Diffusion fixture: output error per time group\n\n")
	fmt.Fprintf(w, "A seeded %d×%d linear layer (`internal/fixture`) whose inputs shift with the timestep: log-normal per-channel scales, and every 64th input channel an outlier growing ×(1+30t). ", layer.Out, layer.In)
	fmt.Fprintf(w, "Calibration: 512 rows over t ∈ [0, 1]; %d time groups; output x·Wᵀ vs x·Ŵᵀ on %d held-out inputs per group (cosine / SQNR). ", groups, samples)
	fmt.Fprintf(w, "Unweighted: the default method alone; calibration-weighted: the same with the calibration file (per-channel importance, each time group weighted equally, in the parameter search; with time-aware on). What this gains comes from weighting the search by activation importance, not from the time groups: on the trained digits DiT (docs/DIFFUSION.md) the time groups pay off in activation quantization, and weighting the weight search is within about 0.4 dB of none. ")
	fmt.Fprintf(w, "Spatial on: AWQ smoothing with the calibration file (α searched per layer on the output-error estimate; without time-aware, statistics pool all timesteps, and the search weighs the output error as AWQ does). ")
	fmt.Fprintf(w, "The last column is what the pipeline reported for the layer's smoothing.\n\n")
	fmt.Fprintf(w, "| bits | method | variant | spatial | reported output cosine |")
	for g := 0; g < groups; g++ {
		fmt.Fprintf(w, " group %d cos / SQNR dB |", g)
	}
	fmt.Fprintf(w, " smoothing |\n|---|---|---|---|---|%s---|\n", strings.Repeat("---|", groups))
	type variant struct {
		timeAware, spatial bool
		cal                string
	}
	for _, run := range []struct {
		bits   int
		method string
	}{{2, ""}, {4, ""}, {2, "dq"}, {4, "dq"}} {
		for _, v := range []variant{{false, false, ""}, {true, false, cal}, {false, true, cal}, {true, true, cal}} {
			cfg := config.Default()
			cfg.BitWidth, cfg.MinAccuracy, cfg.NumTimeGroups, cfg.CalibrationSamples = run.bits, 0, groups, 512
			cfg.EnableTimeAware, cfg.EnableSpatial = v.timeAware, v.spatial
			bits := run.bits
			what, res, err := quanttest.QuantizeFixture(layer, cfg, v.cal, run.method)
			if err != nil {
				return err
			}
			errs, err := layer.OutputError(what, groups, samples)
			if err != nil {
				return err
			}
			reported := "—"
			if oc := res.Layers[0].OutputCosineSimilarity; oc != nil {
				reported = fmt.Sprintf("%.4f", *oc)
			}
			name, on := "unweighted", "off"
			if v.timeAware {
				name = "calibration-weighted"
			}
			if v.spatial {
				on = "on"
			}
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s |", bits, res.Layers[0].Method, name, on, reported)
			for _, e := range errs {
				fmt.Fprintf(w, " %.4f / %.2f |", e.Cosine, e.SQNR_dB)
			}
			sm := "—"
			switch s := res.Layers[0].Smoothing; {
			case s.Applied():
				sm = fmt.Sprintf("α = %g", s.Alpha)
			case s != nil:
				sm = "searched, α = 0 kept"
			}
			fmt.Fprintf(w, " %s |\n", sm)
		}
	}
	fmt.Fprintln(w)
	return nil
}

// cos prints a cosine with enough digits to tell the methods apart at 8 bits.
func cos(v float64) string {
	if v > 0.999 {
		return fmt.Sprintf("%.6f", v)
	}
	return fmt.Sprintf("%.4f", v)
}

func ref(m map[[2]int]float64, bits, gs int) string {
	if v, ok := m[[2]int{bits, gs}]; ok {
		return cos(v)
	}
	return "—"
}
