// Package checked does the integer arithmetic on untrusted sizes (shapes,
// offsets, byte counts) with overflow checks, so that a hostile header or
// request fails with an error instead of wrapping around.
package checked

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// ErrOverflow is wrapped by every overflow error.
var ErrOverflow = errors.New("integer overflow")

// Mul returns a·b for non-negative a and b, or an error if it overflows int64.
func Mul(a, b int64) (int64, error) {
	if a < 0 || b < 0 {
		return 0, fmt.Errorf("negative operand in %d × %d", a, b)
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, fmt.Errorf("%d × %d: %w", a, b, ErrOverflow)
	}
	return int64(lo), nil
}

// Add returns a+b for non-negative a and b, or an error if it overflows int64.
func Add(a, b int64) (int64, error) {
	if a < 0 || b < 0 {
		return 0, fmt.Errorf("negative operand in %d + %d", a, b)
	}
	if a > math.MaxInt64-b {
		return 0, fmt.Errorf("%d + %d: %w", a, b, ErrOverflow)
	}
	return a + b, nil
}

// Product returns the number of elements of a shape (1 for a scalar),
// refusing negative dimensions and products that overflow int64.
func Product(shape []int64) (int64, error) {
	zero := false
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v has a negative dimension", shape)
		}
		zero = zero || d == 0
	}
	if zero { // the same answer whatever the order of the dimensions
		return 0, nil
	}
	n := int64(1)
	for _, d := range shape {
		var err error
		if n, err = Mul(n, d); err != nil {
			return 0, fmt.Errorf("shape %v: element count overflows: %w", shape, ErrOverflow)
		}
	}
	return n, nil
}
