package quant

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/float16"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/kernels"
)

// unsmoothedReference is unsmoothedSimilarity made whole: the chunk's
// reconstruction in one buffer, scaled by 1/s, against x.
func unsmoothedReference(t *testing.T, x []float32, c *chunk, bits, groupSize int, sm *smoothing) kernels.Similarity {
	back := make([]float32, len(x))
	codes := c.codes.(*array.Binary).Value(0)
	if c.groupParams != nil {
		if err := kernels.DequantizeSuperBlocks(back, codes, c.groupParams.(*array.Binary).Value(0), bits); err != nil {
			t.Fatal(err)
		}
	} else {
		kernels.DequantizeGroups(back, codes, halfValues(c.scales), halfValues(c.mins), bits, groupSize)
	}
	artifact.ScaleChannels(back, c.off, sm.inv)
	return kernels.SimilarityOf(x, back)
}

func binaryRow(mem memory.Allocator, b []byte) arrow.Array {
	bb := array.NewBinaryBuilder(mem, arrow.BinaryTypes.Binary)
	defer bb.Release()
	bb.Append(b)
	return bb.NewArray()
}

func halfList(mem memory.Allocator, h []uint16) arrow.Array {
	lb := array.NewListBuilder(mem, arrow.FixedWidthTypes.Float16)
	defer lb.Release()
	lb.Append(true)
	vb := lb.ValueBuilder().(*array.Float16Builder)
	for _, v := range h {
		vb.Append(float16.FromBits(v))
	}
	return lb.NewArray()
}

// The similarity of a smoothed chunk, its reconstruction made and compared
// piece by piece (and its 16-bit values decoded so), is the whole-buffer
// computation's bit for bit: float32, bf16 and fp16 values, group and
// super-block formats, INT2/4/8, group sizes that do and do not divide the
// piece, ragged chunk ends, chunks starting mid-row.
func TestUnsmoothedSimilarityInPieces(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rng := rand.New(rand.NewPCG(13, 14))
	for it := range 60 {
		bits := []int{2, 4, 8}[it%3]
		super := it%2 == 1
		groupSize := []int{32, 64, 128, 100, 256, 1000}[it%6]
		in := 1 + rng.IntN(5000)
		n := 1 + rng.IntN(40000)
		if it%5 == 0 {
			n = 3 * 4096 // whole pieces only
		}
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		// As stored: float32, or bf16 / fp16 patterns decoded piece by piece.
		cv := chunkValues{f32: x}
		if k := it % 4; k > 0 && k < 3 {
			cv = chunkValues{bits: make([]uint16, n), decode: fp.DecodeBF16s, decodeOne: fp.BF16ToFloat32}
			if k == 2 {
				cv.decode, cv.decodeOne = fp.DecodeHalves, fp.HalfToFloat32
			}
			for i, v := range x {
				cv.bits[i] = fp.Float32ToBF16(v)
				if k == 2 {
					cv.bits[i] = fp.Float32ToHalf(v)
				}
				x[i] = cv.decodeOne(cv.bits[i])
			}
		}
		sm := &smoothing{inv: make([]float32, in)}
		for j := range sm.inv {
			sm.inv[j] = float32(math.Exp(rng.NormFloat64()))
		}
		codes := make([]byte, kernels.PackedLen(int64(n), bits))
		for i := range codes {
			codes[i] = byte(rng.Uint32())
		}
		c := &chunk{off: int64(rng.IntN(10 * in)), n: int64(n), codes: binaryRow(mem, codes)}
		if super {
			g, pb, bpsb, err := kernels.SuperBlockLayout(bits)
			if err != nil {
				t.Fatal(err)
			}
			params := make([]byte, kernels.SuperBlockParamsLen(int64(n), bits))
			for sb := range int(kernels.NumSuperBlocks(int64(n))) {
				p := kernels.SuperBlockParams{D: fp.Float32ToHalf(float32(rng.Float64() / 8)), DMin: fp.Float32ToHalf(float32(rng.Float64() / 8))}
				for j := range kernels.SuperBlockElems / g {
					p.Sc[j], p.Mc[j] = uint8(rng.IntN(1<<pb)), uint8(rng.IntN(1<<pb))
				}
				kernels.EncodeSuperBlockParams(params[sb*bpsb:], &p, kernels.SuperBlockElems/g, pb)
			}
			c.groupParams = binaryRow(mem, params)
		} else {
			ng := int(kernels.NumGroups(int64(n), groupSize))
			scales, mins := make([]uint16, ng), make([]uint16, ng)
			for g := range ng {
				scales[g], mins[g] = fp.Float32ToHalf(float32(rng.Float64()/4)), fp.Float32ToHalf(float32(-rng.Float64()))
			}
			c.scales, c.mins = halfList(mem, scales), halfList(mem, mins)
		}
		want := unsmoothedReference(t, x, c, bits, groupSize, sm)
		got, err := unsmoothedSimilarity(&cv, c, bits, groupSize, sm)
		c.release()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("it %d (INT%d, super %v, group %d, n %d, in %d, off %d, 16-bit %v): %+v, whole-buffer %+v", it, bits, super, groupSize, n, in, c.off, cv.decode != nil, got, want)
		}
	}
}
