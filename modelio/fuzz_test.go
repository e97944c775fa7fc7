package modelio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

// checkAccepted asserts the invariants of a header parseHeader accepted.
func checkAccepted(t *testing.T, entries []headerEntry, dataLen int64) {
	t.Helper()
	names := map[string]bool{}
	var prevEnd int64
	for i, e := range entries {
		if e.Begin < 0 || e.Begin > e.End || e.End > dataLen {
			t.Fatalf("accepted out-of-range offsets [%d,%d] for data of %d bytes", e.Begin, e.End, dataLen)
		}
		if i > 0 && e.Begin < prevEnd {
			t.Fatalf("accepted overlapping tensor %q at %d (previous ends at %d)", e.Name, e.Begin, prevEnd)
		}
		prevEnd = max(prevEnd, e.End)
		if names[e.Name] || e.Name == "__metadata__" {
			t.Fatalf("accepted duplicate or reserved name %q", e.Name)
		}
		names[e.Name] = true
		n := int64(1)
		for _, d := range e.Shape {
			if d < 0 {
				t.Fatalf("accepted negative dim in %v", e.Shape)
			}
			if d != 0 && n > math.MaxInt64/d {
				t.Fatalf("accepted overflowing shape %v", e.Shape)
			}
			n *= d
		}
		if s := int64(e.DType.Size()); s > 0 && n*s != e.End-e.Begin {
			t.Fatalf("accepted %q: %d elements of %s in %d bytes", e.Name, n, e.DType, e.End-e.Begin)
		}
	}
}

func seedHeaders(f *testing.F) [][]byte {
	var out [][]byte
	for _, hs := range [][]TensorHeader{
		{{Name: "test", DType: I32, Shape: []int64{2, 2}}},
		{{Name: "a", DType: F32, Shape: []int64{3, 2}}, {Name: "b", DType: BF16, Shape: []int64{}}, {Name: "c", DType: F16, Shape: []int64{0, 7}}},
		{{Name: "model.layers.0.self_attn.q_proj.weight", DType: BF16, Shape: []int64{4, 4}}, {Name: "x", DType: F64, Shape: []int64{1}}},
	} {
		hdr, _, err := buildHeader(hs, map[string]string{"format": "pt"})
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, hdr)
	}
	out = append(out,
		[]byte(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`),
		[]byte(`{"w":{"dtype":"Q4_X","shape":[7],"data_offsets":[0,3]}}`),
		[]byte(`{"__metadata__":null,"w":{"dtype":"U8","shape":[],"data_offsets":[3,4]}}`),
	)
	return out
}

// FuzzParseHeader feeds arbitrary headers and data-section lengths to the
// header parser: it must never panic, must return a *FormatError on
// rejection, and what it accepts must be in range and consistent.
func FuzzParseHeader(f *testing.F) {
	for _, h := range seedHeaders(f) {
		f.Add(h, int64(64))
		f.Add(h, int64(16))
	}
	f.Fuzz(func(t *testing.T, hdr []byte, dataLen int64) {
		entries, _, err := parseHeader("fuzz.safetensors", hdr, dataLen)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("rejection is %T, want *FormatError: %v", err, err)
			}
			return
		}
		checkAccepted(t, entries, dataLen)
	})
}

// FuzzReadShard fuzzes whole files (length prefix included).
func FuzzReadShard(f *testing.F) {
	for _, h := range seedHeaders(f) {
		file := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
		file = append(file, h...)
		file = append(file, make([]byte, 32)...)
		f.Add(file)
	}
	f.Add([]byte{1, 2, 3})
	f.Add(binary.LittleEndian.AppendUint64(nil, 1<<40))
	f.Fuzz(func(t *testing.T, file []byte) {
		h, err := readShard("fuzz.safetensors", bytes.NewReader(file), int64(len(file)))
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("rejection is %T, want *FormatError: %v", err, err)
			}
			return
		}
		for _, ti := range h.tensors {
			if ti.Offset < 8 || ti.Bytes < 0 || ti.Offset+ti.Bytes > int64(len(file)) {
				t.Fatalf("accepted tensor %q at [%d,+%d) in a %d-byte file", ti.Name, ti.Offset, ti.Bytes, len(file))
			}
		}
	})
}
