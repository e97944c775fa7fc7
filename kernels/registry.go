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
// Call them through compute.CallFunction with a context from NewContext
// (or an ExecCtx whose Registry is Registry()).
package kernels

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/compute"
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
// whose init calls RegisterMethod, and import it for its side effect from
// the binary (see method_test.go for a complete example).
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

// WeightedQuantizeFunc is the registered name of the fused kernel with
// per-element error weights (only for methods with WeightedGroupParams).
func (m Method) WeightedQuantizeFunc() string { return m.Name + "_quantize_weighted" }

// ParamsFunc is the registered function name of the method's group parameters.
func (m Method) ParamsFunc() string { return m.Name + "_group_params" }

// QuantizeFunc is the registered name of the method's fused kernel
// (params, pack and similarity in one pass).
func (m Method) QuantizeFunc() string { return m.Name + "_quantize" }

var (
	methodsMu sync.RWMutex
	methods   = map[string]Method{}
	registry  compute.FunctionRegistry
)

// RegisterMethod adds a method; call it from the method package's init.
// It panics on a duplicate or malformed method, a programming error.
func RegisterMethod(m Method) {
	methodsMu.Lock()
	defer methodsMu.Unlock()
	if m.Name == "" || (m.GroupParams == nil && m.SuperBlock == nil) {
		panic("kernels: method needs a name and a GroupParams or SuperBlock function")
	}
	if m.SuperBlock != nil && (m.GroupParams != nil || m.WeightedGroupParams != nil) {
		panic("kernels: a super-block method has no GroupParams: " + m.Name)
	}
	if _, dup := methods[m.Name]; dup {
		panic("kernels: method registered twice: " + m.Name)
	}
	if registry != nil {
		panic("kernels: RegisterMethod after Registry(): register methods in init")
	}
	methods[m.Name] = m
}

// LookupMethod finds a registered method by name.
func LookupMethod(name string) (Method, error) {
	methodsMu.RLock()
	defer methodsMu.RUnlock()
	m, ok := methods[name]
	if !ok {
		return Method{}, fmt.Errorf("kernels: unknown quantization method %q (registered: %v)", name, methodNamesLocked())
	}
	return m, nil
}

// Methods lists the registered method names, sorted.
func Methods() []string {
	methodsMu.RLock()
	defer methodsMu.RUnlock()
	return methodNamesLocked()
}

func methodNamesLocked() []string {
	names := make([]string, 0, len(methods))
	for n := range methods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var registryOnce sync.Once

// Registry returns the child function registry (of arrow-go's global one)
// holding this package's functions and every registered method.
func Registry() compute.FunctionRegistry {
	registryOnce.Do(func() {
		methodsMu.Lock()
		defer methodsMu.Unlock()
		reg := compute.NewChildRegistry(compute.GetFunctionRegistry())
		mustAdd(reg, newMinMaxFunction())
		mustAdd(reg, newPackFunction())
		mustAdd(reg, newDequantizeFunction())
		mustAdd(reg, newCosineFunction())
		mustAdd(reg, newDequantizeSuperBlockFunction())
		for _, name := range methodNamesLocked() {
			if m := methods[name]; m.SuperBlock != nil {
				mustAdd(reg, newSuperBlockQuantizeFunction(m, false))
				mustAdd(reg, newSuperBlockQuantizeFunction(m, true))
				continue
			}
			mustAdd(reg, newParamsFunction(methods[name]))
			mustAdd(reg, newQuantizeFunction(methods[name]))
			if methods[name].WeightedGroupParams != nil {
				mustAdd(reg, newWeightedQuantizeFunction(methods[name]))
			}
		}
		registry = reg
	})
	return registry
}

func mustAdd(reg compute.FunctionRegistry, fn compute.Function) {
	if !reg.AddFunction(fn, false) {
		panic("kernels: cannot register " + fn.Name())
	}
}

// NewContext returns ctx set up to call this package's functions.
func NewContext(ctx context.Context) context.Context {
	ec := compute.DefaultExecCtx()
	ec.Registry = Registry()
	ec.NumParallel = 1
	return compute.SetExecCtx(ctx, ec)
}
