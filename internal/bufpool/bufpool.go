// Package bufpool is a memory.Allocator that reuses freed buffers: the
// quantization pipeline allocates and frees the same few sizes (a chunk's
// input, codes, scales) millions of times on a large model, and with Go's
// allocator every one is fresh heap that the GC must find and clear.
// Buffers are kept in power-of-two size classes from 4 KiB to 1 GiB in
// sync.Pools (which the GC may empty); smaller and larger requests go to
// Go's allocator. Every buffer handed out is zeroed and 64-byte aligned,
// as memory.GoAllocator's are.
package bufpool

import (
	"math/bits"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

const (
	alignment = 64
	minShift  = 12 // 4 KiB
	maxShift  = 30 // 1 GiB
)

// Allocator pools buffers by size class. The zero value is not usable:
// use New.
type Allocator struct {
	classes  [maxShift - minShift + 1]sync.Pool
	fallback memory.Allocator
}

// New returns a pooling allocator.
func New() *Allocator { return &Allocator{fallback: memory.NewGoAllocator()} }

// class returns the size class of n bytes, or -1 outside the pooled sizes.
func class(n int) int {
	if n <= 1<<(minShift-1) || n > 1<<maxShift {
		return -1
	}
	s := bits.Len(uint(n - 1)) // 2^s >= n
	return max(s, minShift) - minShift
}

// slab is a pooled buffer: its aligned bytes, of the class size.
type slab struct{ data []byte }

// Allocate returns size zeroed bytes.
func (a *Allocator) Allocate(size int) []byte { return a.allocate(size, true) }

func (a *Allocator) allocate(size int, zero bool) []byte {
	c := class(size)
	if c < 0 {
		return a.fallback.Allocate(size)
	}
	if s, ok := a.classes[c].Get().(*slab); ok {
		b := s.data[:size]
		if zero {
			clear(b)
		}
		return b
	}
	n := 1 << (c + minShift)
	mem := make([]byte, n+alignment)
	shift := 0
	if r := uintptr(unsafe.Pointer(unsafe.SliceData(mem))) % alignment; r != 0 {
		shift = alignment - int(r)
	}
	return mem[shift : shift+size : shift+n]
}

// Reallocate grows or shrinks b to size bytes, keeping its contents; new
// bytes are zero.
func (a *Allocator) Reallocate(size int, b []byte) []byte {
	if size <= cap(b) && isClass(cap(b)) {
		old := len(b)
		b = b[:size]
		if size > old {
			clear(b[old:])
		}
		return b
	}
	nb := a.Allocate(size)
	copy(nb, b)
	a.Free(b)
	return nb
}

// Uninit is an allocator over the same pools whose Allocate leaves a
// reused buffer's old bytes in place: for a buffer its caller writes in
// full before anything reads it (a new buffer is still zero).
func (a *Allocator) Uninit() memory.Allocator { return uninit{a} }

// UninitOf is mem's Uninit when mem is a pool, else mem itself (which
// then zeroes as before: correct, only slower).
func UninitOf(mem memory.Allocator) memory.Allocator {
	if p, ok := mem.(*Allocator); ok {
		return p.Uninit()
	}
	return mem
}

type uninit struct{ a *Allocator }

func (u uninit) Allocate(size int) []byte             { return u.a.allocate(size, false) }
func (u uninit) Reallocate(size int, b []byte) []byte { return u.a.Reallocate(size, b) }
func (u uninit) Free(b []byte)                        { u.a.Free(b) }

// Free returns b to its class (buffers of other sizes are left to the GC).
func (a *Allocator) Free(b []byte) {
	n := cap(b)
	if !isClass(n) {
		return
	}
	data := b[:n]
	a.classes[class(n)].Put(&slab{data: data})
}

// isClass reports whether n is a pooled class size (a power of two in range).
func isClass(n int) bool {
	return n >= 1<<minShift && n <= 1<<maxShift && n&(n-1) == 0
}

// BytePool is an allocator as a pool of byte slices (the Get and Put of
// gRPC's mem.BufferPool): Put hands a slice Get returned back to Alloc.
type BytePool struct{ Alloc memory.Allocator }

func (p BytePool) Get(n int) *[]byte {
	b := p.Alloc.Allocate(n)
	return &b
}

func (p BytePool) Put(b *[]byte) { p.Alloc.Free(*b) }

// Transport is the buffer pool of gRPC's transport in the server and the
// Go clients. gRPC's default pool clears every buffer it hands out (3.3 s
// of a 15 GB push's server CPU went to clearing frame buffers); the
// transport fills each buffer it takes before reading it, so Transport
// reuses them as they are.
var Transport = BytePool{New().Uninit()}

// floatPool holds float32 scratch slices for decoding fp16/bf16 rows and
// rescaling chunks (kernels and the pipeline share it).
var floatPool = sync.Pool{New: func() any { s := make([]float32, 0, 1<<16); return &s }}

// GetFloat32s returns a scratch slice holder from the pool; the caller may
// grow *p and gives it back with PutFloat32s.
func GetFloat32s() *[]float32 { return floatPool.Get().(*[]float32) }

// PutFloat32s returns a holder from GetFloat32s.
func PutFloat32s(p *[]float32) { floatPool.Put(p) }

// Float32s returns n pooled float32s of unspecified contents and the func
// that gives them back.
func Float32s(n int) ([]float32, func()) {
	p := GetFloat32s()
	if cap(*p) < n {
		*p = make([]float32, n)
	}
	return (*p)[:n], func() { PutFloat32s(p) }
}
