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

// file is an open file of a committed version, read with ranged GETs.
//
// A read that continues where the previous one ended (a sequential
// reader: io.Copy, DoGet streaming an artifact batch after batch) switches
// the file to chunked reading: the object is fetched in ReadChunk pieces,
// ReadAhead of them in flight ahead of the reader, so transfers overlap
// with the reader's work and with each other. Other reads (a footer, a
// header, a seek elsewhere) are one ranged GET of exactly their bytes.
// Memory per open file: at most (ReadAhead + chunks spanned by the read
// in progress) × ReadChunk, from a shared pool.
type file struct {
	s                *Store
	name, file, key  string
	size             int64
	chunk            int64
	ahead            int
	ctx              context.Context
	cancel           context.CancelFunc
	mu               sync.Mutex
	closed           bool
	pos              int64 // for Read and Seek
	lastEnd          int64 // where the previous read ended (-1: none)
	chunks           map[int64]*chunk
	fetches          sync.WaitGroup
	readMu           sync.Mutex // serialises Read (pos)
	directGets, gets int        // counters for tests
}

// chunk is one ReadChunk-sized piece of the object, fetched or in flight.
type chunk struct {
	done    chan struct{}
	buf     []byte
	err     error
	refs    int  // readers copying out of buf
	evicted bool // out of the window: buf goes back to the pool when free
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
		ctx: ctx, cancel: cancel, lastEnd: -1, chunks: map[int64]*chunk{}}
}

func (f *file) Size() int64 { return f.size }

func (f *file) errorf(err error, what string) error {
	if isNotFound(err) {
		return fmt.Errorf("store: model %q: file %q: %s: object %s is gone (collected by GC after the version was replaced or deleted): %w", f.name, f.file, what, f.key, store.ErrNotFound)
	}
	return wrap(err, "store: model %q: file %q: %s (object %s)", f.name, f.file, what, f.key)
}

// ReadAt implements io.ReaderAt; it is safe for concurrent use.
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	return f.readAt(p, off, false)
}

// readAt is ReadAt; stream says the caller reads sequentially (Read).
func (f *file) readAt(p []byte, off int64, stream bool) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("store: model %q: file %q: negative offset %d", f.name, f.file, off)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.size-off))
	var err error
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return 0, fmt.Errorf("store: model %q: file %q: read after Close", f.name, f.file)
	}
	sequential := stream || off == f.lastEnd || f.chunks[off/f.chunk] != nil
	f.lastEnd = off + int64(n)
	if sequential || int64(n) >= f.chunk {
		err = f.readChunked(p[:n], off) // unlocks f.mu
	} else {
		f.evict(-1, -1)
		f.directGets++
		f.mu.Unlock()
		err = f.get(f.ctx, p[:n], off)
	}
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
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
		if err == nil {
			select {
			case <-c.done:
				if c.err != nil {
					err = c.err
				} else {
					start := i * f.chunk
					lo, hi := max(off, start), min(off+int64(len(p)), start+int64(len(c.buf)))
					copy(p[lo-off:hi-off], c.buf[lo-start:hi-start])
				}
			default:
				err = fmt.Errorf("store: model %q: file %q: read after Close", f.name, f.file)
			}
		}
	}
	f.mu.Lock()
	for k, c := range need {
		c.refs--
		if c.err != nil && f.chunks[first+int64(k)] == c { // let a later read retry it
			delete(f.chunks, first+int64(k))
			c.evicted = true
		}
		f.recycle(c)
	}
	f.mu.Unlock()
	return err
}

// startFetch starts fetching chunk i (f.mu held).
func (f *file) startFetch(i int64) *chunk {
	start := i * f.chunk
	n := min(f.chunk, f.size-start)
	c := &chunk{done: make(chan struct{}), buf: getBuf(f.chunk)[:n]}
	f.chunks[i] = c
	f.gets++
	f.fetches.Add(1)
	go func() {
		defer f.fetches.Done()
		c.err = f.get(f.ctx, c.buf, start)
		close(c.done)
		f.mu.Lock()
		f.recycle(c)
		f.mu.Unlock()
	}()
	return c
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
			return fmt.Errorf("store: model %q: file %q: read after Close", f.name, f.file)
		}
		return f.errorf(err, fmt.Sprintf("read %d bytes at %d", len(p), off))
	}
	return nil
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
	f.cancel()
	f.mu.Unlock()
	f.fetches.Wait()
	f.mu.Lock()
	f.evict(-1, -1)
	f.mu.Unlock()
	return nil
}
