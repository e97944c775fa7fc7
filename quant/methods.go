package quant

import (
	"errors"

	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/methods"
)

// DefaultMethodFor is the method used at a bit width when Options.Method
// is empty; the pipeline asks once per attempt of its bit-width ladder, so
// a tensor that falls back from INT2 to INT4 gets INT4's default. Chosen
// quality first, within the budget of 0.3 GB/s of fp32 per core through
// the fused kernel for INT4, from bench/quality (docs/QUALITY.md):
//
//   - INT2: "clip". Four levels are where the search pays most: min/max
//     spends them on the tails. Cosine at g128 / g256 on N(0,1): minmax
//     0.896 / 0.880, lsq 0.941 / 0.939, clip 0.943 / 0.941; on the
//     LLM-like matrix with outlier columns: 0.754 / 0.640, 0.903 / 0.859,
//     0.908 / 0.870. clip runs at about 0.14 GB/s (llama.cpp's Q2_K
//     at about 0.05 in `make compare`); lsq, at about 0.35, is the
//     faster choice.
//   - INT4: "lsq". N(0,1) g128 0.9951 -> 0.9957 (relative MSE -13%),
//     LLM-like 0.9847 -> 0.9864, at about 0.36 GB/s; clip's 0.9958 /
//     0.9869 cost 0.15 GB/s, below the budget.
//   - INT8: "minmax". At 255 levels clipping buys nothing that matters
//     (N(0,1) g64 0.999986, clip 0.999987) and minmax is the fastest.
//     "q8_0" (ggml's Q8_0: symmetric, group 32) is the same quality
//     (N(0,1) 0.999986 at g32) but stores a redundant min in the artifact
//     (9 bits per weight at g32 against minmax g64's 8.5); it is what
//     exports to GGUF exactly, so `target: gguf` picks it.
//
// "dq" (double-quantized super-blocks) is never the default: it fixes its
// own block sizes (2.625 / 4.5 bits per weight at INT2 / INT4), so it
// would ignore the configured group_size.
func DefaultMethodFor(bits int) string {
	switch bits {
	case 2:
		return "clip"
	case 4:
		return "lsq"
	default:
		return kernels.MinMax.Name
	}
}

// GGUFMethodFor is the method target gguf uses at a bit width where rows
// divide 256 (every width for INT8): dq super-blocks, which are Q2_K's and
// Q4_K's, and q8_0, which is Q8_0's. Other rows get INT4 groups of 32.
func GGUFMethodFor(bits int) string {
	if bits == 8 {
		return "q8_0"
	}
	return "dq"
}

// ErrMethodWithTarget: a named method cannot be combined with target
// gguf, which chooses the method of every tensor.
var ErrMethodWithTarget = errors.New("a quantization method cannot be named with target gguf")

// CheckMethod validates a method name given by a user ("" = defaults).
func CheckMethod(name string) error {
	if name == DefaultMethod {
		return nil
	}
	_, err := methods.Default().Lookup(name)
	return err
}
