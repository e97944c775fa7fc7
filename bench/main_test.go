package bench

import (
	"os"
	"runtime/debug"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/internal/bufpool"
)

// TestMain runs the benchmarks with the allocator and GC target the
// arrowquant command sets in main, so a kernel's figure includes what
// allocating its output costs in the product, not in a bare test binary.
func TestMain(m *testing.M) {
	memory.DefaultAllocator = bufpool.New()
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	os.Exit(m.Run())
}
