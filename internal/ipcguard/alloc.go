package ipcguard

import "github.com/apache/arrow-go/v18/arrow/memory"

// Capped is an allocator that refuses any single allocation above Max
// bytes by panicking with an error; the IPC decoders recover it (and so
// must their callers). arrow-go sizes the buffer of a compressed IPC
// buffer from an 8-byte length in the data, up to 2^63.
type Capped struct {
	memory.Allocator
	Max int
}

func (a Capped) check(size int) {
	if size < 0 || size > a.Max {
		panic(errorf("allocation of %d bytes (limit %d)", size, a.Max))
	}
}

func (a Capped) Allocate(size int) []byte {
	a.check(size)
	return a.Allocator.Allocate(size)
}

func (a Capped) Reallocate(size int, b []byte) []byte {
	a.check(size)
	return a.Allocator.Reallocate(size, b)
}
