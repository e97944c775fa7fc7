//go:build !purego

package fp

import "golang.org/x/sys/cpu"

var useAVX2 = cpu.X86.HasAVX2

//go:noescape
func decodeBF16AVX2(dst *float32, src *uint16, n int)

//go:noescape
func mulAVX2(dst, a, b *float32, n int)
