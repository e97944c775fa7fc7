package modelio

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/arrowquant/arrowquant/internal/fsutil"
)

// TensorHeader declares one tensor of a file written by CreateSafetensors.
type TensorHeader struct {
	Name  string
	DType DType
	Shape []int64
}

// Bytes is the data size of the tensor (product of the shape times the dtype size).
func (h TensorHeader) Bytes() int64 {
	n := int64(h.DType.Size())
	for _, d := range h.Shape {
		n *= d
	}
	return n
}

// Writer streams the data of a safetensors file whose header is known up
// front. Data goes to a temporary file beside the target that Close renames
// into place once every declared byte has been written, so an interrupted
// write never leaves a valid-looking file at the target path.
type Writer struct {
	path, tmp string
	f         *os.File
	bw        *bufio.Writer
	total     int64
	written   int64
	err       error // sticky write error
	closed    bool
	closeErr  error
}

// CreateSafetensors writes the header of a safetensors file at path: JSON
// with __metadata__ first (when non-empty) and then the tensors in the given
// order, data offsets contiguous in that order, padded with spaces to a
// multiple of 8 bytes as the Hugging Face implementation does. The caller
// then writes the raw little-endian data of every tensor in order and calls
// Close.
func CreateSafetensors(path string, tensors []TensorHeader, metadata map[string]string) (*Writer, error) {
	hdr, total, err := buildHeader(tensors, metadata)
	if err != nil {
		return nil, fmt.Errorf("modelio: create %s: %w", path, err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", path, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("modelio: %w", err)
	}
	w := &Writer{path: path, tmp: tmp, f: f, bw: bufio.NewWriterSize(f, 1<<20), total: total}
	var lenBuf [8]byte
	n := uint64(len(hdr))
	for i := range lenBuf {
		lenBuf[i] = byte(n >> (8 * i))
	}
	if _, err := w.bw.Write(lenBuf[:]); err != nil {
		w.abort()
		return nil, fmt.Errorf("modelio: write %s: %w", tmp, err)
	}
	if _, err := w.bw.Write(hdr); err != nil {
		w.abort()
		return nil, fmt.Errorf("modelio: write %s: %w", tmp, err)
	}
	return w, nil
}

// buildHeader renders the padded header and returns the data size.
func buildHeader(tensors []TensorHeader, metadata map[string]string) ([]byte, int64, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString(`"__metadata__":{`)
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, k)
			b.WriteByte(':')
			writeJSONString(&b, metadata[k])
		}
		b.WriteByte('}')
		first = false
	}
	seen := make(map[string]bool, len(tensors))
	var off int64
	for _, t := range tensors {
		if t.Name == "" || t.Name == "__metadata__" {
			return nil, 0, fmt.Errorf("invalid tensor name %q", t.Name)
		}
		if seen[t.Name] {
			return nil, 0, fmt.Errorf("duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		size := int64(t.DType.Size())
		if size == 0 {
			return nil, 0, fmt.Errorf("tensor %q: unknown dtype %q", t.Name, string(t.DType))
		}
		n := size
		for _, d := range t.Shape {
			if d < 0 {
				return nil, 0, fmt.Errorf("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
			}
			if d != 0 && n > math.MaxInt64/4/d {
				return nil, 0, fmt.Errorf("tensor %q: shape %v too large", t.Name, t.Shape)
			}
			n *= d
		}
		if off > math.MaxInt64/4-n {
			return nil, 0, errors.New("total data size too large")
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeJSONString(&b, t.Name)
		b.WriteString(`:{"dtype":`)
		writeJSONString(&b, string(t.DType))
		b.WriteString(`,"shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		b.WriteString(`],"data_offsets":[`)
		b.WriteString(strconv.FormatInt(off, 10))
		b.WriteByte(',')
		off += n
		b.WriteString(strconv.FormatInt(off, 10))
		b.WriteString("]}")
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	if b.Len() > MaxHeaderBytes {
		return nil, 0, fmt.Errorf("header of %d bytes exceeds the %d-byte limit", b.Len(), MaxHeaderBytes)
	}
	return b.Bytes(), off, nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // strings always encode
	b.Truncate(b.Len() - 1) // Encode appends '\n'
}

// Write appends raw tensor data. Writing more than the header declares is
// an error (nothing of p is written then).
func (w *Writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errors.New("modelio: write to closed safetensors writer")
	}
	if w.err != nil {
		return 0, w.err
	}
	if int64(len(p)) > w.total-w.written {
		return 0, fmt.Errorf("modelio: %s: write of %d bytes exceeds the declared data size (%d of %d written)",
			w.path, len(p), w.written, w.total)
	}
	n, err := w.bw.Write(p)
	w.written += int64(n)
	if err != nil {
		w.err = fmt.Errorf("modelio: write %s: %w", w.tmp, err)
		return n, w.err
	}
	return n, nil
}

// Remaining is the number of data bytes still to be written.
func (w *Writer) Remaining() int64 { return w.total - w.written }

// Close finishes the file: it fails (and removes the temporary file) when
// fewer bytes than declared were written or a write failed; otherwise it
// flushes, fsyncs, closes and renames the file into place.
func (w *Writer) Close() error {
	if w.closed {
		return w.closeErr
	}
	w.closed = true
	switch {
	case w.err != nil:
		w.closeErr = w.err
	case w.written != w.total:
		w.closeErr = fmt.Errorf("modelio: %s: only %d of %d declared data bytes written", w.path, w.written, w.total)
	}
	if w.closeErr != nil {
		w.abort()
		return w.closeErr
	}
	if err := w.bw.Flush(); err != nil {
		w.abort()
		w.closeErr = fmt.Errorf("modelio: write %s: %w", w.tmp, err)
		return w.closeErr
	}
	if err := w.f.Sync(); err != nil {
		w.abort()
		w.closeErr = fmt.Errorf("modelio: sync %s: %w", w.tmp, err)
		return w.closeErr
	}
	if err := w.f.Close(); err != nil {
		os.Remove(w.tmp)
		w.closeErr = fmt.Errorf("modelio: close %s: %w", w.tmp, err)
		return w.closeErr
	}
	if err := os.Rename(w.tmp, w.path); err != nil {
		os.Remove(w.tmp)
		w.closeErr = fmt.Errorf("modelio: %w", err)
		return w.closeErr
	}
	_ = fsutil.SyncDir(filepath.Dir(w.path))
	return nil
}

func (w *Writer) abort() {
	w.f.Close()
	os.Remove(w.tmp)
}

// WriteIndex writes dir/model.safetensors.index.json:
// {"metadata":{"total_size":N},"weight_map":{tensor: shard file}}.
func WriteIndex(dir string, weightMap map[string]string, totalSize int64) error {
	for t, s := range weightMap {
		if t == "" || !filepath.IsLocal(s) || !isSafetensors(s) {
			return fmt.Errorf("modelio: index entry %q -> %q is invalid", t, s)
		}
	}
	v := struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}{map[string]int64{"total_size": totalSize}, weightMap}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("modelio: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, IndexFile), append(b, '\n'))
}

// writeFileAtomic writes a small file through a temporary file and rename.
func writeFileAtomic(path string, data []byte) error {
	tmp := fmt.Sprintf("%s.tmp-%d", path, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("modelio: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("modelio: write %s: %w", path, err)
	}
	_ = fsutil.SyncDir(filepath.Dir(path))
	return nil
}
