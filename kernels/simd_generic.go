//go:build purego || !amd64

package kernels

// The portable build: simd.go's Go loops only.

const useAVX2 = false

// SIMD names the vector loops in use ("avx2" or "go").
func SIMD() string { return "go" }

func minMaxKeysAVX2(x *float32, n int) (lo, hi int32) { panic("unreachable") }

func quantReconAVX2(x *float32, n int, p *quantArgs, codes *uint8, recon *float32) {
	panic("unreachable")
}

func simAVX2(a, b *float32, n int, sums *simLanes) { panic("unreachable") }

func quantCodesGroupsAVX2(x *float32, groups, groupSize int, p *quantArgs, codes *uint8) {
	panic("unreachable")
}

func quantReconGroupsAVX2(x *float32, groups, groupSize int, p *quantArgs, codes *uint8, recon *float32) {
	panic("unreachable")
}

func dequant4AVX2(out *float32, words int, codes *uint32, s, m float32) { panic("unreachable") }

func dequantSBAVX2(out *float32, codes *byte, p *SuperBlockParams, d, dmin float32, bits int) {
	panic("unreachable")
}

func dequant2AVX2(out *float32, words int, codes *uint32, s, m float32) { panic("unreachable") }

func dequant8AVX2(out *float32, n int, codes *uint8, s, m float32) { panic("unreachable") }

func sim2AVX2(a1, b1, a2, b2 *float32, n int, s1, s2 *simLanes) {
	panic("unreachable")
}

func simBothAVX2(a, b, w *float32, n int, sums *simLanes, wsums *wsimLanes) {
	panic("unreachable")
}

func absMaxAVX2(r, x *float32, n int) { panic("unreachable") }

func quantCodesAVX2(x *float32, n int, p *quantArgs, codes *uint8) { panic("unreachable") }

func magMaxAVX2(r, x *uint16, n int) { panic("unreachable") }

func packCodes4AVX2(dst *byte, codes *uint8, blocks int) { panic("unreachable") }

func packCodes2AVX2(dst *byte, codes *uint8, blocks int) { panic("unreachable") }

type sbPackArgs struct{ inv, m [16]float32 }

func packSB4AVX2(dst *byte, x *float32, p *sbPackArgs) { panic("unreachable") }

func packSB2AVX2(dst *byte, x *float32, p *sbPackArgs) { panic("unreachable") }
