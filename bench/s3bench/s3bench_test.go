// Package s3bench compares the S3 store with the local store on loopback
// (`make bench-s3`): DoPut with quantization and DoGet of the quantized
// model through one Flight server on each store, and 8 concurrent pulls
// from one server or spread over two servers sharing the S3 store. The S3
// server is the tests' SeaweedFS (internal/s3test), on the same machine.
//
// Payload: 8 BF16 tensors of 2048x4096 (134 MB of source), int4.
// DoPut MB/s are of BF16 source bytes; DoGet and pull MB/s of artifact
// bytes streamed.
package s3bench

import (
	"context"
	"io"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/rs/zerolog"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/bench/internal/flightbench"
	"github.com/arrowquant/arrowquant/internal/s3test"
	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/store/s3store"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

// openStore opens a store of kind "local", "s3" (sequential reads from one
// streaming GET) or "s3-ranges" (parallel ranged GETs), on prefix.
func openStore(b *testing.B, kind, prefix string) store.Store {
	if kind == "local" {
		st, err := store.OpenLocal(b.TempDir(), zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	srv := s3test.Shared(b)
	st, err := s3store.Open(context.Background(), s3store.Config{
		Bucket: s3test.Bucket, Prefix: prefix, Endpoint: srv.Endpoint, Region: s3test.Region, PathStyle: true,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, ScratchDir: b.TempDir(), Logger: zerolog.Nop(),
		RangeReads: kind == "s3-ranges",
	})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// doGet streams the model and returns the bytes of its record batches.
func doGet(c flight.Client, name string) error {
	stream, err := c.DoGet(context.Background(), &flight.Ticket{Ticket: []byte(`{"model":"` + name + `"}`)})
	if err != nil {
		return err
	}
	rdr, err := flight.NewRecordReader(stream)
	if err != nil {
		return err
	}
	defer rdr.Release()
	for rdr.Next() {
	}
	if err := rdr.Err(); err != nil && err != io.EOF {
		return err
	}
	return nil
}

var (
	batchesOnce sync.Once
	batches     []arrow.RecordBatch
)

func theBatches() []arrow.RecordBatch {
	batchesOnce.Do(func() { batches = flightbench.Payload(memory.DefaultAllocator) })
	return batches
}

func BenchmarkDoPut(b *testing.B) {
	for _, kind := range []string{"local", "s3"} {
		b.Run(kind, func(b *testing.B) {
			addr, stop := flightbench.StartServer(b, openStore(b, kind, s3test.Prefix(b)), false)
			defer stop()
			c := flightbench.Dial(b, addr)
			defer c.Close()
			bs := theBatches()
			b.SetBytes(flightbench.SourceBytes)
			for b.Loop() {
				flightbench.DoPut(b, c, "m", true, bs)
			}
		})
	}
}

// artifactSize is the stored artifact's size.
func artifactSize(b *testing.B, st store.Store, name string) int64 {
	e, err := st.Get(context.Background(), name)
	if err != nil {
		b.Fatal(err)
	}
	return e.Files[artifact.FileName]
}

// cpu is this process's CPU time (user + system).
func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureCPU reports CPU milliseconds per operation of this process (the
// Flight server and client) and of SeaweedFS (0 for the local store).
func measureCPU(b *testing.B, kind string, run func()) {
	srv := s3test.Shared(b)
	own, s3 := cpu(), srv.CPUTime()
	run()
	n := float64(b.N)
	b.ReportMetric(float64((cpu()-own).Milliseconds())/n, "flight-cpu-ms/op")
	if kind != "local" {
		b.ReportMetric(float64((srv.CPUTime()-s3).Milliseconds())/n, "s3-cpu-ms/op")
	}
}

func BenchmarkDoGet(b *testing.B) {
	for _, kind := range []string{"local", "s3", "s3-ranges"} {
		b.Run(kind, func(b *testing.B) {
			st := openStore(b, kind, s3test.Prefix(b))
			addr, stop := flightbench.StartServer(b, st, false)
			defer stop()
			c := flightbench.Dial(b, addr)
			defer c.Close()
			flightbench.DoPut(b, c, "m", true, theBatches())
			b.SetBytes(artifactSize(b, st, "m"))
			measureCPU(b, kind, func() {
				for b.Loop() {
					if err := doGet(c, "m"); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkPulls8: 8 concurrent DoGets of one model, all from one server or
// 4 and 4 from two servers sharing the S3 store (and from one server on
// the local store, for reference). MB/s: all 8 pulls' bytes per second.
func BenchmarkPulls8(b *testing.B) {
	for _, c := range []struct {
		name    string
		kind    string
		servers int
	}{{"local-1server", "local", 1}, {"s3-1server", "s3", 1}, {"s3-2servers", "s3", 2}} {
		b.Run(c.name, func(b *testing.B) {
			prefix := s3test.Prefix(b)
			var clients []flight.Client
			var first store.Store
			for i := range c.servers {
				st := openStore(b, c.kind, prefix)
				if i == 0 {
					first = st
				}
				addr, stop := flightbench.StartServer(b, st, false)
				defer stop()
				cl := flightbench.Dial(b, addr)
				defer cl.Close()
				clients = append(clients, cl)
			}
			flightbench.DoPut(b, clients[0], "m", true, theBatches())
			b.SetBytes(8 * artifactSize(b, first, "m"))
			measureCPU(b, c.kind, func() { pulls8(b, clients) })
		})
	}
}

func pulls8(b *testing.B, clients []flight.Client) {
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := doGet(clients[i%len(clients)], "m"); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
}
