// Package methodtest holds the checks every parameter-search method must
// pass (used by the tests of kernels/lsq and kernels/clip): fused kernel
// equal to the composed kernels for float32, float16 and bfloat16 rows,
// the round-trip bound inside the clipping range, exact constant groups,
// ragged and empty rows, NaN/±Inf and fp16-range errors identical to
// minmax's, and no Arrow memory left behind (a CheckedAllocator at zero).
package methodtest

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/float16"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/methods"
)

// Env calls the registered kernels with a checked allocator that must be
// back at zero bytes when the test ends.
type Env struct {
	T   testing.TB
	Mem *memory.CheckedAllocator
	Ctx context.Context
}

// Extra are test-only methods (kernels' own example) added to every
// method of kernels/methods in the set the Envs use; set it in an init of
// the test package, before any Env exists.
var Extra []kernels.Method

// Set is the method set of the Envs: kernels/methods' list plus Extra.
var Set = sync.OnceValue(func() *kernels.Methods {
	s, err := kernels.NewMethods(append(methods.All(), Extra...)...)
	if err != nil {
		panic(err)
	}
	return s
})

// NewEnv returns an Env whose allocator is checked at cleanup.
func NewEnv(t testing.TB) *Env {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { mem.AssertSize(t, 0) })
	return &Env{T: t, Mem: mem, Ctx: compute.WithAllocator(Set().Context(context.Background()), mem)}
}

// Call runs a registered function on arrays.
func (e *Env) Call(name string, opts compute.FunctionOptions, args ...arrow.Array) (arrow.Array, error) {
	datums := make([]compute.Datum, len(args))
	for i, a := range args {
		datums[i] = compute.NewDatum(a)
		defer datums[i].Release()
	}
	out, err := compute.CallFunction(e.Ctx, name, opts, datums...)
	if err != nil {
		return nil, err
	}
	defer out.Release()
	return out.(*compute.ArrayDatum).MakeArray(), nil
}

// MustCall is Call failing the test on error.
func (e *Env) MustCall(name string, opts compute.FunctionOptions, args ...arrow.Array) arrow.Array {
	e.T.Helper()
	a, err := e.Call(name, opts, args...)
	if err != nil {
		e.T.Fatalf("%s: %v", name, err)
	}
	return a
}

// ListF32 builds a list<float32> array, one row per slice.
func (e *Env) ListF32(rows ...[]float32) arrow.Array {
	b := array.NewListBuilder(e.Mem, arrow.PrimitiveTypes.Float32)
	defer b.Release()
	vb := b.ValueBuilder().(*array.Float32Builder)
	for _, r := range rows {
		b.Append(true)
		vb.AppendValues(r, nil)
	}
	return b.NewArray()
}

// ListF16 builds a list<float16> array (values rounded to fp16).
func (e *Env) ListF16(rows ...[]float32) arrow.Array {
	b := array.NewListBuilder(e.Mem, arrow.FixedWidthTypes.Float16)
	defer b.Release()
	vb := b.ValueBuilder().(*array.Float16Builder)
	for _, r := range rows {
		b.Append(true)
		for _, v := range r {
			vb.Append(float16.FromBits(fp.Float32ToHalf(v)))
		}
	}
	return b.NewArray()
}

// ListBF16 builds a list<uint16> array of bfloat16 bits.
func (e *Env) ListBF16(rows ...[]float32) arrow.Array {
	b := array.NewListBuilder(e.Mem, arrow.PrimitiveTypes.Uint16)
	defer b.Release()
	vb := b.ValueBuilder().(*array.Uint16Builder)
	for _, r := range rows {
		b.Append(true)
		for _, v := range r {
			vb.Append(fp.Float32ToBF16(v))
		}
	}
	return b.NewArray()
}

// Row is one row's quantized output.
type Row struct {
	Codes        []byte
	Scales, Mins []uint16
	Recon        []float32 // composed only
	Sim          kernels.Similarity
}

// BlockSimilarity is the similarity the fused kernels report for a row x
// and its reconstruction: SimilarityOf of each kernels.FusedBlockElems
// block, added in block order.
func BlockSimilarity(x, recon []float32) kernels.Similarity {
	var s kernels.Similarity
	for a := 0; a < len(x); a += kernels.FusedBlockElems {
		b := min(len(x), a+kernels.FusedBlockElems)
		s.Add(kernels.SimilarityOf(x[a:b], recon[a:b]))
	}
	return s
}

// Composed runs <method>_group_params, aq_pack, aq_dequantize and aq_cosine.
func (e *Env) Composed(method string, values arrow.Array, bits, groupSize int) []Row {
	e.T.Helper()
	opts := &kernels.QuantOptions{Bits: bits, GroupSize: groupSize}
	params := e.MustCall(method+"_group_params", opts, values).(*array.Struct)
	defer params.Release()
	scales, mins := params.Field(0).(*array.List), params.Field(1).(*array.List)
	codes := e.MustCall(kernels.FuncPack, opts, values, scales, mins).(*array.Binary)
	defer codes.Release()
	list := values.(*array.List)
	nb := array.NewInt64Builder(e.Mem)
	defer nb.Release()
	for i := 0; i < list.Len(); i++ {
		s, t := list.ValueOffsets(i)
		nb.Append(t - s)
	}
	counts := nb.NewArray()
	defer counts.Release()
	recon := e.MustCall(kernels.FuncDequantize, opts, codes, scales, mins, counts).(*array.List)
	defer recon.Release()
	sim := e.MustCall(kernels.FuncCosine, nil, values, recon).(*array.Struct)
	defer sim.Release()
	out := make([]Row, list.Len())
	rv := recon.ListValues().(*array.Float32).Float32Values()
	for i := range out {
		out[i] = Row{
			Codes:  append([]byte(nil), codes.Value(i)...),
			Scales: halves(scales, i), Mins: halves(mins, i),
			Sim: simAt(sim, i),
		}
		s, t := recon.ValueOffsets(i)
		out[i].Recon = append([]float32(nil), rv[s:t]...)
	}
	return out
}

// Fused runs <method>_quantize.
func (e *Env) Fused(method string, values arrow.Array, bits, groupSize int) ([]Row, error) {
	res, err := e.Call(method+"_quantize", &kernels.QuantOptions{Bits: bits, GroupSize: groupSize}, values)
	if err != nil {
		return nil, err
	}
	defer res.Release()
	st := res.(*array.Struct)
	codes := st.Field(0).(*array.Binary)
	out := make([]Row, st.Len())
	for i := range out {
		out[i] = Row{
			Codes:  append([]byte(nil), codes.Value(i)...),
			Scales: halves(st.Field(1).(*array.List), i), Mins: halves(st.Field(2).(*array.List), i),
			Sim: simAt(st.Field(3).(*array.Struct), i),
		}
	}
	return out, nil
}

func halves(l *array.List, i int) []uint16 {
	v := l.ListValues().(*array.Float16).Values()
	s, t := l.ValueOffsets(i)
	out := make([]uint16, 0, t-s)
	for _, h := range v[s:t] {
		out = append(out, h.Uint16())
	}
	return out
}

func simAt(s *array.Struct, i int) kernels.Similarity {
	f := func(j int) float64 { return s.Field(j).(*array.Float64).Value(i) }
	return kernels.Similarity{Dot: f(2), AA: f(3), BB: f(4), Err2: f(5), N: s.Field(6).(*array.Int64).Value(i)}
}

// Normal returns n seeded N(0,1) samples.
func Normal(n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// Laplace returns n seeded Laplace(0,1) samples.
func Laplace(n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	x := make([]float32, n)
	for i := range x {
		v := rng.ExpFloat64()
		if rng.IntN(2) == 0 {
			v = -v
		}
		x[i] = float32(v)
	}
	return x
}

// Quality quantizes x as one row with method's group params (called
// directly, in blocks like the fused kernel) and returns the stored
// squared error per group and the total similarity, computed with the
// shared pack and dequantize functions.
func Quality(t testing.TB, params kernels.GroupParamsFunc, x []float32, bits, groupSize int) (groupErr []float64, sim kernels.Similarity) {
	t.Helper()
	ng := int(kernels.NumGroups(int64(len(x)), groupSize))
	scales, mins := make([]uint16, ng), make([]uint16, ng)
	const block = 1 << 16
	for start := 0; start < len(x); start += block {
		blk := x[start:min(len(x), start+block)]
		g0 := start / groupSize
		if err := params(blk, bits, groupSize, scales[g0:], mins[g0:], int64(start)); err != nil {
			t.Fatal(err)
		}
	}
	codes := make([]byte, kernels.PackedLen(int64(len(x)), bits))
	kernels.PackGroups(codes, x, scales, mins, bits, groupSize)
	recon := make([]float32, len(x))
	kernels.DequantizeGroups(recon, codes, scales, mins, bits, groupSize)
	groupErr = make([]float64, ng)
	for i, v := range x {
		d := float64(v) - float64(recon[i])
		groupErr[i/groupSize] += d * d
	}
	return groupErr, kernels.SimilarityOf(x, recon)
}

// Options of Run.
type Options struct {
	// NoWorseThanMinMax reports whether, at bits, every group's stored
	// error must be at most minmax's (methods that evaluate the min/max
	// params as a candidate).
	NoWorseThanMinMax func(bits int) bool
	// Baseline skips the improvement check (minmax itself).
	Baseline bool
	// Symmetric reports the bit widths at which the method is symmetric
	// (min = -2^(bits-1)·scale, e.g. q8_0 at INT8): it gives up minmax's
	// asymmetric range, so the improvement check skips that width (the
	// method's package tests its own reference), and a constant group
	// c ≠ 0 must reconstruct within half a step instead of exactly.
	Symmetric func(bits int) bool
}

func (o Options) symmetric(bits int) bool { return o.Symmetric != nil && o.Symmetric(bits) }

// Run checks method (registered, with GroupParams params) against the
// shared kernels and the format's rules.
func Run(t *testing.T, method string, params kernels.GroupParamsFunc, o Options) {
	m, err := Set().Lookup(method)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := Set().Functions().GetFunction(m.QuantizeFunc()); !ok {
		t.Fatalf("%s is not registered", m.QuantizeFunc())
	}
	t.Run("FusedEqualsComposed", func(t *testing.T) { fusedEqualsComposed(t, method) })
	t.Run("RoundTripBound", func(t *testing.T) { roundTripBound(t, method) })
	t.Run("ConstantGroups", func(t *testing.T) { constantGroups(t, method, params, o.symmetric) })
	t.Run("RaggedAndEmpty", func(t *testing.T) { raggedAndEmpty(t, method, params) })
	t.Run("NonFinite", func(t *testing.T) { nonFinite(t, method, params) })
	t.Run("ParamRange", func(t *testing.T) { paramRange(t, method, params) })
	if !o.Baseline {
		t.Run("BetterThanMinMax", func(t *testing.T) { betterThanMinMax(t, params, o) })
	}
}

var cases = []struct{ bits, gs int }{{2, 32}, {2, 256}, {4, 64}, {4, 128}, {8, 32}, {8, 256}}

func testRows() [][]float32 {
	rng := rand.New(rand.NewPCG(9, 10))
	outlier := Normal(5000, 3)
	outlier[17], outlier[300], outlier[4097] = 40, -25, 90
	return [][]float32{
		Normal(10_001, 1), // ragged last group, several fused blocks
		nil,               // empty row
		seqf(37, func(int) float32 { return float32(rng.ExpFloat64()) }),
		seqf(4096, func(int) float32 { return 2.5 }), // constant
		outlier,
		seqf(999, func(i int) float32 { return 1000 + float32(i%7)*0.01 }), // far from 0, tiny range
		seqf(513, func(i int) float32 { return float32(i%3) - 1 }),         // three values
	}
}

func seqf(n int, f func(int) float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = f(i)
	}
	return x
}

// The fused kernel equals params + pack + dequantize + cosine, code for
// code and sum for sum, for every input type.
func fusedEqualsComposed(t *testing.T, method string) {
	e := NewEnv(t)
	rows := testRows()
	for _, mk := range []func(...[]float32) arrow.Array{e.ListF32, e.ListF16, e.ListBF16} {
		values := mk(rows...)
		for _, c := range cases {
			want := e.Composed(method, values, c.bits, c.gs)
			got, err := e.Fused(method, values, c.bits, c.gs)
			if err != nil {
				t.Fatal(err)
			}
			for r := range want {
				w, g := want[r], got[r]
				if string(w.Codes) != string(g.Codes) || !slicesEqual(w.Scales, g.Scales) || !slicesEqual(w.Mins, g.Mins) {
					t.Fatalf("%s bits %d gs %d row %d: fused output differs from composed", values.DataType(), c.bits, c.gs, r)
				}
				if math.Abs(w.Sim.Cosine()-g.Sim.Cosine()) > 1e-12 || math.Abs(w.Sim.Err2-g.Sim.Err2) > 1e-9*(1+w.Sim.Err2) || w.Sim.N != g.Sim.N {
					t.Fatalf("%s bits %d gs %d row %d: fused similarity %+v, composed %+v", values.DataType(), c.bits, c.gs, r, g.Sim, w.Sim)
				}
			}
		}
		values.Release()
	}
}

func slicesEqual(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Inside its group's clipping range [min, min+qmax*scale] every value is
// reconstructed within scale/2; outside, it is clipped to the nearer end.
func roundTripBound(t *testing.T, method string) {
	e := NewEnv(t)
	rows := testRows()
	values := e.ListF32(rows...)
	defer values.Release()
	for _, c := range cases {
		out := e.Composed(method, values, c.bits, c.gs)
		qmax := float32(kernels.QMax(c.bits))
		for r, x := range rows {
			q := out[r]
			if len(q.Scales) != int(kernels.NumGroups(int64(len(x)), c.gs)) {
				t.Fatalf("row %d: %d groups", r, len(q.Scales))
			}
			for i, v := range x {
				g := i / c.gs
				s, m := fp.HalfToFloat32(q.Scales[g]), fp.HalfToFloat32(q.Mins[g])
				if s < 0 || math.IsInf(float64(s), 0) || math.IsNaN(float64(s)) || math.IsInf(float64(m), 0) || math.IsNaN(float64(m)) {
					t.Fatalf("row %d group %d: bad params scale %v min %v", r, g, s, m)
				}
				hi := m + qmax*s
				got := q.Recon[i]
				tol := 1e-6 * (abs32(v) + abs32(m) + qmax*s)
				switch {
				case v >= m && v <= hi:
					if d := abs32(v - got); d > s/2+tol {
						t.Fatalf("bits %d gs %d row %d elem %d: |%v - %v| = %v > scale/2 = %v", c.bits, c.gs, r, i, v, got, d, s/2)
					}
				case v < m:
					if abs32(got-m) > tol {
						t.Fatalf("bits %d gs %d row %d elem %d: %v below min %v reconstructs to %v", c.bits, c.gs, r, i, v, m, got)
					}
				default:
					if abs32(got-hi) > tol {
						t.Fatalf("bits %d gs %d row %d elem %d: %v above %v reconstructs to %v", c.bits, c.gs, r, i, v, hi, got)
					}
				}
			}
		}
	}
}

func abs32(v float32) float32 { return float32(math.Abs(float64(v))) }

// Constant groups (fp16-representable) are exact, as with minmax; a
// constant group beside varying ones too. Symmetric methods: zero groups
// are exact, other constants within half a step.
func constantGroups(t *testing.T, method string, params kernels.GroupParamsFunc, symmetricAt func(int) bool) {
	e := NewEnv(t)
	x := append(seqf(64, func(int) float32 { return -3.25 }), Normal(64, 5)...)
	x = append(x, seqf(64, func(int) float32 { return 0 })...)
	values := e.ListF32(x)
	defer values.Release()
	for _, bits := range []int{2, 4, 8} {
		q := e.Composed(method, values, bits, 64)[0]
		symmetric := symmetricAt(bits)
		if symmetric {
			s := fp.HalfToFloat32(q.Scales[0])
			for i := range 64 {
				if d := abs32(q.Recon[i] - x[i]); d > s/2 || s == 0 {
					t.Fatalf("bits %d: constant %v reconstructs to %v (scale %v)", bits, x[i], q.Recon[i], s)
				}
			}
		}
		for _, g := range []int{0, 2} {
			if symmetric && g == 0 {
				continue
			}
			if q.Scales[g] != 0 {
				t.Errorf("bits %d group %d: constant group has scale %#x", bits, g, q.Scales[g])
			}
			for i := g * 64; i < (g+1)*64; i++ {
				if q.Recon[i] != x[i] {
					t.Fatalf("bits %d: constant %v reconstructs to %v", bits, x[i], q.Recon[i])
				}
			}
		}
	}
	// A constant that fp16 cannot hold stays within an fp16 step.
	sc, mn := make([]uint16, 1), make([]uint16, 1)
	c := float32(0.1)
	if err := params(seqf(32, func(int) float32 { return c }), 4, 32, sc, mn, 0); err != nil {
		t.Fatal(err)
	}
	if r := kernels.DequantizeValue(kernels.QuantizeRef([]float32{c}, fp.HalfToFloat32(sc[0]), fp.HalfToFloat32(mn[0]), 4)[0], fp.HalfToFloat32(sc[0]), fp.HalfToFloat32(mn[0])); math.Abs(float64(r-c)) > 1e-4 {
		t.Errorf("constant 0.1 reconstructs to %v", r)
	}
}

// Ragged last groups are quantized (not dropped); empty rows give empty
// outputs; both through GroupParams directly and the kernels.
func raggedAndEmpty(t *testing.T, method string, params kernels.GroupParamsFunc) {
	e := NewEnv(t)
	for _, n := range []int{1, 3, 4, 5, 33, 129, 255, 257} {
		x := Normal(n, uint64(n))
		for _, bits := range []int{2, 4, 8} {
			values := e.ListF32(x)
			q := e.Composed(method, values, bits, 128)[0]
			values.Release()
			if len(q.Scales) != int(kernels.NumGroups(int64(n), 128)) || len(q.Codes) != int(kernels.PackedLen(int64(n), bits)) {
				t.Fatalf("n %d bits %d: %d groups, %d code bytes", n, bits, len(q.Scales), len(q.Codes))
			}
			// The ragged group is fitted: no worse than a tenth of its
			// variance at INT2 (minmax-level quality or better).
			g := len(q.Scales) - 1
			var e2, v2 float64
			for i := g * 128; i < n; i++ {
				d := float64(x[i] - q.Recon[i])
				e2 += d * d
				v2 += float64(x[i]) * float64(x[i])
			}
			if n > 1 && e2 > 0.2*v2 {
				t.Errorf("n %d bits %d: ragged group error %v of %v", n, bits, e2, v2)
			}
		}
	}
	if err := params(nil, 4, 128, nil, nil, 0); err != nil {
		t.Fatalf("empty input: %v", err)
	}
	values := e.ListF32(nil, nil)
	defer values.Release()
	out, err := e.Fused(method, values, 4, 128)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range out {
		if len(r.Codes) != 0 || len(r.Scales) != 0 || r.Sim.N != 0 || r.Sim.Cosine() != 1 {
			t.Fatalf("empty row: %+v", r)
		}
	}
}

// NaN and ±Inf give minmax's NonFiniteError (same element, same value),
// counted from the start of the row also in the fused kernel's blocks.
func nonFinite(t *testing.T, method string, params kernels.GroupParamsFunc) {
	e := NewEnv(t)
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		for _, at := range []int{0, 130, 5000} {
			x := Normal(6000, 7)
			x[at] = bad
			sc, mn := make([]uint16, 100), make([]uint16, 100)
			errMine := params(x, 4, 64, sc, mn, 0)
			errRef := kernels.MinMaxGroupParams(x, 4, 64, sc, mn, 0)
			var nf, ref *kernels.NonFiniteError
			if !errors.As(errMine, &nf) || !errors.As(errRef, &ref) {
				t.Fatalf("%v at %d: got %v, minmax %v", bad, at, errMine, errRef)
			}
			if nf.Index != ref.Index || nf.Index != int64(at) || math.Float32bits(nf.Value) != math.Float32bits(ref.Value) {
				t.Fatalf("%v at %d: got %+v, minmax %+v", bad, at, nf, ref)
			}
			values := e.ListF32(Normal(10, 1), x)
			_, err := e.Fused(method, values, 2, 32)
			values.Release()
			if !errors.As(err, &nf) || nf.Index != int64(at) {
				t.Fatalf("fused %v at %d: %v", bad, at, err)
			}
		}
	}
}

// |x| > 65504 is a ParamRangeError naming the group within the row.
func paramRange(t *testing.T, method string, params kernels.GroupParamsFunc) {
	e := NewEnv(t)
	for _, big := range []float32{70000, -1e6} {
		x := Normal(5000, 8)
		x[4200] = big
		values := e.ListF32(x)
		_, err := e.Fused(method, values, 4, 64)
		values.Release()
		var pr *kernels.ParamRangeError
		if !errors.As(err, &pr) || pr.Group != 4200/64 {
			t.Fatalf("%v: got %v", big, err)
		}
		sc, mn := make([]uint16, 79), make([]uint16, 79)
		if err := params(x, 2, 64, sc, mn, 0); !errors.As(err, &pr) || pr.Group != 4200/64 {
			t.Fatalf("%v: GroupParams gave %v", big, err)
		}
	}
	// The largest fp16 values themselves are fine.
	x := append(seqf(64, func(i int) float32 { return 65504 - float32(i) }), seqf(64, func(i int) float32 { return -65504 + float32(i)*1000 })...)
	sc, mn := make([]uint16, 2), make([]uint16, 2)
	for _, bits := range []int{2, 4, 8} {
		if err := params(x, bits, 64, sc, mn, 0); err != nil {
			t.Fatalf("bits %d: values within ±65504: %v", bits, err)
		}
	}
}

// On N(0,1) and Laplace the method's total error is below minmax's at
// every bit width; with NoWorseThanMinMax, group by group.
func betterThanMinMax(t *testing.T, params kernels.GroupParamsFunc, o Options) {
	for _, x := range [][]float32{Normal(1<<16, 11), Laplace(1<<16, 12)} {
		for _, bits := range []int{2, 4, 8} {
			if o.symmetric(bits) {
				continue
			}
			for _, gs := range []int{32, 128, 256} {
				mine, s := Quality(t, params, x, bits, gs)
				ref, r := Quality(t, kernels.MinMaxGroupParams, x, bits, gs)
				if s.Err2 >= r.Err2 {
					t.Errorf("bits %d gs %d: squared error %v, minmax %v", bits, gs, s.Err2, r.Err2)
				}
				if o.NoWorseThanMinMax == nil || !o.NoWorseThanMinMax(bits) {
					continue
				}
				for g := range mine {
					if mine[g] > ref[g]*(1+1e-4)+1e-12 {
						t.Fatalf("bits %d gs %d group %d: error %v > minmax %v", bits, gs, g, mine[g], ref[g])
					}
				}
			}
		}
	}
}

// Weighted checks a method's weighted search through its fused
// <method>_quantize_weighted kernel: uniform weights match the unweighted
// search's error, and importance concentrated on a few input channels
// lowers the weighted error against the unweighted search.
func Weighted(t *testing.T, method string) {
	e := NewEnv(t)
	m, err := Set().Lookup(method)
	if err != nil || m.WeightedGroupParams == nil {
		t.Fatalf("%s has no weighted search: %v", method, err)
	}
	const rows, cols = 64, 1024
	x := Normal(rows*cols, 31)
	for i := range x {
		if (i%cols)%97 == 0 { // outlier input channels
			x[i] *= 12
		}
	}
	imp := make([]float32, len(x))
	uniform := make([]float32, len(x))
	for i := range imp {
		imp[i], uniform[i] = 1, 1
		if (i%cols)%50 < 2 { // 4% of the channels carry large activations
			imp[i] = 100
		}
	}
	values := e.ListF32(x)
	defer values.Release()
	weightedErr := func(codes []byte, scales, mins []uint16, bits, gs int) float64 {
		rec := make([]float32, len(x))
		kernels.DequantizeGroups(rec, codes, scales, mins, bits, gs)
		var s float64
		for i := range x {
			d := float64(x[i] - rec[i])
			s += float64(imp[i]) * d * d
		}
		return s
	}
	for _, c := range []struct{ bits, gs int }{{2, 128}, {4, 128}} {
		opts := &kernels.QuantOptions{Bits: c.bits, GroupSize: c.gs}
		plain, err := e.Fused(method, values, c.bits, c.gs)
		if err != nil {
			t.Fatal(err)
		}
		run := func(w []float32) Row {
			wa := e.ListF32(w)
			defer wa.Release()
			res := e.MustCall(m.WeightedQuantizeFunc(), opts, values, wa).(*array.Struct)
			defer res.Release()
			return Row{Codes: append([]byte(nil), res.Field(0).(*array.Binary).Value(0)...),
				Scales: halves(res.Field(1).(*array.List), 0), Mins: halves(res.Field(2).(*array.List), 0),
				Sim: simAt(res.Field(3).(*array.Struct), 0)}
		}
		uni, wtd := run(uniform), run(imp)
		if d := math.Abs(uni.Sim.Err2-plain[0].Sim.Err2) / plain[0].Sim.Err2; d > 0.01 {
			t.Errorf("bits %d: uniform weights give error %v, unweighted %v", c.bits, uni.Sim.Err2, plain[0].Sim.Err2)
		}
		pw := weightedErr(plain[0].Codes, plain[0].Scales, plain[0].Mins, c.bits, c.gs)
		ww := weightedErr(wtd.Codes, wtd.Scales, wtd.Mins, c.bits, c.gs)
		if ww > 0.9*pw {
			t.Errorf("bits %d: weighted search error %v is not clearly below the unweighted search's %v", c.bits, ww, pw)
		}
		t.Logf("%s bits %d: importance-weighted error %.4g (unweighted search %.4g, %.1f%% lower)", method, c.bits, ww, pw, 100*(1-ww/pw))
	}
	// More weights than values (a shorter row repeats: see
	// kernels/methods' TestPeriodicWeightsAreTheRepeatedOnes).
	wa := e.ListF32(make([]float32, len(x)+1))
	defer wa.Release()
	if _, err := e.Call(m.WeightedQuantizeFunc(), &kernels.QuantOptions{Bits: 4, GroupSize: 32}, values, wa); err == nil {
		t.Error("a weights row longer than its values must be an error")
	}
}
