package kernels

import (
	"encoding/binary"
	"math"

	"github.com/arrowquant/arrowquant/internal/fp"
)

// The hot loops of the shared kernels, each as portable Go and, on amd64
// without the purego tag, as AVX2 (simd_amd64.s; useAVX2 says which
// runs). Both compute the reference arithmetic of core.go element for
// element: the same float32 operations, one rounding each, and the float64
// similarity sums in SimilarityOf's four lanes in order, so their output is
// bit for bit the same (simd_test.go).

// quantArgs are one group's params as the quantization loop uses them.
type quantArgs struct{ s, m, inv, qmax float32 }

// simLanes are SimilarityOf's float64 lanes: element i of a block adds to
// lane i%4 of |a|², |b|² and |a-b|² (a tail of fewer than 4 to lane 0).
type simLanes struct{ aa, bb, ee [4]float64 }

// add accumulates one element into lane k.
func (l *simLanes) add(k int, a, b float32) {
	u, v := float64(a), float64(b)
	d := u - v
	l.aa[k] += u * u
	l.bb[k] += v * v
	l.ee[k] += d * d
}

// similarity is SimilarityOf's result from its lanes, for n elements.
func (l *simLanes) similarity(n int) Similarity {
	s := Similarity{
		AA:   (l.aa[0] + l.aa[1]) + (l.aa[2] + l.aa[3]),
		BB:   (l.bb[0] + l.bb[1]) + (l.bb[2] + l.bb[3]),
		Err2: (l.ee[0] + l.ee[1]) + (l.ee[2] + l.ee[3]),
		N:    int64(n),
	}
	s.Dot = (s.AA + s.BB - s.Err2) / 2
	return s
}

// simLanesOf adds a against b (len(b) >= len(a)) to the lanes.
func simLanesOf(l *simLanes, a, b []float32) {
	n4 := len(a) &^ 3
	if useAVX2 && n4 > 0 {
		simAVX2(&a[0], &b[0], n4, l)
	} else {
		for i := 0; i < n4; i += 4 {
			x, y := a[i:i+4:i+4], b[i:i+4:i+4]
			l.add(0, x[0], y[0])
			l.add(1, x[1], y[1])
			l.add(2, x[2], y[2])
			l.add(3, x[3], y[3])
		}
	}
	for i := n4; i < len(a); i++ {
		l.add(0, a[i], b[i])
	}
}

// quantChunk is the most elements quantRecon handles at once.
const quantChunk = 4096

// quantRecon quantizes x (len <= quantChunk) with p: one code per byte
// into codes and the reconstruction into recon.
func quantRecon(x []float32, p *quantArgs, codes []uint8, recon []float32) {
	n4 := len(x) &^ 3
	codes, recon = codes[:len(x)], recon[:len(x)]
	if useAVX2 && n4 > 0 {
		quantReconAVX2(&x[0], n4, p, &codes[0], &recon[0])
	} else {
		n4 = 0
	}
	for i := n4; i < len(x); i++ {
		f := codeOf(x[i], p)
		codes[i] = uint8(f)
		recon[i] = float32(f*p.s) + p.m
	}
}

// quantCodes is quantRecon's codes alone.
func quantCodes(x []float32, p *quantArgs, codes []uint8) {
	n8 := len(x) &^ 7
	codes = codes[:len(x)]
	if useAVX2 && n8 > 0 {
		quantCodesAVX2(&x[0], n8, p, &codes[0])
	} else {
		n8 = 0
	}
	for i := n8; i < len(x); i++ {
		codes[i] = uint8(codeOf(x[i], p))
	}
}

// codeOf is quantCode as a float32 (clamping before truncation agrees
// with quantCode's truncation then clamp for every finite value).
func codeOf(v float32, p *quantArgs) float32 {
	t := float32((v-p.m)*p.inv) + 0.5
	t = max(0, min(p.qmax, t))
	return float32(int32(t))
}

// packCodes packs one code per byte into dst at element start (a multiple
// of 4), whole bytes: bits past the last code are zero.
func packCodes(dst []byte, start int, codes []uint8, bits int) {
	n := len(codes)
	switch bits {
	case 8:
		copy(dst[start:start+n], codes)
	case 4:
		out := dst[start/2 : start/2+(n+1)/2]
		i := 0
		if blocks := n / 32; useAVX2 && blocks > 0 {
			packCodes4AVX2(&out[0], &codes[0], blocks)
			i = 32 * blocks
		}
		for ; i+8 <= n; i += 8 {
			u := binary.LittleEndian.Uint64(codes[i:])
			u = (u | u>>4) & 0x00ff00ff00ff00ff
			u = (u | u>>8) & 0x0000ffff0000ffff
			u = (u | u>>16) & 0xffffffff
			binary.LittleEndian.PutUint32(out[i/2:], uint32(u))
		}
		for ; i < n; i += 2 {
			b := codes[i]
			if i+1 < n {
				b |= codes[i+1] << 4
			}
			out[i/2] = b
		}
	case 2:
		out := dst[start/4 : start/4+(n+3)/4]
		i := 0
		if blocks := n / 32; useAVX2 && blocks > 0 {
			packCodes2AVX2(&out[0], &codes[0], blocks)
			i = 32 * blocks
		}
		for ; i+8 <= n; i += 8 {
			u := binary.LittleEndian.Uint64(codes[i:])
			u = (u | u>>6) & 0x000f000f000f000f
			u = (u | u>>12) & 0x000000ff000000ff
			u = (u | u>>24) & 0xffff
			binary.LittleEndian.PutUint16(out[i/4:], uint16(u))
		}
		for ; i < n; i += 4 {
			var b byte
			for k := 0; k < 4 && i+k < n; k++ {
				b |= codes[i+k] << (2 * k)
			}
			out[i/4] = b
		}
	default:
		panic("kernels: unsupported bit width")
	}
}

// quantizeGroups quantizes x with per-group fp16 params into packed codes
// (dst, PackedLen(len(x), bits) bytes) and the reconstruction (recon,
// len(x) values): PackGroups and DequantizeGroups in one pass. With recon
// nil, the codes only.
func quantizeGroups(dst []byte, x []float32, scales, mins []uint16, bits, groupSize int, recon []float32) {
	var codes [quantChunk]uint8
	qmax := float32(QMax(bits))
	g := 0
	if useAVX2 && groupSize%8 == 0 && groupSize <= quantChunk {
		// Whole groups up to 32 (and quantChunk elements) a call, each
		// span packed after it.
		var p [32]quantArgs
		span := min(len(p), quantChunk/groupSize)
		for whole := len(x) / groupSize; g < whole; {
			n := min(span, whole-g)
			for k := range n {
				p[k] = groupArgs(scales[g+k], mins[g+k], qmax)
			}
			start := g * groupSize
			cs := codes[:n*groupSize]
			if recon == nil {
				quantCodesGroupsAVX2(&x[start], n, groupSize, &p[0], &cs[0])
			} else {
				quantReconGroupsAVX2(&x[start], n, groupSize, &p[0], &cs[0], &recon[start])
			}
			packCodes(dst, start, cs, bits)
			g += n
		}
	}
	for ; g*groupSize < len(x); g++ {
		start := g * groupSize
		end := min(len(x), start+groupSize)
		p := groupArgs(scales[g], mins[g], qmax)
		for c := start; c < end; c += quantChunk {
			part := x[c:min(end, c+quantChunk)]
			if recon == nil {
				quantCodes(part, &p, codes[:len(part)])
			} else {
				quantRecon(part, &p, codes[:len(part)], recon[c:c+len(part)])
			}
			packCodes(dst, c, codes[:len(part)], bits)
		}
	}
}

// groupArgs are a group's params for the quantization loops.
func groupArgs(scale, minv uint16, qmax float32) quantArgs {
	s, m := fp.HalfToFloat32(scale), fp.HalfToFloat32(minv)
	var inv float32
	if s != 0 {
		inv = 1 / s
	}
	return quantArgs{s: s, m: m, inv: inv, qmax: qmax}
}

// keyToFloat inverts the order-preserving key of minMaxKeysAVX2.
func keyToFloat(k int32) float32 {
	return math.Float32frombits(uint32(k ^ int32(uint32(k>>31)>>1)))
}

// MagnitudeMaxInto folds the magnitudes of 16-bit floats (fp16 or bf16
// bit patterns) into r element-wise: r[i] = max(r[i], x[i] &^ 0x8000) as
// unsigned integers, 16 at a time with AVX2. Both formats' magnitudes
// order as their bit patterns do, so decoded, this is AbsMaxInto of the
// decoded values (a NaN: some NaN) without decoding them.
func MagnitudeMaxInto(r, x []uint16) {
	r = r[:len(x)]
	n16 := len(x) &^ 15
	if useAVX2 && n16 > 0 {
		magMaxAVX2(&r[0], &x[0], n16)
	} else {
		n16 = 0
	}
	for i := n16; i < len(x); i++ {
		r[i] = max(r[i], x[i]&^0x8000)
	}
}

// AbsMaxInto folds |x| into r element-wise: r[i] = max(r[i], |x[i]|) with
// Go's max (a NaN on either side gives NaN), 8 at a time with AVX2.
func AbsMaxInto(r, x []float32) {
	r = r[:len(x)]
	n8 := len(x) &^ 7
	if useAVX2 && n8 > 0 {
		absMaxAVX2(&r[0], &x[0], n8)
	} else {
		n8 = 0
	}
	for i := n8; i < len(x); i++ {
		r[i] = max(r[i], math.Float32frombits(math.Float32bits(x[i])&^(1<<31)))
	}
}
