package gguf

import (
	"math/rand/v2"
	"testing"
)

// Repack throughput in elements per second (one core): the exact export
// path of the Dream 7B layout is Q4_K repacking of 7.6 G elements.
func BenchmarkRepack(b *testing.B) {
	const n = 1 << 20
	rng := rand.New(rand.NewPCG(1, 1))
	codes4, codes2 := randBytes(rng, n/2), randBytes(rng, n/4)
	p4, p2 := randBytes(rng, n/256*16), randBytes(rng, n/256*20)
	for _, c := range []struct {
		name string
		run  func(dst []byte) error
		out  int
	}{
		{"Q4_K", func(dst []byte) error { return Q4KFromSuperBlocks(dst, codes4, p4, n) }, n / 256 * 144},
		{"Q2_K", func(dst []byte) error { return Q2KFromSuperBlocks(dst, codes2, p2, n) }, n / 256 * 84},
		{"Q4_1", func(dst []byte) error {
			s := make([]uint16, n/128)
			return Q41FromGroups(dst, codes4, s, s, 4, 128, n)
		}, n / 32 * 20},
	} {
		b.Run(c.name, func(b *testing.B) {
			dst := make([]byte, c.out)
			b.SetBytes(n) // "bytes" = elements
			for b.Loop() {
				if err := c.run(dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
