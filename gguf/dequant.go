package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/arrowquant/arrowquant/internal/fp"
)

// Dequantize is a reference dequantizer of ggml blocks, written from the
// block layouts (REFERENCE §7, gguf-py's quants.py) independently of the
// packers in blocks.go: it decodes len(dst) elements (whole blocks) of
// type t from data, in float32 with the products rounded before each sum
// as numpy and ggml's C reference compute them (no fused multiply-add).
func Dequantize(t Type, data []byte, dst []float32) error {
	if !t.Known() {
		return fmt.Errorf("gguf: dequantize: unsupported type %v", t)
	}
	bs, bb := t.BlockSize(), t.BlockBytes()
	if len(dst)%bs != 0 || len(data) != len(dst)/bs*bb {
		return fmt.Errorf("gguf: dequantize %v: %d bytes for %d elements (want %d)", t, len(data), len(dst), len(dst)/bs*bb)
	}
	h := func(b []byte) float32 { return fp.HalfToFloat32(binary.LittleEndian.Uint16(b)) }
	for b := 0; b < len(dst)/bs; b++ {
		blk := data[b*bb : (b+1)*bb]
		y := dst[b*bs : (b+1)*bs]
		switch t {
		case F32:
			y[0] = math.Float32frombits(binary.LittleEndian.Uint32(blk))
		case F16:
			y[0] = h(blk)
		case BF16:
			y[0] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(blk)) << 16)
		case Q4_0: // d, qs[16]: y = (q - 8)·d
			d := h(blk)
			for j := range 16 {
				y[j] = float32(int32(blk[2+j]&15)-8) * d
				y[j+16] = float32(int32(blk[2+j]>>4)-8) * d
			}
		case Q4_1: // d, m, qs[16]: y = q·d + m
			d, m := h(blk), h(blk[2:])
			for j := range 16 {
				y[j] = float32(float32(blk[4+j]&15)*d) + m
				y[j+16] = float32(float32(blk[4+j]>>4)*d) + m
			}
		case Q8_0: // d, int8 qs[32]: y = q·d
			d := h(blk)
			for j := range 32 {
				y[j] = float32(int8(blk[2+j])) * d
			}
		case Q2_K: // scales[16], qs[64], d, dmin
			d, dmin := h(blk[80:]), h(blk[82:])
			for e := range QK_K {
				sc := blk[e/16]
				dl := float32(d * float32(sc&15))
				ml := float32(dmin * float32(sc>>4))
				half, r := e/128, e%128
				q := blk[16+32*half+r%32] >> (2 * (r / 32)) & 3
				y[e] = float32(dl*float32(q)) - ml
			}
		case Q4_K: // d, dmin, scales[12], qs[128]
			d, dmin := h(blk), h(blk[2:])
			s := blk[4:16]
			for e := range QK_K {
				j := e / 32
				var sc, mn byte
				if j < 4 {
					sc, mn = s[j]&63, s[j+4]&63
				} else {
					sc = s[j+4]&15 | (s[j-4]>>6)<<4
					mn = s[j+4]>>4 | (s[j]>>6)<<4
				}
				c, r := e/64, e%64
				var q byte
				if r < 32 {
					q = blk[16+32*c+r] & 15
				} else {
					q = blk[16+32*c+r-32] >> 4
				}
				dl := float32(d * float32(sc))
				ml := float32(dmin * float32(mn))
				y[e] = float32(dl*float32(q)) - ml
			}
		}
	}
	return nil
}
