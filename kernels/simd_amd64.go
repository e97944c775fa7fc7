//go:build !purego

package kernels

import "golang.org/x/sys/cpu"

// useAVX2 selects the AVX2 loops of simd_amd64.s.
var useAVX2 = cpu.X86.HasAVX2

// SIMD names the vector loops in use ("avx2" or "go").
func SIMD() string {
	if useAVX2 {
		return "avx2"
	}
	return "go"
}

//go:noescape
func minMaxKeysAVX2(x *float32, n int) (lo, hi int32)

//go:noescape
func quantReconAVX2(x *float32, n int, p *quantArgs, codes *uint8, recon *float32)

//go:noescape
func quantReconGroupsAVX2(x *float32, groups, groupSize int, p *quantArgs, codes *uint8, recon *float32)

//go:noescape
func quantCodesGroupsAVX2(x *float32, groups, groupSize int, p *quantArgs, codes *uint8)

//go:noescape
func quantCodesAVX2(x *float32, n int, p *quantArgs, codes *uint8)

//go:noescape
func simAVX2(a, b *float32, n int, sums *simLanes)

//go:noescape
func dequant4AVX2(out *float32, words int, codes *uint32, s, m float32)

//go:noescape
func dequant2AVX2(out *float32, words int, codes *uint32, s, m float32)

//go:noescape
func dequantSBAVX2(out *float32, codes *byte, p *SuperBlockParams, d, dmin float32, bits int)

//go:noescape
func dequant8AVX2(out *float32, n int, codes *uint8, s, m float32)

//go:noescape
func sim2AVX2(a1, b1, a2, b2 *float32, n int, s1, s2 *simLanes)

//go:noescape
func simBothAVX2(a, b, w *float32, n int, sums *simLanes, wsums *wsimLanes)

//go:noescape
func packCodes4AVX2(dst *byte, codes *uint8, blocks int)

//go:noescape
func packCodes2AVX2(dst *byte, codes *uint8, blocks int)

//go:noescape
func absMaxAVX2(r, x *float32, n int)

//go:noescape
func magMaxAVX2(r, x *uint16, n int)

// sbPackArgs are the per-sub-block 1/s and m of packSB4AVX2, packSB2AVX2.
type sbPackArgs struct{ inv, m [16]float32 }

//go:noescape
func packSB4AVX2(dst *byte, x *float32, p *sbPackArgs)

//go:noescape
func packSB2AVX2(dst *byte, x *float32, p *sbPackArgs)
