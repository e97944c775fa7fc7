package gguf

import (
	"io"
	"sync"
)

// asyncWriter writes to w from a goroutine, so that reading and converting
// the next rows overlaps the write (and the page-cache throttling) of the
// previous ones. Write copies p into one of a few fixed buffers; the first
// write error is returned by a later Write or by Close.
type asyncWriter struct {
	w    io.Writer
	free chan []byte
	full chan []byte
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func newAsyncWriter(w io.Writer, buffers, size int) *asyncWriter {
	a := &asyncWriter{w: w, free: make(chan []byte, buffers), full: make(chan []byte, buffers), done: make(chan struct{})}
	for range buffers {
		a.free <- make([]byte, 0, size)
	}
	go a.run()
	return a
}

func (a *asyncWriter) run() {
	defer close(a.done)
	for b := range a.full {
		if a.error() == nil {
			if _, err := a.w.Write(b); err != nil {
				a.mu.Lock()
				a.err = err
				a.mu.Unlock()
			}
		}
		a.free <- b[:0]
	}
}

func (a *asyncWriter) error() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *asyncWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if err := a.error(); err != nil {
			return 0, err
		}
		b := <-a.free
		take := min(len(p), cap(b))
		b = append(b, p[:take]...)
		p = p[take:]
		a.full <- b
	}
	return n, nil
}

// Close waits for every queued write and returns the first error.
func (a *asyncWriter) Close() error {
	close(a.full)
	<-a.done
	return a.error()
}
