package fsutil

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
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
			w := NewDirectFile(f, 4*directAlign)
			setDirectFunc = setDirect
			direct := w.Direct()
			if refuse && direct {
				t.Fatal("Direct() with the bypass refused")
			}
			if !refuse && !direct {
				t.Logf("%s: the page cache cannot be bypassed here; only the buffered path is tested", path)
			}
			want := writeRandomly(t, w, rng, n)
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
	w := NewDirectFile(f, 2*directAlign)
	if !w.Direct() {
		t.Skipf("%s: the page cache cannot be bypassed here", path)
	}
	w.buf = w.raw[1 : 1+2*directAlign : 1+2*directAlign] // misaligned
	want := writeRandomly(t, w, rand.New(rand.NewPCG(3, 4)), 10*directAlign+5)
	if w.Direct() {
		t.Fatal("Direct() after a write from a misaligned buffer: the write was not refused")
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, want)
}

// A failed write is reported with the file's name, by that call and every
// later one.
func TestDirectFileReportsWriteErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := NewDirectFile(f, directAlign)
	f.Close()
	if _, err := w.Write(make([]byte, directAlign)); err == nil || !bytes.Contains([]byte(err.Error()), []byte(path)) {
		t.Fatalf("Write to a closed file: %v, want an error naming %s", err, path)
	}
	if _, err := w.Write([]byte{1}); err == nil {
		t.Error("Write after a failed write: no error")
	}
	if err := w.Flush(); err == nil {
		t.Error("Flush after a failed write: no error")
	}
}
