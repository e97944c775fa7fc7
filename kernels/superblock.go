package kernels

import (
	"encoding/binary"
	"fmt"

	"github.com/arrowquant/arrowquant/internal/fp"
)

// Super-block format (double quantization, like llama.cpp's K-quants).
//
// A row is cut into super-blocks of SuperBlockElems elements (the last one
// may be partial), each into sub-blocks of g elements. Codes are the plain
// packing of PackGroups (element k of the row at bits [k*bits, (k+1)*bits),
// little-endian), PackedLen(n, bits) bytes per row. The row's group_params
// hold, per super-block in order, B = 4 + 2*nsub*P/8 bytes:
//
//	d    fp16 little-endian (any finite value)
//	dmin fp16 little-endian (any finite value)
//	nsub scale codes sc_j of P bits, LSB-first (code j at bits [j*P, (j+1)*P))
//	nsub min codes mc_j of P bits, LSB-first
//
// with (g, P) = (16, 4) at 2 bits, (32, 6) at 4 bits and (32, 8) at 8 bits,
// so B is 20, 16 and 20 bytes. Element k (super-block k/256, sub-block
// j = (k%256)/g) dequantizes in float32 without fused multiply-add to
//
//	s = float32(d * float32(sc_j)); m = float32(dmin * float32(mc_j))
//	x̂ = float32(float32(q_k) * s) - m
//
// The unused sub-params of a partial last super-block are 0.
const SuperBlockElems = 256

// FuncDequantizeSuperBlock is aq_dequantize_superblock(codes binary,
// group_params binary, n int64) -> list<float32>, QuantOptions{Bits}.
const FuncDequantizeSuperBlock = "aq_dequantize_superblock"

// SuperBlockLayout returns the sub-block size, the bits of each sub-scale
// and sub-min code, and the group_params bytes per super-block at bits.
func SuperBlockLayout(bits int) (subSize, paramBits, bytesPerSuperBlock int, err error) {
	switch bits {
	case 2:
		subSize, paramBits = 16, 4
	case 4:
		subSize, paramBits = 32, 6
	case 8:
		subSize, paramBits = 32, 8
	default:
		return 0, 0, 0, fmt.Errorf("kernels: super-block bit width %d must be 2, 4 or 8", bits)
	}
	nsub := SuperBlockElems / subSize
	return subSize, paramBits, 4 + 2*nsub*paramBits/8, nil
}

// NumSuperBlocks is the number of super-blocks of n elements.
func NumSuperBlocks(n int64) int64 { return (n + SuperBlockElems - 1) / SuperBlockElems }

// SuperBlockParamsLen is the group_params bytes of a row of n elements
// (0 for an unsupported bit width).
func SuperBlockParamsLen(n int64, bits int) int64 {
	_, _, b, err := SuperBlockLayout(bits)
	if err != nil {
		return 0
	}
	return NumSuperBlocks(n) * int64(b)
}

// SuperBlockParams are the decoded params of one super-block.
type SuperBlockParams struct {
	D, DMin uint16    // fp16 bits
	Sc, Mc  [16]uint8 // sub-scale and sub-min codes (nsub used)
}

// EncodeSuperBlockParams writes p into dst (bytesPerSuperBlock bytes);
// its codes are below 2^paramBits.
func EncodeSuperBlockParams(dst []byte, p *SuperBlockParams, nsub, paramBits int) {
	binary.LittleEndian.PutUint16(dst[0:], p.D)
	binary.LittleEndian.PutUint16(dst[2:], p.DMin)
	seq := nsub * paramBits / 8
	switch {
	case paramBits == 4 && nsub == 16:
		sc, mc := (*[8]byte)(dst[4:12]), (*[8]byte)(dst[12:20])
		for k := range 8 {
			sc[k] = p.Sc[2*k]&15 | p.Sc[2*k+1]<<4
			mc[k] = p.Mc[2*k]&15 | p.Mc[2*k+1]<<4
		}
	case paramBits == 6 && nsub == 8:
		var sc, mc uint64
		for j := range 8 {
			sc |= uint64(p.Sc[j]&63) << (6 * j)
			mc |= uint64(p.Mc[j]&63) << (6 * j)
		}
		binary.LittleEndian.PutUint32(dst[4:], uint32(sc))
		binary.LittleEndian.PutUint16(dst[8:], uint16(sc>>32))
		binary.LittleEndian.PutUint32(dst[10:], uint32(mc))
		binary.LittleEndian.PutUint16(dst[14:], uint16(mc>>32))
	default:
		putCodes(dst[4:4+seq], p.Sc[:nsub], paramBits)
		putCodes(dst[4+seq:4+2*seq], p.Mc[:nsub], paramBits)
	}
}

// DecodeSuperBlockParams reads one super-block's params from src.
func DecodeSuperBlockParams(p *SuperBlockParams, src []byte, nsub, paramBits int) {
	p.D = binary.LittleEndian.Uint16(src[0:])
	p.DMin = binary.LittleEndian.Uint16(src[2:])
	seq := nsub * paramBits / 8
	switch {
	case paramBits == 4 && nsub == 16:
		for k, b := range (*[8]byte)(src[4:12]) {
			p.Sc[2*k&15], p.Sc[(2*k+1)&15] = b&15, b>>4
		}
		for k, b := range (*[8]byte)(src[12:20]) {
			p.Mc[2*k&15], p.Mc[(2*k+1)&15] = b&15, b>>4
		}
	case paramBits == 6 && nsub == 8:
		sc := uint64(binary.LittleEndian.Uint32(src[4:])) | uint64(binary.LittleEndian.Uint16(src[8:]))<<32
		mc := uint64(binary.LittleEndian.Uint32(src[10:])) | uint64(binary.LittleEndian.Uint16(src[14:]))<<32
		for j := range 8 {
			p.Sc[j], p.Mc[j] = uint8(sc>>(6*j)&63), uint8(mc>>(6*j)&63)
		}
	default:
		getCodes(p.Sc[:nsub], src[4:4+seq], paramBits)
		getCodes(p.Mc[:nsub], src[4+seq:4+2*seq], paramBits)
	}
}

// putCodes packs P-bit codes LSB-first (nsub*P is a multiple of 8).
func putCodes(dst []byte, codes []uint8, paramBits int) {
	clear(dst)
	for j, c := range codes {
		bit := j * paramBits
		v := uint16(c) << (bit % 8)
		dst[bit/8] |= byte(v)
		if bit%8+paramBits > 8 {
			dst[bit/8+1] |= byte(v >> 8)
		}
	}
}

func getCodes(dst []uint8, src []byte, paramBits int) {
	mask := uint16(1)<<paramBits - 1
	for j := range dst {
		bit := j * paramBits
		v := uint16(src[bit/8])
		if bit%8+paramBits > 8 {
			v |= uint16(src[bit/8+1]) << 8
		}
		dst[j] = uint8(v >> (bit % 8) & mask)
	}
}

// SubBlockParams returns the float32 (s, m) of sub-block j of p as the
// dequantization formula computes them.
func (p *SuperBlockParams) SubBlockParams(j int) (s, m float32) {
	d, dmin := fp.HalfToFloat32(p.D), fp.HalfToFloat32(p.DMin)
	return float32(d * float32(p.Sc[j])), float32(dmin * float32(p.Mc[j]))
}

// SuperBlockValue is the one super-block dequantization formula:
// float32(float32(q)*s) - m, two roundings, no fused multiply-add.
func SuperBlockValue(q int32, s, m float32) float32 {
	p := float32(q) * s
	return float32(p) - m
}

// DequantizeSuperBlocks reconstructs len(dst) values of one row (or of a
// run of whole super-blocks starting at a super-block boundary) from its
// packed codes and group_params.
func DequantizeSuperBlocks(dst []float32, codes, params []byte, bits int) error {
	g, pb, bpsb, err := SuperBlockLayout(bits)
	if err != nil {
		return err
	}
	n := int64(len(dst))
	if want := PackedLen(n, bits); int64(len(codes)) != want {
		return fmt.Errorf("kernels: %d elements at %d bits need %d code bytes, have %d", n, bits, want, len(codes))
	}
	if want := SuperBlockParamsLen(n, bits); int64(len(params)) != want {
		return fmt.Errorf("kernels: %d elements at %d bits need %d group_params bytes (%d super-blocks of %d), have %d",
			n, bits, want, NumSuperBlocks(n), bpsb, len(params))
	}
	nsub := SuperBlockElems / g
	var p SuperBlockParams
	for sb := 0; int64(sb*SuperBlockElems) < n; sb++ {
		DecodeSuperBlockParams(&p, params[sb*bpsb:], nsub, pb)
		start := sb * SuperBlockElems
		out := dst[start:min(len(dst), start+SuperBlockElems)]
		dequantSuperBlock(out, codes[start*bits/8:], &p, bits, g)
	}
	return nil
}

// dequantSuperBlock reconstructs one super-block (out, len <= 256) from
// its codes (starting at the super-block's first byte). Every sub-block's
// 2^bits values come from a table of SuperBlockValue (the same two
// roundings), so the output is that formula's bit for bit.
func dequantSuperBlock(out []float32, codes []byte, p *SuperBlockParams, bits, g int) {
	d, dmin := fp.HalfToFloat32(p.D), fp.HalfToFloat32(p.DMin)
	if len(out) == SuperBlockElems && useAVX2 && (bits == 4 || bits == 2) {
		_ = codes[SuperBlockElems*bits/8-1]
		dequantSBAVX2(&out[0], &codes[0], p, d, dmin, bits)
		return
	}
	// Whole super-blocks without AVX2: a table per sub-block.
	if len(out) == SuperBlockElems && !useAVX2 {
		switch bits {
		case 4:
			in := (*[SuperBlockElems / 2]byte)(codes)
			for j := range SuperBlockElems / 32 {
				s, m := float32(d*float32(p.Sc[j&7])), float32(dmin*float32(p.Mc[j&7]))
				var lut [16]float32
				for q := range lut {
					lut[q] = SuperBlockValue(int32(q), s, m)
				}
				src := (*[16]byte)(in[16*j:])
				dst := (*[32]float32)(out[32*j:])
				for i := 0; i < 16; i += 2 {
					b0, b1 := src[i], src[i+1]
					dst[2*i], dst[2*i+1] = lut[b0&15], lut[b0>>4]
					dst[2*i+2], dst[2*i+3] = lut[b1&15], lut[b1>>4]
				}
			}
			return
		case 2:
			in := (*[SuperBlockElems / 4]byte)(codes)
			for j := range SuperBlockElems / 16 {
				s, m := float32(d*float32(p.Sc[j&15])), float32(dmin*float32(p.Mc[j&15]))
				lut := [4]float32{SuperBlockValue(0, s, m), SuperBlockValue(1, s, m), SuperBlockValue(2, s, m), SuperBlockValue(3, s, m)}
				src := (*[4]byte)(in[4*j:])
				dst := (*[16]float32)(out[16*j:])
				for i := range 4 {
					b := src[i]
					dst[4*i], dst[4*i+1], dst[4*i+2], dst[4*i+3] = lut[b&3], lut[b>>2&3], lut[b>>4&3], lut[b>>6]
				}
			}
			return
		}
	}
	for j := 0; j*g < len(out); j++ {
		s, m := float32(d*float32(p.Sc[j])), float32(dmin*float32(p.Mc[j]))
		dequantizeGroup(out[j*g:min(len(out), (j+1)*g)], codes, j*g, s, -m, bits)
	}
}

// PackSuperBlock writes the codes of one super-block x (len <= 256) under
// params p into dst (PackedLen(len(x), bits) bytes): each element gets
// the nearest code, q = clamp(int(float32((v+m)*(1/s)) + 0.5), 0, qmax),
// code 0 where s is 0.
func PackSuperBlock(dst []byte, x []float32, p *SuperBlockParams, bits int) {
	g, _, _, err := SuperBlockLayout(bits)
	if err != nil {
		panic(err)
	}
	d, dmin := fp.HalfToFloat32(p.D), fp.HalfToFloat32(p.DMin)
	if len(x) == SuperBlockElems && bits != 8 {
		if useAVX2 {
			var a sbPackArgs
			for j := range SuperBlockElems / g {
				s, m := p.SubBlockParams(j)
				if s != 0 {
					a.inv[j] = 1 / s
				}
				a.m[j] = m
			}
			_ = dst[SuperBlockElems*bits/8-1]
			if bits == 4 {
				packSB4AVX2(&dst[0], &x[0], &a)
			} else {
				packSB2AVX2(&dst[0], &x[0], &a)
			}
			return
		}
		for j := range SuperBlockElems / g {
			s, m := float32(d*float32(p.Sc[j])), float32(dmin*float32(p.Mc[j]))
			var inv float32
			if s != 0 {
				inv = 1 / s
			}
			if bits == 4 {
				pack4x32((*[16]byte)(dst[16*j:]), (*[32]float32)(x[32*j:]), inv, m)
			} else {
				pack2x16((*[4]byte)(dst[4*j:]), (*[16]float32)(x[16*j:]), inv, m)
			}
		}
		return
	}
	clear(dst[:PackedLen(int64(len(x)), bits)])
	for j := 0; j*g < len(x); j++ {
		s, m := float32(d*float32(p.Sc[j])), float32(dmin*float32(p.Mc[j]))
		var inv float32
		if s != 0 {
			inv = 1 / s
		}
		packGroup(dst, j*g, x[j*g:min(len(x), (j+1)*g)], inv, -m, bits)
	}
}

// superCode is quantCode's code (v+m for v-(-m), the same float32):
// clamp(int(float32((v+m)*inv) + 0.5), 0, qmax).
func superCode(v, inv, m float32, qmax int64) uint32 {
	return uint32(max(0, min(qmax, int64(float32((v+m)*inv)+0.5))))
}

func pack4x32(dst *[16]byte, x *[32]float32, inv, m float32) {
	for w := 0; w < 4; w++ {
		v := (*[8]float32)(x[8*w:])
		lo := superCode(v[0], inv, m, 15) | superCode(v[1], inv, m, 15)<<4 |
			superCode(v[2], inv, m, 15)<<8 | superCode(v[3], inv, m, 15)<<12
		hi := superCode(v[4], inv, m, 15) | superCode(v[5], inv, m, 15)<<4 |
			superCode(v[6], inv, m, 15)<<8 | superCode(v[7], inv, m, 15)<<12
		binary.LittleEndian.PutUint32(dst[4*w:], lo|hi<<16)
	}
}

func pack2x16(dst *[4]byte, v *[16]float32, inv, m float32) {
	a := superCode(v[0], inv, m, 3) | superCode(v[1], inv, m, 3)<<2 | superCode(v[2], inv, m, 3)<<4 | superCode(v[3], inv, m, 3)<<6
	b := superCode(v[4], inv, m, 3) | superCode(v[5], inv, m, 3)<<2 | superCode(v[6], inv, m, 3)<<4 | superCode(v[7], inv, m, 3)<<6
	c := superCode(v[8], inv, m, 3) | superCode(v[9], inv, m, 3)<<2 | superCode(v[10], inv, m, 3)<<4 | superCode(v[11], inv, m, 3)<<6
	e := superCode(v[12], inv, m, 3) | superCode(v[13], inv, m, 3)<<2 | superCode(v[14], inv, m, 3)<<4 | superCode(v[15], inv, m, 3)<<6
	binary.LittleEndian.PutUint32(dst[:], a|b<<8|c<<16|e<<24)
}
