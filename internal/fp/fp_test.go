package fp

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestHalfKnownVectors(t *testing.T) {
	cases := map[uint16]float32{0x0000: 0, 0x3c00: 1, 0xc000: -2, 0x7bff: 65504, 0x0001: 5.9604645e-08, 0x3555: 0.33325195}
	for bits, want := range cases {
		if got := HalfToFloat32(bits); got != want {
			t.Errorf("half %#04x = %v, want %v", bits, got, want)
		}
		if back := Float32ToHalf(want); back != bits {
			t.Errorf("Float32ToHalf(%v) = %#04x, want %#04x", want, back, bits)
		}
	}
	if !math.IsInf(float64(HalfToFloat32(0x7c00)), 1) {
		t.Error("0x7c00 must decode to +Inf")
	}
}

func TestBF16RoundTripAndRounding(t *testing.T) {
	for _, f := range []float32{0, 1, -1.5, 3.140625, 1e30, -1e-30} {
		if got := BF16ToFloat32(Float32ToBF16(f)); math.Abs(float64(got-f)) > math.Abs(float64(f))/128 {
			t.Errorf("bf16 round trip %v -> %v", f, got)
		}
	}
	// 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
	if got := Float32ToBF16(1 + 1.0/256); got != 0x3f80 {
		t.Errorf("tie rounding: got %#04x, want 0x3f80", got)
	}
	if got := Float32ToBF16(float32(math.NaN())); got&0x7f80 != 0x7f80 || got&0x7f == 0 {
		t.Errorf("NaN must stay NaN, got %#04x", got)
	}
}

func TestEncodeDecodeLittleEndian(t *testing.T) {
	src := []float32{1, -2, 0.5, 65504}
	b := make([]byte, 4*len(src))
	EncodeF32(b, src)
	if b[0] != 0 || b[3] != 0x3f {
		t.Fatalf("float32 1.0 must be 00 00 80 3f, got % x", b[:4])
	}
	out := make([]float32, len(src))
	DecodeF32(out, b)
	h := make([]byte, 2*len(src))
	EncodeHalf(h, src)
	outH := make([]float32, len(src))
	DecodeHalf(outH, h)
	EncodeBF16(h, src)
	outB := make([]float32, len(src))
	DecodeBF16(outB, h)
	for i := range src {
		if out[i] != src[i] || outH[i] != src[i] {
			t.Errorf("%d: f32 %v half %v want %v", i, out[i], outH[i], src[i])
		}
	}
	if outB[3] != 65536 { // 65504 rounds to 65536 in bf16
		t.Errorf("bf16(65504) = %v, want 65536", outB[3])
	}
	DecodeHalf(nil, nil)
}

func TestHalfExhaustiveRoundTrip(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := HalfToFloat32(h)
		if f != f { // NaN
			if g := Float32ToHalf(f); g&0x7c00 != 0x7c00 || g&0x3ff == 0 {
				t.Fatalf("NaN %#04x re-encoded as %#04x", h, g)
			}
			continue
		}
		if g := Float32ToHalf(f); g != h {
			t.Fatalf("half %#04x -> %v -> %#04x", h, f, g)
		}
	}
	// Ties to even between 1 and 1+2^-10, and rounding just above the tie.
	if g := Float32ToHalf(1 + 1.0/2048); g != 0x3c00 {
		t.Errorf("tie: %#04x", g)
	}
	if g := Float32ToHalf(1 + 1.0/2048 + 1.0/65536); g != 0x3c01 {
		t.Errorf("above tie: %#04x", g)
	}
	if g := Float32ToHalf(65520); g != 0x7c00 {
		t.Errorf("65520 must overflow to Inf: %#04x", g)
	}
	if g := Float32ToHalf(65519); g != 0x7bff {
		t.Errorf("65519 must round to 65504: %#04x", g)
	}
}

// DecodeBF16s (AVX2 where available) widens every bit pattern exactly,
// at every length and alignment of the tail.
func TestDecodeBF16sEveryPattern(t *testing.T) {
	src := make([]uint16, 1<<16)
	for i := range src {
		src[i] = uint16(i)
	}
	for _, off := range []int{0, 1, 3, 7} {
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 1<<16 - 7} {
			s := src[off : off+n]
			dst := make([]float32, n+1)
			dst[n] = 42
			DecodeBF16s(dst[:n], s)
			for i, b := range s {
				if got := math.Float32bits(dst[i]); got != uint32(b)<<16 {
					t.Fatalf("off %d n %d: element %d: bits %#x, want %#x", off, n, i, got, uint32(b)<<16)
				}
			}
			if dst[n] != 42 {
				t.Fatalf("off %d n %d: wrote past the end", off, n)
			}
		}
	}
}

// MulInto's products are the scalar float32 products bit for bit, for
// every length (vector body and tail), in place too.
func TestMulInto(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for n := range 70 {
		a, b := make([]float32, n), make([]float32, n)
		for i := range a {
			a[i] = math.Float32frombits(rng.Uint32())
			b[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()*8))
			if i%11 == 3 {
				b[i] = float32(math.Inf(1 - 2*(i%2)))
			}
		}
		got := make([]float32, n)
		MulInto(got, a, b)
		for i := range a {
			want := a[i] * b[i]
			if math.Float32bits(got[i]) != math.Float32bits(want) && !(want != want && got[i] != got[i]) {
				t.Fatalf("n %d i %d: %v·%v = %v, want %v", n, i, a[i], b[i], got[i], want)
			}
		}
		MulInto(a, a, b)
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(got[i]) {
				t.Fatalf("n %d i %d in place: %v, want %v", n, i, a[i], got[i])
			}
		}
	}
}
