// Package pipes measures the machine the kernels run on: the core's clock
// (a chain of dependent integer adds, one cycle each) and how many AVX2
// instructions of each kind it retires per cycle from 12 independent
// chains (BenchmarkPipes). On Zen 3, for example, adds, max/min, rounding
// and conversions share two of the four vector pipes and multiplies and
// FMAs the other two; docs/PERF.md compares the search kernels with those
// bounds. Nothing outside the benchmarks uses it.
package pipes
