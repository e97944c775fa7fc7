package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/arrowquant/arrowquant/store"
)

// file is an open file of a committed version, read from its immutable
// object.
//
// A read that continues where the previous one ended (Read, io.Copy,
// DoGet streaming an artifact batch after batch) switches the file to
// sequential reading: the object is read in ReadChunk pieces, up to
// ReadAhead of them ahead of the reader, so the transfer overlaps with the
// reader's work. The pieces come from one streaming GET from the reader's
// position to the end of the object (the default), or, with RangeReads,
// from ReadAhead ranged GETs in flight at once. Other reads (a footer, a
// header, a seek elsewhere) are one ranged GET of exactly their bytes.
// Memory per open file: at most (ReadAhead + chunks spanned by the read in
// progress) × ReadChunk, from a shared pool.
type file struct {
	s               *Store
	name, file, key string
	size            int64
	chunk           int64
	ahead           int
	ranges          bool
	ctx             context.Context
	cancel          context.CancelFunc
	mu              sync.Mutex
	closed          bool
	pos             int64 // for Read and Seek
	lastEnd         int64 // where the previous read ended (-1: none)
	chunks          map[int64]*chunk
	stream          *stream // the streaming GET of sequential reads, if any
	fetches         sync.WaitGroup
	readMu          sync.Mutex // serialises Read (pos)
	tailMu          sync.Mutex // the file's last tailSize bytes, read once
	tail            []byte     // (tailMu; written under f.mu too)
	directGets      int        // ranged GETs of exactly a read's bytes, or of the tail (tests)
	chunkGets       int        // GETs of chunk data: ranged, or streams started (tests)
}

// chunk is one ReadChunk-sized piece of the object, fetched or in flight.
type chunk struct {
	done    chan struct{}
	buf     []byte
	err     error
	refs    int  // readers copying out of buf
	evicted bool // out of the window: buf goes back to the pool when free
}

// tailSize: the end of a file is read once, whole, on the first read
// there (an Arrow IPC file's footer and schema are read from its end).
const tailSize = 256 << 10

// errStopped: the stream that was to fill a chunk stopped (the reader
// jumped elsewhere): a reader that waited for it reads again.
var errStopped = errors.New("stream stopped")

// stream is one GET from chunk start to the end of the object, filling
// the chunks queued for it in order.
type stream struct {
	next    int64    // index of the chunk it fills after those queued
	queue   []*chunk // chunks to fill, in index order (f.mu)
	cond    *sync.Cond
	stopped bool
	cancel  context.CancelFunc
}

var chunkPools sync.Map // chunk size -> *sync.Pool of []byte

func getBuf(size int64) []byte {
	p, _ := chunkPools.LoadOrStore(size, &sync.Pool{New: func() any { return make([]byte, size) }})
	return p.(*sync.Pool).Get().([]byte)
}

func putBuf(b []byte) {
	if p, ok := chunkPools.Load(int64(cap(b))); ok {
		p.(*sync.Pool).Put(b[:cap(b)])
	}
}

func (s *Store) newFile(name, fileName, key string, size int64) *file {
	ctx, cancel := context.WithCancel(context.Background())
	return &file{s: s, name: name, file: fileName, key: key, size: size, chunk: s.cfg.ReadChunk, ahead: s.cfg.ReadAhead,
		ranges: s.cfg.RangeReads, ctx: ctx, cancel: cancel, lastEnd: -1, chunks: map[int64]*chunk{}}
}

func (f *file) Size() int64 { return f.size }

func (f *file) errorf(err error, what string) error {
	if isNotFound(err) {
		return fmt.Errorf("store: model %q: file %q: %s: object %s is gone (collected by GC after the version was replaced or deleted): %w", f.name, f.file, what, f.key, store.ErrNotFound)
	}
	return wrap(err, "store: model %q: file %q: %s (object %s)", f.name, f.file, what, f.key)
}

func (f *file) closedErr() error {
	return fmt.Errorf("store: model %q: file %q: read after Close", f.name, f.file)
}

// ReadAt implements io.ReaderAt; it is safe for concurrent use.
func (f *file) ReadAt(p []byte, off int64) (int, error) { return f.readAt(p, off, false) }

// readAt is ReadAt; seq says the caller reads sequentially (Read).
func (f *file) readAt(p []byte, off int64, seq bool) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("store: model %q: file %q: negative offset %d", f.name, f.file, off)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.size-off))
	for attempt := 0; ; attempt++ {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return 0, f.closedErr()
		}
		sequential := (seq || off == f.lastEnd || f.chunks[off/f.chunk] != nil) && attempt < 3
		f.lastEnd = off + int64(n)
		var err error
		if sequential {
			err = f.readChunked(p[:n], off) // unlocks f.mu
		} else {
			if attempt == 0 { // a jump: the window and the stream are of no use
				f.evict(-1, -1)
				f.stopStream()
			}
			tailStart := max(f.size-tailSize, 0)
			inTail := off >= tailStart
			if !inTail || f.tail == nil {
				f.directGets++
			}
			f.mu.Unlock()
			if inTail { // footers and indexes: read the tail once
				err = f.readTail(p[:n], off-tailStart, tailStart)
			} else {
				err = f.getParallel(p[:n], off)
			}
		}
		if errors.Is(err, errStopped) {
			continue // another read moved the stream: read again (directly after 3 tries)
		}
		if err != nil {
			return 0, err
		}
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
}

// readChunked serves p from the chunks it spans, starting those missing
// and the ReadAhead after them. Called with f.mu held; unlocks it.
func (f *file) readChunked(p []byte, off int64) error {
	first, last := off/f.chunk, (off+int64(len(p))-1)/f.chunk
	lastChunk := (f.size - 1) / f.chunk
	f.evict(first, last+int64(f.ahead))
	need := make([]*chunk, 0, last-first+1)
	for i := first; i <= min(last+int64(f.ahead), lastChunk); i++ {
		c := f.chunks[i]
		if c == nil {
			c = f.startFetch(i)
		}
		if i <= last {
			c.refs++
			need = append(need, c)
		}
	}
	f.mu.Unlock()
	var err error
	for k, c := range need {
		i := first + int64(k)
		select {
		case <-c.done:
		case <-f.ctx.Done():
		}
		if err != nil {
			continue
		}
		select {
		case <-c.done:
			if c.err != nil {
				err = c.err
				break
			}
			start := i * f.chunk
			lo, hi := max(off, start), min(off+int64(len(p)), start+int64(len(c.buf)))
			copy(p[lo-off:hi-off], c.buf[lo-start:hi-start])
		default:
			err = f.closedErr()
		}
	}
	f.mu.Lock()
	for k, c := range need {
		c.refs--
		if c.err != nil && f.chunks[first+int64(k)] == c { // let a later read fetch it again
			delete(f.chunks, first+int64(k))
			c.evicted = true
		}
		f.recycle(c)
	}
	f.mu.Unlock()
	return err
}

// startFetch starts fetching chunk i (f.mu held): a ranged GET of its own,
// or the next chunk of the stream (restarted at i if it is elsewhere).
func (f *file) startFetch(i int64) *chunk {
	start := i * f.chunk
	n := min(f.chunk, f.size-start)
	c := &chunk{done: make(chan struct{}), buf: getBuf(f.chunk)[:n]}
	f.chunks[i] = c
	if !f.ranges {
		if f.stream == nil || f.stream.next != i {
			f.stopStream()
			f.startStream(i)
		}
		f.stream.queue = append(f.stream.queue, c)
		f.stream.next = i + 1
		f.stream.cond.Signal()
		return c
	}
	f.chunkGets++
	f.fetches.Add(1)
	go func() {
		defer f.fetches.Done()
		c.err = f.get(f.ctx, c.buf, start)
		f.finish(c)
	}()
	return c
}

// finish publishes a filled (or failed) chunk.
func (f *file) finish(c *chunk) {
	close(c.done)
	f.mu.Lock()
	f.recycle(c)
	f.mu.Unlock()
}

// startStream starts a stream at chunk i (f.mu held).
func (f *file) startStream(i int64) {
	ctx, cancel := context.WithCancel(f.ctx)
	st := &stream{next: i, cond: sync.NewCond(&f.mu), cancel: cancel}
	f.stream = st
	f.chunkGets++
	f.fetches.Add(1)
	go f.runStream(ctx, st, i*f.chunk)
}

// stopStream stops the stream, if any (f.mu held): the chunks still
// queued fail with errStopped.
func (f *file) stopStream() {
	st := f.stream
	if st == nil {
		return
	}
	f.stream = nil
	st.stopped = true
	st.cancel()
	st.cond.Broadcast()
}

// runStream fills the stream's chunks in order from one GET starting at
// pos, reopened at the current position if the transfer breaks.
func (f *file) runStream(ctx context.Context, st *stream, pos int64) {
	defer f.fetches.Done()
	var body io.ReadCloser
	defer func() {
		if body != nil {
			body.Close()
		}
	}()
	for {
		f.mu.Lock()
		for len(st.queue) == 0 && !st.stopped {
			st.cond.Wait()
		}
		if st.stopped {
			queued := st.queue
			st.queue = nil
			f.mu.Unlock()
			for _, c := range queued {
				c.err = errStopped
				f.finish(c)
			}
			return
		}
		c := st.queue[0]
		st.queue = st.queue[1:]
		f.mu.Unlock()
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if body == nil {
				var out *s3.GetObjectOutput
				out, err = f.s.c.GetObject(ctx, &s3.GetObjectInput{
					Bucket: &f.s.cfg.Bucket, Key: aws.String(f.key), Range: aws.String(fmt.Sprintf("bytes=%d-", pos)),
				})
				if err != nil {
					break // already retried by the SDK
				}
				body = out.Body
			}
			if _, err = io.ReadFull(body, c.buf); err == nil || ctx.Err() != nil {
				break
			}
			body.Close() // cut short: reopen at pos
			body = nil
		}
		switch {
		case err == nil:
			pos += int64(len(c.buf))
		case ctx.Err() != nil && f.ctx.Err() == nil:
			c.err = errStopped
		case ctx.Err() != nil:
			c.err = f.closedErr()
		default:
			c.err = f.errorf(err, fmt.Sprintf("read %d bytes at %d", len(c.buf), pos))
		}
		f.finish(c)
		if c.err != nil {
			f.mu.Lock()
			if f.stream == st {
				f.stopStream()
			}
			f.mu.Unlock()
		}
	}
}

// evict drops the chunks outside [lo, hi] (all with lo < 0) (f.mu held).
func (f *file) evict(lo, hi int64) {
	for i, c := range f.chunks {
		if lo < 0 || i < lo || i > hi {
			delete(f.chunks, i)
			c.evicted = true
			f.recycle(c)
		}
	}
}

// recycle returns an evicted chunk's buffer once nobody uses it (f.mu held).
func (f *file) recycle(c *chunk) {
	if !c.evicted || c.refs > 0 || c.buf == nil {
		return
	}
	select {
	case <-c.done:
		putBuf(c.buf)
		c.buf = nil
	default: // the fetch recycles it when it ends
	}
}

// get reads len(p) bytes at off with one ranged GET, retrying a transfer
// cut short (the SDK retries failed requests, not failed bodies).
func (f *file) get(ctx context.Context, p []byte, off int64) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var out *s3.GetObjectOutput
		out, err = f.s.c.GetObject(ctx, &s3.GetObjectInput{
			Bucket: &f.s.cfg.Bucket, Key: aws.String(f.key),
			Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1)),
		})
		if err != nil {
			break // already retried by the SDK
		}
		_, err = io.ReadFull(out.Body, p)
		out.Body.Close()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return f.closedErr()
		}
		return f.errorf(err, fmt.Sprintf("read %d bytes at %d", len(p), off))
	}
	return nil
}

// readTail copies the tail from at into p, reading the tail (which starts
// at start) on first use; a failed read is tried again next time.
func (f *file) readTail(p []byte, at, start int64) error {
	f.tailMu.Lock()
	defer f.tailMu.Unlock()
	if f.tail == nil {
		buf := make([]byte, f.size-start)
		if err := f.get(f.ctx, buf, start); err != nil {
			return err
		}
		f.mu.Lock()
		f.tail = buf
		f.mu.Unlock()
	}
	copy(p, f.tail[at:])
	return nil
}

// getParallel reads p at off directly: one ranged GET per ReadChunk,
// ReadAhead at a time.
func (f *file) getParallel(p []byte, off int64) error {
	if int64(len(p)) <= f.chunk {
		return f.get(f.ctx, p, off)
	}
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, max(f.ahead, 1))
		errMu sync.Mutex
		first error
	)
	for lo := int64(0); lo < int64(len(p)); lo += f.chunk {
		hi := min(lo+f.chunk, int64(len(p)))
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f.get(f.ctx, p[lo:hi], off+lo); err != nil {
				errMu.Lock()
				if first == nil {
					first = err
				}
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// Read implements io.Reader.
func (f *file) Read(p []byte) (int, error) {
	f.readMu.Lock()
	defer f.readMu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	n, err := f.readAt(p, f.pos, true)
	f.pos += int64(n)
	if n > 0 && err == io.EOF {
		err = nil
	}
	return n, err
}

// Seek implements io.Seeker.
func (f *file) Seek(offset int64, whence int) (int64, error) {
	f.readMu.Lock()
	defer f.readMu.Unlock()
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = f.pos + offset
	case io.SeekEnd:
		abs = f.size + offset
	default:
		return 0, fmt.Errorf("store: model %q: file %q: seek: bad whence %d", f.name, f.file, whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("store: model %q: file %q: seek to negative offset %d", f.name, f.file, abs)
	}
	f.pos = abs
	return abs, nil
}

// Close stops the fetches in flight and frees the buffers.
func (f *file) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.stopStream()
	f.cancel()
	f.mu.Unlock()
	f.fetches.Wait()
	f.mu.Lock()
	f.evict(-1, -1)
	f.mu.Unlock()
	return nil
}
