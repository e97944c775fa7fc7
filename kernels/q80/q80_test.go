package q80_test

import (
	"math"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/internal/methodtest"
	"github.com/arrowquant/arrowquant/kernels/q80"
)

func TestMethod(t *testing.T) {
	methodtest.Run(t, q80.Name, q80.GroupParams, methodtest.Options{
		Symmetric: func(bits int) bool { return bits == 8 },
		// minmax's own params at INT2/INT4: nothing to improve on.
		Baseline: true,
	})
}

// The package comment's proof, checked for every fp16 d the method can
// store (0 <= d <= 511.75) and every code: the artifact's reconstruction
// float32(float32(c)·d) + (−128·d) equals ggml's Q8_0 value
// float32(c−128)·d bit for bit, and −128·d is an exact fp16 value. For
// d = 0 (an all-zero group, every code 0 from the packer) the values are
// +0 against ggml's (−128)·0 = −0: the GGUF exporter writes q = 0 there.
func TestReconstructionIsQ8_0Exactly(t *testing.T) {
	checked := 0
	for h := uint16(0); h <= 0x5FFF; h++ { // +0 .. 511.75, subnormals included
		d := fp.HalfToFloat32(h)
		m16 := fp.Float32ToHalf(-128 * d)
		m := fp.HalfToFloat32(m16)
		if m != -128*d {
			t.Fatalf("d %v (%#04x): -128·d = %v is not an fp16 value (got %v)", d, h, -128*d, m)
		}
		if !q80.Symmetric(h, m16, 8) {
			t.Fatalf("d %#04x: params not recognized as symmetric", h)
		}
		for c := int32(0); c < 256; c++ {
			if d == 0 && c != 128 {
				continue
			}
			ours := kernels.DequantizeValue(c, d, m)
			ggml := float32(c-128) * d
			if math.Float32bits(ours) != math.Float32bits(ggml) {
				t.Fatalf("d %v code %d: artifact %v (%#08x), Q8_0 %v (%#08x)", d, c, ours, math.Float32bits(ours), ggml, math.Float32bits(ggml))
			}
			checked++
		}
	}
	if fp.HalfToFloat32(0x5FFF) != 511.75 || fp.HalfToFloat32(0x6000) != 512 {
		t.Fatal("fp16 bounds of the check moved")
	}
	t.Logf("%d (d, code) pairs bit-identical", checked)
}

// refQ8_0 is llama.cpp's quantize_row_q8_0_ref as specified: d = amax/127
// in float32, codes roundf(x·(1/d)) from that unrounded d, d stored fp16.
func refQ8_0(x []float32) (d uint16, q []int8) {
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	df := amax / 127
	var id float32
	if df != 0 {
		id = 1 / df
	}
	q = make([]int8, len(x))
	for i, v := range x {
		q[i] = int8(math.Round(float64(v * id))) // roundf: half away from zero
	}
	return fp.Float32ToHalf(df), q
}

// Same d as llama.cpp's reference; codes are rounded for the stored d
// (the reference's for the unrounded one), so no group's error is
// larger than the reference's beyond float32 rounding, nor the total.
func TestMatchesLlamaCppReference(t *testing.T) {
	for _, x := range [][]float32{methodtest.Normal(1<<18, 21), methodtest.Laplace(1<<18, 22)} {
		scales, mins := make([]uint16, len(x)/32), make([]uint16, len(x)/32)
		if err := q80.GroupParams(x, 8, 32, scales, mins, 0); err != nil {
			t.Fatal(err)
		}
		codes := make([]byte, len(x))
		kernels.PackGroups(codes, x, scales, mins, 8, 32)
		recon := make([]float32, len(x))
		kernels.DequantizeGroups(recon, codes, scales, mins, 8, 32)
		differ := 0
		var ours, theirs kernels.Similarity
		for g := range scales {
			grp := x[32*g : 32*g+32]
			d, q := refQ8_0(grp)
			if d != scales[g] {
				t.Fatalf("group %d: d %#04x, llama.cpp %#04x", g, scales[g], d)
			}
			ref := make([]float32, 32)
			var e1, e2 float64
			for i := range grp {
				ref[i] = float32(q[i]) * fp.HalfToFloat32(d)
				if int32(codes[32*g+i])-128 != int32(q[i]) {
					differ++
				}
				e1 += sq(grp[i] - recon[32*g+i])
				e2 += sq(grp[i] - ref[i])
			}
			// float32 rounding of (x+128d)/d may pick the other of two
			// nearly equidistant codes.
			if e1 > e2*(1+1e-4) {
				t.Fatalf("group %d: error %v above llama.cpp's %v", g, e1, e2)
			}
			ours.Add(kernels.SimilarityOf(grp, recon[32*g:32*g+32]))
			theirs.Add(kernels.SimilarityOf(grp, ref))
		}
		if c := ours.Cosine(); c < 0.99997 || ours.Err2 > theirs.Err2*(1+1e-6) {
			t.Errorf("cosine %.7f, llama.cpp's reference %.7f", c, theirs.Cosine())
		}
		t.Logf("cosine %.7f (llama.cpp reference %.7f); %d of %d codes differ from the reference", ours.Cosine(), theirs.Cosine(), differ, len(x))
	}
}

func sq(v float32) float64 { return float64(v) * float64(v) }

// Values at the edge of fp16 are stored with d capped at 511.75 so that
// min = -128·d stays an fp16 value.
func TestLargeValuesCapD(t *testing.T) {
	x := make([]float32, 32)
	x[0], x[1] = 65504, -65504
	scales, mins := make([]uint16, 1), make([]uint16, 1)
	if err := q80.GroupParams(x, 8, 32, scales, mins, 0); err != nil {
		t.Fatal(err)
	}
	if d := fp.HalfToFloat32(scales[0]); d != 511.75 || !q80.Symmetric(scales[0], mins[0], 8) {
		t.Fatalf("d %v min %v", d, fp.HalfToFloat32(mins[0]))
	}
	if !q80.Symmetric(0, 0, 8) || q80.Symmetric(0x3c00, 0xd800, 8) == false || q80.Symmetric(0xbc00, 0x5800, 8) {
		t.Fatal("Symmetric: zero group, d=1/min=-128 accepted; negative d refused")
	}
}
