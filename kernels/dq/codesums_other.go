//go:build !amd64 || purego

package dq

func codeSums(x []float32, b, inv, qmax float32, lanes *[8]float32) (q, qq float32) {
	return codeSumsGo(x, b, inv, qmax, lanes)
}
