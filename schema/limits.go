package schema

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/arrowquant/arrowquant/internal/checked"
)

// Limits on what a tensor may declare, checked wherever tensors enter
// (safetensors headers, DoPut rows, artifact indexes).
const (
	MaxDims          = 32   // dimensions of a shape (PyTorch allows 64; no model layer needs 32)
	MaxTensorNameLen = 1024 // bytes of a tensor name
)

// CheckTensorName refuses names that cannot be stored or shown safely:
// empty, longer than MaxTensorNameLen bytes, not valid UTF-8, or with
// control characters.
func CheckTensorName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty tensor name")
	case len(name) > MaxTensorNameLen:
		return fmt.Errorf("tensor name of %d bytes (limit %d): %.40q…", len(name), MaxTensorNameLen, name)
	case !utf8.ValidString(name):
		return fmt.Errorf("tensor name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("tensor name %q contains the control character %U", name, r)
		}
	}
	return nil
}

// CheckShape validates a declared shape and returns its element count:
// at most MaxDims dimensions, none negative, and a product that fits in
// int64 (a product that wraps around would pass for a small tensor).
func CheckShape(shape []int64) (int64, error) {
	if len(shape) > MaxDims {
		return 0, fmt.Errorf("shape has %d dimensions (limit %d)", len(shape), MaxDims)
	}
	return checked.Product(shape)
}
