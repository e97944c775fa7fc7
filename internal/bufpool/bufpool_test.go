package bufpool

import (
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

func aligned(b []byte) bool {
	return cap(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%alignment == 0
}

func TestClasses(t *testing.T) {
	for _, c := range []struct{ n, class int }{{1, -1}, {2048, -1}, {2049, 0}, {4096, 0}, {4097, 1}, {1 << 20, 8}, {1 << 30, 18}, {1<<30 + 1, -1}} {
		if got := class(c.n); got != c.class {
			t.Errorf("class(%d) = %d, want %d", c.n, got, c.class)
		}
	}
}

// Reused buffers come back zeroed and aligned, whatever was written.
func TestReusedBuffersAreZeroedAndAligned(t *testing.T) {
	a := New()
	for _, size := range []int{1, 100, 2048, 2049, 4096, 5000, 1 << 16, 3<<20 + 7} {
		for round := 0; round < 3; round++ {
			b := a.Allocate(size)
			if len(b) != size || !aligned(b) {
				t.Fatalf("size %d: len %d aligned %v", size, len(b), aligned(b))
			}
			for i, v := range b {
				if v != 0 {
					t.Fatalf("size %d round %d: byte %d is %d", size, round, i, v)
				}
			}
			for i := range b {
				b[i] = 0xAB
			}
			a.Free(b)
		}
	}
}

func TestReallocateKeepsContentsAndZeroesTheRest(t *testing.T) {
	a := New()
	b := a.Allocate(3000)
	for i := range b {
		b[i] = byte(i)
	}
	b = a.Reallocate(4000, b) // same class (4 KiB)
	b = a.Reallocate(9000, b) // next classes
	for i := 0; i < 3000; i++ {
		if b[i] != byte(i) {
			t.Fatalf("byte %d lost", i)
		}
	}
	for i := 3000; i < 9000; i++ {
		if b[i] != 0 {
			t.Fatalf("byte %d is %d, want 0", i, b[i])
		}
	}
	if !aligned(b) {
		t.Fatal("not aligned")
	}
	a.Free(b)
}

// Arrow builders and buffers work on it, and a checked allocator wrapped
// around it sees every byte come back.
func TestArrowOnThePool(t *testing.T) {
	mem := memory.NewCheckedAllocator(New())
	defer mem.AssertSize(t, 0)
	for round := 0; round < 3; round++ {
		b := array.NewFloat32Builder(mem)
		for i := 0; i < 100000; i++ {
			if i%7 == 0 {
				b.AppendNull()
			} else {
				b.Append(float32(i))
			}
		}
		arr := b.NewFloat32Array()
		b.Release()
		for i := 0; i < arr.Len(); i++ {
			if (i%7 == 0) != arr.IsNull(i) || (i%7 != 0 && arr.Value(i) != float32(i)) {
				t.Fatalf("round %d: element %d", round, i)
			}
		}
		if arr.DataType().ID() != arrow.FLOAT32 {
			t.Fatal(arr.DataType())
		}
		arr.Release()
	}
}

func BenchmarkAllocateFree(b *testing.B) {
	a := New()
	for i := 0; i < b.N; i++ {
		a.Free(a.Allocate(1 << 20))
	}
}

// Float32s gives n values whatever the pooled holder held, and a holder
// grown for a large request comes back with its capacity.
func TestFloat32s(t *testing.T) {
	for _, n := range []int{0, 1, 1 << 16, 1<<16 + 1, 3 << 20} {
		x, done := Float32s(n)
		if len(x) != n {
			t.Fatalf("n %d: len %d", n, len(x))
		}
		for i := range x {
			x[i] = float32(i)
		}
		done()
	}
	p := GetFloat32s()
	if cap(*p) < 1<<16 {
		t.Fatalf("pooled holder of capacity %d", cap(*p))
	}
	PutFloat32s(p)
}

// Uninit shares the pools, hands out aligned buffers of the asked size,
// and does not zero a reused one; Allocate still zeroes what Uninit's
// user wrote.
func TestUninitSharesThePools(t *testing.T) {
	a := New()
	u := a.Uninit()
	for _, size := range []int{4096, 5000, 1 << 16} {
		reused := false
		for range 20 { // sync.Pool may drop an item (often, under -race); one reuse shows it
			b := u.Allocate(size)
			if len(b) != size || !aligned(b) {
				t.Fatalf("size %d: len %d aligned %v", size, len(b), aligned(b))
			}
			reused = reused || b[0] == 0xCD
			for i := range b {
				b[i] = 0xCD
			}
			u.Free(b)
		}
		if !reused {
			t.Fatalf("size %d: never reused without zeroing", size)
		}
		c := a.Allocate(size)
		for i, v := range c {
			if v != 0 {
				t.Fatalf("size %d: Allocate after Uninit: byte %d is %d", size, i, v)
			}
		}
		a.Free(c)
	}
}

// Transport (gRPC's frame buffers) hands back what Put returned, of the
// length asked and not cleared: the clearing it exists to avoid.
func TestTransportReusesWithoutClearing(t *testing.T) {
	for _, size := range []int{4096, 16 << 10, 1 << 20} {
		reused := false
		for range 20 { // sync.Pool may drop an item; one reuse shows it
			p := Transport.Get(size)
			if len(*p) != size || !aligned(*p) {
				t.Fatalf("size %d: len %d aligned %v", size, len(*p), aligned(*p))
			}
			reused = reused || (*p)[size-1] == 0xEF
			for i := range *p {
				(*p)[i] = 0xEF
			}
			Transport.Put(p)
		}
		if !reused {
			t.Fatalf("size %d: never reused without clearing", size)
		}
	}
}
