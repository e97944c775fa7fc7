package fsutil

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Writeback is requested for each chunk written, in order and without
// gaps, and the file holds exactly what was written.
func TestWritebackFileRequestsEachChunk(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type span struct{ off, n int64 }
	var got []span
	startWritebackFunc = func(g *os.File, off, n int64) error {
		got = append(got, span{off, n})
		return startWriteback(g, off, n) // the real call must accept it too
	}
	defer func() { startWritebackFunc = startWriteback }()
	w := &WritebackFile{F: f, Chunk: 1000}
	var want bytes.Buffer
	for i := range 35 {
		p := bytes.Repeat([]byte{byte(i)}, 100+i)
		want.Write(p)
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	var next int64
	for _, s := range got {
		if s.off != next || s.n < 1000 {
			t.Fatalf("writeback requests %v: want consecutive spans of at least 1000 bytes", got)
		}
		next = s.off + s.n
	}
	if total := int64(want.Len()); len(got) != 3 || total-next >= 1000 { // 4095 bytes: 3 chunks of ~1060, 917 left
		t.Errorf("%d requests covering %d of %d bytes, want 3 covering all but the last partial chunk", len(got), next, total)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil || !bytes.Equal(b, want.Bytes()) {
		t.Errorf("file holds %d bytes (%v), want the %d written", len(b), err, want.Len())
	}
}
