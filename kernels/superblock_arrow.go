package kernels

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/compute/exec"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// SuperBlockQuantizedType is the output of a super-block method's
// "<name>_quantize" and "<name>_quantize_weighted": the packed codes,
// empty scales and mins lists (one empty list per row: the params are in
// group_params), the similarity sums of the stored reconstruction, the
// error-weighted sums (equal to similarity for the unweighted function)
// and each row's group_params bytes (see superblock.go).
var SuperBlockQuantizedType = arrow.StructOf(
	arrow.Field{Name: "codes", Type: arrow.BinaryTypes.Binary},
	arrow.Field{Name: "scales", Type: ListF16},
	arrow.Field{Name: "mins", Type: ListF16},
	arrow.Field{Name: "similarity", Type: CosineType},
	arrow.Field{Name: "weighted_similarity", Type: CosineType},
	arrow.Field{Name: "group_params", Type: arrow.BinaryTypes.Binary},
)

// superBlockOptions reads QuantOptions (Bits, NoSimilarity and
// ChannelScales count).
func superBlockOptions(ctx *exec.KernelCtx) (QuantOptions, error) {
	o, ok := ctx.State.(QuantOptions)
	if !ok {
		return o, fmt.Errorf("kernels: missing QuantOptions")
	}
	if _, _, _, err := SuperBlockLayout(o.Bits); err != nil {
		return o, err
	}
	return o, nil
}

// firstNull is the index of sp's first null row, or -1.
func firstNull(sp *exec.ArraySpan) int {
	if sp.Nulls == 0 || len(sp.Buffers[0].Buf) == 0 {
		return -1
	}
	for i := 0; i < int(sp.Len); i++ {
		if bitutil.BitIsNotSet(sp.Buffers[0].Buf, int(sp.Offset)+i) {
			return i
		}
	}
	return -1
}

// binaryRows gives row-wise access to a binary span.
type binaryRows struct {
	offs []int32
	data []byte
}

func newBinaryRows(sp *exec.ArraySpan) binaryRows {
	if sp.Len == 0 {
		return binaryRows{}
	}
	return binaryRows{offs: exec.GetSpanOffsets[int32](sp, 1), data: sp.Buffers[2].Buf}
}

func (b binaryRows) row(i int) []byte { return b.data[b.offs[i]:b.offs[i+1]] }

// ---- aq_dequantize_superblock(codes, group_params, n) -> list<float32>

func newDequantizeSuperBlockFunction() compute.Function {
	fn := compute.NewScalarFunction(FuncDequantizeSuperBlock, compute.Arity{NArgs: 3}, compute.FunctionDoc{
		Summary:  "Unpack and dequantize each super-block-format row to float32 (QuantOptions.Bits; GroupSize is ignored)",
		ArgNames: []string{"codes", "group_params", "n"}, OptionsType: "QuantOptions", OptionsRequired: true,
	})
	in := []exec.InputType{exec.NewExactInput(arrow.BinaryTypes.Binary), exec.NewExactInput(arrow.BinaryTypes.Binary), exec.NewExactInput(arrow.PrimitiveTypes.Int64)}
	if err := fn.AddKernel(newKernel(in, ListF32, execDequantizeSuperBlock)); err != nil {
		panic(err)
	}
	return fn
}

func execDequantizeSuperBlock(ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
	o, err := superBlockOptions(ctx)
	if err == nil {
		err = o.noChannelScales()
	}
	if err != nil {
		return err
	}
	bits := o.Bits
	for k, what := range []string{"codes", "group_params", "n"} {
		if i := firstNull(&batch.Values[k].Array); i >= 0 {
			return fmt.Errorf("kernels: dequantize_superblock: row %d: %s is null", i, what)
		}
	}
	codes, params := newBinaryRows(&batch.Values[0].Array), newBinaryRows(&batch.Values[1].Array)
	counts := exec.GetSpanValues[int64](&batch.Values[2].Array, 1)
	n := int(batch.Len)
	for i := 0; i < n; i++ {
		c := counts[i]
		if c < 0 {
			return fmt.Errorf("kernels: dequantize_superblock: row %d: negative element count %d", i, c)
		}
		if got, want := int64(len(codes.row(i))), PackedLen(c, bits); got != want {
			return fmt.Errorf("kernels: dequantize_superblock: row %d: %d elements at %d bits need %d code bytes, have %d", i, c, bits, want, got)
		}
		if got, want := int64(len(params.row(i))), SuperBlockParamsLen(c, bits); got != want {
			return fmt.Errorf("kernels: dequantize_superblock: row %d: %d elements at %d bits need %d group_params bytes, have %d", i, c, bits, want, got)
		}
	}
	res := newFilledListBuilder(exec.GetAllocator(ctx.Ctx), ListF32, func(i int) int { return int(counts[i]) }, n)
	for i := 0; i < n; i++ {
		if err := DequantizeSuperBlocks(res.float32s(i), codes.row(i), params.row(i), bits); err != nil {
			res.finish().Release()
			return fmt.Errorf("kernels: dequantize_superblock: row %d: %w", i, err)
		}
	}
	setOutput(out, res.finish())
	return nil
}

// ---- <method>_quantize(values) and <method>_quantize_weighted(values,
// weights) of a super-block method -> SuperBlockQuantizedType

func newSuperBlockQuantizeFunction(m Method, weighted bool) compute.Function {
	run := func(ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
		return execSuperBlockQuantize(m.SuperBlock, weighted, ctx, batch, out)
	}
	if weighted {
		return newValuesFunction(m.WeightedQuantizeFunc(), "Fused super-block params (weighted search), pack and similarity: "+m.Description,
			[]string{"values", "weights"}, SuperBlockQuantizedType, []exec.InputType{listOf(arrow.FLOAT32)}, run)
	}
	return newValuesFunction(m.QuantizeFunc(), "Fused super-block params, pack and similarity: "+m.Description,
		[]string{"values"}, SuperBlockQuantizedType, nil, run)
}

// newBinaryBuffers allocates the offsets and data of a binary array whose
// row lengths are known.
func newBinaryBuffers(mem memory.Allocator, n int, length func(i int) int64) (offsets, data *memory.Buffer) {
	offsets = memory.NewResizableBuffer(mem)
	offsets.Resize(4 * (n + 1))
	offs := arrow.Int32Traits.CastFromBytes(offsets.Bytes())
	for i := 0; i < n; i++ {
		offs[i+1] = offs[i] + int32(length(i))
	}
	data = memory.NewResizableBuffer(mem)
	data.Resize(int(offs[n]))
	return offsets, data
}

func binaryData(n int, offsets, data *memory.Buffer) arrow.ArrayData {
	d := array.NewData(arrow.BinaryTypes.Binary, n, []*memory.Buffer{nil, offsets, data}, nil, 0, 0)
	offsets.Release()
	data.Release()
	return d
}

func execSuperBlockQuantize(fn SuperBlockFunc, weighted bool, ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
	o, err := superBlockOptions(ctx)
	if err != nil {
		return err
	}
	bits := o.Bits
	_, _, bpsb, _ := SuperBlockLayout(bits)
	in, weights, err := valuesAndWeights(batch, weighted)
	if err != nil {
		return err
	}
	mem := exec.GetAllocator(ctx.Ctx)
	n := int(batch.Len)
	codeOffsets, codeData := newBinaryBuffers(mem, n, func(i int) int64 { return PackedLen(int64(in.len(i)), bits) })
	parOffsets, parData := newBinaryBuffers(mem, n, func(i int) int64 { return SuperBlockParamsLen(int64(in.len(i)), bits) })
	cOffs := arrow.Int32Traits.CastFromBytes(codeOffsets.Bytes())
	pOffs := arrow.Int32Traits.CastFromBytes(parOffsets.Bytes())
	codes, params := codeData.Bytes(), parData.Bytes()
	sims, wsims := make([]Similarity, n), make([]Similarity, n)
	buf := scratchPool.Get().(*fusedScratch) // every buffer is written before it is read
	defer scratchPool.Put(buf)
	for i := 0; i < n; i++ {
		rowLen := in.len(i)
		var w []float32
		if weighted {
			w = weights.f32[weights.offsets[i]:weights.offsets[i+1]]
		}
		rowCodes, rowParams := codes[cOffs[i]:cOffs[i+1]], params[pOffs[i]:pOffs[i+1]]
		bs := blockSims{sum: &sims[i], wsum: &wsims[i]}
		for start := 0; start < rowLen; start += FusedBlockElems {
			blk, recon, wb := buf.block(&o, in, i, start, w) // block by block, in cache
			c0 := start * bits / 8
			c1 := c0 + int(PackedLen(int64(len(blk)), bits))
			p0 := start / SuperBlockElems * bpsb
			p1 := p0 + int(SuperBlockParamsLen(int64(len(blk)), bits))
			err := fn(blk, wb, bits, rowCodes[c0:c1], rowParams[p0:p1], int64(start))
			if err == nil && !o.NoSimilarity {
				err = DequantizeSuperBlocks(recon, rowCodes[c0:c1], rowParams[p0:p1], bits)
			}
			if err != nil {
				binaryData(n, codeOffsets, codeData).Release()
				binaryData(n, parOffsets, parData).Release()
				return fmt.Errorf("row %d: %w", i, err)
			}
			if o.NoSimilarity {
				continue
			}
			bs.add(blk, recon, wb)
		}
		bs.flush()
		if w == nil {
			wsims[i] = sims[i] // unweighted: the same sums
		}
	}
	empty := func(int) int { return 0 }
	setOutput(out, structData(SuperBlockQuantizedType, n,
		binaryData(n, codeOffsets, codeData),
		newListBuilder(mem, ListF16, empty, n).finish(),
		newListBuilder(mem, ListF16, empty, n).finish(),
		similarityColumn(mem, sims, o.NoSimilarity), similarityColumn(mem, wsims, o.NoSimilarity),
		binaryData(n, parOffsets, parData)))
	return nil
}
