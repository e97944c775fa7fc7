//go:build amd64

package pipes

import (
	"testing"
	"time"

	"golang.org/x/sys/cpu"
)

// clockGHz is the core's clock while it runs: dependent adds per ns.
func clockGHz(tb testing.TB) float64 {
	const n = 2_000_000
	t0 := time.Now()
	if got := clockLoop(n); got != 8*n {
		tb.Fatalf("clockLoop(%d) = %d, want %d", n, got, 8*n)
	}
	return 8 * n / float64(time.Since(t0).Nanoseconds())
}

func TestClockLoopCounts(t *testing.T) {
	if got := clockLoop(1000); got != 8000 {
		t.Fatalf("clockLoop(1000) = %d, want 8000", got)
	}
}

// BenchmarkPipes reports the clock (GHz) and, per instruction mix,
// instructions per cycle (ops/cycle) at that clock.
func BenchmarkPipes(b *testing.B) {
	if !cpu.X86.HasAVX2 || !cpu.X86.HasFMA {
		b.Skip("needs AVX2 and FMA")
	}
	b.Run("clock", func(b *testing.B) {
		var ghz float64
		for b.Loop() {
			ghz = clockGHz(b)
		}
		b.ReportMetric(ghz, "GHz")
	})
	const iters = 100_000 // 1.2 M instructions a call
	for _, l := range loops {
		b.Run(l.name, func(b *testing.B) {
			before := clockGHz(b)
			t0 := time.Now()
			for b.Loop() {
				l.run(iters)
			}
			ns := float64(time.Since(t0).Nanoseconds()) / float64(b.N)
			ghz := (before + clockGHz(b)) / 2 // the clock around the runs
			b.ReportMetric(12*iters/(ns*ghz), "ops/cycle")
		})
	}
}
