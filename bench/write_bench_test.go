//go:build unix

package bench

import (
	"bufio"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/arrowquant/arrowquant/internal/fsutil"
)

// BenchmarkArtifactWrite writes 1 GiB per op in 1 MiB writes, as the
// artifact writer does, through the page cache (the server's path: a
// 4 MiB bufio.Writer over fsutil.WritebackFile) and past it (the CLI's:
// fsutil.DirectFile), then fsyncs. sys-s/GiB is the system CPU time the
// process spent per GiB: the page cache's copy, allocation and reclaim
// against O_DIRECT's. Set ARROWQUANT_BENCH_DIR to write on another file
// system (default: the test's temporary directory).
func BenchmarkArtifactWrite(b *testing.B) {
	const total, piece = 1 << 30, 1 << 20
	buf := make([]byte, piece)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	dir := os.Getenv("ARROWQUANT_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	for _, mode := range []string{"page-cache", "bypassed"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(total)
			var sys int64
			for b.Loop() {
				f, err := os.Create(filepath.Join(dir, "artifact-write.bin"))
				if err != nil {
					b.Fatal(err)
				}
				var w interface {
					Write([]byte) (int, error)
					Flush() error
				}
				if mode == "bypassed" {
					d := fsutil.NewDirectFile(f, 4<<20, 8)
					if !d.Direct() {
						b.Skipf("%s: the page cache cannot be bypassed here", dir)
					}
					w = d
				} else {
					w = bufio.NewWriterSize(&fsutil.WritebackFile{F: f}, 4<<20)
				}
				var r0, r1 syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
				for n := 0; n < total; n += piece {
					if _, err := w.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Flush(); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
				sys += r1.Stime.Nano() - r0.Stime.Nano()
				f.Close()
				os.Remove(f.Name())
			}
			b.ReportMetric(float64(sys)/1e9/float64(b.N), "sys-s/GiB")
		})
	}
}
