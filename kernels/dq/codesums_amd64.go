//go:build !purego

package dq

// codeSums is codeSumsGo in SSE2 (bit for bit: the same float32
// operations per lane; the clamp is applied before truncation, which
// agrees for |t| < 2^63).
//
//go:noescape
func codeSums(x []float32, b, inv, qmax float32, lanes *[8]float32) (q, qq float32)
