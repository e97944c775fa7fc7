// Package bench holds ArrowQuant's benchmarks (run with `make bench`):
// kernel throughput in GB/s of fp32 input and, in later files, end-to-end
// and Flight figures. Each benchmark reports bytes with b.SetBytes so
// `go test -bench` prints MB/s directly.
package bench
