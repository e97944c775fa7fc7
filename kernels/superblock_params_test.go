package kernels

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// EncodeSuperBlockParams' unrolled layouts write putCodes' bytes, and
// DecodeSuperBlockParams reads them back, at every bit width.
func TestSuperBlockParamsEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for it := range 3000 {
		bits := []int{2, 4, 8}[it%3]
		g, pb, bpsb, _ := SuperBlockLayout(bits)
		nsub := SuperBlockElems / g
		var p SuperBlockParams
		p.D, p.DMin = uint16(rng.Uint32()), uint16(rng.Uint32())
		for j := range nsub {
			p.Sc[j], p.Mc[j] = uint8(rng.IntN(1<<pb)), uint8(rng.IntN(1<<pb))
		}
		got, want := make([]byte, bpsb), make([]byte, bpsb)
		EncodeSuperBlockParams(got, &p, nsub, pb)
		copy(want, got[:4])
		seq := nsub * pb / 8
		putCodes(want[4:4+seq], p.Sc[:nsub], pb)
		putCodes(want[4+seq:4+2*seq], p.Mc[:nsub], pb)
		if !bytes.Equal(got, want) {
			t.Fatalf("INT%d %+v: encoded %x, putCodes %x", bits, p, got, want)
		}
		var back SuperBlockParams
		DecodeSuperBlockParams(&back, got, nsub, pb)
		if back != p {
			t.Fatalf("INT%d: decoded %+v, want %+v", bits, back, p)
		}
	}
}
