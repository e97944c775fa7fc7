package flightsrv

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/internal/bufpool"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
)

// The DoPut stream is spooled tensor by tensor as it arrives; the pipeline
// reads chunks from the spool as soon as they are complete, so
// quantization overlaps the upload.
//
// By default a tensor's values go to a file, and a released tensor's file
// is reused by a later one (spareFile): its pages are overwritten where
// the page cache holds them instead of new ones being taken and freed
// (writing a 15 GB push into new pages cost the server 16.5 CPU-s;
// docs/PERF.md).
//
// With a memory budget (serve --spool-memory-mb, shared by all uploads)
// values go to memory pages while it has room, and a whole-page read is a
// view of its page. When the budget is full the receiver waits, so the
// upload goes at the pipeline's pace, until a tensor is written and its
// pages freed. If a pipeline reader waits on data that has not arrived
// meanwhile, waiting could deadlock (the budget may be held by tensors
// the pipeline cannot finish without that data: channel equalization
// holds a whole layer back until its last tensor), so the rest of the
// tensor spills to a file.
//
// With keep-source the spool becomes the model's stored FP source
// (source/manifest.json + one raw file per tensor): every value goes to
// its own file.

// spoolMemory is the server's budget of bytes held in spool pages, shared
// by all uploads.
type spoolMemory struct {
	limit int64
	mem   memory.Allocator // pages, written before they are read

	mu    sync.Mutex
	used  int64
	freed chan struct{} // closed and replaced when bytes are given back
}

func newSpoolMemory(limit int64, mem memory.Allocator) *spoolMemory {
	return &spoolMemory{limit: limit, mem: bufpool.UninitOf(mem), freed: make(chan struct{})}
}

// take reserves n bytes; when they do not fit it returns a channel closed
// when bytes are next given back.
func (m *spoolMemory) take(n int64) (bool, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.used+n > m.limit {
		return false, m.freed
	}
	m.used += n
	return true, nil
}

func (m *spoolMemory) give(n int64) {
	if n == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.used -= n
	close(m.freed)
	m.freed = make(chan struct{})
}

func (m *spoolMemory) inUse() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used
}

// sourceEntry describes one spooled tensor.
type sourceEntry struct {
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"`
	DType    string  `json:"dtype"`
	File     string  `json:"file"` // relative to the model, raw little-endian values of the wire type
	Elements int64   `json:"elements"`
}

// flightSource is a quant.Source fed by the DoPut stream.
type flightSource struct {
	dir       string // spool directory
	rel       string // its path relative to the model dir ("source" when kept)
	keep      bool
	budget    *spoolMemory // nil: every value goes to a file
	pageElems int64        // elements per memory page (schema.ChunkElems: a pipeline chunk is one page)

	mu       sync.Mutex
	notify   chan struct{} // closed and replaced on every change
	wantData chan struct{} // a reader started waiting (capacity 1)
	waiters  map[*dataWaiter]struct{}
	queue    []*spoolTensor
	all      []*spoolTensor
	finished bool
	closed   bool // close ran: nothing more is stored
	err      error
	spilled  int64 // bytes that went to files for want of memory
	spare    []*spareFile
}

func newFlightSource(dir, rel string, keep bool, budget *spoolMemory) (*flightSource, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create spool: %w", err)
	}
	if keep {
		budget = nil
	}
	return &flightSource{dir: dir, rel: rel, keep: keep, budget: budget, pageElems: schema.ChunkElems,
		notify: make(chan struct{}), wantData: make(chan struct{}, 1), waiters: map[*dataWaiter]struct{}{}}, nil
}

func (s *flightSource) changedLocked() {
	close(s.notify)
	s.notify = make(chan struct{})
}

// fail records the first error; readers waiting on data see it.
func (s *flightSource) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	s.changedLocked()
}

func (s *flightSource) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// dataWaiter is a reader waiting for element need of t to arrive, or for
// the next tensor when t is nil.
type dataWaiter struct {
	t    *spoolTensor
	need int64
}

// starvingLocked reports whether a reader still waits on data that has
// not arrived.
func (s *flightSource) starvingLocked() bool {
	for w := range s.waiters {
		if w.t == nil && len(s.queue) == 0 && !s.finished || w.t != nil && w.t.have < w.need {
			return true
		}
	}
	return false
}

// awaitData waits for the next change (ch) as a reader that needs w: the
// receiver spills rather than wait for memory while one does.
func (s *flightSource) awaitData(ctx context.Context, ch <-chan struct{}, w *dataWaiter) error {
	s.mu.Lock()
	s.waiters[w] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiters, w)
		s.mu.Unlock()
	}()
	select {
	case s.wantData <- struct{}{}:
	default:
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *flightSource) Next(ctx context.Context) (quant.Tensor, error) {
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return nil, err
		}
		if len(s.queue) > 0 {
			t := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return t, nil
		}
		if s.finished {
			s.mu.Unlock()
			return nil, io.EOF
		}
		ch := s.notify
		s.mu.Unlock()
		if err := s.awaitData(ctx, ch, &dataWaiter{}); err != nil {
			return nil, err
		}
	}
}

// reserve takes size bytes of the budget for a page. It waits while the
// budget is full, and returns false (spill to a file) when there is no
// budget or a reader waits on data that has not arrived.
func (s *flightSource) reserve(size int64) (bool, error) {
	if s.budget == nil {
		return false, nil
	}
	for {
		ok, freed := s.budget.take(size)
		if ok {
			return true, nil
		}
		s.mu.Lock()
		err, closed, starving, changed := s.err, s.closed, s.starvingLocked(), s.notify
		s.mu.Unlock()
		switch {
		case err != nil:
			return false, err
		case closed:
			return false, errUploadEnded
		case starving:
			return false, nil
		}
		select {
		case <-freed:
		case <-changed:
		case <-s.wantData:
		}
	}
}

var errUploadEnded = status.Error(codes.Canceled, "the upload was ended")

// manifest lists the spooled tensors in order (kept sources only: their
// values are all in files).
func (s *flightSource) manifest() []sourceEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]sourceEntry, len(s.all))
	for i, t := range s.all {
		out[i] = sourceEntry{Name: t.meta.Name, Shape: t.meta.Shape, DType: t.meta.DType,
			File: filepath.ToSlash(filepath.Join(s.rel, filepath.Base(t.path))), Elements: t.have}
	}
	return out
}

// spilledBytes is how much went to files for want of memory.
func (s *flightSource) spilledBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.spilled
}

// close frees every tensor's pages and files (files stay when kept) and
// wakes a receiver waiting for memory.
func (s *flightSource) close() {
	s.mu.Lock()
	all, spare := s.all, s.spare
	s.closed, s.spare = true, nil
	s.changedLocked()
	s.mu.Unlock()
	for _, t := range all {
		t.Release()
	}
	for _, sf := range spare {
		sf.f.Close()
		os.Remove(sf.path)
	}
}

// spoolTensor is one tensor being received: its first inMem elements are
// in pages of pageElems, the rest (from fileFrom) in its file.
type spoolTensor struct {
	src   *flightSource
	meta  quant.TensorMeta
	vt    arrow.DataType
	width int64
	path  string
	n     int64

	// guarded by src.mu
	pages    []*memory.Buffer
	reserved int64    // budget bytes the pages hold
	inMem    int64    // elements in pages
	f        *os.File // nil while every value is in memory
	fileFrom int64    // the element at the file's start
	fileSize int64    // bytes the file held before this tensor (a spare file)
	reads    int      // ReadChunks reading the file
	have     int64    // elements stored
	released bool
}

func (t *spoolTensor) Meta() quant.TensorMeta { return t.meta }

// spareFile is the file of a released tensor, kept for the next one.
type spareFile struct {
	f    *os.File
	path string
	size int64 // bytes written
}

// takeSpareLocked returns the spare file that best fits size bytes: the
// smallest that holds them, else the largest; nil when none is spare.
func (s *flightSource) takeSpareLocked(size int64) *spareFile {
	better := func(a, b *spareFile) bool {
		if aFits, bFits := a.size >= size, b.size >= size; aFits != bFits {
			return aFits
		} else if aFits {
			return a.size < b.size
		}
		return a.size > b.size
	}
	best := -1
	for i, sf := range s.spare {
		if best < 0 || better(sf, s.spare[best]) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	sf := s.spare[best]
	s.spare = slices.Delete(s.spare, best, best+1)
	return sf
}

// openFile gives the tensor a file (a spare one when there is one); its
// values from element from on go there.
func (t *spoolTensor) openFile(from int64) error {
	s := t.src
	s.mu.Lock()
	sf := (*spareFile)(nil)
	if !s.keep {
		sf = s.takeSpareLocked((t.n - from) * t.width)
	}
	s.mu.Unlock()
	if sf != nil {
		if _, err := sf.f.Seek(0, io.SeekStart); err != nil {
			sf.f.Close()
			os.Remove(sf.path)
			sf = nil
		}
	}
	if sf == nil {
		f, err := os.Create(t.path)
		if err != nil {
			return status.Errorf(codes.Internal, "spool tensor %q: %v", t.meta.Name, unwrapPathErr(err))
		}
		sf = &spareFile{f: f, path: t.path}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || t.released { // the call ended while this batch was on its way
		sf.f.Close()
		os.Remove(sf.path)
		if !s.closed {
			return nil
		}
		return errUploadEnded
	}
	t.f, t.path, t.fileSize, t.fileFrom = sf.f, sf.path, sf.size, from
	return nil
}

// dropped reports whether the pipeline released the tensor before it
// arrived whole: it stopped on an error of its own, which the upload
// reports, so the rest of the values are dropped.
func (t *spoolTensor) dropped() bool {
	t.src.mu.Lock()
	defer t.src.mu.Unlock()
	return t.released && !t.src.closed
}

// store appends raw (whole values) to the tensor.
func (t *spoolTensor) store(raw []byte) error {
	s := t.src
	// ended is the answer once the tensor is freed under the receiver:
	// values of a tensor the pipeline dropped are counted and dropped.
	ended := func(rest []byte) error {
		if !t.dropped() {
			return errUploadEnded
		}
		t.stored(int64(len(rest))/t.width, false)
		return nil
	}
	for len(raw) > 0 {
		s.mu.Lock()
		pos, f, freed := t.have, t.f, s.closed || t.released
		s.mu.Unlock()
		if freed {
			return ended(raw)
		}
		if f != nil {
			if _, err := f.Write(raw); err != nil {
				if t.dropped() {
					return ended(raw)
				}
				return status.Errorf(codes.Internal, "spool tensor %q: %v", t.meta.Name, unwrapPathErr(err))
			}
			t.stored(int64(len(raw))/t.width, false)
			return nil
		}
		if pos%s.pageElems == 0 {
			size := min(s.pageElems, t.n-pos) * t.width
			ok, err := s.reserve(size)
			if err != nil {
				return err
			}
			if !ok {
				if err := t.openFile(pos); err != nil {
					return err
				}
				if s.budget != nil {
					s.mu.Lock()
					s.spilled += (t.n - pos) * t.width
					s.mu.Unlock()
				}
				continue
			}
			page := memory.NewResizableBuffer(s.budget.mem)
			page.Resize(int(size))
			s.mu.Lock()
			if freed = s.closed || t.released; !freed {
				t.pages = append(t.pages, page)
				t.reserved += size
			}
			s.mu.Unlock()
			if freed {
				page.Release()
				s.budget.give(size)
				return ended(raw)
			}
		}
		// The page is retained for the copy: close may free the tensor
		// meanwhile.
		var page *memory.Buffer
		s.mu.Lock()
		if freed = s.closed || t.released; !freed {
			page = t.pages[pos/s.pageElems]
			page.Retain()
		}
		s.mu.Unlock()
		if freed {
			return ended(raw)
		}
		c := copy(page.Bytes()[pos%s.pageElems*t.width:], raw)
		page.Release()
		raw = raw[c:]
		t.stored(int64(c)/t.width, true)
	}
	return nil
}

// stored makes n more elements readable.
func (t *spoolTensor) stored(n int64, inMem bool) {
	s := t.src
	s.mu.Lock()
	defer s.mu.Unlock()
	t.have += n
	if inMem {
		t.inMem += n
	}
	s.changedLocked()
}

// WaitFor returns once [off, off+n) has arrived (quant.Arriving).
func (t *spoolTensor) WaitFor(ctx context.Context, off, n int64) error {
	s := t.src
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return err
		}
		ready := t.have >= off+n
		ch := s.notify
		s.mu.Unlock()
		if ready {
			return nil
		}
		if err := s.awaitData(ctx, ch, &dataWaiter{t: t, need: off + n}); err != nil {
			return err
		}
	}
}

// ReadChunk waits until [off, off+n) has arrived, then returns it: a view
// of its page when one page holds it, else a copy.
func (t *spoolTensor) ReadChunk(ctx context.Context, mem memory.Allocator, off, n int64) (arrow.RecordBatch, error) {
	if err := t.WaitFor(ctx, off, n); err != nil {
		return nil, err
	}
	s, w := t.src, t.width
	s.mu.Lock()
	if t.released {
		s.mu.Unlock()
		return nil, fmt.Errorf("read spool of %q: the tensor was released", t.meta.Name)
	}
	inMem, f, fileFrom := t.inMem, t.f, t.fileFrom
	if off+n > inMem {
		t.reads++
		defer func() {
			s.mu.Lock()
			t.reads--
			s.mu.Unlock()
		}()
	}
	var pages []*memory.Buffer
	if n > 0 && off < inMem {
		pages = append(pages, t.pages[off/s.pageElems:(min(off+n, inMem)-1)/s.pageElems+1]...)
		for _, p := range pages {
			p.Retain()
		}
	}
	s.mu.Unlock()
	defer func() {
		for _, p := range pages {
			p.Release()
		}
	}()
	first := off / s.pageElems * s.pageElems // the first page's first element
	if len(pages) == 1 && off+n <= inMem {
		view := memory.SliceBuffer(pages[0], int((off-first)*w), int(n*w))
		defer view.Release()
		return quant.InputRecord(mem, t.meta, off, t.vt, view), nil
	}
	buf := memory.NewResizableBuffer(bufpool.UninitOf(mem)) // filled below
	defer buf.Release()
	buf.Resize(int(n * w))
	out := buf.Bytes()
	at := off
	for i, p := range pages {
		from := first + int64(i)*s.pageElems
		end := min(from+s.pageElems, off+n, inMem)
		copy(out[(at-off)*w:], p.Bytes()[(at-from)*w:(end-from)*w])
		at = end
	}
	if at < off+n {
		if _, err := f.ReadAt(out[(at-off)*w:], (at-fileFrom)*w); err != nil {
			return nil, fmt.Errorf("read spool of %q: %w", t.meta.Name, err)
		}
	}
	return quant.InputRecord(mem, t.meta, off, t.vt, buf), nil
}

// Release frees the tensor's pages and budget and drops its file once the
// tensor is written (the file stays with keep-source).
func (t *spoolTensor) Release() {
	s := t.src
	s.mu.Lock()
	if t.released {
		s.mu.Unlock()
		return
	}
	t.released = true
	pages, reserved, f := t.pages, t.reserved, t.f
	t.pages, t.reserved = nil, 0
	// The file is reused only when nothing can touch it any more: all
	// values arrived (the receiver writes no more) and no read is under way.
	spare := f != nil && !s.keep && !s.closed && t.have == t.n && t.reads == 0
	if spare {
		s.spare = append(s.spare, &spareFile{f: f, path: t.path, size: max(t.fileSize, (t.have-t.fileFrom)*t.width)})
	}
	s.mu.Unlock()
	for _, p := range pages {
		p.Release()
	}
	if s.budget != nil {
		s.budget.give(reserved)
	}
	if f != nil && !spare {
		f.Close()
		if !s.keep {
			os.Remove(t.path)
		}
	}
}

// unwrapPathErr drops the *os.PathError's path (the server's spool
// directory) from a file error sent to the client.
func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
