// Package artifact writes and reads ArrowQuant's quantized artifact: one
// Arrow IPC file of the schema.Quantized schema, readable by any Arrow
// implementation (pyarrow.ipc.open_file). Rows stream in as they are
// quantized; the file appears under its final name only once complete.
package artifact

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/fsutil"
	"github.com/arrowquant/arrowquant/internal/ipcguard"
	"github.com/arrowquant/arrowquant/schema"
)

// File names inside an output directory.
const (
	FileName   = "model.arrow" // the quantized artifact
	ReportName = "report.json" // the quantization result
)

// ioBufferSize is the buffer of the artifact's file writes.
const ioBufferSize = 4 << 20

// directBuffers is how many ioBufferSize buffers a write past the page
// cache fills ahead of the disk: 32 MiB, about one INT4 MLP tensor of
// Dream 7B, so the pipeline does not wait on the disk for a tensor.
const directBuffers = 8

// Writer receives quantized record batches and commits them atomically.
// Batches are written once, as they come, into a temporary file next to
// the target in the Arrow IPC file layout; Commit appends the footer with
// the full schema (its metadata includes the report, known only at the
// end) and every batch's block, fsyncs, and renames. The schema message
// at the file's start has no metadata: readers of the file format take
// the footer's (docs/FORMAT.md).
type Writer struct {
	path    string
	mem     memory.Allocator
	tmp     *os.File
	out     *blockWriter
	stream  *ipc.Writer
	batches int64
	done    bool
}

// Option changes how Create writes.
type Option func(*options)

type options struct{ bypassCache bool }

// BypassPageCache writes the artifact's whole blocks past the page cache
// where the file system allows it (fsutil.DirectFile): much less system
// time for a large artifact, which is then not in the cache. For a file
// written once and not read soon (the CLI's output); the server's
// artifacts are served right after their commit.
func BypassPageCache() Option { return func(o *options) { o.bypassCache = true } }

// Create starts an artifact that will be committed to path.
func Create(path string, mem memory.Allocator, opts ...Option) (*Writer, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err != nil {
		return nil, fmt.Errorf("artifact: create temporary file for %s: %w", path, err)
	}
	var buf flushWriter
	if o.bypassCache {
		buf = fsutil.NewDirectFile(tmp, ioBufferSize, directBuffers)
	} else {
		buf = bufio.NewWriterSize(&fsutil.WritebackFile{F: tmp}, ioBufferSize)
	}
	out := &blockWriter{buf: buf}
	return &Writer{
		path:   path,
		mem:    mem,
		tmp:    tmp,
		out:    out,
		stream: ipc.NewWriterWithPayloadWriter(out, ipc.WithSchema(schema.Quantized(nil)), ipc.WithAllocator(mem)),
	}, nil
}

// Write appends a batch of the quantized schema (metadata is ignored).
func (w *Writer) Write(rec arrow.RecordBatch) error {
	if w.done {
		return errors.New("artifact: write after commit or abort")
	}
	if err := w.stream.Write(rec); err != nil {
		return fmt.Errorf("artifact: write batch %d to %s: %w", w.batches, w.tmp.Name(), err)
	}
	w.batches++
	return nil
}

// Batches is the number of batches written so far.
func (w *Writer) Batches() int64 { return w.batches }

// Commit writes the footer with meta as schema-level metadata and renames
// the file into place. On error nothing is left under the final name.
func (w *Writer) Commit(meta map[string]string) (err error) {
	if w.done {
		return errors.New("artifact: commit after commit or abort")
	}
	w.done = true
	defer func() {
		if err != nil {
			w.tmp.Close()
			os.Remove(w.tmp.Name())
		}
	}()
	if err := w.stream.Close(); err != nil {
		return fmt.Errorf("artifact: finish %s: %w", w.tmp.Name(), err)
	}
	if err := w.out.finish(schema.Quantized(meta)); err != nil {
		return fmt.Errorf("artifact: write %s: %w", w.path, err)
	}
	if err := w.tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("artifact: chmod %s: %w", w.path, err)
	}
	if err := w.tmp.Sync(); err != nil {
		return fmt.Errorf("artifact: fsync %s: %w", w.path, err)
	}
	if err := w.tmp.Close(); err != nil {
		return fmt.Errorf("artifact: close %s: %w", w.path, err)
	}
	if err := os.Rename(w.tmp.Name(), w.path); err != nil {
		return fmt.Errorf("artifact: rename into %s: %w", w.path, err)
	}
	return fsutil.SyncDir(filepath.Dir(w.path))
}

// blockWriter is the ipc.Writer's payload writer: it writes the file magic
// first, then each message as the stream format has it, and remembers
// where every record batch went for the footer.
type blockWriter struct {
	buf    flushWriter
	pos    int64
	schema bool // the schema message has been written
	blocks []ipcguard.Block
}

// flushWriter is the buffered file under a blockWriter.
type flushWriter interface {
	io.Writer
	Flush() error
}

var fileMagic = []byte("ARROW1\x00\x00") // 6 bytes and padding to 8

func (b *blockWriter) Write(p []byte) (int, error) {
	n, err := b.buf.Write(p)
	b.pos += int64(n)
	return n, err
}

func (b *blockWriter) Start() error {
	if b.pos > 0 {
		return nil
	}
	_, err := b.Write(fileMagic)
	return err
}

func (b *blockWriter) WritePayload(p ipc.Payload) error {
	if err := b.Start(); err != nil {
		return err
	}
	off := b.pos
	metaLen, err := p.WritePayload(b)
	if err != nil {
		return err
	}
	if !b.schema { // ipc.Writer sends the schema first, and no dictionaries
		b.schema = true
		return nil
	}
	b.blocks = append(b.blocks, ipcguard.Block{Offset: off, MetaLen: int32(metaLen), BodyLen: b.pos - off - int64(metaLen)})
	return nil
}

// Close is the ipc.Writer's; the footer comes with finish.
func (b *blockWriter) Close() error { return nil }

// finish writes the end-of-stream marker, the footer, its length and the
// closing magic, and flushes.
func (b *blockWriter) finish(full *arrow.Schema) error {
	footer, err := footerBytes(full, b.blocks)
	if err != nil {
		return err
	}
	var tail [8]byte
	binary.LittleEndian.PutUint32(tail[:4], 0xFFFFFFFF) // end of stream
	if _, err := b.Write(tail[:]); err != nil {
		return err
	}
	if _, err := b.Write(footer); err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(tail[:4], uint32(len(footer)))
	if _, err := b.Write(tail[:4]); err != nil {
		return err
	}
	if _, err := b.Write(fileMagic[:6]); err != nil {
		return err
	}
	return b.buf.Flush()
}

// Abort discards everything written; safe to call after Commit (no-op).
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.stream.Close()
	w.tmp.Close()
	os.Remove(w.tmp.Name())
}
