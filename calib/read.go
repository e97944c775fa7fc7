// Package calib reads calibration activations and reduces them to the
// per-layer, per-time-group statistics that time-aware and spatial
// quantization use. A calibration row is (layer, timestep, activation):
// the input vector one layer saw at one diffusion timestep (or mask ratio).
// Files: Arrow IPC (file or stream), Parquet, or JSON Lines; docs/FORMAT.md
// describes the columns and how to capture them with PyTorch forward hooks.
package calib

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/internal/fsutil"
	"github.com/arrowquant/arrowquant/internal/ipcguard"
	"github.com/arrowquant/arrowquant/internal/safe"
)

// Column names of a calibration file.
const (
	ColLayer      = "layer"
	ColTimestep   = "timestep"
	ColActivation = "activation"
	// ColRange is optional: [min, max] of every value the layer's input
	// took in the call (forward pass) this row was sampled from, so time
	// groups get their activation ranges from all of a call's inputs while
	// the file keeps only a sample of its vectors.
	ColRange = "range"
)

// Row is one calibration sample.
type Row struct {
	Layer      string
	Timestep   float64
	Activation []float32   // valid until the next call to Next
	Range      *[2]float32 // the call's input range, when the file has one (ColRange)
}

// Reader streams the rows of a calibration file.
type Reader interface {
	Next() (Row, error) // io.EOF after the last row
	Close() error
}

// FormatError names the file, row and problem of a malformed calibration file.
type FormatError struct {
	File   string
	Row    int64 // -1 when the problem is not one row's
	Reason string
	Err    error // the decoder's error or recovered panic (*safe.PanicError), if any
}

func (e *FormatError) Error() string {
	if e.Row >= 0 {
		return fmt.Sprintf("calibration %s: row %d: %s", e.File, e.Row, e.Reason)
	}
	return fmt.Sprintf("calibration %s: %s", e.File, e.Reason)
}

func (e *FormatError) Unwrap() error { return e.Err }

// decodeError is the FormatError for an error (or a recovered panic) of
// the Arrow IPC or Parquet decoder.
func decodeError(path string, row int64, what string, err error) *FormatError {
	return &FormatError{File: path, Row: row, Reason: what + ": " + err.Error(), Err: err}
}

// Decoder limits: what one allocation of a decoder (a record batch body,
// a decompressed buffer) and one IPC message's metadata may take.
const (
	maxAlloc    = 1 << 30
	maxMetadata = 16 << 20
)

// decoderMem is the allocator of the IPC and Parquet decoders.
var decoderMem = ipcguard.Capped{Allocator: memory.NewGoAllocator(), Max: maxAlloc}

// ExtensionHelp says which file extensions Open accepts.
const ExtensionHelp = "unknown extension: use .arrow/.arrows (Arrow IPC), .parquet or .jsonl"

// KnownExtension reports whether Open accepts a file of this name.
func KnownExtension(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jsonl", ".ndjson", ".json", ".parquet", ".pq", ".arrow", ".arrows", ".ipc", ".feather":
		return true
	}
	return false
}

// Open opens a calibration file by its extension: .arrow/.arrows/.ipc/
// .feather (Arrow IPC file or stream), .parquet, .jsonl/.ndjson (JSON Lines).
func Open(path string) (Reader, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson", ".json":
		f, err := fsutil.OpenRegular(path)
		if err != nil {
			return nil, fmt.Errorf("calibration: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		return &jsonlReader{f: f, sc: sc, path: path}, nil
	case ".parquet", ".pq":
		return openParquet(path)
	case ".arrow", ".arrows", ".ipc", ".feather":
		return openIPC(path)
	}
	return nil, &FormatError{File: path, Row: -1, Reason: ExtensionHelp}
}

type jsonlReader struct {
	f    *os.File
	sc   *bufio.Scanner
	path string
	row  int64
	buf  []float32
}

func (r *jsonlReader) Next() (Row, error) {
	for r.sc.Scan() {
		line := strings.TrimSpace(r.sc.Text())
		if line == "" {
			continue
		}
		r.row++
		var v struct {
			Layer      *string    `json:"layer"`
			Timestep   *float64   `json:"timestep"`
			Activation []*float64 `json:"activation"`
			Range      []float64  `json:"range"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			return Row{}, &FormatError{File: r.path, Row: r.row - 1, Reason: "not a JSON object of layer, timestep, activation: " + err.Error()}
		}
		if v.Layer == nil || v.Timestep == nil || v.Activation == nil {
			return Row{}, &FormatError{File: r.path, Row: r.row - 1, Reason: `needs "layer", "timestep" and "activation"`}
		}
		r.buf = r.buf[:0]
		for i, a := range v.Activation {
			if a == nil {
				return Row{}, &FormatError{File: r.path, Row: r.row - 1, Reason: fmt.Sprintf("activation[%d] is null", i)}
			}
			r.buf = append(r.buf, float32(*a))
		}
		row := Row{Layer: *v.Layer, Timestep: *v.Timestep, Activation: r.buf}
		if v.Range != nil {
			rg, err := checkRange(v.Range)
			if err != nil {
				return Row{}, &FormatError{File: r.path, Row: r.row - 1, Reason: err.Error()}
			}
			row.Range = rg
		}
		return row, nil
	}
	if err := r.sc.Err(); err != nil {
		return Row{}, &FormatError{File: r.path, Row: r.row, Reason: err.Error()}
	}
	return Row{}, io.EOF
}

func (r *jsonlReader) Close() error { return r.f.Close() }

// recordSource yields record batches of a calibration table.
type recordSource interface {
	Next() bool
	RecordBatch() arrow.RecordBatch
	Err() error
}

// batchReader turns record batches with the calibration columns into rows.
type batchReader struct {
	path     string
	kind     string // "Parquet file", "Arrow IPC file" or "Arrow IPC stream", for messages
	src      recordSource
	closer   func() error
	rec      arrow.RecordBatch
	i        int
	row      int64
	layer    arrow.Array
	ts       arrow.Array
	acts     *array.List
	actVals  []float32
	buf      []float32
	rng      *array.List // optional ColRange, list<float32> or fixed_size_list<float32, 2>
	rngVals  []float32
	rngFixed *array.FixedSizeList
}

func (r *batchReader) Next() (Row, error) {
	for r.rec == nil || r.i >= int(r.rec.NumRows()) {
		rec, err := r.next()
		if err != nil {
			return Row{}, err
		}
		if err := r.bind(rec); err != nil {
			return Row{}, err
		}
	}
	i := r.i
	r.i++
	r.row++
	if r.layer.IsNull(i) || r.ts.IsNull(i) || r.acts.IsNull(i) {
		return Row{}, &FormatError{File: r.path, Row: r.row - 1, Reason: "null layer, timestep or activation"}
	}
	if vals := r.acts.ListValues(); vals.NullN() > 0 {
		s, e := r.acts.ValueOffsets(i)
		for j := s; j < e; j++ {
			if vals.IsNull(int(j)) {
				return Row{}, &FormatError{File: r.path, Row: r.row - 1, Reason: fmt.Sprintf("activation[%d] is null", j-s)}
			}
		}
	}
	row := Row{Layer: strings.Clone(r.layer.(interface{ Value(int) string }).Value(i))} // not an alias of the batch's buffer
	switch t := r.ts.(type) {
	case *array.Float64:
		row.Timestep = t.Value(i)
	case *array.Float32:
		row.Timestep = float64(t.Value(i))
	case *array.Int64:
		row.Timestep = float64(t.Value(i))
	case *array.Int32:
		row.Timestep = float64(t.Value(i))
	}
	s, e := r.acts.ValueOffsets(i)
	if r.actVals != nil {
		row.Activation = r.actVals[s:e]
	} else {
		h := r.acts.ListValues().(*array.Float16)
		bits := arrow.Uint16Traits.CastFromBytes(h.Data().Buffers()[1].Bytes())[h.Data().Offset():]
		r.buf = slices.Grow(r.buf[:0], int(e-s))[:e-s]
		fp.DecodeHalves(r.buf, bits[s:e])
		row.Activation = r.buf
	}
	if rg, err := r.rangeOf(i); err != nil {
		return Row{}, &FormatError{File: r.path, Row: r.row - 1, Reason: err.Error()}
	} else {
		row.Range = rg
	}
	return row, nil
}

// next reads the next record batch (io.EOF after the last) and checks
// its buffers; a decoder's error or panic is a FormatError.
func (r *batchReader) next() (rec arrow.RecordBatch, err error) {
	defer func() {
		if err != nil && !errors.Is(err, io.EOF) {
			err = decodeError(r.path, r.row, "malformed "+r.kind, err)
		}
	}()
	defer safe.Recover("reading "+r.kind, &err)
	if !r.src.Next() {
		if err := r.src.Err(); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return nil, io.EOF
	}
	rec = r.src.RecordBatch()
	if err := array.ValidateRecordFull(rec); err != nil {
		return nil, fmt.Errorf("invalid record batch: %w", err)
	}
	return rec, nil
}

func (r *batchReader) bind(rec arrow.RecordBatch) error {
	sch := rec.Schema()
	col := func(name string) (arrow.Array, error) {
		idx := sch.FieldIndices(name)
		if len(idx) != 1 {
			return nil, &FormatError{File: r.path, Row: -1, Reason: fmt.Sprintf("needs one column %q (columns: layer utf8, timestep number, activation list<float32>)", name)}
		}
		return rec.Column(idx[0]), nil
	}
	var err error
	if r.layer, err = col(ColLayer); err != nil {
		return err
	}
	if _, ok := r.layer.(interface{ Value(int) string }); !ok {
		return &FormatError{File: r.path, Row: -1, Reason: fmt.Sprintf("column layer is %s, want utf8", r.layer.DataType())}
	}
	if r.ts, err = col(ColTimestep); err != nil {
		return err
	}
	switch r.ts.DataType().ID() {
	case arrow.FLOAT64, arrow.FLOAT32, arrow.INT64, arrow.INT32:
	default:
		return &FormatError{File: r.path, Row: -1, Reason: fmt.Sprintf("column timestep is %s, want a number", r.ts.DataType())}
	}
	a, err := col(ColActivation)
	if err != nil {
		return err
	}
	l, ok := a.(*array.List)
	if !ok {
		return &FormatError{File: r.path, Row: -1, Reason: fmt.Sprintf("column activation is %s, want list<float32>", a.DataType())}
	}
	r.acts, r.actVals = l, nil
	switch v := l.ListValues().(type) {
	case *array.Float32:
		r.actVals = v.Float32Values()
	case *array.Float16:
	default:
		return &FormatError{File: r.path, Row: -1, Reason: fmt.Sprintf("column activation is %s, want list<float32> or list<float16>", a.DataType())}
	}
	r.rng, r.rngFixed, r.rngVals = nil, nil, nil
	if idx := sch.FieldIndices(ColRange); len(idx) == 1 {
		bad := &FormatError{File: r.path, Row: -1, Reason: fmt.Sprintf("column range is %s, want list<float32> of [min, max]", rec.Column(idx[0]).DataType())}
		var vals arrow.Array
		switch c := rec.Column(idx[0]).(type) {
		case *array.List:
			r.rng, vals = c, c.ListValues()
		case *array.FixedSizeList:
			r.rngFixed, vals = c, c.ListValues()
		default:
			return bad
		}
		f, ok := vals.(*array.Float32)
		if !ok {
			return bad
		}
		r.rngVals = f.Float32Values()
	}
	r.rec, r.i = rec, 0
	return nil
}

// rangeOf reads row i's optional range.
func (r *batchReader) rangeOf(i int) (*[2]float32, error) {
	var s, e int64
	switch {
	case r.rng != nil && r.rng.IsValid(i):
		s, e = r.rng.ValueOffsets(i)
	case r.rngFixed != nil && r.rngFixed.IsValid(i):
		s, e = r.rngFixed.ValueOffsets(i)
	default:
		return nil, nil
	}
	v := make([]float64, 0, 2)
	for _, x := range r.rngVals[s:e] {
		v = append(v, float64(x))
	}
	return checkRange(v)
}

// checkRange validates a [min, max] range of a row.
func checkRange(v []float64) (*[2]float32, error) {
	if len(v) != 2 || math.IsNaN(v[0]) || math.IsNaN(v[1]) || math.IsInf(v[0], 0) || math.IsInf(v[1], 0) || v[0] > v[1] ||
		math.Abs(v[0]) > math.MaxFloat32 || math.Abs(v[1]) > math.MaxFloat32 {
		return nil, fmt.Errorf("range %v is not a finite [min, max]", v)
	}
	return &[2]float32{float32(v[0]), float32(v[1])}, nil
}

func (r *batchReader) Close() error { return r.closer() }

// openIPC opens an Arrow IPC file, or else an IPC stream. Every piece of
// IPC metadata is checked (internal/ipcguard) before arrow-go decodes it,
// and its panics are recovered.
func openIPC(path string) (_ Reader, err error) {
	f, err := fsutil.OpenRegular(path)
	if err != nil {
		return nil, fmt.Errorf("calibration: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("calibration: %w", err)
	}
	var magic [6]byte
	if n, _ := f.ReadAt(magic[:], 0); n == len(magic) && string(magic[:]) == "ARROW1" {
		guard, err := ipcguard.CheckFile(f, st.Size())
		if err != nil {
			return nil, decodeError(path, -1, "malformed Arrow IPC file", err)
		}
		var fr *ipc.FileReader
		err = func() (err error) {
			defer safe.Recover("reading Arrow IPC", &err)
			fr, err = ipc.NewFileReader(f, ipc.WithAllocator(decoderMem))
			return err
		}()
		if err != nil {
			return nil, decodeError(path, -1, "malformed Arrow IPC file", err)
		}
		return &batchReader{path: path, kind: "Arrow IPC file", src: &fileBatches{fr: fr, guard: guard},
			closer: func() error { fr.Close(); return f.Close() }}, nil
	}
	var sr *ipc.Reader
	err = func() (err error) {
		defer safe.Recover("reading Arrow IPC", &err)
		sr, err = ipc.NewReaderFromMessageReader(ipcguard.NewStreamReader(f, maxMetadata, maxAlloc), ipc.WithAllocator(decoderMem))
		return err
	}()
	if err != nil {
		return nil, decodeError(path, -1, "not an Arrow IPC file or stream", err)
	}
	return &batchReader{path: path, kind: "Arrow IPC stream", src: sr, closer: func() error { sr.Release(); return f.Close() }}, nil
}

// fileBatches adapts an IPC file reader to recordSource.
type fileBatches struct {
	fr    *ipc.FileReader
	guard *ipcguard.File
	i     int
	rec   arrow.RecordBatch
	err   error
}

func (b *fileBatches) Next() bool {
	if b.rec != nil {
		b.rec.Release()
		b.rec = nil
	}
	if b.i >= b.fr.NumRecords() {
		return false
	}
	if b.err = b.guard.CheckBatch(b.i); b.err == nil {
		b.rec, b.err = b.fr.RecordBatchAt(b.i)
	}
	b.i++
	return b.err == nil
}
func (b *fileBatches) RecordBatch() arrow.RecordBatch { return b.rec }
func (b *fileBatches) Err() error                     { return b.err }

// openParquet opens a Parquet file; the decoder's panics are recovered.
func openParquet(path string) (_ Reader, err error) {
	f, err := fsutil.OpenRegular(path)
	if err != nil {
		return nil, fmt.Errorf("calibration: %w", err)
	}
	var pf *file.Reader
	var rr pqarrow.RecordReader
	err = func() (err error) {
		defer safe.Recover("reading Parquet", &err)
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if err := checkParquetFooter(f, st.Size()); err != nil {
			return err
		}
		// Buffered streams: a column chunk is read through a small buffer,
		// not into one allocation of the size its metadata declares.
		props := parquet.NewReaderProperties(decoderMem)
		props.BufferedStreamEnabled = true
		pf, err = file.NewParquetReader(f, file.WithReadProps(props))
		if err != nil {
			return err
		}
		if err := checkOriginSchema(pf); err != nil {
			return err
		}
		fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 1024}, decoderMem)
		if err != nil {
			return err
		}
		rr, err = fr.GetRecordReader(context.Background(), nil, nil)
		return err
	}()
	if err != nil {
		if pf != nil {
			pf.Close()
		}
		f.Close()
		return nil, decodeError(path, -1, "malformed Parquet file", err)
	}
	return &batchReader{path: path, kind: "Parquet file", src: rr, closer: func() error { rr.Release(); return pf.Close() }}, nil
}

// checkOriginSchema checks the Arrow schema a Parquet file may store
// (ARROW:schema, a base64 IPC message pqarrow decodes with arrow-go's IPC
// reader, unchecked) with ipcguard, decoding it as pqarrow does.
func checkOriginSchema(pf *file.Reader) error {
	v := pf.MetaData().KeyValueMetadata().FindValue("ARROW:schema")
	if v == nil {
		return nil
	}
	var decoded []byte
	var err error
	if len(*v)%4 == 0 {
		decoded, err = base64.StdEncoding.DecodeString(*v)
	}
	if len(decoded) == 0 || err != nil {
		if decoded, err = base64.RawStdEncoding.DecodeString(*v); err != nil {
			return nil // pqarrow refuses it
		}
	}
	if _, err := ipcguard.NewStreamReader(bytes.NewReader(decoded), maxMetadata, maxAlloc).Message(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("ARROW:schema metadata: %w", err)
	}
	return nil
}
