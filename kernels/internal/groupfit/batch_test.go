package groupfit

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
)

// adversarial returns a group of n values of one of several kinds: fp16
// range edges, denormals, ties of the code rounding for params (s, m),
// zeros of both signs, constant runs, tiny and huge spreads.
func adversarial(rng *rand.Rand, n int, s, m float32, kind int) []float32 {
	x := make([]float32, n)
	for i := range x {
		switch kind % 8 {
		case 0: // Gaussian at a random scale
			x[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()*3))
		case 1: // code ties: m + (k + 0.5)·s, and one ulp either side
			k := float32(rng.IntN(20) - 2)
			v := m + (k+0.5)*s
			switch rng.IntN(3) {
			case 1:
				v = math.Nextafter32(v, float32(math.Inf(1)))
			case 2:
				v = math.Nextafter32(v, float32(math.Inf(-1)))
			}
			x[i] = v
		case 2: // fp16 range edges
			x[i] = []float32{65504, -65504, 65503.9, -65503.9, 0, 1, -1}[rng.IntN(7)]
		case 3: // float32 denormals and zeros
			x[i] = []float32{math.Float32frombits(uint32(rng.IntN(1 << 23))), -math.Float32frombits(uint32(rng.IntN(1 << 23))), 0, float32(math.Copysign(0, -1))}[rng.IntN(4)]
		case 4: // fp16 denormals (tiny scales)
			x[i] = fp.HalfToFloat32(uint16(rng.IntN(1024)) | uint16(rng.IntN(2))<<15)
		case 5: // a constant run with a few others
			x[i] = 0.375
			if rng.IntN(16) == 0 {
				x[i] = float32(rng.NormFloat64())
			}
		case 6: // values on the params' grid
			x[i] = float32(float32(rng.IntN(18)-1)*s) + m
		default: // Laplace with outliers
			x[i] = float32(-math.Log(rng.Float64()) * float64(1-2*rng.IntN(2)))
			if rng.IntN(50) == 0 {
				x[i] *= 40
			}
		}
	}
	return x
}

// randomParams returns fp16 (scale, min) bits: typical ones from the
// group's range, and extremes (tiny and huge scales, mins at ±65504).
func randomParams(rng *rand.Rand, x []float32, bits int) (uint16, uint16) {
	lo, hi := x[0], x[0]
	for _, v := range x {
		lo, hi = min(lo, v), max(hi, v)
	}
	switch rng.IntN(6) {
	case 0:
		return uint16(1 + rng.IntN(1023)), fp.Float32ToHalf(lo) // fp16 denormal scale
	case 1:
		return fp.Float32ToHalf(float32(math.Exp(rng.NormFloat64() * 5))), fp.Float32ToHalf(float32(rng.NormFloat64() * 100))
	case 2:
		return uint16(rng.IntN(0x7c00)), uint16(rng.IntN(0x7c00)) | uint16(rng.IntN(2))<<15
	case 3:
		return 0x7bff, 0xfbff // 65504, -65504
	}
	beta := float32(0.3 + rng.Float64()*0.8)
	if lo >= -65504 && hi <= 65504 && lo < hi {
		return Shrink(lo, hi, bits, beta)
	}
	return fp.Float32ToHalf(1), 0
}

// Every vector kernel's sums equal the portable kernel's bit for bit,
// lane for lane, on random and adversarial rows and params.
func TestEvalLanesBitIdentical(t *testing.T) {
	ks := vectorKernels()
	if len(ks) == 0 {
		t.Skip("no vector kernel on this CPU/build")
	}
	rng := rand.New(rand.NewPCG(7, 11))
	for it := range 3000 {
		rows := 1 + rng.IntN(80)
		bits := []int{2, 4, 8}[it%3]
		xt := adversarial(rng, 2*Lanes*rows, 0, 0, it)
		var wt []float32
		for range xt {
			wt = append(wt, []float32{0, 1, float32(rng.ExpFloat64()), float32(rng.NormFloat64() * rng.NormFloat64()), 1e-30, 3e4}[rng.IntN(6)])
		}
		var a laneArgs
		for k := 0; k < Lanes; k++ {
			a.qmax[2*k], a.qmax[2*k+1] = float32(int64(1)<<bits-1), float32(int64(1)<<bits-1)
			g := make([]float32, 2*rows)
			for j := 0; j < rows; j++ {
				g[2*j], g[2*j+1] = xt[16*j+2*k], xt[16*j+2*k+1]
			}
			sh, mh := randomParams(rng, g, bits)
			s, m := fp.HalfToFloat32(sh), fp.HalfToFloat32(mh)
			if it%5 == 1 { // ties need the params the values were made for
				s, m = 0.25, -1
			}
			if s-s != 0 || m-m != 0 || s < 0 {
				s, m = 1, 0
			}
			var inv float32
			if s != 0 {
				inv = 1 / s
			}
			a.s[2*k], a.s[2*k+1] = s, s
			a.m[2*k], a.m[2*k+1] = m, m
			a.inv[2*k], a.inv[2*k+1] = inv, inv
		}
		if it%5 == 1 {
			xt = adversarial(rng, 2*Lanes*rows, 0.25, -1, 1)
		}
		var want, wantW laneOut
		evalLanesGo(xt, &a, &want)
		evalLanesWeightedGo(xt, wt, &a, &wantW)
		for _, k := range ks {
			var got, gotW laneOut
			evalLanesWith(k, &xt[0], rows, &a, &got)
			evalLanesWeightedWith(k, &xt[0], &wt[0], rows, &a, &gotW)
			if !sameBits(got.e[:], want.e[:]) || !sameBits(got.r[:], want.r[:]) || !sameBits(got.rq[:], want.rq[:]) || got.qi != want.qi || got.qqi != want.qqi {
				t.Fatalf("it %d %s: unweighted sums differ:\n got %+v\nwant %+v\nargs %+v", it, k, got, want, a)
			}
			if !sameBits(gotW.e[:], wantW.e[:]) || !sameBits(gotW.r[:], wantW.r[:]) || !sameBits(gotW.rq[:], wantW.rq[:]) ||
				!sameBits(gotW.q[:], wantW.q[:]) || !sameBits(gotW.qq[:], wantW.qq[:]) {
				t.Fatalf("it %d %s: weighted sums differ:\n got %+v\nwant %+v", it, k, gotW, wantW)
			}
		}
	}
}

func sameBits(a, b []float32) bool {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) && !(a[i] != a[i] && b[i] != b[i]) {
			return false
		}
	}
	return true
}

// A Batch's sums for each lane are Eval's (EvalWeighted's) for the
// lane's group, whichever kernel runs, for every group length and lane
// count.
func TestBatchTryMatchesEval(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	var b Batch
	for it := range 2000 {
		bits := []int{2, 4, 8}[it%3]
		l := 1 + rng.IntN(300)
		if it%4 == 0 {
			l = 128
		}
		n := 1 + rng.IntN(Lanes)
		weighted := it%2 == 1
		b.Reset(l, bits, weighted)
		var sh, mh [Lanes]uint16
		for k := 0; k < n; k++ {
			x := adversarial(rng, l, 0, 0, rng.IntN(8))
			if rng.IntN(3) == 0 {
				x = adversarial(rng, l, 0.25, -1, 1)
			}
			var w []float32
			if weighted {
				w = make([]float32, l)
				for i := range w {
					w[i] = float32(rng.ExpFloat64())
				}
			}
			b.Add(x, w)
			sh[k], mh[k] = randomParams(rng, x, bits)
			if !ValidParams(sh[k], mh[k]) {
				sh[k], mh[k] = 0x3c00, 0
			}
		}
		mask := Mask(rng.IntN(1<<n)) | 1
		var st [Lanes]Stats
		b.Try(&st, &sh, &mh, mask)
		for k := 0; k < n; k++ {
			if mask&(1<<k) == 0 {
				continue
			}
			var want Stats
			if weighted {
				EvalWeighted(&want, b.x[k], b.w[k], sh[k], mh[k], int64(1)<<bits-1)
			} else {
				Eval(&want, b.x[k], sh[k], mh[k], int64(1)<<bits-1)
			}
			if !sameStats(st[k], want) {
				t.Fatalf("it %d lane %d (l %d, %d lanes, weighted %v, kernel %s):\n got %+v\nwant %+v", it, k, l, n, weighted, Kernel(), st[k], want)
			}
		}
	}
}

func sameStats(a, b Stats) bool {
	f := func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) }
	return f(a.Err, b.Err) && f(a.R, b.R) && f(a.RQ, b.RQ) && f(a.Q, b.Q) && f(a.QQ, b.QQ) && f(a.N, b.N) &&
		a.ScaleH == b.ScaleH && a.MinH == b.MinH && math.Float32bits(a.Scale) == math.Float32bits(b.Scale) &&
		math.Float32bits(a.Min) == math.Float32bits(b.Min) && a.Weighted == b.Weighted
}

// The clamp-then-truncate code of the kernels is the pack kernel's code.
func TestCodeMatchesPack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for it := range 200000 {
		bits := []int{2, 4, 8}[it%3]
		x := adversarial(rng, 4, 0.25, -1, it)
		sh, mh := randomParams(rng, x, bits)
		if !ValidParams(sh, mh) {
			continue
		}
		codes := make([]byte, 4)
		kernels.PackGroups(codes, x, []uint16{sh}, []uint16{mh}, bits, 4)
		s, m := fp.HalfToFloat32(sh), fp.HalfToFloat32(mh)
		for i, v := range x {
			if got, want := code(v, m, 1/s, float32(kernels.QMax(bits))), float32(kernels.Code(codes, i, bits)); got != want {
				t.Fatalf("x %v s %v m %v: code %v, pack %v", v, s, m, got, want)
			}
		}
	}
}

func BenchmarkEvalLanes(b *testing.B) {
	x := normal(1<<16, 3)
	var bt Batch
	sh, mh := [Lanes]uint16{}, [Lanes]uint16{}
	for k := range sh {
		sh[k], mh[k] = fp.Float32ToHalf(0.6), fp.Float32ToHalf(-2.5)
	}
	b.SetBytes(4 << 16)
	var st [Lanes]Stats
	for b.Loop() {
		for g := 0; g < len(x); g += 128 * Lanes {
			bt.Reset(128, 4, false)
			for k := 0; k < Lanes; k++ {
				bt.Add(x[g+128*k:g+128*(k+1)], nil)
			}
			bt.Try(&st, &sh, &mh, bt.All())
		}
	}
}

// interleaveLanes (AVX2 where the CPU has it) puts element 2j+p of lane k
// at 16j+2k+p for every even length and lane count; lanes past n hold
// lane 0.
func TestInterleaveLanesLayout(t *testing.T) {
	for _, l := range []int{2, 6, 8, 10, 16, 30, 32, 128, 130, 256} {
		for n := 1; n <= Lanes; n++ {
			var src [Lanes][]float32
			for k := range n {
				src[k] = make([]float32, l)
				for i := range src[k] {
					src[k][i] = float32(1000*k + i)
				}
			}
			dst := make([]float32, 8*l)
			interleaveLanes(dst, &src, n)
			for j := 0; j < l/2; j++ {
				for k := range Lanes {
					for p := range 2 {
						want := float32(1000*k + 2*j + p)
						if k >= n {
							want = float32(2*j + p)
						}
						if got := dst[16*j+2*k+p]; got != want {
							t.Fatalf("l %d n %d: dst[%d] (pair %d lane %d) = %v, want %v", l, n, 16*j+2*k+p, j, k, got, want)
						}
					}
				}
			}
		}
	}
}

// evalLanes picks a kernel by the group length (the float32 code sums
// of avx2-f32q only while they are exact): at and past that limit, with
// every code at qmax (the largest sums), the sums are the portable
// kernel's. Only INT8 reaches the limit below maxVectorLen (INT4 would
// at 74,565 rows, INT2 at 1.86 M).
func TestEvalLanesCodeSumLimit(t *testing.T) {
	for _, bits := range []int{8} {
		qmax := float32(int64(1)<<bits - 1)
		limit := int(float64(1<<24) / float64(qmax*qmax)) // rows·qmax² < 2^24 below it
		for _, rows := range []int{limit - 1, limit, limit + 1, 2 * limit} {
			var a laneArgs
			for i := range a.s {
				a.s[i], a.m[i], a.inv[i], a.qmax[i] = 1, 0, 1, qmax
			}
			xt := make([]float32, 2*Lanes*rows)
			for i := range xt {
				xt[i] = 1000 + float32(i%7) // every code clamps to qmax
			}
			xt[0] = 0.4 // one code 0, so the sums are not all multiples
			var want, got laneOut
			evalLanesGo(xt, &a, &want)
			evalLanes(xt, &a, &got)
			if got.qi != want.qi || got.qqi != want.qqi || !sameBits(got.e[:], want.e[:]) {
				t.Fatalf("INT%d rows %d: code sums %v %v, want %v %v", bits, rows, got.qi[:2], got.qqi[:2], want.qi[:2], want.qqi[:2])
			}
			if wantQQ := int32(rows) * int32(qmax*qmax); want.qqi[1] != wantQQ {
				t.Fatalf("INT%d rows %d: Σq² %d, want %d", bits, rows, want.qqi[1], wantQQ)
			}
		}
	}
}

// BenchmarkEvalLanesKernel times each vector kernel alone: one pass over
// 8 INT2 groups of 128 (no layout, no Go around it).
func BenchmarkEvalLanesKernel(b *testing.B) {
	for _, k := range vectorKernels() {
		b.Run(k, func(b *testing.B) {
			x := normal(128*Lanes, 3)
			var bt Batch
			bt.Reset(128, 2, false)
			for k := 0; k < Lanes; k++ {
				bt.Add(x[128*k:128*(k+1)], nil)
			}
			bt.layOut()
			a := &bt.args
			for k := range 2 * Lanes {
				a.s[k], a.m[k], a.inv[k] = 0.6, -1.2, 1/0.6
			}
			b.SetBytes(4 * 128 * Lanes)
			for b.Loop() {
				evalLanesWith(k, &bt.xt[0], 64, a, &bt.out)
			}
		})
	}
}

// The weights' sums the weighted finish takes (wn) are each lane's two
// float32 chains over its even and odd elements in element order, as
// EvalWeighted sums them, bit for bit, for every batch size and group
// length, with weights of very different magnitudes (where the order of
// the additions shows).
func TestPairSumsAreTheLanesChains(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for trial := range 300 {
		l := 2 * (1 + rng.IntN(160))
		n := 1 + rng.IntN(Lanes)
		var bt Batch
		bt.Reset(l, 2+2*rng.IntN(2), true)
		ws := make([][]float32, n)
		for k := range n {
			ws[k] = make([]float32, l)
			for i := range ws[k] {
				ws[k][i] = float32(math.Exp(rng.NormFloat64() * 6))
			}
			bt.Add(normal(l, uint64(trial*Lanes+k)), ws[k])
		}
		bt.layOut()
		for k := range n {
			var n0, n1 float32
			for i := 0; i < l; i += 2 {
				n0 += ws[k][i]
				n1 += ws[k][i+1]
			}
			if got := [2]float32{bt.wn[2*k], bt.wn[2*k+1]}; math.Float32bits(got[0]) != math.Float32bits(n0) || math.Float32bits(got[1]) != math.Float32bits(n1) {
				t.Fatalf("l=%d n=%d lane %d: sums %v, want %v", l, n, k, got, [2]float32{n0, n1})
			}
		}
		var goSums [2 * Lanes]float32
		pairSumsGo(bt.wt, &goSums)
		if goSums != bt.wn {
			t.Fatalf("l=%d n=%d: pairSums %v, its Go form %v", l, n, bt.wn, goSums)
		}
	}
}
