package kernels_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"

	"github.com/arrowquant/arrowquant/internal/fp"
	. "github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/internal/methodtest"
)

func newEnv(t *testing.T) *methodtest.Env { return methodtest.NewEnv(t) }

func seq(n int, f func(i int) float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = f(i)
	}
	return x
}

func TestPackKnownVectors(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name      string
		bits, gs  int
		x         []float32
		wantCodes []byte
	}{
		// codes 0,1,2,3 -> bits [1:0]=0 [3:2]=1 [5:4]=2 [7:6]=3
		{"int2", 2, 4, []float32{0, 1, 2, 3, 3, 2, 1, 0}, []byte{0xe4, 0x1b}},
		// element 2j in the low nibble, 2j+1 in the high nibble
		{"int4", 4, 16, seq(16, func(i int) float32 { return float32(i) }), []byte{0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe}},
		{"int8", 8, 4, []float32{0, 255, 128, 7}, []byte{0, 255, 128, 7}},
		// ragged: 5 elements, group 4: second group is the constant 9 (scale 0, code 0)
		{"int2 ragged", 2, 4, []float32{0, 3, 3, 0, 9}, []byte{0x3c, 0x00}},
		{"int4 odd", 4, 4, []float32{0, 15, 15, 0, 1, 16, 6}, []byte{0xf0, 0x0f, 0xf0, 0x05}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			values := e.ListF32(c.x)
			defer values.Release()
			q := e.Composed("minmax", values, c.bits, c.gs)[0]
			if string(q.Codes) != string(c.wantCodes) {
				t.Fatalf("codes % x, want % x", q.Codes, c.wantCodes)
			}
			for i, v := range c.x {
				if q.Recon[i] != v {
					t.Errorf("element %d: reconstructed %v, want exactly %v", i, q.Recon[i], v)
				}
			}
			if q.Sim.Cosine() != 1 {
				t.Errorf("cosine %v, want 1", q.Sim.Cosine())
			}
		})
	}
}

// Property: every element lies within scale/2 of its reconstruction, for
// random lengths (ragged groups), every bit width and group size, and the
// packed codes equal the reference quantizer's.
func TestRoundTripErrorBound(t *testing.T) {
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 60; trial++ {
		bits := []int{2, 4, 8}[trial%3]
		gs := []int{32, 64, 128, 256, 4, 12}[trial%6]
		n := rng.IntN(3000)
		sigma := math.Pow(10, rng.Float64()*6-4)
		x := seq(n, func(int) float32 { return float32(rng.NormFloat64() * sigma) })
		values := e.ListF32(x)
		q := e.Composed("minmax", values, bits, gs)[0]
		values.Release()
		if len(q.Codes) != int(PackedLen(int64(n), bits)) || len(q.Scales) != int(NumGroups(int64(n), gs)) {
			t.Fatalf("n=%d bits=%d gs=%d: %d code bytes, %d groups", n, bits, gs, len(q.Codes), len(q.Scales))
		}
		for g := range q.Scales {
			s, m := fp.HalfToFloat32(q.Scales[g]), fp.HalfToFloat32(q.Mins[g])
			grp := x[g*gs : min(n, (g+1)*gs)]
			ref := QuantizeRef(grp, s, m, bits)
			for i, v := range grp {
				k := g*gs + i
				if c := Code(q.Codes, k, bits); c != ref[i] {
					t.Fatalf("n=%d bits=%d gs=%d element %d: code %d, reference %d", n, bits, gs, k, c, ref[i])
				}
				bound := float64(s)/2*(1+1e-5) + 1e-6*math.Abs(float64(v))
				if d := math.Abs(float64(q.Recon[k] - v)); d > bound {
					t.Fatalf("n=%d bits=%d gs=%d element %d: |x-x̂|=%g > scale/2=%g", n, bits, gs, k, d, s/2)
				}
			}
		}
	}
}

func TestCosineMatchesDirectComputation(t *testing.T) {
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(3, 4))
	x := seq(100_000, func(int) float32 { return float32(rng.NormFloat64()) })
	values := e.ListF32(x)
	defer values.Release()
	for _, c := range []struct {
		bits     int
		min, max float64
	}{{2, 0.85, 0.91}, {4, 0.993, 0.997}, {8, 0.99998, 1}} {
		q := e.Composed("minmax", values, c.bits, 128)[0]
		var dot, aa, bb, ee float64
		for i, v := range x {
			dot += float64(v) * float64(q.Recon[i])
			aa += float64(v) * float64(v)
			bb += float64(q.Recon[i]) * float64(q.Recon[i])
			ee += (float64(v) - float64(q.Recon[i])) * (float64(v) - float64(q.Recon[i]))
		}
		want := dot / math.Sqrt(aa*bb)
		if math.Abs(q.Sim.Cosine()-want) > 1e-9 {
			t.Errorf("bits %d: kernel cosine %v, direct %v", c.bits, q.Sim.Cosine(), want)
		}
		if q.Sim.Cosine() < c.min || q.Sim.Cosine() > c.max {
			t.Errorf("bits %d: cosine %v outside the expected band [%v, %v] for N(0,1), g128", c.bits, q.Sim.Cosine(), c.min, c.max)
		}
		if math.Abs(q.Sim.RelMSE()-ee/aa) > 1e-9*(ee/aa) {
			t.Errorf("bits %d: relMSE %v, direct %v", c.bits, q.Sim.RelMSE(), ee/aa)
		}
	}
}

func TestEmptyConstantAndMultiRow(t *testing.T) {
	e := newEnv(t)
	constant := seq(300, func(int) float32 { return -0.375 })
	zeros := make([]float32, 7)
	values := e.ListF32(nil, constant, zeros, []float32{1.5})
	defer values.Release()
	for _, bits := range []int{2, 4, 8} {
		out := e.Composed("minmax", values, bits, 128)
		if len(out[0].Codes) != 0 || len(out[0].Recon) != 0 || out[0].Sim.Cosine() != 1 {
			t.Errorf("bits %d: empty row gave %d codes, %d values, cosine %v", bits, len(out[0].Codes), len(out[0].Recon), out[0].Sim.Cosine())
		}
		for r := 1; r < 4; r++ {
			want := [][]float32{nil, constant, zeros, {1.5}}[r]
			for i, v := range out[r].Recon {
				if v != want[i] {
					t.Fatalf("bits %d row %d element %d: %v, want exactly %v", bits, r, i, v, want[i])
				}
			}
			if out[r].Sim.Cosine() != 1 {
				t.Errorf("bits %d row %d: cosine %v, want 1", bits, r, out[r].Sim.Cosine())
			}
		}
	}
}

func TestHalfAndBF16InputsMatchFloat32(t *testing.T) {
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(5, 6))
	x := seq(1000, func(int) float32 { return float32(rng.NormFloat64() * 0.02) })
	// Round x so it is exact in both 16-bit formats' common subset: bf16 then half.
	for i := range x {
		x[i] = fp.HalfToFloat32(fp.Float32ToHalf(fp.BF16ToFloat32(fp.Float32ToBF16(x[i]))))
	}
	f32, f16, bf16 := e.ListF32(x), e.ListF16(x), e.ListBF16(x)
	defer f32.Release()
	defer f16.Release()
	defer bf16.Release()
	want := e.Composed("minmax", f32, 4, 64)[0]
	for name, in := range map[string]arrow.Array{"float16": f16, "bf16": bf16} {
		got := e.Composed("minmax", in, 4, 64)[0]
		if string(got.Codes) != string(want.Codes) || got.Sim.Cosine() != want.Sim.Cosine() {
			t.Errorf("%s input: codes or cosine differ from float32 input", name)
		}
	}
}

func TestNonFiniteNamesPosition(t *testing.T) {
	e := newEnv(t)
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		x := seq(500, func(i int) float32 { return float32(i) })
		x[333] = bad
		values := e.ListF32(x)
		_, err := e.Call("minmax_group_params", &QuantOptions{Bits: 4, GroupSize: 128}, values)
		values.Release()
		var nf *NonFiniteError
		if !errors.As(err, &nf) || nf.Index != 333 {
			t.Fatalf("value %v: got %v, want NonFiniteError at 333", bad, err)
		}
		if !strings.Contains(err.Error(), "element 333") {
			t.Errorf("message %q does not name the position", err)
		}
	}
}

func TestParamRangeAndBadOptions(t *testing.T) {
	e := newEnv(t)
	values := e.ListF32([]float32{1e6, 0, 1, 2})
	defer values.Release()
	_, err := e.Call("minmax_group_params", &QuantOptions{Bits: 4, GroupSize: 4}, values)
	var pr *ParamRangeError
	if !errors.As(err, &pr) {
		t.Fatalf("got %v, want ParamRangeError", err)
	}
	if _, err := e.Call("minmax_group_params", &QuantOptions{Bits: 3, GroupSize: 4}, values); err == nil || !strings.Contains(err.Error(), "bit width 3") {
		t.Errorf("bits 3: got %v", err)
	}
	if _, err := e.Call("minmax_group_params", &QuantOptions{Bits: 4, GroupSize: 6}, values); err == nil || !strings.Contains(err.Error(), "group size 6") {
		t.Errorf("group 6: got %v", err)
	}
	if _, err := e.Call("minmax_group_params", nil, values); err == nil {
		t.Error("missing options must be an error")
	}
	if _, err := e.Call("nosuch_group_params", &QuantOptions{Bits: 4, GroupSize: 4}, values); err == nil {
		t.Error("unknown function must be an error")
	}
}

func TestGroupMinMaxFunction(t *testing.T) {
	e := newEnv(t)
	values := e.ListF32([]float32{3, -1, 2, 5, 7, 7})
	defer values.Release()
	res := e.MustCall(FuncGroupMinMax, &QuantOptions{GroupSize: 4}, values).(*array.Struct)
	defer res.Release()
	mins := res.Field(0).(*array.List).ListValues().(*array.Float32).Float32Values()
	maxs := res.Field(1).(*array.List).ListValues().(*array.Float32).Float32Values()
	if len(mins) != 2 || mins[0] != -1 || maxs[0] != 5 || mins[1] != 7 || maxs[1] != 7 {
		t.Fatalf("mins %v maxs %v", mins, maxs)
	}
}

func TestDequantizeRejectsInconsistentRows(t *testing.T) {
	e := newEnv(t)
	values := e.ListF32(seq(8, func(i int) float32 { return float32(i) }))
	defer values.Release()
	opts := &QuantOptions{Bits: 4, GroupSize: 4}
	params := e.MustCall("minmax_group_params", opts, values).(*array.Struct)
	defer params.Release()
	codes := e.MustCall(FuncPack, opts, values, params.Field(0), params.Field(1))
	defer codes.Release()
	nb := array.NewInt64Builder(e.Mem)
	nb.Append(9) // claims one element more than the codes hold
	counts := nb.NewArray()
	nb.Release()
	defer counts.Release()
	if _, err := e.Call(FuncDequantize, opts, codes, params.Field(0), params.Field(1), counts); err == nil || !strings.Contains(err.Error(), "code bytes") {
		t.Fatalf("got %v, want a code-length error", err)
	}
}

func TestHalfRounding(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 100000; i++ {
		v := float32(rng.NormFloat64() * math.Pow(10, rng.Float64()*8-6))
		d, u := fp.HalfToFloat32(HalfRoundDown(v)), fp.HalfToFloat32(HalfRoundUp(v))
		if d > v || u < v {
			t.Fatalf("v=%g: down %g up %g", v, d, u)
		}
	}
}

func TestMethodRegistry(t *testing.T) {
	s, err := NewMethods(MinMax)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup("minmax"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup("nope"); err == nil || !strings.Contains(err.Error(), "minmax") {
		t.Errorf("unknown method error should list the set's methods: %v", err)
	}
	if _, ok := s.Functions().GetFunction("minmax_group_params"); !ok {
		t.Error("minmax_group_params not registered")
	}
	if _, ok := compute.GetFunctionRegistry().GetFunction(FuncPack); ok {
		t.Error("kernels must live in a child registry, not the global one")
	}
	for _, bad := range [][]Method{{MinMax, MinMax}, {{Name: "x"}}, {{GroupParams: MinMaxGroupParams}}} {
		if _, err := NewMethods(bad...); err == nil {
			t.Errorf("NewMethods(%v) accepted", bad)
		}
	}
}

// The fused kernel must equal the composition of the separate kernels.
func TestFusedQuantizeEqualsComposition(t *testing.T) {
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(9, 10))
	rowsIn := [][]float32{
		seq(10_001, func(int) float32 { return float32(rng.NormFloat64()) }),
		nil,
		seq(37, func(int) float32 { return float32(rng.ExpFloat64()) }),
		seq(4096, func(int) float32 { return 2.5 }),
	}
	for _, mk := range []func(...[]float32) arrow.Array{e.ListF32, e.ListBF16} {
		values := mk(rowsIn...)
		for _, bits := range []int{2, 4, 8} {
			for _, gs := range []int{32, 256} {
				want := e.Composed("minmax", values, bits, gs)
				res := e.MustCall("minmax_quantize", &QuantOptions{Bits: bits, GroupSize: gs}, values).(*array.Struct)
				codes := res.Field(0).(*array.Binary)
				sim := res.Field(3).(*array.Struct)
				for r := range want {
					if string(codes.Value(r)) != string(want[r].Codes) {
						t.Fatalf("bits %d gs %d row %d: fused codes differ", bits, gs, r)
					}
					if got := sim.Field(0).(*array.Float64).Value(r); math.Abs(got-want[r].Sim.Cosine()) > 1e-12 {
						t.Fatalf("bits %d gs %d row %d: fused cosine %v, composed %v", bits, gs, r, got, want[r].Sim.Cosine())
					}
				}
				res.Release()
			}
		}
		values.Release()
	}
}

// The fused kernel's similarity sums are those of its output against the
// input, block by block (methodtest.BlockSimilarity), bit for bit: rows
// of one block, two (the second ragged), three, five, and shorter ones.
func TestFusedSimilarityIsBlockwise(t *testing.T) {
	e := newEnv(t)
	b := FusedBlockElems
	rows := [][]float32{
		methodtest.Normal(b+1000, 1), methodtest.Normal(3*b+5, 2), methodtest.Normal(5*b, 3),
		methodtest.Normal(b, 4), methodtest.Normal(37, 5), {},
	}
	values := e.ListF32(rows...)
	defer values.Release()
	for _, method := range []string{"minmax", "lsq"} {
		for _, bits := range []int{2, 4, 8} {
			want := e.Composed(method, values, bits, 128)
			got, err := e.Fused(method, values, bits, 128)
			if err != nil {
				t.Fatal(err)
			}
			for r, x := range rows {
				if string(got[r].Codes) != string(want[r].Codes) {
					t.Fatalf("%s INT%d row %d: codes differ", method, bits, r)
				}
				ref := methodtest.BlockSimilarity(x, want[r].Recon)
				if s := got[r].Sim; s != ref {
					t.Fatalf("%s INT%d row %d (%d values): fused sums %+v, block by block %+v", method, bits, r, len(x), s, ref)
				}
			}
		}
	}
}
