// Package pipes measures the machine the kernels run on: the core's clock
// (a chain of dependent integer adds, one cycle each) and how many AVX2
// instructions of each kind it retires per cycle from 12 independent
// chains (BenchmarkPipes). On Zen 3, for example, adds, max/min, rounding
// and conversions share two of the four vector pipes and multiplies and
// FMAs the other two, which is what bounds the search kernels
// (docs/PERF.md). Nothing outside the benchmarks uses it.
package pipes
