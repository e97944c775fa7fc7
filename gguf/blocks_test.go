package gguf

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/methods"
)

// Known vectors: blocks whose bytes are derived by hand from the layouts
// of REFERENCE §7 and gguf-py's quants.py (the derivation is in the
// comments), not from the packers.

// Q4_1: one group of 32 (scale 1.0 = 0x3C00, min -8 = 0xC800), codes
// q[i] = i mod 16. Ours packs element 2k low / 2k+1 high, so byte k is
// 0x10, 0x32, ..., 0xFE twice; Q4_1 byte j holds q[j] low and q[j+16]
// high = j | j<<4: 0x00, 0x11, ..., 0xFF.
func TestQ41KnownVector(t *testing.T) {
	codes := []byte{0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE, 0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE}
	dst := make([]byte, 20)
	if err := Q41FromGroups(dst, codes, []uint16{0x3C00}, []uint16{0xC800}, 4, 32, 32); err != nil {
		t.Fatal(err)
	}
	want := []byte{0x00, 0x3C, 0x00, 0xC8, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF}
	if !bytes.Equal(dst, want) {
		t.Fatalf("Q4_1 block\n got % X\nwant % X", dst, want)
	}
	y := make([]float32, 32)
	if err := Dequantize(Q4_1, dst, y); err != nil {
		t.Fatal(err)
	}
	for i, v := range y { // q·1 - 8
		if v != float32(i%16)-8 {
			t.Fatalf("element %d = %v, want %v", i, v, float32(i%16)-8)
		}
	}
	// 2-bit codes: q[i] = i mod 4 packs to 0xE4 per byte; as Q4_1 byte j
	// holds (j mod 4) | (j+16 mod 4)<<4 = (j mod 4)·0x11.
	codes2 := bytes.Repeat([]byte{0xE4}, 8)
	if err := Q41FromGroups(dst, codes2, []uint16{0x3C00}, []uint16{0}, 2, 32, 32); err != nil {
		t.Fatal(err)
	}
	for j := range 16 {
		if dst[4+j] != byte(j%4)*0x11 {
			t.Fatalf("2-bit as Q4_1: byte %d = %#x", j, dst[4+j])
		}
	}
}

// Q8_0: scale 1.0 (0x3C00), min -128 (0xD800); codes 0, 1, 127, 128,
// 129, 255 are q = c - 128: int8 0x80, 0x81, 0xFF, 0x00, 0x01, 0x7F.
func TestQ80KnownVector(t *testing.T) {
	codes := make([]byte, 64)
	copy(codes, []byte{0, 1, 127, 128, 129, 255})
	for i := 6; i < 32; i++ {
		codes[i] = 128
	}
	// group 2: scale 0 (an all-zero group): codes 0, q written as 0.
	dst := make([]byte, 68)
	if err := Q80FromGroups(dst, codes, []uint16{0x3C00, 0}, []uint16{0xD800, 0}, 32, 64); err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0x00, 0x3C, 0x80, 0x81, 0xFF, 0x00, 0x01, 0x7F}, make([]byte, 26)...)
	want = append(want, make([]byte, 34)...)
	if !bytes.Equal(dst, want) {
		t.Fatalf("Q8_0 blocks\n got % X\nwant % X", dst, want)
	}
	y := make([]float32, 64)
	if err := Dequantize(Q8_0, dst, y); err != nil {
		t.Fatal(err)
	}
	for i, w := range []float32{-128, -127, -1, 0, 1, 127} {
		if y[i] != w {
			t.Fatalf("element %d = %v, want %v", i, y[i], w)
		}
	}
	for _, v := range y[32:] {
		if math.Float32bits(v) != 0 {
			t.Fatalf("zero group dequantizes to %v (bits %#x), want +0", v, math.Float32bits(v))
		}
	}
	// A group that is not q8_0's (min ≠ -128·scale) is refused by index.
	err := Q80FromGroups(dst, codes, []uint16{0x3C00, 0x3C00}, []uint16{0xD800, 0xD7FF}, 32, 64)
	if err == nil || !strings.Contains(err.Error(), "group 1") {
		t.Fatalf("asymmetric group: %v", err)
	}
}

// superParams encodes one super-block's params with the artifact's own
// (separately tested) encoder.
func superParams(bits int, d, dmin uint16, sc, mc []uint8) []byte {
	g, pb, bpsb, _ := kernels.SuperBlockLayout(bits)
	nsub := 256 / g
	p := kernels.SuperBlockParams{D: d, DMin: dmin}
	copy(p.Sc[:], sc)
	copy(p.Mc[:], mc)
	out := make([]byte, bpsb)
	kernels.EncodeSuperBlockParams(out, &p, nsub, pb)
	return out
}

// Q4_K: d 1.0, dmin 0.5, sub-scales sc = 0, 9, ..., 63 and sub-mins
// mc = 63, 54, ..., 0. Scale bytes (j < 4): s[j] = sc_j | (sc_{j+4}>>4)<<6,
// s[j+4] = mc_j | (mc_{j+4}>>4)<<6, s[j+8] = sc_{j+4}&15 | (mc_{j+4}&15)<<4:
//
//	s[0] = 0 | 2<<6 = 0x80, s[4] = 63 | 1<<6 = 0x7F, s[8]  = 4 | 11<<4 = 0xB4
//	s[1] = 9 | 2<<6 = 0x89, s[5] = 54 | 1<<6 = 0x76, s[9]  = 13 | 2<<4 = 0x2D
//	s[2] = 18 | 3<<6 = 0xD2, s[6] = 45 | 0 = 0x2D,  s[10] = 6 | 9<<4 = 0x96
//	s[3] = 27 | 3<<6 = 0xDB, s[7] = 36 | 0 = 0x24,  s[11] = 15 | 0 = 0x0F
//
// Codes q[e] = (e/16) mod 16; byte l of chunk c holds q[64c+l] low and
// q[64c+32+l] high: 0x20 (l < 16) and 0x31 for c = 0, then 0x64/0x75,
// 0xA8/0xB9, 0xEC/0xFD.
func TestQ4KKnownVector(t *testing.T) {
	sc := []uint8{0, 9, 18, 27, 36, 45, 54, 63}
	mc := []uint8{63, 54, 45, 36, 27, 18, 9, 0}
	params := superParams(4, 0x3C00, 0x3800, sc, mc)
	codes := make([]byte, 128)
	for k := range codes { // elements 2k, 2k+1 share (2k/16) mod 16
		codes[k] = byte((k/8)%16) * 0x11
	}
	dst := make([]byte, 144)
	if err := Q4KFromSuperBlocks(dst, codes, params, 256); err != nil {
		t.Fatal(err)
	}
	want := []byte{0x00, 0x3C, 0x00, 0x38, 0x80, 0x89, 0xD2, 0xDB, 0x7F, 0x76, 0x2D, 0x24, 0xB4, 0x2D, 0x96, 0x0F}
	for _, pair := range [][2]byte{{0x20, 0x31}, {0x64, 0x75}, {0xA8, 0xB9}, {0xEC, 0xFD}} {
		want = append(want, bytes.Repeat(pair[:1], 16)...)
		want = append(want, bytes.Repeat(pair[1:], 16)...)
	}
	if !bytes.Equal(dst, want) {
		t.Fatalf("Q4_K block\n got % X\nwant % X", dst, want)
	}
	y := make([]float32, 256)
	if err := Dequantize(Q4_K, dst, y); err != nil {
		t.Fatal(err)
	}
	// e = 100: sub-block 3 (sc 27, mc 36), q 6: 27·6 − 0.5·36 = 144;
	// e = 200: sub-block 6 (sc 54, mc 9), q 12: 54·12 − 4.5 = 643.5.
	if y[100] != 144 || y[200] != 643.5 {
		t.Fatalf("y[100] = %v (want 144), y[200] = %v (want 643.5)", y[100], y[200])
	}
	ours := make([]float32, 256)
	if err := kernels.DequantizeSuperBlocks(ours, codes, params, 4); err != nil {
		t.Fatal(err)
	}
	assertBits(t, "Q4_K", ours, y)
}

// Q2_K: d 1.0, dmin 0.5, sc_j = j, mc_j = 15 − j, so scales[j] = j |
// (15−j)<<4 = 0xF0, 0xE1, ..., 0x0F. Codes q[e] = e mod 4 pack to 0xE4 in
// ours; Q2_K byte 32h+l holds q[128h+32j+l] at bits 2j, all equal to
// l mod 4: (l mod 4)·0x55. d and dmin close the block.
func TestQ2KKnownVector(t *testing.T) {
	sc, mc := make([]uint8, 16), make([]uint8, 16)
	for j := range 16 {
		sc[j], mc[j] = uint8(j), uint8(15-j)
	}
	params := superParams(2, 0x3C00, 0x3800, sc, mc)
	codes := bytes.Repeat([]byte{0xE4}, 64)
	dst := make([]byte, 84)
	if err := Q2KFromSuperBlocks(dst, codes, params, 256); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for j := range 16 {
		want = append(want, byte(j)|byte(15-j)<<4)
	}
	for l := range 64 {
		want = append(want, byte(l%4)*0x55)
	}
	want = append(want, 0x00, 0x3C, 0x00, 0x38)
	if !bytes.Equal(dst, want) {
		t.Fatalf("Q2_K block\n got % X\nwant % X", dst, want)
	}
	y := make([]float32, 256)
	if err := Dequantize(Q2_K, dst, y); err != nil {
		t.Fatal(err)
	}
	// e = 37: sub-block 2 (sc 2, mc 13), q 1: 2 − 6.5; e = 255: sub-block
	// 15 (sc 15, mc 0), q 3: 45.
	if y[37] != -4.5 || y[255] != 45 {
		t.Fatalf("y[37] = %v (want -4.5), y[255] = %v (want 45)", y[37], y[255])
	}
	ours := make([]float32, 256)
	if err := kernels.DequantizeSuperBlocks(ours, codes, params, 2); err != nil {
		t.Fatal(err)
	}
	assertBits(t, "Q2_K", ours, y)
}

func assertBits(t *testing.T, what string, want, got []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			t.Fatalf("%s element %d: ggml %v (%#08x), artifact %v (%#08x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

// randHalf is a random finite fp16 (any sign, subnormals, zeros), or one
// in [lo, hi] when hi > lo.
func randHalf(rng *rand.Rand) uint16 {
	for {
		h := uint16(rng.Uint32())
		if h&0x7C00 != 0x7C00 {
			return h
		}
	}
}

// Round trip, property style: random stored rows of every exact layout
// (random fp16 params over the whole finite range, negative d/dmin and
// subnormals included, random codes) repacked and dequantized by the
// reference dequantizer give the artifact's dequantization bit for bit.
func TestRepackRoundTripBitExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 40 {
		n := 256 * (1 + rng.IntN(12))
		// Super-blocks at 4 and 2 bits.
		for _, bits := range []int{4, 2} {
			_, _, bpsb, _ := kernels.SuperBlockLayout(bits)
			codes := randBytes(rng, int(kernels.PackedLen(int64(n), bits)))
			params := make([]byte, n/256*bpsb)
			for b := range n / 256 {
				g, pb, _, _ := kernels.SuperBlockLayout(bits)
				sc, mc := make([]uint8, 256/g), make([]uint8, 256/g)
				for j := range sc {
					sc[j], mc[j] = uint8(rng.IntN(1<<pb)), uint8(rng.IntN(1<<pb))
				}
				d, dmin := randHalf(rng), randHalf(rng)
				if trial%4 == 0 { // realistic magnitudes too
					d, dmin = fp.Float32ToHalf(rng.Float32()*0.01), fp.Float32ToHalf(rng.Float32()*0.05)
				}
				copy(params[b*bpsb:], superParams(bits, d, dmin, sc, mc))
			}
			want := make([]float32, n)
			if err := kernels.DequantizeSuperBlocks(want, codes, params, bits); err != nil {
				t.Fatal(err)
			}
			typ, repack := Q4_K, Q4KFromSuperBlocks
			if bits == 2 {
				typ, repack = Q2_K, Q2KFromSuperBlocks
			}
			blocks := make([]byte, n/256*typ.BlockBytes())
			if err := repack(blocks, codes, params, n); err != nil {
				t.Fatal(err)
			}
			got := make([]float32, n)
			if err := Dequantize(typ, blocks, got); err != nil {
				t.Fatal(err)
			}
			assertBits(t, typ.String(), want, got)
		}
		// Per-group rows: INT4 and INT2 as Q4_1, q8_0 INT8 as Q8_0.
		for _, c := range []struct{ bits, group int }{{4, 32}, {4, 64}, {4, 128}, {4, 256}, {2, 32}, {2, 128}, {8, 32}, {8, 64}} {
			ng := n / c.group
			scales, mins := make([]uint16, ng), make([]uint16, ng)
			for g := range ng {
				scales[g], mins[g] = randHalf(rng), randHalf(rng)
				if c.bits == 8 {
					s := fp.HalfToFloat32(randHalf(rng))
					s = float32(math.Mod(math.Abs(float64(s)), 511.75))
					scales[g] = fp.Float32ToHalf(s)
					mins[g] = fp.Float32ToHalf(-128 * fp.HalfToFloat32(scales[g]))
				}
			}
			codes := randBytes(rng, int(kernels.PackedLen(int64(n), c.bits)))
			want := make([]float32, n)
			kernels.DequantizeGroups(want, codes, scales, mins, c.bits, c.group)
			typ := Q4_1
			if c.bits == 8 {
				typ = Q8_0
			}
			blocks := make([]byte, n/32*typ.BlockBytes())
			var err error
			if c.bits == 8 {
				err = Q80FromGroups(blocks, codes, scales, mins, c.group, n)
			} else {
				err = Q41FromGroups(blocks, codes, scales, mins, c.bits, c.group, n)
			}
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, n)
			if err := Dequantize(typ, blocks, got); err != nil {
				t.Fatal(err)
			}
			for g := range ng { // an all-zero q8_0 group: +0 by the exporter's rule
				if c.bits == 8 && scales[g] == 0 {
					for k := g * c.group; k < (g+1)*c.group; k++ {
						want[k] = 0
					}
				}
			}
			assertBits(t, typ.String(), want, got)
		}
	}
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// Re-encoding goes through our kernels and the same repackers: Q4_K/Q2_K
// blocks dequantize to exactly the dq method's reconstruction of the same
// values, Q4_1 to lsq's at group 32, Q8_0 to q8_0's; cosines are as
// expected of each type.
func TestEncoderUsesOurKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	var enc Encoder
	for _, c := range []struct {
		typ    Type
		minCos float64
	}{{Q4_K, 0.996}, {Q2_K, 0.95}, {Q4_1, 0.996}, {Q8_0, 0.99998}, {F16, 0.9999999}, {BF16, 0.99999}, {F32, 1}} {
		dst := make([]byte, len(x)/c.typ.BlockSize()*c.typ.BlockBytes())
		if err := enc.Encode(c.typ, x, dst, 0); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, len(x))
		if err := Dequantize(c.typ, dst, got); err != nil {
			t.Fatal(err)
		}
		if cos := kernels.SimilarityOf(x, got).Cosine(); cos < c.minCos {
			t.Errorf("%v: cosine %.7f < %v", c.typ, cos, c.minCos)
		}
		if c.typ == Q4_K || c.typ == Q2_K {
			bits := map[Type]int{Q4_K: 4, Q2_K: 2}[c.typ]
			method, _ := methods.Default().Lookup("dq")
			codes := make([]byte, kernels.PackedLen(int64(len(x)), bits))
			params := make([]byte, kernels.SuperBlockParamsLen(int64(len(x)), bits))
			if err := method.SuperBlock(x, nil, bits, codes, params, 0); err != nil {
				t.Fatal(err)
			}
			want := make([]float32, len(x))
			if err := kernels.DequantizeSuperBlocks(want, codes, params, bits); err != nil {
				t.Fatal(err)
			}
			assertBits(t, c.typ.String()+" vs dq", want, got)
		}
	}
	// F16 refuses values it cannot hold, naming the element.
	big := []float32{1, 70000}
	if err := enc.Encode(F16, big, make([]byte, 4), 10); err == nil || !strings.Contains(err.Error(), "element 11") {
		t.Fatalf("F16 overflow: %v", err)
	}
}

// The reference dequantizer refuses lengths that are not whole blocks.
func TestDequantizeChecksSizes(t *testing.T) {
	if err := Dequantize(Q4_K, make([]byte, 143), make([]float32, 256)); err == nil {
		t.Fatal("short Q4_K block accepted")
	}
	if err := Dequantize(Type(99), nil, nil); err == nil {
		t.Fatal("unknown type accepted")
	}
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], 0x3C00)
	y := make([]float32, 1)
	if err := Dequantize(F16, b[:], y); err != nil || y[0] != 1 {
		t.Fatalf("F16: %v %v", y, err)
	}
}
