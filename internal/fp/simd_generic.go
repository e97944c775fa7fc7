//go:build purego || !amd64

package fp

const useAVX2 = false

func decodeBF16AVX2(dst *float32, src *uint16, n int) { panic("unreachable") }

func mulAVX2(dst, a, b *float32, n int) { panic("unreachable") }
