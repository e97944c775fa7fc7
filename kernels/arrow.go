package kernels

import (
	"errors"
	"fmt"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/compute/exec"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/bufpool"
	"github.com/arrowquant/arrowquant/internal/fp"
)

// Arrow types of the functions' inputs and outputs.
var (
	ListF32  = arrow.ListOf(arrow.PrimitiveTypes.Float32)
	ListF16  = arrow.ListOf(arrow.FixedWidthTypes.Float16)
	ListBF16 = arrow.ListOf(arrow.PrimitiveTypes.Uint16) // bfloat16 bits: Arrow has no bfloat16 type

	MinMaxType = arrow.StructOf(
		arrow.Field{Name: "mins", Type: ListF32},
		arrow.Field{Name: "maxs", Type: ListF32},
	)
	ParamsType = arrow.StructOf(
		arrow.Field{Name: "scales", Type: ListF16},
		arrow.Field{Name: "mins", Type: ListF16},
	)
	QuantizedType = arrow.StructOf(
		arrow.Field{Name: "codes", Type: arrow.BinaryTypes.Binary},
		arrow.Field{Name: "scales", Type: ListF16},
		arrow.Field{Name: "mins", Type: ListF16},
		arrow.Field{Name: "similarity", Type: CosineType},
	)
	// WeightedQuantizedType adds the error-weighted similarity sums
	// (Σw·x·x̂, Σw·x², Σw·x̂², Σw·(x-x̂)²) of <method>_quantize_weighted.
	WeightedQuantizedType = arrow.StructOf(
		arrow.Field{Name: "codes", Type: arrow.BinaryTypes.Binary},
		arrow.Field{Name: "scales", Type: ListF16},
		arrow.Field{Name: "mins", Type: ListF16},
		arrow.Field{Name: "similarity", Type: CosineType},
		arrow.Field{Name: "weighted_similarity", Type: CosineType},
	)
	CosineType = arrow.StructOf(
		arrow.Field{Name: "cosine", Type: arrow.PrimitiveTypes.Float64},
		arrow.Field{Name: "rel_mse", Type: arrow.PrimitiveTypes.Float64},
		arrow.Field{Name: "dot", Type: arrow.PrimitiveTypes.Float64},
		arrow.Field{Name: "norm_a2", Type: arrow.PrimitiveTypes.Float64},
		arrow.Field{Name: "norm_b2", Type: arrow.PrimitiveTypes.Float64},
		arrow.Field{Name: "err2", Type: arrow.PrimitiveTypes.Float64},
		arrow.Field{Name: "n", Type: arrow.PrimitiveTypes.Int64},
	)
)

// valueTypes are the element types every value-taking kernel accepts.
var valueTypes = []arrow.Type{arrow.FLOAT32, arrow.FLOAT16, arrow.UINT16}

// listOfMatcher matches list<T> by T's type id, whatever the item field is called.
type listOfMatcher struct{ elem arrow.Type }

func (m listOfMatcher) Matches(t arrow.DataType) bool {
	l, ok := t.(*arrow.ListType)
	return ok && l.Elem().ID() == m.elem
}
func (m listOfMatcher) Equals(o exec.TypeMatcher) bool {
	x, ok := o.(listOfMatcher)
	return ok && x == m
}
func (m listOfMatcher) String() string { return "list<" + m.elem.String() + ">" }

func listOf(id arrow.Type) exec.InputType { return exec.NewMatchedInput(listOfMatcher{id}) }

// rows gives row-wise access to a list<float32|float16|uint16(bf16)> span.
type rows struct {
	offsets []int32
	elem    arrow.Type
	f32     []float32
	u16     []uint16
}

func listRows(sp *exec.ArraySpan, what string) (rows, error) {
	if sp.Nulls > 0 {
		return rows{}, fmt.Errorf("kernels: %s has %d null rows; every row must hold a chunk", what, sp.Nulls)
	}
	child := &sp.Children[0]
	if child.Nulls > 0 {
		return rows{}, fmt.Errorf("kernels: %s has %d null values", what, child.Nulls)
	}
	r := rows{elem: child.Type.ID()}
	if sp.Len > 0 {
		r.offsets = exec.GetSpanOffsets[int32](sp, 1)[:sp.Len+1]
	}
	switch r.elem {
	case arrow.FLOAT32:
		r.f32 = exec.GetSpanValues[float32](child, 1)
	case arrow.FLOAT16, arrow.UINT16:
		r.u16 = exec.GetSpanValues[uint16](child, 1)
	default:
		return rows{}, fmt.Errorf("kernels: %s: unsupported element type %s", what, child.Type)
	}
	return r, nil
}

func (r rows) len(i int) int { return int(r.offsets[i+1] - r.offsets[i]) }

// float32s returns row i as float32, decoding float16/bf16 into scratch.
func (r rows) float32s(i int, scratch *[]float32) []float32 {
	n := r.len(i)
	if r.elem != arrow.FLOAT32 && cap(*scratch) < n {
		*scratch = make([]float32, n)
	}
	return r.block(i, 0, n, *scratch)
}

// block returns values [start, start+n) of row i as float32: a view of a
// float32 row, else decoded into buf (n floats at least).
func (r rows) block(i, start, n int, buf []float32) []float32 {
	lo := int(r.offsets[i]) + start
	if r.elem == arrow.FLOAT32 {
		return r.f32[lo : lo+n]
	}
	dst, src := buf[:n], r.u16[lo:lo+n]
	if r.elem == arrow.FLOAT16 {
		fp.DecodeHalves(dst, src)
	} else {
		fp.DecodeBF16s(dst, src)
	}
	return dst
}

// uint16s returns row i of a list<float16> span as raw bits.
func (r rows) uint16s(i int) []uint16 { return r.u16[r.offsets[i]:r.offsets[i+1]] }

// listBuilder allocates a list array whose row lengths are known up front.
type listBuilder struct {
	offsets *memory.Buffer
	values  *memory.Buffer
	typ     *arrow.ListType
	n       int
	total   int
}

func newListBuilder(mem memory.Allocator, typ *arrow.ListType, lens func(i int) int, n int) *listBuilder {
	return newListBuilderOver(mem, mem, typ, lens, n)
}

// newFilledListBuilder is newListBuilder for a caller that writes every
// value before anything reads it: a pooled values buffer is not cleared
// first (a dequantized chunk's 4 MB clear cost more than the kernel).
func newFilledListBuilder(mem memory.Allocator, typ *arrow.ListType, lens func(i int) int, n int) *listBuilder {
	return newListBuilderOver(mem, bufpool.UninitOf(mem), typ, lens, n)
}

func newListBuilderOver(mem, valuesMem memory.Allocator, typ *arrow.ListType, lens func(i int) int, n int) *listBuilder {
	b := &listBuilder{typ: typ, n: n}
	b.offsets = memory.NewResizableBuffer(mem)
	b.offsets.Resize(4 * (n + 1))
	offs := arrow.Int32Traits.CastFromBytes(b.offsets.Bytes())
	for i := 0; i < n; i++ {
		offs[i+1] = offs[i] + int32(lens(i))
	}
	b.total = int(offs[n])
	width := typ.Elem().(arrow.FixedWidthDataType).BitWidth() / 8
	b.values = memory.NewResizableBuffer(valuesMem)
	b.values.Resize(width * b.total)
	return b
}

func (b *listBuilder) offs() []int32 { return arrow.Int32Traits.CastFromBytes(b.offsets.Bytes()) }

func (b *listBuilder) float32s(i int) []float32 {
	o := b.offs()
	return arrow.Float32Traits.CastFromBytes(b.values.Bytes())[o[i]:o[i+1]]
}

func (b *listBuilder) uint16s(i int) []uint16 {
	o := b.offs()
	return arrow.Uint16Traits.CastFromBytes(b.values.Bytes())[o[i]:o[i+1]]
}

// finish returns the list data; the builder's buffers move into it.
func (b *listBuilder) finish() arrow.ArrayData {
	child := array.NewData(b.typ.Elem(), b.total, []*memory.Buffer{nil, b.values}, nil, 0, 0)
	defer child.Release()
	d := array.NewData(b.typ, b.n, []*memory.Buffer{nil, b.offsets}, []arrow.ArrayData{child}, 0, 0)
	b.offsets.Release()
	b.values.Release()
	return d
}

func structData(typ arrow.DataType, n int, children ...arrow.ArrayData) arrow.ArrayData {
	d := array.NewData(typ, n, []*memory.Buffer{nil}, children, 0, 0)
	for _, c := range children {
		c.Release()
	}
	return d
}

// setOutput moves d into the kernel result.
func setOutput(out *exec.ExecResult, d arrow.ArrayData) {
	out.TakeOwnership(d)
	d.Release()
}

func newKernel(in []exec.InputType, out arrow.DataType, fn exec.ArrayKernelExec) exec.ScalarKernel {
	k := exec.NewScalarKernel(in, exec.NewOutputType(out), fn, exec.OptionsInit[QuantOptions])
	k.CanWriteIntoSlices = false
	k.NullHandling = exec.NullComputedNoPrealloc
	k.MemAlloc = exec.MemNoPrealloc
	return k
}

func options(ctx *exec.KernelCtx, needBits bool) (QuantOptions, error) {
	o, err := quantizeOptions(ctx, needBits)
	if err == nil {
		err = o.noChannelScales()
	}
	return o, err
}

// quantizeOptions is options for the quantize functions, the ones that
// apply ChannelScales.
func quantizeOptions(ctx *exec.KernelCtx, needBits bool) (QuantOptions, error) {
	o, ok := ctx.State.(QuantOptions)
	if !ok {
		return o, fmt.Errorf("kernels: missing QuantOptions")
	}
	return o, o.Validate(needBits)
}

// ErrChannelScales is QuantOptions.ChannelScales given to a function
// other than a quantize function, which would ignore them.
var ErrChannelScales = errors.New("kernels: QuantOptions.ChannelScales apply to the quantize functions only")

func (o QuantOptions) noChannelScales() error {
	if len(o.ChannelScales) > 0 {
		return ErrChannelScales
	}
	return nil
}

// newValuesFunction builds a function whose first argument is a list of
// values, with one kernel per value type; extra are the fixed types of
// the remaining arguments.
func newValuesFunction(name, summary string, args []string, out arrow.DataType, extra []exec.InputType, run exec.ArrayKernelExec) compute.Function {
	fn := compute.NewScalarFunction(name, compute.Arity{NArgs: len(args)}, compute.FunctionDoc{
		Summary: summary, ArgNames: args, OptionsType: "QuantOptions", OptionsRequired: true,
	})
	for _, t := range valueTypes {
		in := append([]exec.InputType{listOf(t)}, extra...)
		if err := fn.AddKernel(newKernel(in, out, run)); err != nil {
			panic(err)
		}
	}
	return fn
}

// ---- aq_group_minmax(values) -> struct<mins, maxs>

func newMinMaxFunction() compute.Function {
	return newValuesFunction(FuncGroupMinMax, "Per-group min and max of each row", []string{"values"}, MinMaxType, nil, execMinMax)
}

func execMinMax(ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
	return execPerGroup(ctx, batch, out, false, ListF32, MinMaxType, func(x []float32, o QuantOptions, mins, maxs *listBuilder, row int) error {
		return GroupMinMax(x, o.GroupSize, mins.float32s(row), maxs.float32s(row), 0)
	})
}

// execPerGroup fills two per-group lists (the fields of outType) for every
// row of values with fill.
func execPerGroup(ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult, needBits bool, elem *arrow.ListType,
	outType arrow.DataType, fill func(x []float32, o QuantOptions, a, b *listBuilder, row int) error) error {
	o, err := options(ctx, needBits)
	if err != nil {
		return err
	}
	in, err := listRows(&batch.Values[0].Array, "values")
	if err != nil {
		return err
	}
	mem := exec.GetAllocator(ctx.Ctx)
	n := int(batch.Len)
	groups := func(i int) int { return int(NumGroups(int64(in.len(i)), o.GroupSize)) }
	a, b := newListBuilder(mem, elem, groups, n), newListBuilder(mem, elem, groups, n)
	scratch := bufpool.GetFloat32s()
	defer bufpool.PutFloat32s(scratch)
	for i := 0; i < n; i++ {
		if err := fill(in.float32s(i, scratch), o, a, b, i); err != nil {
			a.finish().Release()
			b.finish().Release()
			return fmt.Errorf("row %d: %w", i, err)
		}
	}
	setOutput(out, structData(outType, n, a.finish(), b.finish()))
	return nil
}

// ---- <method>_group_params(values) -> struct<scales, mins>

func newParamsFunction(m Method) compute.Function {
	run := func(ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
		return execParams(m.GroupParams, ctx, batch, out)
	}
	return newValuesFunction(m.ParamsFunc(), "Per-group fp16 scale and min: "+m.Description, []string{"values"}, ParamsType, nil, run)
}

func execParams(params GroupParamsFunc, ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
	return execPerGroup(ctx, batch, out, true, ListF16, ParamsType, func(x []float32, o QuantOptions, scales, mins *listBuilder, row int) error {
		return params(x, o.Bits, o.GroupSize, scales.uint16s(row), mins.uint16s(row), 0)
	})
}

// ---- aq_pack(values, scales, mins) -> binary

func newPackFunction() compute.Function {
	return newValuesFunction(FuncPack, "Quantize and pack each row to INT2/INT4/INT8 codes", []string{"values", "scales", "mins"},
		arrow.BinaryTypes.Binary, []exec.InputType{listOf(arrow.FLOAT16), listOf(arrow.FLOAT16)}, execPack)
}

func paramRows(batch *exec.ExecSpan, first int) (scales, mins rows, err error) {
	if scales, err = listRows(&batch.Values[first].Array, "scales"); err != nil {
		return
	}
	mins, err = listRows(&batch.Values[first+1].Array, "mins")
	return
}

func checkGroups(i, n, have, groupSize int) error {
	if want := int(NumGroups(int64(n), groupSize)); have != want {
		return fmt.Errorf("kernels: row %d: %d elements need %d groups of %d, params have %d", i, n, want, groupSize, have)
	}
	return nil
}

func execPack(ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
	o, err := options(ctx, true)
	if err != nil {
		return err
	}
	in, err := listRows(&batch.Values[0].Array, "values")
	if err != nil {
		return err
	}
	scales, mins, err := paramRows(batch, 1)
	if err != nil {
		return err
	}
	n := int(batch.Len)
	for i := 0; i < n; i++ {
		if err := checkGroups(i, in.len(i), scales.len(i), o.GroupSize); err != nil {
			return err
		}
		if err := checkGroups(i, in.len(i), mins.len(i), o.GroupSize); err != nil {
			return err
		}
	}
	mem := exec.GetAllocator(ctx.Ctx)
	offsets := memory.NewResizableBuffer(mem)
	offsets.Resize(4 * (n + 1))
	offs := arrow.Int32Traits.CastFromBytes(offsets.Bytes())
	for i := 0; i < n; i++ {
		offs[i+1] = offs[i] + int32(PackedLen(int64(in.len(i)), o.Bits))
	}
	data := memory.NewResizableBuffer(mem)
	data.Resize(int(offs[n]))
	buf := data.Bytes()
	scratch := bufpool.GetFloat32s()
	defer bufpool.PutFloat32s(scratch)
	for i := 0; i < n; i++ {
		PackGroups(buf[offs[i]:offs[i+1]], in.float32s(i, scratch), scales.uint16s(i), mins.uint16s(i), o.Bits, o.GroupSize)
	}
	d := array.NewData(arrow.BinaryTypes.Binary, n, []*memory.Buffer{nil, offsets, data}, nil, 0, 0)
	offsets.Release()
	data.Release()
	setOutput(out, d)
	return nil
}

// ---- aq_dequantize(codes, scales, mins, n) -> list<float32>

func newDequantizeFunction() compute.Function {
	fn := compute.NewScalarFunction(FuncDequantize, compute.Arity{NArgs: 4}, compute.FunctionDoc{
		Summary:  "Unpack and dequantize each row to float32",
		ArgNames: []string{"codes", "scales", "mins", "n"}, OptionsType: "QuantOptions", OptionsRequired: true,
	})
	in := []exec.InputType{exec.NewExactInput(arrow.BinaryTypes.Binary), listOf(arrow.FLOAT16), listOf(arrow.FLOAT16), exec.NewExactInput(arrow.PrimitiveTypes.Int64)}
	if err := fn.AddKernel(newKernel(in, ListF32, execDequantize)); err != nil {
		panic(err)
	}
	return fn
}

func execDequantize(ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
	o, err := options(ctx, true)
	if err != nil {
		return err
	}
	codesSpan := &batch.Values[0].Array
	scales, mins, err := paramRows(batch, 1)
	if err != nil {
		return err
	}
	countSpan := &batch.Values[3].Array
	if codesSpan.Nulls > 0 || countSpan.Nulls > 0 {
		return fmt.Errorf("kernels: dequantize: codes and n must not be null")
	}
	codeOffs := exec.GetSpanOffsets[int32](codesSpan, 1)
	codeData := codesSpan.Buffers[2].Buf
	counts := exec.GetSpanValues[int64](countSpan, 1)
	n := int(batch.Len)
	for i := 0; i < n; i++ {
		c := int(counts[i])
		if c < 0 {
			return fmt.Errorf("kernels: dequantize: row %d: negative element count %d", i, c)
		}
		if got, want := int64(codeOffs[i+1]-codeOffs[i]), PackedLen(int64(c), o.Bits); got != want {
			return fmt.Errorf("kernels: dequantize: row %d: %d elements at %d bits need %d code bytes, have %d", i, c, o.Bits, want, got)
		}
		if err := checkGroups(i, c, scales.len(i), o.GroupSize); err != nil {
			return err
		}
		if err := checkGroups(i, c, mins.len(i), o.GroupSize); err != nil {
			return err
		}
	}
	res := newFilledListBuilder(exec.GetAllocator(ctx.Ctx), ListF32, func(i int) int { return int(counts[i]) }, n)
	for i := 0; i < n; i++ {
		DequantizeGroups(res.float32s(i), codeData[codeOffs[i]:codeOffs[i+1]], scales.uint16s(i), mins.uint16s(i), o.Bits, o.GroupSize)
	}
	setOutput(out, res.finish())
	return nil
}

// ---- aq_cosine(original, reconstruction) -> struct<cosine, rel_mse, sums...>

func newCosineFunction() compute.Function {
	fn := compute.NewScalarFunction(FuncCosine, compute.Binary(), compute.FunctionDoc{
		Summary:  "Cosine similarity and relative MSE of each row against its reconstruction",
		ArgNames: []string{"original", "reconstruction"},
	})
	for _, t := range valueTypes {
		k := newKernel([]exec.InputType{listOf(t), listOf(arrow.FLOAT32)}, CosineType, execCosine)
		k.Init = nil
		if err := fn.AddKernel(k); err != nil {
			panic(err)
		}
	}
	return fn
}

func execCosine(ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
	a, err := listRows(&batch.Values[0].Array, "original")
	if err != nil {
		return err
	}
	b, err := listRows(&batch.Values[1].Array, "reconstruction")
	if err != nil {
		return err
	}
	sims := make([]Similarity, batch.Len)
	scratch := bufpool.GetFloat32s()
	defer bufpool.PutFloat32s(scratch)
	for i := range sims {
		if a.len(i) != b.len(i) {
			return fmt.Errorf("kernels: cosine: row %d: lengths differ (%d vs %d)", i, a.len(i), b.len(i))
		}
		sims[i] = SimilarityOf(a.float32s(i, scratch), b.f32[b.offsets[i]:b.offsets[i+1]])
	}
	setOutput(out, similarityData(exec.GetAllocator(ctx.Ctx), sims))
	return nil
}

// ---- <method>_quantize(values) -> struct<codes, scales, mins, similarity>
//
// The fused fast path: per cache-sized block, group params, pack, then
// dequantize and accumulate the similarity sums while the block is hot.
// Its output equals <method>_group_params + aq_pack + aq_dequantize +
// aq_cosine, which the tests check.

// FusedBlockElems is the block of a row the fused kernels quantize at a
// time, in cache (a multiple of every group size they take): a row's
// similarity sums are SimilarityOf's of each block against its
// reconstruction, added in block order (Similarity.Add).
const FusedBlockElems = 4096

// fusedScratch are the fused kernels' block buffers (values, scaled
// values, reconstruction: two of each, so that blockSims can hold a
// block while the next one is made; weights). 112 KB: pooled, not on
// the stack of every chunk's goroutine.
type fusedScratch struct {
	x, y, recon [2][FusedBlockElems]float32
	w           [FusedBlockElems]float32
}

var scratchPool = sync.Pool{New: func() any { return new(fusedScratch) }}

// block is row i's block at start (its values, channel-scaled when o says
// so), the buffer for its reconstruction and, with the row's weights w,
// its weights. Consecutive blocks take alternate buffers, so that
// blockSims can hold one while the next is made.
func (s *fusedScratch) block(o *QuantOptions, in rows, i, start int, w []float32) (x, recon, wb []float32) {
	k := start / FusedBlockElems & 1
	rowLen := in.len(i)
	x = o.inputBlock(in, i, start, min(rowLen-start, FusedBlockElems), s.x[k][:], s.y[k][:])
	if w != nil {
		wb = blockWeights(w, rowLen, start, len(x), s.w[:])
	}
	return x, s.recon[k][:len(x)], wb
}

// blockSims adds the similarities of a row's blocks to *sum (and the
// weighted ones to *wsum) in block order. Unweighted blocks go two at a
// time (similarityPair): add holds a block back until the next one comes,
// so its slices must stay unchanged until the next add or flush.
type blockSims struct {
	sum, wsum *Similarity
	x, r      []float32 // the block held back, and its reconstruction
}

// add adds block x's similarity to its reconstruction, and with weights w
// its weighted similarity (both in one pass).
func (b *blockSims) add(x, recon, w []float32) {
	if w != nil {
		s, ws := SimilaritiesOf(x, recon, w)
		b.sum.Add(s)
		b.wsum.Add(ws)
		return
	}
	if b.x == nil {
		b.x, b.r = x, recon
		return
	}
	s1, s2 := similarityPair(b.x, b.r, x, recon)
	b.sum.Add(s1)
	b.sum.Add(s2)
	b.x, b.r = nil, nil
}

// flush adds the block held back, if any.
func (b *blockSims) flush() {
	if b.x != nil {
		b.sum.Add(SimilarityOf(b.x, b.r))
		b.x, b.r = nil, nil
	}
}

func newQuantizeFunction(m Method) compute.Function {
	run := func(ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
		return execQuantize(func(x, _ []float32, bits, gs int, sc, mn []uint16, base int64) error {
			return m.GroupParams(x, bits, gs, sc, mn, base)
		}, false, ctx, batch, out)
	}
	return newValuesFunction(m.QuantizeFunc(), "Fused params, pack and similarity: "+m.Description, []string{"values"}, QuantizedType, nil, run)
}

// newWeightedQuantizeFunction: <method>_quantize_weighted(values, weights)
// where weights (list<float32>, >= 0) weigh each element's squared error
// in the parameter search, e.g. the importance of its input channel from
// calibration activations: one per value, or a shorter row that repeats
// (value k takes weight k mod its length: one matrix row's worth of
// per-input-channel weights). Similarity stays unweighted.
func newWeightedQuantizeFunction(m Method) compute.Function {
	run := func(ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
		return execQuantize(m.WeightedGroupParams, true, ctx, batch, out)
	}
	return newValuesFunction(m.WeightedQuantizeFunc(), "Fused params (weighted search), pack and similarity: "+m.Description,
		[]string{"values", "weights"}, WeightedQuantizedType, []exec.InputType{listOf(arrow.FLOAT32)}, run)
}

// valuesAndWeights reads the values rows of a fused kernel and, when
// weighted, its weights rows: one weight per value, or a shorter row that
// repeats (blockWeights).
func valuesAndWeights(batch *exec.ExecSpan, weighted bool) (in, weights rows, err error) {
	if in, err = listRows(&batch.Values[0].Array, "values"); err != nil {
		return
	}
	if !weighted {
		return
	}
	if weights, err = listRows(&batch.Values[1].Array, "weights"); err != nil {
		return
	}
	for i := 0; i < int(batch.Len); i++ {
		if p, n := weights.len(i), in.len(i); p > n || (p == 0 && n > 0) {
			return in, weights, fmt.Errorf("kernels: row %d: %d weights for %d values (want one per value, or a shorter row that repeats)", i, p, n)
		}
	}
	return
}

// blockWeights are the weights of values [start, start+n) of a row whose
// weights are w: w[start:start+n] when w has one per value, else w
// repeated (value k takes w[k mod len(w)]) written into buf (n floats at
// least). Per-input-channel weights of a row-major matrix chunk are one
// row of them, rotated to the chunk's first column: the weights of every
// element without a chunk-long copy.
func blockWeights(w []float32, total, start, n int, buf []float32) []float32 {
	if len(w) == total {
		return w[start : start+n]
	}
	out := buf[:n]
	for k := start % len(w); len(out) > 0; k = 0 {
		c := copy(out, w[k:])
		out = out[c:]
	}
	return buf[:n]
}

func execQuantize(params WeightedGroupParamsFunc, weighted bool, ctx *exec.KernelCtx, batch *exec.ExecSpan, out *exec.ExecResult) error {
	o, err := quantizeOptions(ctx, true)
	if err != nil {
		return err
	}
	if FusedBlockElems%o.GroupSize != 0 {
		return fmt.Errorf("kernels: group size %d must divide %d for the fused kernel", o.GroupSize, FusedBlockElems)
	}
	in, weights, err := valuesAndWeights(batch, weighted)
	if err != nil {
		return err
	}
	mem := exec.GetAllocator(ctx.Ctx)
	n := int(batch.Len)
	groups := func(i int) int { return int(NumGroups(int64(in.len(i)), o.GroupSize)) }
	scales := newListBuilder(mem, ListF16, groups, n)
	mins := newListBuilder(mem, ListF16, groups, n)
	codeOffsets, codeData := newBinaryBuffers(mem, n, func(i int) int64 { return PackedLen(int64(in.len(i)), o.Bits) })
	offs := arrow.Int32Traits.CastFromBytes(codeOffsets.Bytes())
	sims, wsims := make([]Similarity, n), make([]Similarity, n)
	buf := scratchPool.Get().(*fusedScratch) // every buffer is written before it is read
	defer scratchPool.Put(buf)
	codes := codeData.Bytes()
	for i := 0; i < n; i++ {
		rowLen := in.len(i)
		var w []float32
		if weighted {
			w = weights.f32[weights.offsets[i]:weights.offsets[i+1]]
		}
		rowCodes := codes[offs[i]:offs[i+1]]
		sc, mn := scales.uint16s(i), mins.uint16s(i)
		bs := blockSims{sum: &sims[i], wsum: &wsims[i]}
		for start := 0; start < rowLen; start += FusedBlockElems {
			blk, recon, wb := buf.block(&o, in, i, start, w) // block by block, in cache
			g0 := start / o.GroupSize
			g1 := g0 + int(NumGroups(int64(len(blk)), o.GroupSize))
			if err := params(blk, wb, o.Bits, o.GroupSize, sc[g0:g1], mn[g0:g1], int64(start)); err != nil {
				scales.finish().Release()
				mins.finish().Release()
				codeOffsets.Release()
				codeData.Release()
				return fmt.Errorf("row %d: %w", i, err)
			}
			c0, c1 := start*o.Bits/8, int(int64(start)*int64(o.Bits)/8+PackedLen(int64(len(blk)), o.Bits))
			if o.NoSimilarity {
				quantizeGroups(rowCodes[c0:c1], blk, sc[g0:g1], mn[g0:g1], o.Bits, o.GroupSize, nil)
				continue
			}
			// PackGroups and DequantizeGroups in one pass, then the similarities.
			quantizeGroups(rowCodes[c0:c1], blk, sc[g0:g1], mn[g0:g1], o.Bits, o.GroupSize, recon)
			bs.add(blk, recon, wb)
		}
		bs.flush()
	}
	codesData := binaryData(n, codeOffsets, codeData)
	if weighted {
		setOutput(out, structData(WeightedQuantizedType, n, codesData, scales.finish(), mins.finish(),
			similarityColumn(mem, sims, o.NoSimilarity), similarityColumn(mem, wsims, o.NoSimilarity)))
		return nil
	}
	setOutput(out, structData(QuantizedType, n, codesData, scales.finish(), mins.finish(), similarityColumn(mem, sims, o.NoSimilarity)))
	return nil
}

// similarityColumn is similarityData of sims, or with skipped (the
// caller's NoSimilarity) every row null: not measured.
func similarityColumn(mem memory.Allocator, sims []Similarity, skipped bool) arrow.ArrayData {
	d := similarityData(mem, sims)
	if !skipped {
		return d
	}
	defer d.Release()
	n := len(sims)
	validity := memory.NewResizableBuffer(mem)
	validity.Resize(int(bitutil.BytesForBits(int64(n))))
	clear(validity.Bytes())
	defer validity.Release()
	return array.NewData(CosineType, n, []*memory.Buffer{validity}, d.Children(), n, 0)
}

// similarityData builds a CosineType array from per-row sums.
func similarityData(mem memory.Allocator, sims []Similarity) arrow.ArrayData {
	n := len(sims)
	children := make([]arrow.ArrayData, 7)
	for j := range children {
		buf := memory.NewResizableBuffer(mem)
		buf.Resize(8 * n)
		if j == 6 {
			col := arrow.Int64Traits.CastFromBytes(buf.Bytes())
			for i, s := range sims {
				col[i] = s.N
			}
		} else {
			col := arrow.Float64Traits.CastFromBytes(buf.Bytes())
			for i, s := range sims {
				col[i] = [6]float64{s.Cosine(), s.RelMSE(), s.Dot, s.AA, s.BB, s.Err2}[j]
			}
		}
		children[j] = array.NewData(CosineType.Field(j).Type, n, []*memory.Buffer{nil, buf}, nil, 0, 0)
		buf.Release()
	}
	return structData(CosineType, n, children...)
}
