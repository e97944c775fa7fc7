package modelio

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fp"
)

// testTensor is a tensor with its float32 values (already representable in DType).
type testTensor struct {
	Name  string
	DType DType
	Shape []int64
	Vals  []float32
}

// encodeVals returns the little-endian encoding of vals in dt.
func encodeVals(t *testing.T, dt DType, vals []float32) []byte {
	t.Helper()
	b := make([]byte, len(vals)*dt.Size())
	switch dt {
	case F32:
		fp.EncodeF32(b, vals)
	case F16:
		fp.EncodeHalf(b, vals)
	case BF16:
		fp.EncodeBF16(b, vals)
	case F64:
		for i, v := range vals {
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(float64(v)))
		}
	default:
		// raw dtypes in tests: zero bytes
	}
	return b
}

// writeST writes a safetensors file with CreateSafetensors.
func writeST(t *testing.T, path string, tensors []testTensor, meta map[string]string) {
	t.Helper()
	hs := make([]TensorHeader, len(tensors))
	for i, tt := range tensors {
		hs[i] = TensorHeader{Name: tt.Name, DType: tt.DType, Shape: tt.Shape}
	}
	w, err := CreateSafetensors(path, hs, meta)
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range tensors {
		var data []byte
		if tt.Vals != nil {
			data = encodeVals(t, tt.DType, tt.Vals)
		} else {
			data = make([]byte, hs[i].Bytes())
		}
		if int64(len(data)) != hs[i].Bytes() {
			t.Fatalf("tensor %s: %d bytes of data, header says %d", tt.Name, len(data), hs[i].Bytes())
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeRawST writes an 8-byte length, the header text and dataLen zero bytes.
func writeRawST(t *testing.T, path, header string, dataLen int) {
	t.Helper()
	b := make([]byte, 8, 8+len(header)+dataLen)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	b = append(b, make([]byte, dataLen)...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// wantFormatError asserts err is a *FormatError about file (and tensor, when
// non-empty) whose reason contains reason, and that the message names them.
func wantFormatError(t *testing.T, err error, file, tensor, reason string) *FormatError {
	t.Helper()
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("want *FormatError, got %T: %v", err, err)
	}
	if file != "" && fe.File != file {
		t.Errorf("FormatError.File = %q, want %q", fe.File, file)
	}
	if fe.Tensor != tensor {
		t.Errorf("FormatError.Tensor = %q, want %q (%v)", fe.Tensor, tensor, err)
	}
	if !strings.Contains(fe.Reason, reason) {
		t.Errorf("reason %q does not contain %q", fe.Reason, reason)
	}
	msg := err.Error()
	if !strings.Contains(msg, fe.File) {
		t.Errorf("message %q does not name the file %q", msg, fe.File)
	}
	if tensor != "" && !strings.Contains(msg, `"`+tensor+`"`) {
		t.Errorf("message %q does not name the tensor %q", msg, tensor)
	}
	return fe
}

// singleDir creates a directory holding one raw safetensors file named
// model.safetensors and returns (dir, file path).
func singleDir(t *testing.T, header string, dataLen int) (string, string) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, SingleFile)
	writeRawST(t, p, header, dataLen)
	return dir, p
}
