package quant

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/bufpool"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/schema"
)

// ReadChunk reads into pooled buffers (column 4 of schema.Input: the values) it does not zero first: with every
// pooled class dirty, each chunk's values are the file's (as read with
// Go's zeroing allocator) and the buffer's padding is zero.
func TestReadChunkOnDirtyPool(t *testing.T) {
	pool := bufpool.New()
	dirty := func() {
		u := pool.Uninit()
		var bufs [][]byte
		for size := 4 << 10; size <= 8<<20; size *= 2 {
			for _, n := range []int{size, size - 64, size/2 + 64} {
				b := u.Allocate(n)
				b = b[:cap(b)]
				b[0] = 0xa5
				for i := 1; i < len(b); i *= 2 {
					copy(b[i:], b[:i])
				}
				bufs = append(bufs, b[:n])
			}
		}
		for _, b := range bufs {
			u.Free(b)
		}
	}
	for _, dt := range []modelio.DType{modelio.BF16, modelio.F16, modelio.F32} {
		dir := filepath.Join(t.TempDir(), "tiny")
		if err := modelio.Generate(context.Background(), modelio.GenOptions{Preset: "tiny", DType: dt, Out: dir, Seed: 5}); err != nil {
			t.Fatal(err)
		}
		m, err := modelio.Open(dir, modelio.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		src := ModelSource(m)
		chunks := 0
		eachTensor(t, src, func(tn Tensor) {
			n := tn.Meta().NumElements()
			dirty()
			spans := [][2]int64{{0, min(3001, n)}, {n / 3, min(2049, n-n/3)}} // ragged, pooled: padding to clear
			for off := int64(0); off < n; off += schema.ChunkElems {
				spans = append(spans, [2]int64{off, min(schema.ChunkElems, n-off)})
			}
			for _, sp := range spans {
				off, c := sp[0], sp[1]
				got, err := tn.ReadChunk(context.Background(), pool, off, c)
				if err != nil {
					t.Fatal(err)
				}
				want, err := tn.ReadChunk(context.Background(), memory.NewGoAllocator(), off, c)
				if err != nil {
					t.Fatal(err)
				}
				gv := got.Column(4).(*array.List).ListValues().Data().Buffers()[1]
				wv := want.Column(4).(*array.List).ListValues().Data().Buffers()[1]
				if !bytes.Equal(gv.Bytes(), wv.Bytes()) || gv.Len() == 0 {
					t.Fatalf("%s %s chunk at %d: values differ from the file's", dt, tn.Meta().Name, off)
				}
				for i, b := range gv.Buf()[gv.Len():] {
					if b != 0 {
						t.Fatalf("%s %s chunk at %d: padding byte %d is %#x", dt, tn.Meta().Name, off, gv.Len()+i, b)
					}
				}
				got.Release()
				want.Release()
				chunks++
			}
		})
		m.Close()
		if chunks < 10 {
			t.Fatalf("%s: only %d chunks read", dt, chunks)
		}
	}
}
