package kernels_test

import (
	"math"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"

	"github.com/arrowquant/arrowquant/internal/bufpool"
	. "github.com/arrowquant/arrowquant/kernels"
)

// TestDequantizeFillsReusedBuffers: the dequantize kernels take their
// output from a pool without clearing it (they write every value), so
// with the pool primed with NaN bytes every output value must still be
// the reference's, and the primed buffer must be the one reused.
func TestDequantizeFillsReusedBuffers(t *testing.T) {
	// Keep the primed buffer where the next Get finds it: no GC to empty
	// the pool, and one P (a sync.Pool Get on another P does not see this
	// P's private slot). The race detector still drops a quarter of the
	// Puts at random: dequantize tries again until the buffer is reused.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(7, 8))
	rows := [][]float32{
		seq(1000, func(int) float32 { return float32(rng.NormFloat64()) }),
		seq(300, func(int) float32 { return float32(rng.NormFloat64()) }), // a ragged last group and super-block
		seq(5, func(int) float32 { return float32(rng.NormFloat64()) }),
	}
	total := 0
	for _, r := range rows {
		total += len(r)
	}
	values := e.ListF32(rows...)
	defer values.Release()
	elems := array.NewInt64Builder(e.Mem)
	for _, r := range rows {
		elems.Append(int64(len(r)))
	}
	counts := elems.NewInt64Array()
	elems.Release()
	defer counts.Release()

	// dequantize calls fn with a pool primed with NaN bytes and returns
	// the output's values, from the primed buffer.
	dequantize := func(t *testing.T, fn string, opts *QuantOptions, args ...arrow.Array) []float32 {
		datums := make([]compute.Datum, len(args))
		for i, a := range args {
			datums[i] = compute.NewDatum(a)
			defer datums[i].Release()
		}
		for range 100 {
			pool := bufpool.New()
			primed := pool.Allocate(4 * total)
			for i := range primed {
				primed[i] = 0xff // float32 NaN
			}
			pool.Free(primed)
			out, err := compute.CallFunction(compute.WithAllocator(e.Ctx, pool), fn, opts, datums...)
			if err != nil {
				t.Fatal(err)
			}
			vals := out.(*compute.ArrayDatum).MakeArray().(*array.List)
			got := vals.ListValues().(*array.Float32).Float32Values()
			reused := unsafe.SliceData(got) == (*float32)(unsafe.Pointer(unsafe.SliceData(primed)))
			got = append([]float32(nil), got...)
			vals.Release()
			out.Release()
			if reused {
				return got
			}
		}
		t.Fatal("the output never reused the primed buffer: the test checks nothing")
		return nil
	}
	same := func(t *testing.T, fn string, opts *QuantOptions, args ...arrow.Array) {
		ref := e.MustCall(fn, opts, args...).(*array.List) // zeroed memory
		defer ref.Release()
		want := ref.ListValues().(*array.Float32).Float32Values()
		got := dequantize(t, fn, opts, args...)
		if len(got) != total || len(want) != total {
			t.Fatalf("%s: %d and %d values, want %d", fn, len(got), len(want), total)
		}
		for k := range want {
			if math.Float32bits(got[k]) != math.Float32bits(want[k]) || math.IsNaN(float64(got[k])) {
				t.Fatalf("%s bits %d: value %d is %g from a reused buffer, %g from a cleared one", fn, opts.Bits, k, got[k], want[k])
			}
		}
	}
	for _, bits := range []int{2, 4, 8} {
		opts := &QuantOptions{Bits: bits, GroupSize: 64}
		params := e.MustCall("minmax_group_params", opts, values).(*array.Struct)
		codes := e.MustCall(FuncPack, opts, values, params.Field(0), params.Field(1))
		same(t, FuncDequantize, opts, codes, params.Field(0), params.Field(1), counts)
		codes.Release()
		params.Release()
	}
	for _, bits := range []int{2, 4} {
		opts := &QuantOptions{Bits: bits}
		q := e.MustCall("dq_quantize", opts, values).(*array.Struct)
		same(t, FuncDequantizeSuperBlock, opts, q.Field(0), q.Field(5), counts)
		q.Release()
	}
}
