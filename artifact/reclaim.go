package artifact

import (
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// reclaimer is the allocator the IPC decoder of a Reader gets. arrow-go's
// record batch loader turns its own panics on a malformed batch into an
// error, but the arrays it had built by then keep the message body
// retained forever (arrow-go v18.8.0): a leak for any allocator that
// counts (memory.CheckedAllocator, a C allocator). Around each decoder
// call the reclaimer records what is allocated and not freed, and when
// the call fails it frees those buffers: nothing can reach them.
type reclaimer struct {
	memory.Allocator
	mu      sync.Mutex
	pending map[*byte][]byte // nil outside a call
}

func (a *reclaimer) Allocate(size int) []byte {
	b := a.Allocator.Allocate(size)
	a.track(b, nil)
	return b
}

func (a *reclaimer) Reallocate(size int, old []byte) []byte {
	b := a.Allocator.Reallocate(size, old)
	a.track(b, old)
	return b
}

func (a *reclaimer) Free(b []byte) {
	a.track(nil, b)
	a.Allocator.Free(b)
}

// track records b as allocated and old as freed during a call.
func (a *reclaimer) track(b, old []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending == nil {
		return
	}
	if cap(old) > 0 {
		delete(a.pending, unsafe.SliceData(old))
	}
	if cap(b) > 0 {
		a.pending[unsafe.SliceData(b)] = b
	}
}

// call runs fn, one decoder call, and frees what it left allocated when
// it fails. Calls must not overlap (the Reader serializes them).
func (a *reclaimer) call(fn func() error) error {
	a.mu.Lock()
	a.pending = map[*byte][]byte{}
	a.mu.Unlock()
	err := fn()
	a.mu.Lock()
	left := a.pending
	a.pending = nil
	a.mu.Unlock()
	if err != nil {
		for _, b := range left {
			a.Allocator.Free(b)
		}
	}
	return err
}
