// Package modelio reads and writes Hugging Face model directories
// (safetensors, sharded or not, with config.json), detects a model's
// modality and generates synthetic models for tests and benchmarks.
//
// Everything streams: tensor data is read with bounded ReadAt calls into
// caller buffers and written sequentially; no file is mapped into memory and
// no tensor is ever loaded whole by this package.
package modelio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/arrowquant/arrowquant/internal/checked"
	"github.com/arrowquant/arrowquant/internal/fsutil"
	"github.com/arrowquant/arrowquant/schema"
)

// DType is a safetensors element type as spelled in the header ("F32", "BF16", ...).
type DType string

// Element types. Only F32, F16, BF16 and F64 can be decoded to float32; the
// others are recognised (so their sizes are validated) but Open rejects them
// unless OpenOptions.SkipUnsupported is set.
const (
	F64     DType = "F64"
	F32     DType = "F32"
	F16     DType = "F16"
	BF16    DType = "BF16"
	I64     DType = "I64"
	I32     DType = "I32"
	I16     DType = "I16"
	I8      DType = "I8"
	U64     DType = "U64"
	U32     DType = "U32"
	U16     DType = "U16"
	U8      DType = "U8"
	Bool    DType = "BOOL"
	F8E4M3  DType = "F8_E4M3"
	F8E5M2  DType = "F8_E5M2"
	F8E8M0  DType = "F8_E8M0"
	Complex DType = "C64"
)

// Size returns the number of bytes per element, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case F64, I64, U64, Complex:
		return 8
	case F32, I32, U32:
		return 4
	case F16, BF16, I16, U16:
		return 2
	case I8, U8, Bool, F8E4M3, F8E5M2, F8E8M0:
		return 1
	}
	return 0
}

// Supported reports whether the dtype can be decoded to float32 (F32, F16, BF16, F64).
func (d DType) Supported() bool {
	switch d {
	case F32, F16, BF16, F64:
		return true
	}
	return false
}

// TensorInfo locates one tensor inside a shard.
type TensorInfo struct {
	Name   string
	DType  DType
	Shape  []int64
	File   string // absolute path of the shard
	Offset int64  // absolute byte offset of the data in File (8 + headerLen + data_offsets[0])
	Bytes  int64
}

// NumElements is the product of the shape; a scalar (shape []) has one element.
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// MaxHeaderBytes bounds the JSON header of a safetensors file (the same
// limit as the reference Rust implementation). Larger headers are rejected
// before anything is allocated.
const MaxHeaderBytes = 100 << 20

// ErrNoSafetensors is returned (wrapped with the directory) when a model
// directory holds no .safetensors file.
var ErrNoSafetensors = errors.New("modelio: no .safetensors files")

// FormatError reports a malformed safetensors file or index.
type FormatError struct {
	File   string
	Tensor string // empty when the problem is not about one tensor
	Reason string
}

func (e *FormatError) Error() string {
	if e.Tensor != "" {
		return fmt.Sprintf("safetensors: %s: tensor %q: %s", e.File, e.Tensor, e.Reason)
	}
	return fmt.Sprintf("safetensors: %s: %s", e.File, e.Reason)
}

// UnsupportedDTypeError reports a tensor whose dtype cannot be decoded to
// float32. Open returns it unless OpenOptions.SkipUnsupported is set.
type UnsupportedDTypeError struct {
	File   string
	Tensor string
	DType  DType
}

func (e *UnsupportedDTypeError) Error() string {
	return fmt.Sprintf("safetensors: %s: tensor %q: unsupported dtype %q (supported: F32, F16, BF16, F64; "+
		"use SkipUnsupported to leave such tensors out)", e.File, e.Tensor, string(e.DType))
}

// headerEntry is one tensor as declared in a header; Begin and End are
// relative to the start of the data section.
type headerEntry struct {
	Name       string
	DType      DType
	Shape      []int64
	Begin, End int64
}

// rawEntry decodes a header value; pointers distinguish missing keys.
type rawEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// parseHeader validates a safetensors JSON header whose data section is
// dataLen bytes long. Entries come back sorted by data offset. Tensors of
// unknown dtype are returned (their byte length cannot be checked); the
// caller decides what to do with unsupported dtypes.
func parseHeader(file string, hdr []byte, dataLen int64) ([]headerEntry, map[string]string, error) {
	ferr := func(tensor, format string, args ...any) error {
		return &FormatError{File: file, Tensor: tensor, Reason: fmt.Sprintf(format, args...)}
	}
	if dataLen < 0 {
		return nil, nil, ferr("", "negative data section length %d", dataLen)
	}
	if !utf8.Valid(hdr) { // the format requires UTF-8; Go's JSON decoder would silently replace bad bytes
		bad := 0
		for bad < len(hdr) {
			r, n := utf8.DecodeRune(hdr[bad:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			bad += n
		}
		return nil, nil, ferr("", "header is not valid UTF-8 (byte %d of the header)", bad)
	}
	dec := json.NewDecoder(bytes.NewReader(hdr))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, ferr("", "header is not valid JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, ferr("", "header is not a JSON object")
	}
	var entries []headerEntry
	var meta map[string]string
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, ferr("", "header is not valid JSON: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, nil, ferr("", "header is not valid JSON: unexpected %v", tok)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, ferr("", "header is not valid JSON: %v", err)
		}
		if seen[name] {
			return nil, nil, ferr(name, "duplicate key in header")
		}
		seen[name] = true
		if name == "__metadata__" {
			meta, err = parseMetadata(raw)
			if err != nil {
				return nil, nil, ferr("", "__metadata__: %v", err)
			}
			continue
		}
		if err := schema.CheckTensorName(name); err != nil {
			return nil, nil, ferr("", "%v", err)
		}
		e, err := parseEntry(name, raw, dataLen)
		if err != nil {
			return nil, nil, ferr(name, "%v", err)
		}
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil { // closing '}'
		return nil, nil, ferr("", "header is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, ferr("", "header is not valid JSON: trailing data after the object")
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].Begin != entries[j].Begin {
			return entries[i].Begin < entries[j].Begin
		}
		if entries[i].End != entries[j].End {
			return entries[i].End < entries[j].End
		}
		return entries[i].Name < entries[j].Name
	})
	var maxEnd int64
	var maxName string
	for _, e := range entries {
		if e.Begin < maxEnd {
			return nil, nil, ferr(e.Name, "data_offsets [%d,%d] overlap tensor %q (ends at %d)", e.Begin, e.End, maxName, maxEnd)
		}
		if e.End > maxEnd {
			maxEnd, maxName = e.End, e.Name
		}
	}
	return entries, meta, nil
}

func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	if string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errors.New("must be an object of string values")
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("value of %q is not a string", k)
		}
		out[k] = s
	}
	return out, nil
}

func parseEntry(name string, raw json.RawMessage, dataLen int64) (headerEntry, error) {
	var r rawEntry
	if err := json.Unmarshal(raw, &r); err != nil {
		return headerEntry{}, fmt.Errorf("invalid entry: %v", err)
	}
	switch {
	case r.DType == nil:
		return headerEntry{}, errors.New("missing dtype")
	case r.Shape == nil:
		return headerEntry{}, errors.New("missing shape")
	case r.DataOffsets == nil:
		return headerEntry{}, errors.New("missing data_offsets")
	}
	e := headerEntry{Name: name, DType: DType(*r.DType), Shape: *r.Shape}
	if e.Shape == nil {
		e.Shape = []int64{}
	}
	offs := *r.DataOffsets
	if len(offs) != 2 {
		return headerEntry{}, fmt.Errorf("data_offsets must be [begin,end], got %d values", len(offs))
	}
	e.Begin, e.End = offs[0], offs[1]
	if e.Begin < 0 || e.End < e.Begin {
		return headerEntry{}, fmt.Errorf("data_offsets [%d,%d] must satisfy 0 <= begin <= end", e.Begin, e.End)
	}
	if e.End > dataLen {
		return headerEntry{}, fmt.Errorf("data_offsets [%d,%d] end beyond the data section (%d bytes)", e.Begin, e.End, dataLen)
	}
	n, err := schema.CheckShape(e.Shape)
	if err != nil {
		return headerEntry{}, err
	}
	if size := int64(e.DType.Size()); size > 0 {
		want, err := checked.Mul(n, size)
		if err != nil {
			return headerEntry{}, fmt.Errorf("shape %v of %s: byte count overflows", e.Shape, e.DType)
		}
		if got := e.End - e.Begin; got != want {
			return headerEntry{}, fmt.Errorf("shape/product mismatch: data_offsets span %d bytes, shape %v of %s needs %d",
				got, e.Shape, e.DType, want)
		}
	}
	return e, nil
}

// shardHeader is a parsed shard: its tensors (absolute offsets) and metadata.
type shardHeader struct {
	tensors []TensorInfo
	meta    map[string]string
}

// readShard validates the header of an open shard of the given size.
func readShard(path string, f io.ReaderAt, size int64) (shardHeader, error) {
	ferr := func(format string, args ...any) error {
		return &FormatError{File: path, Reason: fmt.Sprintf(format, args...)}
	}
	if size < 8 {
		return shardHeader{}, ferr("file is %d bytes, shorter than the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if _, err := f.ReadAt(lenBuf[:], 0); err != nil {
		return shardHeader{}, fmt.Errorf("modelio: read %s: %w", path, err)
	}
	var n uint64
	for i := 7; i >= 0; i-- {
		n = n<<8 | uint64(lenBuf[i])
	}
	if n > MaxHeaderBytes {
		return shardHeader{}, ferr("header length %d exceeds the %d-byte limit", n, MaxHeaderBytes)
	}
	if n > uint64(size-8) {
		return shardHeader{}, ferr("header length %d beyond the file size %d", n, size)
	}
	hdr := make([]byte, n)
	if _, err := f.ReadAt(hdr, 8); err != nil && n > 0 {
		return shardHeader{}, fmt.Errorf("modelio: read header of %s: %w", path, err)
	}
	base := 8 + int64(n)
	entries, meta, err := parseHeader(path, hdr, size-base)
	if err != nil {
		return shardHeader{}, err
	}
	out := shardHeader{meta: meta, tensors: make([]TensorInfo, len(entries))}
	for i, e := range entries {
		out.tensors[i] = TensorInfo{Name: e.Name, DType: e.DType, Shape: e.Shape, File: path,
			Offset: base + e.Begin, Bytes: e.End - e.Begin}
	}
	return out, nil
}

// openShard opens a shard and validates its header.
func openShard(path string) (*os.File, shardHeader, error) {
	f, err := fsutil.OpenRegular(path) // a FIFO would block a plain open forever
	if errors.Is(err, fsutil.ErrNotRegular) {
		return nil, shardHeader{}, &FormatError{File: path, Reason: errReason(err)}
	}
	if err != nil {
		return nil, shardHeader{}, fmt.Errorf("modelio: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, shardHeader{}, fmt.Errorf("modelio: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, shardHeader{}, &FormatError{File: path, Reason: "not a regular file"}
	}
	h, err := readShard(path, f, st.Size())
	if err != nil {
		f.Close()
		return nil, shardHeader{}, err
	}
	return f, h, nil
}

// isSafetensors reports whether a file name is a safetensors data file.
func isSafetensors(name string) bool { return strings.HasSuffix(name, ".safetensors") }
