//go:build llamacpp

package main

/*
#include <time.h>
static long long aq_thread_cpu_ns(void) {
	struct timespec ts;
	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return -1;
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
*/
import "C"

import "time"

// stopwatch reads both clocks of a run: the wall clock, and the CPU time
// of the calling OS thread (the goroutine is locked to it, and both
// ggml_quantize_chunk and our kernels run on it), which on a shared
// machine counts the work without the time other processes held the core.
type stopwatch struct {
	wall time.Time
	cpu  int64
}

func startWatch() stopwatch { return stopwatch{time.Now(), int64(C.aq_thread_cpu_ns())} }

// elapsed is the wall and thread-CPU seconds since s.
func (s stopwatch) elapsed() (wall, cpu float64) {
	c := int64(C.aq_thread_cpu_ns())
	return time.Since(s.wall).Seconds(), float64(c-s.cpu) / 1e9
}
