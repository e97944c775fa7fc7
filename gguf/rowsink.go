package gguf

import (
	"fmt"
	"io"
)

// maxRunBytes bounds the rows a RowOrder permutation may hold back.
const maxRunBytes = 256 << 20

// rowSink passes a tensor's exported bytes to w in row order, or, with a
// permutation, buffers one closed run of rows at a time (a run [a, b)
// that perm maps onto itself) and writes its rows permuted.
type rowSink struct {
	w        io.Writer
	rowBytes int
	perm     []int
	runEnd   []int // runEnd[i]: end of the run starting at row i (run starts only)
	buf      []byte
	row      int // first row of the buffered run
}

// newRowSink checks perm (nil: identity) for a tensor of rows rows.
func newRowSink(w io.Writer, rows, rowBytes int, perm []int) (*rowSink, error) {
	s := &rowSink{w: w, rowBytes: rowBytes}
	if perm == nil {
		return s, nil
	}
	if len(perm) != rows {
		return nil, fmt.Errorf("row order has %d entries for %d rows", len(perm), rows)
	}
	seen := make([]bool, rows)
	s.runEnd = make([]int, rows+1)
	start, hi := 0, -1
	for i, p := range perm {
		if p < 0 || p >= rows || seen[p] {
			return nil, fmt.Errorf("row order is not a permutation (entry %d = %d)", i, p)
		}
		seen[p] = true
		hi = max(hi, p)
		if hi == i { // rows [start, i] map onto themselves
			if (i+1-start)*rowBytes > maxRunBytes {
				return nil, fmt.Errorf("row order moves rows across a run of %d rows (%d bytes; at most %d)", i+1-start, (i+1-start)*rowBytes, maxRunBytes)
			}
			s.runEnd[start] = i + 1
			start = i + 1
		}
	}
	s.perm = perm
	return s, nil
}

// Write takes the next bytes of the tensor (any split).
func (s *rowSink) Write(p []byte) (int, error) {
	if s.perm == nil {
		return s.w.Write(p)
	}
	n := len(p)
	for len(p) > 0 {
		want := (s.runEnd[s.row] - s.row) * s.rowBytes
		take := min(len(p), want-len(s.buf))
		s.buf = append(s.buf, p[:take]...)
		p = p[take:]
		if len(s.buf) < want {
			break
		}
		for i := s.row; i < s.runEnd[s.row]; i++ {
			src := (s.perm[i] - s.row) * s.rowBytes
			if _, err := s.w.Write(s.buf[src : src+s.rowBytes]); err != nil {
				return 0, err
			}
		}
		s.row = s.runEnd[s.row]
		s.buf = s.buf[:0]
	}
	return n, nil
}
