package quant

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// channelWeights is one row's worth of importance rotated to the chunk's
// first column (repeated, it is every element's weight), from any offset,
// and its list is a valid one-row list<float32> whose buffers all come
// back.
func TestChannelWeights(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	for _, in := range []int{1, 3, 7, 64} {
		imp := make([]float32, in)
		for i := range imp {
			imp[i] = float32(i) + 0.5
		}
		for _, off := range []int64{0, 1, int64(in) - 1, int64(in), 5*int64(in) + 2} {
			for _, n := range []int64{0, 1, int64(in), 3*int64(in) + 1} {
				arr := channelWeights(mem, imp, off, n)
				if err := arr.(interface{ ValidateFull() error }).ValidateFull(); err != nil {
					t.Fatal(err)
				}
				l := arr.(*array.List)
				got := l.ListValues().(*array.Float32).Float32Values()
				if l.Len() != 1 || int64(len(got)) != min(n, int64(in)) {
					t.Fatalf("in %d off %d n %d: %d rows, %d values, want %d", in, off, n, l.Len(), len(got), min(n, int64(in)))
				}
				for k := range n {
					v := got[k%int64(len(got))]
					if want := imp[(off+k)%int64(in)]; v != want {
						t.Fatalf("in %d off %d n %d: value %d = %v, want %v", in, off, n, k, v, want)
					}
				}
				arr.Release()
			}
		}
	}
}
