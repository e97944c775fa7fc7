// Package artifact writes and reads ArrowQuant's quantized artifact: one
// Arrow IPC file of the schema.Quantized schema, readable by any Arrow
// implementation (pyarrow.ipc.open_file). Rows stream in as they are
// quantized; the file appears under its final name only once complete.
package artifact

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/fsutil"
	"github.com/arrowquant/arrowquant/schema"
)

// File names inside an output directory.
const (
	FileName   = "model.arrow" // the quantized artifact
	ReportName = "report.json" // the quantization result
)

// ioBufferSize is the buffer of the artifact's file writes and reads.
const ioBufferSize = 4 << 20

// Writer receives quantized record batches and commits them atomically.
// Batches go to a temporary Arrow stream next to the target; Commit
// rewrites them into the final IPC file with the schema-level metadata
// (which includes the report, known only at the end), fsyncs, and renames.
type Writer struct {
	path    string
	mem     memory.Allocator
	tmp     *os.File
	buf     *bufio.Writer // the IPC writer issues a write per buffer: batch them
	stream  *ipc.Writer
	batches int64
	done    bool
}

// Create starts an artifact that will be committed to path.
func Create(path string, mem memory.Allocator) (*Writer, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err != nil {
		return nil, fmt.Errorf("artifact: create temporary file for %s: %w", path, err)
	}
	buf := bufio.NewWriterSize(tmp, ioBufferSize)
	return &Writer{
		path:   path,
		mem:    mem,
		tmp:    tmp,
		buf:    buf,
		stream: ipc.NewWriter(buf, ipc.WithSchema(schema.Quantized(nil)), ipc.WithAllocator(mem)),
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

// Commit writes the final file with meta as schema-level metadata and
// renames it into place. On error nothing is left under the final name.
func (w *Writer) Commit(meta map[string]string) (err error) {
	if w.done {
		return errors.New("artifact: commit after commit or abort")
	}
	w.done = true
	defer func() {
		if err != nil {
			os.Remove(w.tmp.Name())
		}
	}()
	if err := w.stream.Close(); err != nil {
		w.tmp.Close()
		return fmt.Errorf("artifact: finish %s: %w", w.tmp.Name(), err)
	}
	if err := w.buf.Flush(); err != nil {
		w.tmp.Close()
		return fmt.Errorf("artifact: finish %s: %w", w.tmp.Name(), err)
	}
	if _, err := w.tmp.Seek(0, io.SeekStart); err != nil {
		w.tmp.Close()
		return fmt.Errorf("artifact: rewind %s: %w", w.tmp.Name(), err)
	}
	defer w.tmp.Close()
	final, err := os.CreateTemp(filepath.Dir(w.path), "."+filepath.Base(w.path)+".*.final")
	if err != nil {
		return fmt.Errorf("artifact: create %s: %w", w.path, err)
	}
	defer func() {
		if err != nil {
			final.Close()
			os.Remove(final.Name())
		}
	}()
	out := bufio.NewWriterSize(final, ioBufferSize)
	if err := rewrite(bufio.NewReaderSize(w.tmp, ioBufferSize), out, meta, w.mem); err != nil {
		return fmt.Errorf("artifact: write %s: %w", w.path, err)
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("artifact: write %s: %w", w.path, err)
	}
	if err := final.Chmod(0o644); err != nil {
		return fmt.Errorf("artifact: chmod %s: %w", w.path, err)
	}
	if err := final.Sync(); err != nil {
		return fmt.Errorf("artifact: fsync %s: %w", w.path, err)
	}
	if err := final.Close(); err != nil {
		return fmt.Errorf("artifact: close %s: %w", w.path, err)
	}
	if err := os.Rename(final.Name(), w.path); err != nil {
		return fmt.Errorf("artifact: rename into %s: %w", w.path, err)
	}
	os.Remove(w.tmp.Name())
	return fsutil.SyncDir(filepath.Dir(w.path))
}

func rewrite(src io.Reader, dst io.Writer, meta map[string]string, mem memory.Allocator) error {
	rd, err := ipc.NewReader(src, ipc.WithAllocator(mem))
	if err != nil {
		return err
	}
	defer rd.Release()
	full := schema.Quantized(meta)
	fw, err := ipc.NewFileWriter(dst, ipc.WithSchema(full), ipc.WithAllocator(mem))
	if err != nil {
		return err
	}
	for rd.Next() {
		rec := rd.RecordBatch()
		out := array.NewRecordBatch(full, rec.Columns(), rec.NumRows())
		err := fw.Write(out)
		out.Release()
		if err != nil {
			fw.Close()
			return err
		}
	}
	if err := rd.Err(); err != nil {
		fw.Close()
		return err
	}
	return fw.Close()
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
