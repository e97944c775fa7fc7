package gguf

import (
	"encoding/binary"
	"fmt"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/q80"
)

// Repacking: ArrowQuant's stored layouts (docs/FORMAT.md: codes packed
// element k at bits [k·b, (k+1)·b), fp16 group params or super-block
// params) rewritten as ggml blocks with the same numbers, so ggml's
// dequantization computes our reconstruction bit for bit. Every function
// takes a run of whole blocks starting at a block boundary of the row.

// Q4KFromSuperBlocks writes the n/256 Q4_K blocks (144 bytes each) of n
// elements (a multiple of 256) stored as 4-bit super-block rows: codes
// (n/2 bytes) and params (16 bytes per super-block: d, dmin, 8 six-bit
// sub-scales, 8 six-bit sub-mins). Our s = d·sc, m = dmin·mc and
// x̂ = float32(q·s) − m are Q4_K's, so only the bits move.
func Q4KFromSuperBlocks(dst, codes, params []byte, n int) error {
	if err := checkRun(n, QK_K, len(codes), n/2, len(params), n/QK_K*16, len(dst), n/QK_K*144); err != nil {
		return fmt.Errorf("Q4_K repack: %w", err)
	}
	var p kernels.SuperBlockParams
	for b := 0; b < n/QK_K; b++ {
		kernels.DecodeSuperBlockParams(&p, params[16*b:], 8, 6)
		out := (*[144]byte)(dst[144*b:])
		binary.LittleEndian.PutUint16(out[0:], p.D)
		binary.LittleEndian.PutUint16(out[2:], p.DMin)
		s := out[4:16]
		for j := range 4 {
			// j < 4: the low 6 bits of bytes j and j+4; j >= 4 (as j+4):
			// low nibbles in bytes j+8, top two bits in bits 6-7 of bytes j
			// (scale) and j+4 (min).
			s[j] = p.Sc[j] | p.Sc[j+4]>>4<<6
			s[j+4] = p.Mc[j] | p.Mc[j+4]>>4<<6
			s[j+8] = p.Sc[j+4]&15 | p.Mc[j+4]&15<<4
		}
		// Each 64-element chunk c: 32 bytes, element 64c+l in the low
		// nibble of byte l, element 64c+32+l in its high nibble. Ours holds
		// elements 2k, 2k+1 in byte k: chunk bytes k and 16+k give output
		// bytes 2k and 2k+1.
		in := codes[128*b : 128*b+128]
		qs := out[16:]
		for c := range 4 {
			interleave4((*[32]byte)(qs[32*c:]), (*[32]byte)(in[32*c:]))
		}
	}
	return nil
}

// Q2KFromSuperBlocks writes the n/256 Q2_K blocks (84 bytes each) of n
// elements stored as 2-bit super-block rows: codes (n/4 bytes) and params
// (20 bytes per super-block: d, dmin, 16 four-bit sub-scales, 16 four-bit
// sub-mins).
func Q2KFromSuperBlocks(dst, codes, params []byte, n int) error {
	if err := checkRun(n, QK_K, len(codes), n/4, len(params), n/QK_K*20, len(dst), n/QK_K*84); err != nil {
		return fmt.Errorf("Q2_K repack: %w", err)
	}
	var p kernels.SuperBlockParams
	for b := 0; b < n/QK_K; b++ {
		kernels.DecodeSuperBlockParams(&p, params[20*b:], 16, 4)
		out := (*[84]byte)(dst[84*b:])
		for j := range 16 { // scale in the low nibble, min in the high one
			out[j] = p.Sc[j] | p.Mc[j]<<4
		}
		// Each 128-element half h: 32 bytes; element 128h+32j+l sits at
		// bits 2j of byte l (j = 0..3, l = 0..31). Ours holds it at bits
		// 2(l mod 4) of byte 32h+8j+l/4.
		in := codes[64*b : 64*b+64]
		qs := out[16:80]
		for h := range 2 {
			src := (*[32]byte)(in[32*h:])
			dst := (*[32]byte)(qs[32*h:])
			for l := range 32 {
				i, sh := l>>2, uint(2*(l&3))
				dst[l] = src[i]>>sh&3 | (src[i+8]>>sh&3)<<2 | (src[i+16]>>sh&3)<<4 | (src[i+24]>>sh&3)<<6
			}
		}
		binary.LittleEndian.PutUint16(out[80:], p.D)
		binary.LittleEndian.PutUint16(out[82:], p.DMin)
	}
	return nil
}

// Q41FromGroups writes the n/32 Q4_1 blocks (20 bytes each) of n elements
// (a multiple of 32) of a per-group row at bits 4 or 2 with fp16
// scales/mins per group of groupSize (a multiple of 32): each block takes
// its group's (scale, min) as (d, m), and y = q·d + m is our
// float32(float32(q)·scale) + min. 2-bit codes are 4-bit codes 0..3.
func Q41FromGroups(dst, codes []byte, scales, mins []uint16, bits, groupSize, n int) error {
	if bits != 2 && bits != 4 {
		return fmt.Errorf("Q4_1 repack: %d-bit codes", bits)
	}
	ng := int(kernels.NumGroups(int64(n), groupSize))
	if groupSize%32 != 0 || len(scales) != ng || len(mins) != ng {
		return fmt.Errorf("Q4_1 repack: %d groups of %d for %d elements, have %d scales and %d mins", ng, groupSize, n, len(scales), len(mins))
	}
	if err := checkRun(n, 32, len(codes), n*bits/8, 0, 0, len(dst), n/32*20); err != nil {
		return fmt.Errorf("Q4_1 repack: %w", err)
	}
	var q [32]byte
	for b := 0; b < n/32; b++ {
		g := 32 * b / groupSize
		out := (*[20]byte)(dst[20*b:])
		binary.LittleEndian.PutUint16(out[0:], scales[g])
		binary.LittleEndian.PutUint16(out[2:], mins[g])
		if bits == 4 { // element j low, j+16 high: our bytes k and 8+k
			in := (*[16]byte)(codes[16*b:])
			for k := range 8 {
				lo, hi := in[k], in[8+k]
				out[4+2*k], out[5+2*k] = lo&15|hi<<4, lo>>4|hi&0xF0
			}
			continue
		}
		unpack2(q[:], codes[8*b:8*b+8])
		for j := range 16 {
			out[4+j] = q[j] | q[j+16]<<4
		}
	}
	return nil
}

// Q80FromGroups writes the n/32 Q8_0 blocks (34 bytes each) of n elements
// of an INT8 per-group row whose groups (of groupSize, a multiple of 32)
// are symmetric (q80.Symmetric: scale ≥ 0, min = −128·scale): d = scale,
// q = code − 128. A group with scale 0 gets q = 0 (its values are +0, and
// ggml's (−128)·0 would be −0). Any other group is an error naming it.
func Q80FromGroups(dst, codes []byte, scales, mins []uint16, groupSize, n int) error {
	ng := int(kernels.NumGroups(int64(n), groupSize))
	if groupSize%32 != 0 || len(scales) != ng || len(mins) != ng {
		return fmt.Errorf("Q8_0 repack: %d groups of %d for %d elements, have %d scales and %d mins", ng, groupSize, n, len(scales), len(mins))
	}
	if err := checkRun(n, 32, len(codes), n, 0, 0, len(dst), n/32*34); err != nil {
		return fmt.Errorf("Q8_0 repack: %w", err)
	}
	for g := range ng {
		if !q80.Symmetric(scales[g], mins[g], 8) {
			return fmt.Errorf("Q8_0 repack: group %d has scale %v and min %v, not a q8_0 group (min = -128·scale, scale >= 0)",
				g, fp.HalfToFloat32(scales[g]), fp.HalfToFloat32(mins[g]))
		}
	}
	for b := 0; b < n/32; b++ {
		g := 32 * b / groupSize
		out := (*[34]byte)(dst[34*b:])
		binary.LittleEndian.PutUint16(out[0:], scales[g])
		qs := out[2:]
		if scales[g] == 0 {
			clear(qs)
			continue
		}
		for j, c := range codes[32*b : 32*b+32] {
			qs[j] = c ^ 0x80 // int8(c - 128)
		}
	}
	return nil
}

// checkRun validates a repack's sizes: n a multiple of block, and the
// input/output buffers of the expected lengths (want 0 skips a check).
func checkRun(n, block, codes, wantCodes, params, wantParams, dst, wantDst int) error {
	switch {
	case n%block != 0:
		return fmt.Errorf("%d elements are not whole blocks of %d", n, block)
	case codes != wantCodes:
		return fmt.Errorf("%d elements need %d code bytes, have %d", n, wantCodes, codes)
	case wantParams > 0 && params != wantParams:
		return fmt.Errorf("%d elements need %d group_params bytes, have %d", n, wantParams, params)
	case dst < wantDst:
		return fmt.Errorf("output of %d bytes for %d", dst, wantDst)
	}
	return nil
}

// interleave4 writes a Q4_K chunk of 64 elements from our 32 bytes:
// byte l takes element l (low) and element 32+l (high).
func interleave4(dst, src *[32]byte) {
	for k := 0; k < 16; k += 4 { // four output byte pairs per step
		lo := binary.LittleEndian.Uint32(src[k:])
		hi := binary.LittleEndian.Uint32(src[16+k:])
		even := lo&0x0F0F0F0F | (hi&0x0F0F0F0F)<<4 // output bytes 2k, 2k+2, ...
		odd := lo>>4&0x0F0F0F0F | hi&0xF0F0F0F0    // output bytes 2k+1, ...
		binary.LittleEndian.PutUint64(dst[2*k:], spreadBytes(even)|spreadBytes(odd)<<8)
	}
}

// spreadBytes moves byte i of x to byte 2i of the result.
func spreadBytes(x uint32) uint64 {
	y := uint64(x)
	y = (y | y<<16) & 0x0000FFFF0000FFFF
	return (y | y<<8) & 0x00FF00FF00FF00FF
}

// unpack2 expands our 2-bit packing (element 4k at bits 0-1 of byte k).
func unpack2(q []byte, in []byte) {
	for k, b := range in {
		q[4*k], q[4*k+1], q[4*k+2], q[4*k+3] = b&3, b>>2&3, b>>4&3, b>>6
	}
}
