// Package storetest is the conformance suite of store.Store: every backend
// (the local directory, the S3 object store) runs the same tests through
// Run, so they keep one set of semantics: atomic commits, reservations,
// overwrite in commit order, atomic delete, and open files that keep the
// version they opened.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/arrowquant/arrowquant/store"
)

// Backend is one fresh, empty backing storage (a directory, a bucket
// prefix) under test.
type Backend struct {
	// Open opens a store on the storage; called again after Close it
	// reopens the same storage (the suite closes what it opens).
	Open func(t *testing.T) store.Store
	// Leftovers lists what the stores left besides committed models:
	// staging areas, reservations, replaced or deleted versions not yet
	// removed. Backends that remove old versions later (after a grace
	// period) collect them first. The suite calls it only when no upload
	// is in progress and no file is open.
	Leftovers func(t *testing.T) []string
}

// Run runs the suite; newBackend gives each test its own empty storage.
func Run(t *testing.T, newBackend func(t *testing.T) Backend) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, Backend)
	}{
		{"Lifecycle", testLifecycle},
		{"LongNames", testLongNames},
		{"BeginReservesName", testBeginReservesName},
		{"Abort", testAbort},
		{"CommitFailures", testCommitFailures},
		{"OpenFileSurvivesReplaceAndDelete", testOpenFileSurvives},
		{"CloseAbortsStagings", testCloseAbortsStagings},
		{"ConcurrentMixed", testConcurrentMixed},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newBackend(t)) })
	}
}

var ctx = context.Background()

func open(t *testing.T, b Backend) store.Store {
	t.Helper()
	s := b.Open(t)
	t.Cleanup(func() { s.Close() })
	return s
}

// Put commits name with files (relative name -> content).
func Put(t testing.TB, s store.Store, name string, overwrite bool, files map[string]string) store.Entry {
	t.Helper()
	st, err := s.Begin(ctx, name, overwrite)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Abort()
	WriteFiles(t, st.Dir(), files)
	e, err := st.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// WriteFiles writes files (relative name -> content) under dir.
func WriteFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for f, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// ReadAll reads one file of a committed model and checks its Size.
func ReadAll(t testing.TB, s store.Store, name, file string) string {
	t.Helper()
	f, err := s.Open(ctx, name, file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != f.Size() {
		t.Fatalf("%s/%s: read %d bytes, Size() = %d", name, file, len(b), f.Size())
	}
	return string(b)
}

// EntryNames lists the entries' names.
func EntryNames(es []store.Entry) []string {
	names := []string{}
	for _, e := range es {
		names = append(names, e.Name)
	}
	return names
}

func assertNoLeftovers(t *testing.T, b Backend, when string) {
	t.Helper()
	if got := b.Leftovers(t); len(got) != 0 {
		t.Fatalf("%s: leftovers %v", when, got)
	}
}

func testLifecycle(t *testing.T, b Backend) {
	l := b.Open(t)
	defer func() { l.Close() }()

	files := map[string]string{
		"model.arrow":              "ARROW1-quantized-bytes",
		"report.json":              `{"ok":true}`,
		"source/model.safetensors": strings.Repeat("w", 1000),
	}
	e := Put(t, l, "org/model.v2", false, files)
	want := map[string]int64{"model.arrow": 22, "report.json": 11, "source/model.safetensors": 1000}
	if e.Name != "org/model.v2" || e.Version != 1 || !reflect.DeepEqual(e.Files, want) || e.Committed.IsZero() {
		t.Fatalf("commit entry = %+v", e)
	}
	Put(t, l, "dream-7b", false, map[string]string{"model.arrow": "d"})
	Put(t, l, "org/other", false, map[string]string{"model.arrow": "o"})

	got, err := l.Get(ctx, "org/model.v2")
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, e)
	}
	got.Files["model.arrow"] = -1 // must not alias the catalog
	if again, _ := l.Get(ctx, "org/model.v2"); again.Files["model.arrow"] != 22 {
		t.Fatal("Get returned the catalog's map")
	}
	all, err := l.List(ctx, "")
	if err != nil || !reflect.DeepEqual(EntryNames(all), []string{"dream-7b", "org/model.v2", "org/other"}) {
		t.Fatalf("List all = %v, %v", EntryNames(all), err)
	}
	if !reflect.DeepEqual(all[1], e) {
		t.Fatalf("List entry = %+v, want %+v", all[1], e)
	}
	all[1].Files["model.arrow"] = -1
	org, _ := l.List(ctx, "org/")
	if !reflect.DeepEqual(EntryNames(org), []string{"org/model.v2", "org/other"}) {
		t.Fatalf("List org/ = %v", EntryNames(org))
	}
	if org[0].Files["model.arrow"] != 22 {
		t.Fatal("List returned the catalog's map")
	}
	if none, _ := l.List(ctx, "zzz"); len(none) != 0 {
		t.Fatalf("List zzz = %v", EntryNames(none))
	}
	if st, _ := l.Stats(ctx); st != (store.Stats{Models: 3, Bytes: 1033 + 2, Pending: 0}) {
		t.Fatalf("Stats = %+v", st)
	}

	for f, content := range files {
		if got := ReadAll(t, l, "org/model.v2", f); got != content {
			t.Fatalf("%s = %q, want %q", f, got, content)
		}
	}
	f, err := l.Open(ctx, "org/model.v2", "model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 9)
	if n, err := f.ReadAt(buf, 7); err != nil || string(buf[:n]) != "quantized" {
		t.Fatalf("ReadAt = %q, %v", buf[:n], err)
	}
	if n, err := f.ReadAt(make([]byte, 10), 17); n != 5 || err != io.EOF {
		t.Fatalf("ReadAt past the end = %d, %v; want 5, EOF", n, err)
	}
	if pos, err := f.Seek(-5, io.SeekEnd); err != nil || pos != 17 {
		t.Fatalf("Seek = %d, %v", pos, err)
	}
	if rest, _ := io.ReadAll(f); string(rest) != "bytes" {
		t.Fatalf("after Seek read %q", rest)
	}
	if pos, err := f.Seek(0, io.SeekCurrent); err != nil || pos != 22 {
		t.Fatalf("Seek(0, current) at the end = %d, %v", pos, err)
	}
	if _, err := f.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("Seek to a negative offset succeeded")
	}
	f.Close()

	for _, c := range []struct{ name, file string }{{"nope", "model.arrow"}, {"org/model.v2", "nope"}, {"org/model.v2", "source"}} {
		if _, err := l.Open(ctx, c.name, c.file); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), `"`+c.name+`"`) {
			t.Errorf("Open(%q, %q) = %v, want ErrNotFound naming the model", c.name, c.file, err)
		}
	}
	if _, err := l.Get(ctx, "nope"); !errors.Is(err, store.ErrNotFound) || err.Error() != `store: model "nope": not found` {
		t.Fatalf("Get(nope) = %v", err)
	}

	// Overwrite: version 2, new files replace the old set entirely.
	e2 := Put(t, l, "org/model.v2", true, map[string]string{"model.arrow": "v2"})
	if e2.Version != 2 || !reflect.DeepEqual(e2.Files, map[string]int64{"model.arrow": 2}) || e2.Committed.Before(e.Committed) {
		t.Fatalf("overwrite entry = %+v", e2)
	}
	if got := ReadAll(t, l, "org/model.v2", "model.arrow"); got != "v2" {
		t.Fatalf("after overwrite model.arrow = %q", got)
	}
	if _, err := l.Open(ctx, "org/model.v2", "report.json"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old file still there after overwrite: %v", err)
	}

	// Reopening rebuilds the same catalog.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get(ctx, "dream-7b"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Get after Close = %v", err)
	}
	l = b.Open(t)
	if got, err := l.Get(ctx, "org/model.v2"); err != nil || !reflect.DeepEqual(got, e2) || !got.Committed.Equal(e2.Committed) {
		t.Fatalf("after reopen Get = %+v, %v; want %+v", got, err, e2)
	}
	if e3 := Put(t, l, "org/model.v2", true, map[string]string{"model.arrow": "v3"}); e3.Version != 3 {
		t.Fatalf("version after reopen = %d, want 3", e3.Version)
	}

	// Delete.
	if err := l.Delete(ctx, "org/model.v2"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get(ctx, "org/model.v2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Delete = %v", err)
	}
	if _, err := l.Open(ctx, "org/model.v2", "model.arrow"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Open after Delete = %v", err)
	}
	if err := l.Delete(ctx, "org/model.v2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Delete = %v", err)
	}
	if all, _ := l.List(ctx, ""); !reflect.DeepEqual(EntryNames(all), []string{"dream-7b", "org/other"}) {
		t.Fatalf("List after Delete = %v", EntryNames(all))
	}
	assertNoLeftovers(t, b, "after Delete")
	// A deleted name can be created again without overwrite.
	if e := Put(t, l, "org/model.v2", false, map[string]string{"model.arrow": "new"}); e.Version != 1 {
		t.Fatalf("version after delete and re-create = %d", e.Version)
	}
	if _, err := l.Begin(ctx, "a b", true); !errors.Is(err, store.ErrInvalidName) {
		t.Fatalf("Begin with invalid name = %v", err)
	}
}

// testLongNames: the longest names, with and without '/', are stored.
func testLongNames(t *testing.T, b Backend) {
	l := open(t, b)
	long := strings.Repeat("a", store.MaxNameLen)
	slashy := strings.Repeat("a/", store.MaxNameLen/2-1) + "aa" // 200 chars, 99 slashes
	Put(t, l, slashy, false, map[string]string{"f": "x"})
	Put(t, l, long, false, map[string]string{"f": "y"})
	Put(t, l, "a", false, map[string]string{"f": "z"}) // a prefix of both
	all, err := l.List(ctx, "")
	if err != nil || !reflect.DeepEqual(EntryNames(all), []string{"a", slashy, long}) {
		t.Fatalf("List = %d entries, %v", len(all), err)
	}
	if got := ReadAll(t, l, slashy, "f"); got != "x" {
		t.Fatalf("slashy/f = %q", got)
	}
	if got, _ := l.List(ctx, "a/"); !reflect.DeepEqual(EntryNames(got), []string{slashy}) {
		t.Fatalf("List a/ = %d entries", len(got))
	}
}

func testBeginReservesName(t *testing.T, b Backend) {
	l := open(t, b)

	// Two concurrent Begins without overwrite: exactly one wins.
	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		stages [2]store.Staging
		errs   [2]error
	)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stages[i], errs[i] = l.Begin(ctx, "m", false)
		}()
	}
	close(start)
	wg.Wait()
	win := -1
	for i := range 2 {
		if errs[i] == nil {
			if win >= 0 {
				t.Fatal("both Begins succeeded")
			}
			win = i
		} else if !errors.Is(errs[i], store.ErrExists) {
			t.Fatalf("losing Begin = %v, want ErrExists", errs[i])
		}
	}
	if win < 0 {
		t.Fatalf("no Begin succeeded: %v", errs)
	}
	if st, _ := l.Stats(ctx); st.Pending != 1 {
		t.Fatalf("Pending = %d, want 1", st.Pending)
	}
	WriteFiles(t, stages[win].Dir(), map[string]string{"id": "first"})
	if e, err := stages[win].Commit(ctx); err != nil || e.Version != 1 {
		t.Fatalf("Commit = %+v, %v", e, err)
	}
	if _, err := l.Begin(ctx, "m", false); !errors.Is(err, store.ErrExists) || !strings.Contains(err.Error(), `"m"`) {
		t.Fatalf("Begin after commit = %v, want ErrExists", err)
	}

	// 8 concurrent overwrites: all commit, in order, last one wins.
	const n = 8
	var mu sync.Mutex
	byVersion := map[int64]string{}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := l.Begin(ctx, "m", true)
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Abort()
			id := fmt.Sprintf("writer-%d", i)
			WriteFiles(t, s.Dir(), map[string]string{"id": id})
			e, err := s.Commit(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			if prev, dup := byVersion[e.Version]; dup {
				t.Errorf("version %d committed by %s and %s", e.Version, prev, id)
			}
			byVersion[e.Version] = id
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for v := int64(2); v <= n+1; v++ {
		if byVersion[v] == "" {
			t.Fatalf("versions = %v, want 2..%d", byVersion, n+1)
		}
	}
	e, _ := l.Get(ctx, "m")
	if e.Version != n+1 {
		t.Fatalf("final version = %d", e.Version)
	}
	if got := ReadAll(t, l, "m", "id"); got != byVersion[n+1] {
		t.Fatalf("final content %q, want %q (highest version)", got, byVersion[n+1])
	}
	if st, _ := l.Stats(ctx); st.Pending != 0 || st.Models != 1 {
		t.Fatalf("Stats = %+v", st)
	}
	assertNoLeftovers(t, b, "after 8 overwrites")
}

func testAbort(t *testing.T, b Backend) {
	l := open(t, b)
	s, err := l.Begin(ctx, "m", false)
	if err != nil {
		t.Fatal(err)
	}
	WriteFiles(t, s.Dir(), map[string]string{"a": "1", "sub/b": "2"})
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(); err != nil {
		t.Fatalf("second Abort = %v", err)
	}
	if _, err := s.Commit(ctx); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
	assertNoLeftovers(t, b, "after Abort")
	if _, err := l.Get(ctx, "m"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Abort = %v", err)
	}
	if st, _ := l.Stats(ctx); st.Pending != 0 {
		t.Fatalf("Pending after Abort = %d", st.Pending)
	}

	// The reservation is released: the name can be begun again.
	s, err = l.Begin(ctx, "m", false)
	if err != nil {
		t.Fatalf("Begin after Abort = %v", err)
	}
	WriteFiles(t, s.Dir(), map[string]string{"a": "1"})
	if _, err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(); err != nil {
		t.Fatalf("Abort after Commit = %v", err)
	}
	if _, err := s.Commit(ctx); err == nil {
		t.Fatal("second Commit succeeded")
	}
	if got := ReadAll(t, l, "m", "a"); got != "1" {
		t.Fatalf("after Abort-after-Commit a = %q", got)
	}
	assertNoLeftovers(t, b, "after Commit")
}

func testCommitFailures(t *testing.T, b Backend) {
	l := open(t, b)
	assertClean := func(what string) {
		t.Helper()
		assertNoLeftovers(t, b, what)
		if st, _ := l.Stats(ctx); st.Pending != 0 {
			t.Fatalf("%s: Pending = %d", what, st.Pending)
		}
	}

	// A non-overwrite staging loses to an overwrite committed meanwhile.
	s1, err := l.Begin(ctx, "m", false)
	if err != nil {
		t.Fatal(err)
	}
	WriteFiles(t, s1.Dir(), map[string]string{"f": "s1"})
	Put(t, l, "m", true, map[string]string{"f": "s2"})
	if _, err := s1.Commit(ctx); !errors.Is(err, store.ErrExists) || !strings.Contains(err.Error(), `"m"`) {
		t.Fatalf("Commit = %v, want ErrExists", err)
	}
	if got := ReadAll(t, l, "m", "f"); got != "s2" {
		t.Fatalf("f = %q", got)
	}
	assertClean("ErrExists at commit")

	for _, c := range []struct {
		what  string
		setup func(dir string)
		ctx   context.Context
		want  string
	}{
		{"empty", func(string) {}, ctx, "no files"},
		{"empty directories", func(d string) { os.MkdirAll(filepath.Join(d, "a", "b"), 0o755) }, ctx, "no files"},
		{"symlink", func(d string) {
			WriteFiles(t, d, map[string]string{"a": "1"})
			os.Symlink("a", filepath.Join(d, "link"))
		}, ctx, "not a regular file"},
		{"cancelled", func(d string) { WriteFiles(t, d, map[string]string{"a": "1"}) }, cancelled(), "context canceled"},
	} {
		s, err := l.Begin(ctx, "x", false)
		if err != nil {
			t.Fatal(err)
		}
		c.setup(s.Dir())
		_, err = s.Commit(c.ctx)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `store: model "x": commit: `) {
			t.Fatalf("%s: Commit = %v, want error containing %q", c.what, err, c.want)
		}
		if _, err := l.Get(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: model visible after failed commit", c.what)
		}
		assertClean(c.what)
	}
}

func cancelled() context.Context {
	c, cancel := context.WithCancel(context.Background())
	cancel()
	return c
}

func testOpenFileSurvives(t *testing.T, b Backend) {
	l := open(t, b)
	v1 := strings.Repeat("1", 4096)
	v2 := strings.Repeat("2", 8192)
	Put(t, l, "m", false, map[string]string{"model.arrow": v1})
	f1, err := l.Open(ctx, "m", "model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	head := make([]byte, 100)
	if _, err := io.ReadFull(f1, head); err != nil || string(head) != v1[:100] {
		t.Fatalf("read v1 head: %v", err)
	}

	Put(t, l, "m", true, map[string]string{"model.arrow": v2})
	rest, err := io.ReadAll(f1)
	if err != nil || string(head)+string(rest) != v1 || f1.Size() != 4096 {
		t.Fatalf("v1 after overwrite: %d bytes, %v", 100+len(rest), err)
	}
	f2, err := l.Open(ctx, "m", "model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if f2.Size() != 8192 {
		t.Fatalf("v2 Size = %d", f2.Size())
	}

	if err := l.Delete(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8192)
	if _, err := f2.ReadAt(got, 0); err != nil || string(got) != v2 {
		t.Fatalf("v2 after delete: %v", err)
	}
	if _, err := f1.ReadAt(got[:4096], 0); err != nil || string(got[:4096]) != v1 {
		t.Fatalf("v1 after delete: %v", err)
	}
	f1.Close()
	f2.Close()
	assertNoLeftovers(t, b, "after delete")
}

func testCloseAbortsStagings(t *testing.T, b Backend) {
	l := b.Open(t)
	s1, err := l.Begin(ctx, "a", false)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := l.Begin(ctx, "b", true)
	if err != nil {
		t.Fatal(err)
	}
	WriteFiles(t, s1.Dir(), map[string]string{"f": "1"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := s1.Commit(ctx); err == nil {
		t.Fatal("Commit after Close succeeded")
	}
	if err := s2.Abort(); err != nil {
		t.Fatalf("Abort after Close = %v", err)
	}
	assertNoLeftovers(t, b, "after Close")
	if _, err := l.Begin(ctx, "c", false); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Begin after Close = %v", err)
	}
	if _, err := l.List(ctx, ""); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("List after Close = %v", err)
	}
	// The storage can be opened again, and the aborted names are free.
	l2 := open(t, b)
	Put(t, l2, "a", false, map[string]string{"f": "2"})
}

// testConcurrentMixed hammers a few names with every operation. Each file
// holds its model name and upload tag throughout, so a reader that saw a
// mix of versions or a half-written file would notice.
func testConcurrentMixed(t *testing.T, b Backend) {
	l := b.Open(t)
	defer func() { l.Close() }()
	names := []string{"m0", "m1", "org/m2"}
	const workers, ops = 16, 40
	var (
		wg    sync.WaitGroup
		okOps [5]atomic.Int64 // successful commit, get, list, open, delete
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for i := range ops {
				name := names[rng.Intn(len(names))]
				op, err := mixedOp(l, rng, name, fmt.Sprintf("w%d-%d", w, i))
				if err != nil && !errors.Is(err, store.ErrExists) && !errors.Is(err, store.ErrNotFound) {
					t.Error(err)
					return
				}
				if err == nil {
					okOps[op].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for op := range okOps {
		if okOps[op].Load() == 0 { // the mix must exercise every operation
			t.Fatalf("no successful operation of kind %d: %v", op, &okOps)
		}
	}

	st, err := l.Stats(ctx)
	if err != nil || st.Pending != 0 {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
	before, _ := l.List(ctx, "")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = b.Open(t)
	after, _ := l.List(ctx, "")
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("catalog differs after reopen:\n%+v\n%+v", before, after)
	}
	for _, e := range after {
		for f := range e.Files {
			if _, err := CheckFile(l, e.Name, f); err != nil {
				t.Fatal(err)
			}
		}
	}
	assertNoLeftovers(t, b, "after the mix")
}

// mixedOp runs a random operation and says which: 0 commit (or abort),
// 1 get, 2 list, 3 open and read, 4 delete.
func mixedOp(l store.Store, rng *rand.Rand, name, tag string) (int, error) {
	switch op := rng.Intn(10); {
	case op < 3: // upload
		overwrite := rng.Intn(2) == 0
		s, err := l.Begin(ctx, name, overwrite)
		if err != nil {
			return 0, err
		}
		defer s.Abort()
		files := map[string]int{"model.arrow": 1 + rng.Intn(3000), "report.json": 1 + rng.Intn(100)}
		for f, size := range files {
			if err := os.WriteFile(filepath.Join(s.Dir(), f), Content(name, tag, size), 0o644); err != nil {
				return 0, err
			}
		}
		if rng.Intn(5) == 0 {
			return 0, s.Abort()
		}
		e, err := s.Commit(ctx)
		if err != nil {
			return 0, err
		}
		if e.Name != name || e.Files["model.arrow"] != int64(files["model.arrow"]) {
			return 0, fmt.Errorf("commit entry %+v", e)
		}
		return 0, nil
	case op < 5:
		_, err := l.Get(ctx, name)
		return 1, err
	case op < 6:
		es, err := l.List(ctx, "")
		if err != nil {
			return 2, err
		}
		if !sort.SliceIsSorted(es, func(i, j int) bool { return es[i].Name < es[j].Name }) {
			return 2, fmt.Errorf("List not sorted")
		}
		return 2, nil
	case op < 9:
		file := "model.arrow"
		if op == 8 {
			file = "report.json"
		}
		_, err := CheckFile(l, name, file)
		return 3, err
	default:
		return 4, l.Delete(ctx, name)
	}
}

// Content is size bytes of "name|tag|" repeated.
func Content(name, tag string, size int) []byte {
	unit := name + "|" + tag + "|"
	return []byte(strings.Repeat(unit, size/len(unit)+1)[:size])
}

// CheckFile reads a whole file and checks it is one upload's Content; it
// returns the upload's tag.
func CheckFile(l store.Store, name, file string) (string, error) {
	f, err := l.Open(ctx, name, file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return "", err
	}
	if int64(len(b)) != f.Size() {
		return "", fmt.Errorf("%s/%s: read %d bytes, Size %d", name, file, len(b), f.Size())
	}
	parts := strings.SplitN(string(b), "|", 3)
	if len(parts) < 2 || parts[0] != name {
		if len(b) <= len(name) && strings.HasPrefix(name, string(b)) {
			return "", nil // too short to hold the tag
		}
		return "", fmt.Errorf("%s/%s holds %.40q", name, file, b)
	}
	if want := Content(name, parts[1], len(b)); !bytes.Equal(b, want) {
		return "", fmt.Errorf("%s/%s: mixed content %.60q", name, file, b)
	}
	return parts[1], nil
}
