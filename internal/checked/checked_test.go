package checked

import (
	"errors"
	"math"
	"testing"
)

func TestProduct(t *testing.T) {
	cases := []struct {
		shape    []int64
		want     int64
		overflow bool
		bad      bool
	}{
		{nil, 1, false, false},
		{[]int64{}, 1, false, false},
		{[]int64{0}, 0, false, false},
		{[]int64{0, 16}, 0, false, false},
		{[]int64{3584, 18944}, 3584 * 18944, false, false},
		{[]int64{1 << 32, 1 << 32}, 0, true, false}, // wraps to 0 unchecked
		{[]int64{1<<61 + 1, 8}, 0, true, false},     // wraps to 8 unchecked
		{[]int64{1 << 62, 2}, 0, true, false},       // exactly 2^63
		{[]int64{math.MaxInt64, 1}, math.MaxInt64, false, false},
		{[]int64{1 << 62, 0, 4}, 0, false, false}, // a zero-size tensor, whatever the other dims
		{[]int64{1 << 62, 4, 0}, 0, false, false},
		{[]int64{4, -1}, 0, false, true},
	}
	for _, c := range cases {
		got, err := Product(c.shape)
		switch {
		case c.overflow:
			if !errors.Is(err, ErrOverflow) {
				t.Errorf("Product(%v) = %d, %v; want overflow", c.shape, got, err)
			}
		case c.bad:
			if err == nil || errors.Is(err, ErrOverflow) {
				t.Errorf("Product(%v) = %d, %v; want a negative-dimension error", c.shape, got, err)
			}
		default:
			if err != nil || got != c.want {
				t.Errorf("Product(%v) = %d, %v; want %d", c.shape, got, err, c.want)
			}
		}
	}
}

func TestMulAdd(t *testing.T) {
	if v, err := Mul(1<<31, 1<<31); err != nil || v != 1<<62 {
		t.Fatalf("Mul = %d, %v", v, err)
	}
	if _, err := Mul(1<<32, 1<<31); !errors.Is(err, ErrOverflow) {
		t.Fatalf("Mul(2^32, 2^31) err = %v", err)
	}
	if _, err := Add(math.MaxInt64, 1); !errors.Is(err, ErrOverflow) {
		t.Fatalf("Add overflow err = %v", err)
	}
	if v, err := Add(math.MaxInt64-1, 1); err != nil || v != math.MaxInt64 {
		t.Fatalf("Add = %d, %v", v, err)
	}
	if _, err := Mul(-1, 2); err == nil {
		t.Fatal("Mul(-1, 2) accepted")
	}
}
