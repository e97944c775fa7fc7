package flightsrv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/schema"
)

// chunkRecord is one DoPut row: values at off of an F32 tensor.
func chunkRecord(t *testing.T, name string, shape []int64, off int64, values []float32) arrow.RecordBatch {
	t.Helper()
	sc := schema.Input(arrow.PrimitiveTypes.Float32)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append(name)
	lb := b.Field(1).(*array.ListBuilder)
	lb.Append(true)
	lb.ValueBuilder().(*array.Int64Builder).AppendValues(shape, nil)
	b.Field(2).(*array.StringBuilder).Append("F32")
	b.Field(3).(*array.Int64Builder).Append(off)
	vb := b.Field(4).(*array.ListBuilder)
	vb.Append(true)
	vb.ValueBuilder().(*array.Float32Builder).AppendValues(values, nil)
	return b.NewRecordBatch()
}

// ramp is [from, from+1, ..., from+n-1].
func ramp(from, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(from + i)
	}
	return out
}

// spoolRig is a source with pages of 4 elements, a budget of pages
// pages, and an ingestor that feeds it in the background.
type spoolRig struct {
	src  *flightSource
	in   *ingestor
	mem  *memory.CheckedAllocator
	dir  string
	done chan error
	base map[string]int // each tensor's first value: tensors differ
}

func newSpoolRig(t *testing.T, pages int64) *spoolRig {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	dir := t.TempDir()
	var budget *spoolMemory
	if pages > 0 {
		budget = newSpoolMemory(pages*4*4, mem)
	}
	src, err := newFlightSource(dir, ".spool", false, budget)
	if err != nil {
		t.Fatal(err)
	}
	src.pageElems = 4
	in := newIngestor(src, 0)
	if err := in.setSchema(schema.Input(arrow.PrimitiveTypes.Float32)); err != nil {
		t.Fatal(err)
	}
	return &spoolRig{src: src, in: in, mem: mem, dir: dir, done: make(chan error, 1), base: map[string]int{}}
}

// send ingests the rows (tensor name, shape, chunk sizes) in the
// background, values numbered across each tensor from its base, then
// ends the stream.
type sentTensor struct {
	name   string
	shape  []int64
	chunks []int
}

func (r *spoolRig) send(t *testing.T, tensors ...sentTensor) { r.feed(t, true, tensors...) }

// feed ingests the rows in the background, ending the stream if end.
func (r *spoolRig) feed(t *testing.T, end bool, tensors ...sentTensor) {
	var recs []arrow.RecordBatch
	for _, st := range tensors {
		base := 1000 * (len(r.base) + 1)
		r.base[st.name] = base
		off := 0
		for _, n := range st.chunks {
			recs = append(recs, chunkRecord(t, st.name, st.shape, int64(off), ramp(base+off, n)))
			off += n
		}
	}
	go func() {
		defer func() {
			for _, rec := range recs {
				rec.Release()
			}
		}()
		for _, rec := range recs {
			if _, err := r.in.batch(rec); err != nil {
				r.done <- err
				return
			}
		}
		if end {
			r.done <- r.in.end()
		} else {
			r.done <- nil
		}
	}()
}

func (r *spoolRig) next(t *testing.T) *spoolTensor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tn, err := r.src.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return tn.(*spoolTensor)
}

// check reads [off, off+n) of st and checks they are the values sent.
func (r *spoolRig) check(t *testing.T, st *spoolTensor, off, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, err := st.ReadChunk(ctx, r.mem, off, n)
	if err != nil {
		t.Fatalf("read [%d, %d) of %s: %v", off, off+n, st.meta.Name, err)
	}
	defer rec.Release()
	got := rec.Column(4).(*array.List).ListValues().(*array.Float32).Float32Values()
	want := ramp(r.base[st.meta.Name]+int(off), int(n))
	if len(got) != len(want) {
		t.Fatalf("read [%d, %d) of %s: %d values", off, off+n, st.meta.Name, len(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("read [%d, %d) of %s: value %d is %v, want %v", off, off+n, st.meta.Name, i, got[i], want[i])
		}
	}
}

func (r *spoolRig) files(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func (r *spoolRig) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("the receiver did not finish")
		return nil
	}
}

func (r *spoolRig) closeAndCheck(t *testing.T) {
	t.Helper()
	r.src.close()
	if f := r.files(t); len(f) != 0 {
		t.Fatalf("files left after close: %v", f)
	}
	r.mem.AssertSize(t, 0)
	if r.src.budget != nil && r.src.budget.inUse() != 0 {
		t.Fatalf("%d budget bytes still taken after close", r.src.budget.inUse())
	}
}

// With room, values stay in memory: reads within a page are views of it,
// reads across pages copies, and no file is written.
func TestSpoolKeepsValuesInMemory(t *testing.T) {
	r := newSpoolRig(t, 16)
	r.send(t, sentTensor{"w", []int64{2, 7}, []int{3, 3, 5, 3}}, sentTensor{"b", []int64{3}, []int{3}})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	w, b := r.next(t), r.next(t)
	for _, c := range [][2]int64{{0, 4}, {4, 4}, {12, 2}, {1, 2}, {2, 7}, {0, 14}, {13, 1}, {0, 0}} {
		r.check(t, w, c[0], c[1])
	}
	r.check(t, b, 0, 3)
	rec, err := w.ReadChunk(context.Background(), r.mem, 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	view := rec.Column(4).(*array.List).ListValues().Data().Buffers()[1].Bytes()
	if &view[0] != &w.pages[1].Bytes()[0] {
		t.Error("a read of one whole page is a copy, want a view of the page")
	}
	rec.Release()
	if f := r.files(t); len(f) != 0 {
		t.Fatalf("files written with memory to spare: %v", f)
	}
	if got := r.src.budget.inUse(); got != 14*4+3*4 { // w: pages of 4, 4, 4 and 2 values; b: one of 3
		t.Fatalf("budget in use %d", got)
	}
	w.Release()
	if got := r.src.budget.inUse(); got != 3*4 {
		t.Fatalf("budget in use after releasing w: %d, want b's 12 bytes", got)
	}
	if r.src.spilledBytes() != 0 {
		t.Fatalf("spilled %d bytes", r.src.spilledBytes())
	}
	r.closeAndCheck(t)
}

// A full budget holds the receiver back until a tensor is released; what
// it then receives goes to memory.
func TestSpoolWaitsForMemory(t *testing.T) {
	r := newSpoolRig(t, 2)
	r.send(t, sentTensor{"a", []int64{8}, []int{8}}, sentTensor{"b", []int64{8}, []int{2, 6}})
	a := r.next(t)
	r.check(t, a, 0, 8)
	b := r.next(t) // Next returns b once it starts; its values wait for memory
	time.Sleep(50 * time.Millisecond)
	r.src.mu.Lock()
	have := b.have
	r.src.mu.Unlock()
	if have != 0 {
		t.Fatalf("b has %d values while a holds the whole budget", have)
	}
	a.Release()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	r.check(t, b, 0, 8)
	if f := r.files(t); len(f) != 0 || r.src.spilledBytes() != 0 {
		t.Fatalf("files %v, %d bytes spilled: the receiver should have waited for memory", f, r.src.spilledBytes())
	}
	r.closeAndCheck(t)
}

// A reader that needs values beyond a full budget makes the rest of the
// tensor spill to its file instead of waiting forever.
func TestSpoolSpillsWhenAReaderWaits(t *testing.T) {
	r := newSpoolRig(t, 1)
	r.send(t, sentTensor{"w", []int64{3, 5}, []int{6, 9}})
	w := r.next(t)
	r.check(t, w, 0, 15) // needs everything, holds one page of budget
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]int64{{0, 4}, {2, 4}, {4, 4}, {3, 12}, {14, 1}} {
		r.check(t, w, c[0], c[1])
	}
	fi, err := os.Stat(filepath.Join(r.dir, "1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 11*4 || r.src.spilledBytes() != 11*4 {
		t.Fatalf("file of %d bytes, %d spilled; want the 11 values after the first page", fi.Size(), r.src.spilledBytes())
	}
	w.Release()
	if len(r.src.spare) != 1 {
		t.Fatalf("%d spare files after release, want w's", len(r.src.spare))
	}
	r.closeAndCheck(t)
}

// A receiver waiting for memory ends with the upload: on close, and with
// the error of a failed pipeline.
func TestSpoolWaitingReceiverEnds(t *testing.T) {
	for _, end := range []string{"close", "fail"} {
		t.Run(end, func(t *testing.T) {
			r := newSpoolRig(t, 1)
			r.send(t, sentTensor{"a", []int64{4}, []int{4}}, sentTensor{"b", []int64{4}, []int{4}})
			r.next(t)
			r.check(t, r.next(t), 0, 0) // b started: the receiver waits for a's page
			time.Sleep(20 * time.Millisecond)
			boom := errors.New("boom")
			if end == "close" {
				r.src.close()
			} else {
				r.src.fail(boom)
			}
			err := r.wait(t)
			if end == "close" && status.Code(err) != codes.Canceled {
				t.Fatalf("after close: %v, want Canceled", err)
			}
			if end == "fail" && !errors.Is(err, boom) {
				t.Fatalf("after fail: %v, want the pipeline's error", err)
			}
			r.closeAndCheck(t)
		})
	}
}

// Values of a tensor the pipeline dropped (it stopped on its own error)
// are dropped too: the receiver neither fails nor stores them.
func TestSpoolDropsAReleasedTensor(t *testing.T) {
	for _, pages := range []int64{1, 0} {
		r := newSpoolRig(t, pages)
		r.send(t, sentTensor{"w", []int64{16}, []int{4, 4, 4, 4}})
		w := r.next(t)
		r.check(t, w, 0, 4)
		w.Release()
		if err := r.wait(t); err != nil {
			t.Fatalf("pages %d: %v", pages, err)
		}
		if len(w.pages) != 0 {
			t.Fatalf("pages %d: a dropped tensor kept %d pages", pages, len(w.pages))
		}
		r.closeAndCheck(t)
	}
}

// Without a budget (keep-source) every tensor has its file from the
// start, an empty one included.
func TestSpoolWithoutBudgetWritesFiles(t *testing.T) {
	r := newSpoolRig(t, 0)
	r.send(t, sentTensor{"w", []int64{2, 5}, []int{7, 3}}, sentTensor{"e", []int64{0}, []int{0}})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	w := r.next(t)
	r.check(t, w, 0, 10)
	r.check(t, w, 4, 4)
	if f := r.files(t); len(f) != 2 {
		t.Fatalf("files %v, want one per tensor", f)
	}
	r.closeAndCheck(t)
}

// A released tensor's file is reused by the next one that needs a file,
// the best fit first: values read back are the new tensor's, whether it
// is smaller or larger than the file's old contents.
func TestSpoolReusesFiles(t *testing.T) {
	r := newSpoolRig(t, 0)
	r.feed(t, false, sentTensor{"big", []int64{12}, []int{12}}, sentTensor{"small", []int64{5}, []int{5}},
		sentTensor{"x", []int64{3}, []int{3}})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	big, small := r.next(t), r.next(t)
	big.Release()
	small.Release()
	r.send(t, sentTensor{"a", []int64{4}, []int{4}}, sentTensor{"b", []int64{6}, []int{6}}, sentTensor{"c", []int64{20}, []int{9, 11}})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	r.next(t)
	a, b, c := r.next(t), r.next(t), r.next(t)
	if a.path != small.path || b.path != big.path {
		t.Fatalf("a got %s, b %s: want small's file (the best fit), then big's", a.path, b.path)
	}
	r.check(t, a, 0, 4)
	r.check(t, b, 0, 6)
	r.check(t, c, 0, 20)
	r.check(t, c, 7, 5)
	if n := len(r.files(t)); n != 4 {
		t.Fatalf("%d files for 6 tensors, want 4 (two reused)", n)
	}
	r.closeAndCheck(t)
}

// The best fit: the smallest spare file that holds the values, else the
// largest.
func TestTakeSpareFitsBest(t *testing.T) {
	s := &flightSource{}
	for _, size := range []int64{40, 10, 25, 100} {
		s.spare = append(s.spare, &spareFile{size: size})
	}
	for _, c := range []struct{ need, got int64 }{{20, 25}, {10, 10}, {200, 100}, {1, 40}} {
		if sf := s.takeSpareLocked(c.need); sf == nil || sf.size != c.got {
			t.Fatalf("need %d: got %v, want the file of %d", c.need, sf, c.got)
		}
	}
	if s.takeSpareLocked(1) != nil {
		t.Fatal("a spare file out of none")
	}
}
