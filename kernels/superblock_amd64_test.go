//go:build !purego

package kernels

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
)

// The AVX2 super-block pack and dequantize equal the Go loops bit for
// bit: adversarial values, fp16 d/dmin from subnormal to large, zero
// sub-scales (code 0), every sub-param code.
func TestSuperBlockAVX2MatchesGo(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2")
	}
	defer func() { useAVX2 = true }()
	rng := rand.New(rand.NewPCG(11, 12))
	for it := range 20000 {
		bits := []int{2, 4}[it%2]
		g, pb, _, _ := SuperBlockLayout(bits)
		x := adversarialRow(rng, SuperBlockElems, 0.25, -1, it/2)
		for i := range x {
			x[i] = max(-65504, min(65504, x[i]))
		}
		var p SuperBlockParams
		p.D = uint16(rng.IntN(0x7c00))
		p.DMin = uint16(rng.IntN(0x7c00)) | uint16(rng.IntN(2))<<15
		if it%5 == 0 {
			p.D, p.DMin = fp.Float32ToHalf(0.25/float32(1+rng.IntN(3))), fp.Float32ToHalf(1)
		}
		for j := range SuperBlockElems / g {
			p.Sc[j], p.Mc[j] = uint8(rng.IntN(1<<pb)), uint8(rng.IntN(1<<pb))
			if rng.IntN(10) == 0 {
				p.Sc[j] = 0
			}
		}
		var want, got [SuperBlockElems / 2]byte
		useAVX2 = false
		PackSuperBlock(want[:], x, &p, bits)
		var wantRec, rec [SuperBlockElems]float32
		dequantSuperBlock(wantRec[:], want[:], &p, bits, g)
		useAVX2 = true
		PackSuperBlock(got[:], x, &p, bits)
		if !bytes.Equal(got[:], want[:]) {
			t.Fatalf("it %d INT%d: codes\n%x, Go\n%x", it, bits, got, want)
		}
		dequantSuperBlock(rec[:], want[:], &p, bits, g)
		if !same32(rec[:], wantRec[:]) {
			t.Fatalf("it %d INT%d: dequantized values differ", it, bits)
		}
	}
}

// packCodes' AVX2 loops (32 codes per step) write the bytes of its Go
// loops: every length to 300 (whole steps and the Go tail after them),
// every start a multiple of 4, random codes and all-max codes, and
// nothing past the packed length.
func TestPackCodesAVX2MatchesGo(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2")
	}
	defer func() { useAVX2 = true }()
	rng := rand.New(rand.NewPCG(21, 22))
	for _, bits := range []int{2, 4} {
		for n := 0; n <= 300; n++ {
			for _, start := range []int{0, 4, 36, 64} {
				codes := make([]uint8, n)
				for i := range codes {
					codes[i] = uint8(rng.IntN(1 << bits))
					if n%7 == 3 {
						codes[i] = uint8(1<<bits - 1)
					}
				}
				size := int(PackedLen(int64(start+n), bits)) + 16
				got, want := bytes.Repeat([]byte{0xa5}, size), bytes.Repeat([]byte{0xa5}, size)
				useAVX2 = true
				packCodes(got, start, codes, bits)
				useAVX2 = false
				packCodes(want, start, codes, bits)
				if !bytes.Equal(got, want) {
					t.Fatalf("INT%d n %d start %d:\n got %x\nwant %x", bits, n, start, got, want)
				}
			}
		}
	}
}
