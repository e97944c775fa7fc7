package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/dq"
	"github.com/arrowquant/arrowquant/kernels/methods"
)

const benchElems = 1 << 20 // one pipeline chunk

// cpuRate reports, next to the wall-clock MB/s, the throughput per
// second of the process's CPU time (user + system, all threads) as
// cpu-MB/s: on a shared, loaded machine the wall clock counts the time
// other processes hold the core, the CPU time does not. With -cpu 1 the
// process's CPU time is the benchmark's (and its garbage collection).
// Use: defer cpuRate(b, bytesPerOp)() before the timed loop.
func cpuRate(b *testing.B, bytes int64) func() {
	start := cpuTime()
	return func() {
		if d := cpuTime() - start; d > 0 && b.N > 0 {
			b.ReportMetric(float64(bytes)*float64(b.N)/d.Seconds()/1e6, "cpu-MB/s")
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func normalRow(mem memory.Allocator, n int) arrow.Array {
	rng := rand.New(rand.NewPCG(42, 42))
	b := array.NewListBuilder(mem, arrow.PrimitiveTypes.Float32)
	defer b.Release()
	vb := b.ValueBuilder().(*array.Float32Builder)
	b.Append(true)
	for i := 0; i < n; i++ {
		vb.Append(float32(rng.NormFloat64()))
	}
	return b.NewArray()
}

func call(b *testing.B, ctx context.Context, name string, opts compute.FunctionOptions, args ...arrow.Array) arrow.Array {
	datums := make([]compute.Datum, len(args))
	for i, a := range args {
		datums[i] = &compute.ArrayDatum{Value: a.Data()}
	}
	out, err := compute.CallFunction(ctx, name, opts, datums...)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Release() // the array holds its own reference
	return out.(*compute.ArrayDatum).MakeArray()
}

// BenchmarkQuantizePack: group params (minmax) + pack, GB/s of fp32 input.
func BenchmarkQuantizePack(b *testing.B) {
	ctx := methods.Default().Context(context.Background())
	values := normalRow(memory.DefaultAllocator, benchElems)
	defer values.Release()
	for _, bits := range []int{2, 4, 8} {
		for _, gs := range []int{64, 128, 256} {
			b.Run(fmt.Sprintf("int%d/g%d", bits, gs), func(b *testing.B) {
				opts := &kernels.QuantOptions{Bits: bits, GroupSize: gs}
				b.SetBytes(4 * benchElems)
				defer cpuRate(b, 4*benchElems)()
				for b.Loop() {
					params := call(b, ctx, "minmax_group_params", opts, values).(*array.Struct)
					codes := call(b, ctx, kernels.FuncPack, opts, values, params.Field(0), params.Field(1))
					codes.Release()
					params.Release()
				}
			})
		}
	}
}

// BenchmarkDequantize and BenchmarkCosine: GB/s of fp32 output / input.
func BenchmarkDequantizeCosine(b *testing.B) {
	ctx := methods.Default().Context(context.Background())
	values := normalRow(memory.DefaultAllocator, benchElems)
	defer values.Release()
	nb := array.NewInt64Builder(memory.DefaultAllocator)
	nb.Append(benchElems)
	counts := nb.NewArray()
	defer counts.Release()
	for _, bits := range []int{2, 4, 8} {
		opts := &kernels.QuantOptions{Bits: bits, GroupSize: 128}
		params := call(b, ctx, "minmax_group_params", opts, values).(*array.Struct)
		codes := call(b, ctx, kernels.FuncPack, opts, values, params.Field(0), params.Field(1))
		b.Run(fmt.Sprintf("dequantize/int%d/g128", bits), func(b *testing.B) {
			b.SetBytes(4 * benchElems)
			defer cpuRate(b, 4*benchElems)()
			for b.Loop() {
				call(b, ctx, kernels.FuncDequantize, opts, codes, params.Field(0), params.Field(1), counts).Release()
			}
		})
		if bits == 4 {
			recon := call(b, ctx, kernels.FuncDequantize, opts, codes, params.Field(0), params.Field(1), counts)
			b.Run("cosine", func(b *testing.B) {
				b.SetBytes(4 * benchElems)
				defer cpuRate(b, 4*benchElems)()
				for b.Loop() {
					call(b, ctx, kernels.FuncCosine, nil, values, recon).Release()
				}
			})
			recon.Release()
		}
		codes.Release()
		params.Release()
	}
}

// BenchmarkFusedQuantize: the pipeline's hot path, each registered
// method's fused kernel (params, pack, dequantize and similarity in one
// pass; lsq and clip are registered through quant, imported via
// flightsrv), GB/s of fp32 input. The default INT4 method must stay at or
// above 0.3 GB/s (300 MB/s here).
func BenchmarkFusedQuantize(b *testing.B) {
	ctx := methods.Default().Context(context.Background())
	values := normalRow(memory.DefaultAllocator, benchElems)
	defer values.Release()
	for _, name := range methods.Default().Names() {
		m, err := methods.Default().Lookup(name)
		if err != nil {
			b.Fatal(err)
		}
		if m.IsSuperBlock() {
			continue // no group size: BenchmarkSuperBlock/fused covers it
		}
		for _, bits := range []int{2, 4, 8} {
			for _, gs := range []int{64, 128, 256} {
				b.Run(fmt.Sprintf("%s/int%d/g%d", name, bits, gs), func(b *testing.B) {
					opts := &kernels.QuantOptions{Bits: bits, GroupSize: gs}
					b.SetBytes(4 * benchElems)
					defer cpuRate(b, 4*benchElems)()
					for b.Loop() {
						call(b, ctx, m.QuantizeFunc(), opts, values).Release()
					}
				})
			}
		}
	}
}

// BenchmarkWeightedQuantize: <method>_quantize_weighted, the path of
// calibrated and equalized weights, next to the unweighted fused kernel of
// BenchmarkFusedQuantize; INT2/INT4 g128, dq at its own block sizes. GB/s
// of fp32 input. The weights are what the pipeline passes: one per input
// channel (channelWeights), a row of 3584 (Dream 7B's hidden size) that the
// kernel repeats along the chunk. per-element/lsq/int4 gives one weight
// per value instead (a chunk-long second input, 4 MB more to read).
func BenchmarkWeightedQuantize(b *testing.B) {
	ctx := methods.Default().Context(context.Background())
	values := normalRow(memory.DefaultAllocator, benchElems)
	defer values.Release()
	squared := func(n int) arrow.Array { // |N(0,1)|² as weights
		w := normalRow(memory.DefaultAllocator, n)
		for i, v := range w.(*array.List).ListValues().(*array.Float32).Float32Values() {
			w.(*array.List).ListValues().(*array.Float32).Float32Values()[i] = v * v
		}
		return w
	}
	channels, elements := squared(3584), squared(benchElems)
	defer channels.Release()
	defer elements.Release()
	run := func(name string, m kernels.Method, bits int, weights arrow.Array) {
		b.Run(name, func(b *testing.B) {
			opts := &kernels.QuantOptions{Bits: bits, GroupSize: 128}
			b.SetBytes(4 * benchElems)
			defer cpuRate(b, 4*benchElems)()
			for b.Loop() {
				call(b, ctx, m.WeightedQuantizeFunc(), opts, values, weights).Release()
			}
		})
	}
	for _, name := range methods.Default().Names() {
		m, err := methods.Default().Lookup(name)
		if err != nil {
			b.Fatal(err)
		}
		if !m.Weighted() {
			continue
		}
		for _, bits := range []int{2, 4} {
			run(fmt.Sprintf("%s/int%d", name, bits), m, bits, channels)
		}
		if name == "lsq" {
			run("per-element/lsq/int4", m, 4, elements)
		}
	}
}

// BenchmarkSuperBlock: the dq super-block method, GB/s of fp32: quantize
// (params + pack, the method's SuperBlockFunc on one row), fused (the
// registered dq_quantize: params, pack, dequantize and similarity),
// dequantize-rows (kernels.DequantizeSuperBlocks into a reused buffer: the
// kernel alone) and dequantize (aq_dequantize_superblock with the
// context's allocator, GB/s of fp32 output).
func BenchmarkSuperBlock(b *testing.B) {
	ctx := methods.Default().Context(context.Background())
	values := normalRow(memory.DefaultAllocator, benchElems)
	defer values.Release()
	x := values.(*array.List).ListValues().(*array.Float32).Float32Values()
	nb := array.NewInt64Builder(memory.DefaultAllocator)
	nb.Append(benchElems)
	counts := nb.NewArray()
	nb.Release()
	defer counts.Release()
	for _, bits := range []int{2, 4} {
		opts := &kernels.QuantOptions{Bits: bits}
		b.Run(fmt.Sprintf("quantize/int%d", bits), func(b *testing.B) {
			codes := make([]byte, kernels.PackedLen(benchElems, bits))
			params := make([]byte, kernels.SuperBlockParamsLen(benchElems, bits))
			b.SetBytes(4 * benchElems)
			defer cpuRate(b, 4*benchElems)()
			for b.Loop() {
				if err := dq.Quantize(x, nil, bits, codes, params, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("fused/int%d", bits), func(b *testing.B) {
			b.SetBytes(4 * benchElems)
			defer cpuRate(b, 4*benchElems)()
			for b.Loop() {
				call(b, ctx, dq.Method.QuantizeFunc(), opts, values).Release()
			}
		})
		res := call(b, ctx, dq.Method.QuantizeFunc(), opts, values).(*array.Struct)
		b.Run(fmt.Sprintf("dequantize-rows/int%d", bits), func(b *testing.B) {
			codes := res.Field(0).(*array.Binary).Value(0)
			params := res.Field(5).(*array.Binary).Value(0)
			out := make([]float32, benchElems)
			b.SetBytes(4 * benchElems)
			defer cpuRate(b, 4*benchElems)()
			for b.Loop() {
				if err := kernels.DequantizeSuperBlocks(out, codes, params, bits); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("dequantize/int%d", bits), func(b *testing.B) {
			b.SetBytes(4 * benchElems)
			defer cpuRate(b, 4*benchElems)()
			for b.Loop() {
				call(b, ctx, kernels.FuncDequantizeSuperBlock, opts, res.Field(0), res.Field(5), counts).Release()
			}
		})
		res.Release()
	}
}
