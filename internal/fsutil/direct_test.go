package fsutil

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"
)

// writeRandomly writes n bytes to w in pieces of random sizes (some larger
// than the buffer) and returns them.
func writeRandomly(t *testing.T, w *DirectFile, rng *rand.Rand, n int) []byte {
	t.Helper()
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	for p := want; len(p) > 0; {
		k := min(len(p), rng.IntN(3*directAlign*4))
		if rng.IntN(10) == 0 {
			k = min(len(p), rng.IntN(5))
		}
		got, err := w.Write(p[:k])
		if err != nil || got != k {
			t.Fatalf("Write of %d bytes: %d, %v", k, got, err)
		}
		p = p[k:]
	}
	return want
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("file has %d bytes, want %d; first difference at %d", len(got), len(want), i)
	}
}

// The file holds exactly what was written, whatever the sizes of the
// writes and of the last partial block, bypassed or not; full buffers keep
// the bypass (every bypassed write was aligned: an unaligned one fails
// with EINVAL and would have turned it off).
func TestDirectFileWritesEverything(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, directAlign - 1, directAlign, 4 * directAlign, 4*directAlign + 1, 13*directAlign + 777, 200_003} {
		for _, refuse := range []bool{false, true} {
			path := filepath.Join(t.TempDir(), "a")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if refuse {
				setDirectFunc = func(*os.File, bool) error { return errors.ErrUnsupported }
			}
			w := NewDirectFile(f, 4*directAlign, 3)
			setDirectFunc = setDirect
			direct := w.Direct()
			if refuse && direct {
				t.Fatal("Direct() with the bypass refused")
			}
			if !refuse && !direct {
				t.Logf("%s: the page cache cannot be bypassed here; only the buffered path is tested", path)
			}
			want := writeRandomly(t, w, rng, n)
			w.wait()
			if w.Direct() != direct {
				t.Fatalf("n=%d: Direct() %v after the writes, %v before: a full buffer's write was refused", n, w.Direct(), direct)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if w.Direct() {
				t.Error("Direct() after Flush")
			}
			tail := []byte("after flush")
			if _, err := w.Write(tail); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			checkFile(t, path, append(want, tail...))
		}
	}
}

// A bypassed write the file system refuses (here: from a misaligned
// buffer) is written through the page cache instead, once, and the writes
// after it too.
func TestDirectFileFallsBackOnEINVAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := NewDirectFile(f, 2*directAlign, 2)
	if !w.Direct() {
		t.Skipf("%s: the page cache cannot be bypassed here", path)
	}
	for range 2 { // misaligned buffers
		<-w.free
		raw := make([]byte, 3*directAlign+1)
		skip := (directAlign-int(uintptr(unsafe.Pointer(&raw[0]))%directAlign))%directAlign + 1
		w.free <- raw[skip : skip+2*directAlign : skip+2*directAlign]
	}
	want := writeRandomly(t, w, rand.New(rand.NewPCG(3, 4)), 10*directAlign+5)
	w.wait()
	if w.Direct() {
		t.Fatal("Direct() after a write from a misaligned buffer: the write was not refused")
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, want)
}

// A failed write is reported with the file's name, by Flush at the
// latest (full buffers are written in the background) and by every call
// after it.
func TestDirectFileReportsWriteErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := NewDirectFile(f, directAlign, 2)
	f.Close()
	_, werr := w.Write(make([]byte, directAlign))
	ferr := w.Flush()
	if ferr == nil || !bytes.Contains([]byte(ferr.Error()), []byte(path)) {
		t.Fatalf("Flush after a write to a closed file: %v (the Write: %v), want an error naming %s", ferr, werr, path)
	}
	if _, err := w.Write([]byte{1}); err == nil {
		t.Error("Write after a failed write: no error")
	}
	if err := w.Flush(); err == nil {
		t.Error("Flush after a failed write: no error")
	}
}

// Full buffers are written behind the caller: with the file stuck (a pipe
// nobody reads yet), Write still takes as many full buffers as there are,
// and everything arrives in order once the file moves.
func TestDirectFileWritesBehind(t *testing.T) {
	r, f, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	setDirectFunc = func(*os.File, bool) error { return errors.ErrUnsupported }
	defer func() { setDirectFunc = setDirect }()
	const size, buffers = 256 << 10, 3 // each write is larger than a pipe's buffer
	w := NewDirectFile(f, size, buffers)
	want := make([]byte, size*buffers)
	for i := range want {
		want[i] = byte(i * 7)
	}
	returned := make(chan error, 1)
	go func() {
		_, err := w.Write(want)
		returned <- err
	}()
	select {
	case err := <-returned:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write of as many full buffers as there are waited for the file")
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		got <- b
	}()
	tail := []byte("tail")
	if _, err := w.Write(tail); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if b := <-got; !bytes.Equal(b, append(want, tail...)) {
		t.Fatalf("the reader got %d bytes, want %d, or their order differs", len(b), len(want)+len(tail))
	}
}
