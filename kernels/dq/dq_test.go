package dq_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/dq"
	"github.com/arrowquant/arrowquant/kernels/internal/methodtest"
)

type result struct {
	codes, params []byte
	sim, wsim     kernels.Similarity
	recon         []float32
}

func simAt(s *array.Struct, i int) kernels.Similarity {
	f := func(j int) float64 { return s.Field(j).(*array.Float64).Value(i) }
	return kernels.Similarity{Dot: f(2), AA: f(3), BB: f(4), Err2: f(5), N: s.Field(6).(*array.Int64).Value(i)}
}

// quantize runs dq_quantize (or _weighted) on rows and dequantizes every
// row with aq_dequantize_superblock.
func quantize(t *testing.T, e *methodtest.Env, values, weights arrow.Array, bits int) ([]result, error) {
	t.Helper()
	opts := &kernels.QuantOptions{Bits: bits}
	var out arrow.Array
	var err error
	if weights != nil {
		out, err = e.Call(dq.Method.WeightedQuantizeFunc(), opts, values, weights)
	} else {
		out, err = e.Call(dq.Method.QuantizeFunc(), opts, values)
	}
	if err != nil {
		return nil, err
	}
	res := out.(*array.Struct)
	defer res.Release()
	if !arrow.TypeEqual(res.DataType(), kernels.SuperBlockQuantizedType) {
		t.Fatalf("type %s", res.DataType())
	}
	codes, params := res.Field(0).(*array.Binary), res.Field(5).(*array.Binary)
	nb := array.NewInt64Builder(e.Mem)
	for i := 0; i < res.Len(); i++ {
		nb.Append(int64(listLen(values, i)))
	}
	counts := nb.NewArray()
	nb.Release()
	defer counts.Release()
	recon := e.MustCall(kernels.FuncDequantizeSuperBlock, opts, codes, params, counts).(*array.List)
	defer recon.Release()
	rows := make([]result, res.Len())
	for i := range rows {
		n := listLen(values, i)
		if got, want := int64(len(codes.Value(i))+len(params.Value(i))), kernels.PackedLen(int64(n), bits)+kernels.SuperBlockParamsLen(int64(n), bits); got != want {
			t.Errorf("row %d: %d bytes, want %d", i, got, want)
		}
		if listLen(res.Field(1), i) != 0 || listLen(res.Field(2), i) != 0 {
			t.Errorf("row %d: scales/mins not empty", i)
		}
		lo, hi := recon.ValueOffsets(i)
		rows[i] = result{
			codes: append([]byte(nil), codes.Value(i)...), params: append([]byte(nil), params.Value(i)...),
			sim: simAt(res.Field(3).(*array.Struct), i), wsim: simAt(res.Field(4).(*array.Struct), i),
			recon: append([]float32(nil), recon.ListValues().(*array.Float32).Float32Values()[lo:hi]...),
		}
	}
	return rows, nil
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*(math.Abs(a)+math.Abs(b))+1e-30 }

func seq(n int, f func(int) float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = f(i)
	}
	return x
}

// The fused kernel's similarity sums are those of its stored output
// dequantized by aq_dequantize_superblock, for every bit width, ragged
// last super-blocks and rows shorter than a sub-block; every element is
// within a sensible distance of its reconstruction.
func TestRoundTrip(t *testing.T) {
	e := methodtest.NewEnv(t)
	rng := rand.New(rand.NewPCG(3, 4))
	rows := [][]float32{
		methodtest.Normal(5000, 1),                                     // ragged, crosses fused blocks
		methodtest.Laplace(256, 2),                                     // one super-block
		seq(7, func(i int) float32 { return float32(i) - 2.5 }),        // n < 16
		seq(300, func(int) float32 { return 1.25 }),                    // constant
		make([]float32, 513),                                           // zeros
		seq(700, func(int) float32 { return -1 - rng.Float32()*3 }),    // negative only
		seq(600, func(int) float32 { return 100 + rng.Float32()*0.5 }), // positive only, far from 0
		seq(1000, func(i int) float32 { // constant sub-blocks next to others, tiny and huge
			switch (i / 32) % 4 {
			case 0:
				return 0.5
			case 1:
				return float32(rng.NormFloat64() * 1e-4)
			case 2:
				return float32(rng.NormFloat64() * 1000)
			}
			return float32(rng.NormFloat64())
		}),
		{},
		methodtest.Normal(3*kernels.FusedBlockElems+300, 9), // a pair of fused blocks, then one
	}
	values := e.ListF32(rows...)
	defer values.Release()
	for _, bits := range []int{2, 4, 8} {
		res, err := quantize(t, e, values, nil, bits)
		if err != nil {
			t.Fatalf("int%d: %v", bits, err)
		}
		g, _, _, _ := kernels.SuperBlockLayout(bits)
		for r, x := range rows {
			q := res[r]
			want := kernels.SimilarityOf(x, q.recon)
			if !near(q.sim.AA, want.AA) || !near(q.sim.BB, want.BB) || !near(q.sim.Err2, want.Err2) || q.sim.N != int64(len(x)) {
				t.Errorf("int%d row %d: fused sums %+v, dequantized %+v", bits, r, q.sim, want)
			}
			if b := methodtest.BlockSimilarity(x, q.recon); q.sim != b {
				t.Errorf("int%d row %d: fused sums %+v, block by block %+v", bits, r, q.sim, b)
			}
			if q.wsim != q.sim {
				t.Errorf("int%d row %d: unweighted weighted_similarity differs", bits, r)
			}
			for j := 0; j*g < len(x); j++ {
				sub := x[j*g : min(len(x), (j+1)*g)]
				lo, hi := slicesMin(sub), slicesMax(sub)
				// Within the sub-block's range plus the steps of the
				// super-block's d and dmin (a constant sub-block next to
				// others is off by at most half a dmin step).
				var p kernels.SuperBlockParams
				_, pb, bpsb, _ := kernels.SuperBlockLayout(bits)
				sb := j * g / kernels.SuperBlockElems
				kernels.DecodeSuperBlockParams(&p, q.params[sb*bpsb:], kernels.SuperBlockElems/g, pb)
				d, dmin := halfAbs(p.D), halfAbs(p.DMin)
				bound := (hi - lo) + d + dmin + 1e-6*max(-lo, hi)
				for i, v := range sub {
					if err := float32(math.Abs(float64(v - q.recon[j*g+i]))); !(err <= bound) {
						t.Fatalf("int%d row %d element %d: %v reconstructed as %v (bound %v)", bits, r, j*g+i, v, q.recon[j*g+i], bound)
					}
				}
			}
		}
		// Constant and zero rows are exact (1.25 is an fp16 value).
		for _, r := range []int{3, 4} {
			for i, v := range res[r].recon {
				if v != rows[r][i] {
					t.Fatalf("int%d row %d element %d: %v, want exactly %v", bits, r, i, v, rows[r][i])
				}
			}
		}
	}
	// float16 input gives the same output as its float32 values.
	f16 := e.ListF16(rows[0])
	defer f16.Release()
	r16, err := quantize(t, e, f16, nil, 4)
	if err != nil {
		t.Fatal(err)
	}
	if r16[0].sim.N != 5000 || r16[0].sim.Cosine() < 0.99 {
		t.Errorf("float16 row: %+v", r16[0].sim)
	}
}

func halfAbs(h uint16) float32 { return float32(math.Abs(float64(fp16(h)))) }

func fp16(h uint16) float32 {
	var p kernels.SuperBlockParams
	p.D, p.Sc[0] = h, 1
	s, _ := p.SubBlockParams(0)
	return s
}

func slicesMin(x []float32) float32 {
	m := x[0]
	for _, v := range x {
		m = min(m, v)
	}
	return m
}

func slicesMax(x []float32) float32 {
	m := x[0]
	for _, v := range x {
		m = max(m, v)
	}
	return m
}

func TestErrors(t *testing.T) {
	e := methodtest.NewEnv(t)
	good := methodtest.Normal(600, 5)
	for _, c := range []struct {
		v    float32
		want string
	}{{float32(math.NaN()), "element 300"}, {float32(math.Inf(-1)), "element 300"}, {70000, "exceeds the fp16 range"}} {
		bad := methodtest.Normal(600, 6)
		bad[300] = c.v
		values := e.ListF32(good, bad)
		_, err := quantize(t, e, values, nil, 4)
		values.Release()
		if err == nil || !strings.Contains(err.Error(), "row 1") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("value %v: error %v, want row 1 and %q", c.v, err, c.want)
		}
		var nf *kernels.NonFiniteError
		var pr *kernels.ParamRangeError
		if err != nil && !errors.As(err, &nf) && !errors.As(err, &pr) {
			t.Errorf("value %v: error type %T", c.v, err)
		}
	}
	x := methodtest.Normal(100, 7)
	if err := dq.Quantize(x, nil, 3, make([]byte, 100), make([]byte, 100), 0); err == nil {
		t.Error("3 bits accepted")
	}
}

// Quality floors on N(0,1): llama.cpp's Q4_K/Q2_K at the same bits/weight
// reach cosine 0.99746 and 0.9578.
func TestQuality(t *testing.T) {
	e := methodtest.NewEnv(t)
	x := methodtest.Normal(1<<18, 11)
	values := e.ListF32(x)
	defer values.Release()
	for _, c := range []struct {
		bits  int
		floor float64
	}{{2, 0.958}, {4, 0.9974}, {8, 0.99998}} {
		res, err := quantize(t, e, values, nil, c.bits)
		if err != nil {
			t.Fatal(err)
		}
		if cos := res[0].sim.Cosine(); cos < c.floor {
			t.Errorf("int%d: cosine %.5f below %v", c.bits, cos, c.floor)
		}
	}
}

// The weighted search lowers the weighted error against the unweighted
// one (weights: a few heavy channels, as from calibration activations).
func TestWeighted(t *testing.T) {
	e := methodtest.NewEnv(t)
	x := methodtest.Laplace(1<<14, 12)
	rng := rand.New(rand.NewPCG(9, 9))
	w := make([]float32, len(x))
	for i := range w {
		w[i] = float32(math.Exp(2 * rng.NormFloat64()))
	}
	w[17] = 0
	values, weights := e.ListF32(x), e.ListF32(w)
	defer values.Release()
	defer weights.Release()
	for _, bits := range []int{2, 4} {
		plain, err := quantize(t, e, values, nil, bits)
		if err != nil {
			t.Fatal(err)
		}
		wt, err := quantize(t, e, values, weights, bits)
		if err != nil {
			t.Fatal(err)
		}
		pw := kernels.WeightedSimilarityOf(x, plain[0].recon, w)
		if !near(wt[0].wsim.Err2, kernels.WeightedSimilarityOf(x, wt[0].recon, w).Err2) {
			t.Errorf("int%d: weighted sums differ from the dequantized output", bits)
		}
		if wt[0].wsim.Err2 >= 0.95*pw.Err2 {
			t.Errorf("int%d: weighted error %v not below unweighted search's %v", bits, wt[0].wsim.Err2, pw.Err2)
		}
		t.Logf("int%d: weighted error %.4g vs %.4g unweighted search", bits, wt[0].wsim.Err2, pw.Err2)
	}
}

func listLen(a arrow.Array, i int) int {
	lo, hi := a.(*array.List).ValueOffsets(i)
	return int(hi - lo)
}
