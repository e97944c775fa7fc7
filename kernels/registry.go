// Package kernels implements ArrowQuant's quantization as Arrow compute
// functions. Every function works row-wise on list arrays: one row is one
// chunk of a tensor (list<float32>, list<float16>, or list<uint16> holding
// bfloat16 bits), so a record batch of the input schema goes in and columns
// of the output schema come out.
//
// Shared functions: aq_group_minmax, aq_pack, aq_dequantize, aq_cosine,
// aq_dequantize_superblock. Methods (see Method) add "<name>_group_params"
// and the fused "<name>_quantize" (params, pack and similarity sums in one
// pass); super-block methods (Method.SuperBlock, format in superblock.go)
// add only the fused "<name>_quantize" and "<name>_quantize_weighted".
// Call them through compute.CallFunction with a context from a Methods set
// (kernels/methods.Default().Context), or NewContext for the shared
// functions alone.
package kernels

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/compute"

	"github.com/arrowquant/arrowquant/internal/fp"
)

// Function names registered by this package.
const (
	FuncGroupMinMax = "aq_group_minmax"
	FuncPack        = "aq_pack"
	FuncDequantize  = "aq_dequantize"
	FuncCosine      = "aq_cosine"
)

// QuantOptions are the options of every quantization function.
type QuantOptions struct {
	Bits      int // 2, 4 or 8
	GroupSize int // elements per group, a multiple of 4
	// NoSimilarity: the quantize functions compute no similarity, for a
	// caller that measures its own (the pipeline's smoothed tensors,
	// against the unsmoothed values); their similarity columns are then
	// null in every row (not measured).
	NoSimilarity bool
	// ChannelScales: the quantize functions quantize x[k]·ChannelScales[
	// (ChannelOffset+k) mod len] instead of x[k] (k the value's index in
	// its row): W·diag(s) for a chunk of a row-major matrix of
	// len(ChannelScales) columns starting at element ChannelOffset. The
	// product is made block by block in cache, as it would be in float32
	// beforehand, so the output is that of the scaled values bit for bit
	// (their similarity too), without a scaled copy of the input.
	ChannelScales []float32
	ChannelOffset int64
}

// inputBlock is values [start, start+n) of row i as the quantize
// functions take them: fp16/bf16 decoded into xbuf, and with channel
// scales, times them into ybuf (n floats each at least).
func (o *QuantOptions) inputBlock(in rows, i, start, n int, xbuf, ybuf []float32) []float32 {
	blk := in.block(i, start, n, xbuf)
	if len(o.ChannelScales) == 0 {
		return blk
	}
	fp.MulPeriodicInto(ybuf[:n], blk, o.ChannelOffset+int64(start), o.ChannelScales)
	return ybuf[:n]
}

// TypeName implements compute.FunctionOptions.
func (QuantOptions) TypeName() string { return "QuantOptions" }

// Validate checks the options a kernel relies on.
func (o QuantOptions) Validate(needBits bool) error {
	if o.GroupSize < 4 || o.GroupSize%4 != 0 {
		return fmt.Errorf("kernels: group size %d must be a positive multiple of 4", o.GroupSize)
	}
	if needBits && o.Bits != 2 && o.Bits != 4 && o.Bits != 8 {
		return fmt.Errorf("kernels: bit width %d must be 2, 4 or 8", o.Bits)
	}
	return nil
}

// GroupParamsFunc computes fp16 (scale, min) bits for every group of x.
// x holds whole groups plus possibly a ragged last group; base is the
// element index of x[0] in its row, for error messages.
type GroupParamsFunc func(x []float32, bits, groupSize int, scales, mins []uint16, base int64) error

// WeightedGroupParamsFunc is GroupParamsFunc with a weight per element
// (>= 0) on its squared error; w has len(x) values.
type WeightedGroupParamsFunc func(x, w []float32, bits, groupSize int, scales, mins []uint16, base int64) error

// Method is a quantization method: a named kernel set. Its group-parameter
// kernel is registered as "<Name>_group_params" and its fused kernel as
// "<Name>_quantize"; packing, dequantization and similarity are shared, so
// every method's output has one format. To add a method, write a package
// exporting its Method and add it to the list in kernels/methods (see
// method_test.go for a complete example).
type Method struct {
	Name        string
	Description string
	GroupParams GroupParamsFunc
	// WeightedGroupParams, when set, searches params minimizing a weighted
	// error; registered as "<Name>_quantize_weighted".
	WeightedGroupParams WeightedGroupParamsFunc
	// SuperBlock, when set, makes this a super-block method (the format of
	// superblock.go): it needs no GroupParams, gets no "<Name>_group_params",
	// and its "<Name>_quantize" and "<Name>_quantize_weighted" return
	// SuperBlockQuantizedType (group_params binary, empty scales and mins).
	SuperBlock SuperBlockFunc
}

// SuperBlockFunc quantizes x, a run of whole super-blocks (the last one
// possibly partial) starting at a multiple of SuperBlockElems within its
// row, at bits: it writes the packed codes (PackedLen(len(x), bits) bytes)
// and the group_params (SuperBlockParamsLen(len(x), bits) bytes) of x.
// w is nil (unweighted) or one error weight >= 0 per element; base is the
// element index of x[0] in its row, for errors (*NonFiniteError for NaN or
// ±Inf, *ParamRangeError for values beyond the fp16 range).
type SuperBlockFunc func(x, w []float32, bits int, codes, params []byte, base int64) error

// IsSuperBlock reports whether m quantizes to the super-block format.
func (m Method) IsSuperBlock() bool { return m.SuperBlock != nil }

// Weighted reports whether m registers WeightedQuantizeFunc: methods
// with WeightedGroupParams and every super-block method.
func (m Method) Weighted() bool { return m.WeightedGroupParams != nil || m.IsSuperBlock() }

// WeightedQuantizeFunc is the registered name of the fused kernel with
// per-element error weights (only for Weighted methods).
func (m Method) WeightedQuantizeFunc() string { return m.Name + "_quantize_weighted" }

// QuantizeFuncs are m's fused kernels: QuantizeFunc, then
// WeightedQuantizeFunc when m is Weighted.
func (m Method) QuantizeFuncs() []string {
	if m.Weighted() {
		return []string{m.QuantizeFunc(), m.WeightedQuantizeFunc()}
	}
	return []string{m.QuantizeFunc()}
}

// ParamsFunc is the registered function name of the method's group parameters.
func (m Method) ParamsFunc() string { return m.Name + "_group_params" }

// QuantizeFunc is the registered name of the method's fused kernel
// (params, pack and similarity in one pass).
func (m Method) QuantizeFunc() string { return m.Name + "_quantize" }

// Methods is a set of quantization methods and the Arrow compute registry
// (a child of arrow-go's global one) that holds their kernels and the
// shared functions. It is immutable once built; kernels/methods builds the
// set of every method ArrowQuant has, in one place.
type Methods struct {
	byName map[string]Method
	names  []string
	reg    compute.FunctionRegistry
}

// NewMethods registers the shared functions and each method's kernels in
// a new registry. A method without a name or functions, a super-block
// method with group-param functions, or a name given twice is an error.
func NewMethods(ms ...Method) (*Methods, error) {
	s := &Methods{byName: map[string]Method{}, reg: compute.NewChildRegistry(compute.GetFunctionRegistry())}
	for _, fn := range []compute.Function{newMinMaxFunction(), newPackFunction(), newDequantizeFunction(), newCosineFunction(), newDequantizeSuperBlockFunction()} {
		if err := add(s.reg, fn); err != nil {
			return nil, err
		}
	}
	for _, m := range ms {
		switch {
		case m.Name == "" || (m.GroupParams == nil && m.SuperBlock == nil):
			return nil, fmt.Errorf("kernels: method %q needs a name and a GroupParams or SuperBlock function", m.Name)
		case m.SuperBlock != nil && (m.GroupParams != nil || m.WeightedGroupParams != nil):
			return nil, fmt.Errorf("kernels: super-block method %q has no GroupParams", m.Name)
		}
		if _, dup := s.byName[m.Name]; dup {
			return nil, fmt.Errorf("kernels: method %q given twice", m.Name)
		}
		var fns []compute.Function
		if m.SuperBlock != nil {
			fns = []compute.Function{newSuperBlockQuantizeFunction(m, false), newSuperBlockQuantizeFunction(m, true)}
		} else {
			fns = []compute.Function{newParamsFunction(m), newQuantizeFunction(m)}
			if m.WeightedGroupParams != nil {
				fns = append(fns, newWeightedQuantizeFunction(m))
			}
		}
		for _, fn := range fns {
			if err := add(s.reg, fn); err != nil {
				return nil, err
			}
		}
		s.byName[m.Name] = m
		s.names = append(s.names, m.Name)
	}
	sort.Strings(s.names)
	return s, nil
}

func add(reg compute.FunctionRegistry, fn compute.Function) error {
	if !reg.AddFunction(fn, false) {
		return fmt.Errorf("kernels: cannot register %s", fn.Name())
	}
	return nil
}

// Lookup finds a method of the set by name.
func (s *Methods) Lookup(name string) (Method, error) {
	m, ok := s.byName[name]
	if !ok {
		return Method{}, fmt.Errorf("unknown quantization method %q (known: %s)", name, strings.Join(s.names, ", "))
	}
	return m, nil
}

// Names lists the set's methods, sorted.
func (s *Methods) Names() []string { return slices.Clone(s.names) }

// Functions is the compute registry holding the set's kernels.
func (s *Methods) Functions() compute.FunctionRegistry { return s.reg }

// Context returns ctx set up to call the set's functions through
// compute.CallFunction.
func (s *Methods) Context(ctx context.Context) context.Context {
	ec := compute.DefaultExecCtx()
	ec.Registry = s.reg
	ec.NumParallel = 1
	return compute.SetExecCtx(ctx, ec)
}

var shared = sync.OnceValue(func() *Methods {
	s, err := NewMethods()
	if err != nil {
		panic(err) // the shared functions are this package's own: a bug
	}
	return s
})

// NewContext returns ctx set up to call the shared functions
// (aq_group_minmax, aq_pack, aq_dequantize, aq_cosine,
// aq_dequantize_superblock), which need no method: what readers of
// artifacts use.
func NewContext(ctx context.Context) context.Context { return shared().Context(ctx) }
