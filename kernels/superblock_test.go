package kernels_test

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	. "github.com/arrowquant/arrowquant/kernels"
)

func TestSuperBlockLayout(t *testing.T) {
	for _, c := range []struct{ bits, g, p, b int }{{2, 16, 4, 20}, {4, 32, 6, 16}, {8, 32, 8, 20}} {
		g, p, b, err := SuperBlockLayout(c.bits)
		if err != nil || g != c.g || p != c.p || b != c.b {
			t.Errorf("bits %d: layout %d %d %d %v, want %d %d %d", c.bits, g, p, b, err, c.g, c.p, c.b)
		}
		// bits per weight of a full super-block: llama.cpp's Q2_K/Q4_K budgets.
		if got := float64(8*(PackedLen(256, c.bits)+SuperBlockParamsLen(256, c.bits))) / 256; c.bits != 8 && got != map[int]float64{2: 2.625, 4: 4.5}[c.bits] {
			t.Errorf("bits %d: %v bits/weight", c.bits, got)
		}
	}
	if _, _, _, err := SuperBlockLayout(3); err == nil {
		t.Error("3 bits accepted")
	}
	if SuperBlockParamsLen(0, 4) != 0 || SuperBlockParamsLen(1, 4) != 16 || SuperBlockParamsLen(257, 2) != 40 {
		t.Error("SuperBlockParamsLen")
	}
}

// binaryArray builds a binary array; a nil row is null.
func binaryArray(mem memory.Allocator, rows ...[]byte) arrow.Array {
	b := array.NewBinaryBuilder(mem, arrow.BinaryTypes.Binary)
	defer b.Release()
	for _, r := range rows {
		if r == nil {
			b.AppendNull()
		} else {
			b.Append(r)
		}
	}
	return b.NewArray()
}

// Hand-built group_params: every field of the format, decoded bit for bit.
func TestDequantizeSuperBlockKnownVector(t *testing.T) {
	e := newEnv(t)
	// INT4, 40 elements: one partial super-block, sub-blocks of 32 (j=0)
	// and 8 (j=1); element k has code k%16.
	codes4 := make([]byte, PackedLen(40, 4))
	for k := 0; k < 40; k++ {
		codes4[k/2] |= byte(k%16) << (4 * (k % 2))
	}
	// d = 0.5 (0x3800), dmin = 0.25 (0x3400); sc = 2, 3 (6 bits each,
	// LSB-first: byte0 = 2 | 3<<6, byte1 = 3>>2); mc = 4, 1.
	params4 := []byte{0x00, 0x38, 0x00, 0x34, 0xc2, 0x00, 0, 0, 0, 0, 0x44, 0x00, 0, 0, 0, 0}
	want4 := make([]float32, 40)
	for k := range want4 {
		if k < 32 {
			want4[k] = float32(k%16)*1 - 1 // s = 0.5*2, m = 0.25*4
		} else {
			want4[k] = float32(k%16)*1.5 - 0.25 // s = 0.5*3, m = 0.25*1
		}
	}
	// INT2, 20 elements: sub-blocks of 16 and 4, codes k%4; d = -1
	// (0xbc00), dmin = 2 (0x4000); sc = 1, 5 (4 bits: byte0 = 1 | 5<<4);
	// mc = 3, 0.
	codes2 := make([]byte, PackedLen(20, 2))
	for k := 0; k < 20; k++ {
		codes2[k/4] |= byte(k%4) << (2 * (k % 4))
	}
	params2 := make([]byte, 20)
	copy(params2, []byte{0x00, 0xbc, 0x00, 0x40, 0x51})
	params2[12] = 0x03
	want2 := make([]float32, 20)
	for k := range want2 {
		if k < 16 {
			want2[k] = float32(k%4)*-1 - 6
		} else {
			want2[k] = float32(k%4) * -5
		}
	}
	for _, c := range []struct {
		bits          int
		codes, params []byte
		want          []float32
	}{{4, codes4, params4, want4}, {2, codes2, params2, want2}} {
		got := make([]float32, len(c.want))
		if err := DequantizeSuperBlocks(got, c.codes, c.params, c.bits); err != nil {
			t.Fatal(err)
		}
		codes := binaryArray(e.Mem, c.codes)
		params := binaryArray(e.Mem, c.params)
		nb := array.NewInt64Builder(e.Mem)
		nb.Append(int64(len(c.want)))
		counts := nb.NewArray()
		nb.Release()
		res := e.MustCall(FuncDequantizeSuperBlock, &QuantOptions{Bits: c.bits}, codes, params, counts).(*array.List)
		vals := res.ListValues().(*array.Float32).Float32Values()
		for k, w := range c.want {
			if got[k] != w || vals[k] != w {
				t.Errorf("int%d element %d: %v (arrow %v), want %v", c.bits, k, got[k], vals[k], w)
			}
		}
		res.Release()
		// Wrong lengths and nulls name the row.
		bad := binaryArray(e.Mem, c.params, c.params[:len(c.params)-1])
		codes2 := binaryArray(e.Mem, c.codes, c.codes)
		nb = array.NewInt64Builder(e.Mem)
		nb.AppendValues([]int64{int64(len(c.want)), int64(len(c.want))}, nil)
		counts2 := nb.NewArray()
		nb.Release()
		if _, err := e.Call(FuncDequantizeSuperBlock, &QuantOptions{Bits: c.bits}, codes2, bad, counts2); err == nil || !strings.Contains(err.Error(), "row 1") {
			t.Errorf("short group_params: %v", err)
		}
		nulls := binaryArray(e.Mem, c.params, nil)
		if _, err := e.Call(FuncDequantizeSuperBlock, &QuantOptions{Bits: c.bits}, codes2, nulls, counts2); err == nil || !strings.Contains(err.Error(), "row 1") {
			t.Errorf("null group_params: %v", err)
		}
		if err := DequantizeSuperBlocks(got, c.codes[1:], c.params, c.bits); err == nil {
			t.Error("short codes accepted")
		}
		for _, a := range []arrow.Array{codes, params, counts, bad, codes2, counts2, nulls} {
			a.Release()
		}
	}
}
