package bench

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/rs/zerolog"

	"github.com/arrowquant/arrowquant/bench/internal/flightbench"
	"github.com/arrowquant/arrowquant/store"
)

// Flight throughput on loopback, in GB/s of FP input (BF16 bytes):
// DoPut with quantization against the same server storing the upload raw
// (flightsrv.Options.IngestOnly), and DoGet of the quantized model.
// Payload: flightbench.Payload, 8 BF16 tensors of 2048x4096 (134 MB).

// startBenchServer serves a fresh local store.
func startBenchServer(b *testing.B, ingestOnly bool) (string, func()) {
	st, err := store.OpenLocal(b.TempDir(), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	return flightbench.StartServer(b, st, ingestOnly)
}

func BenchmarkFlightDoPut(b *testing.B) {
	batches := flightbench.Payload(memory.DefaultAllocator)
	defer func() {
		for _, r := range batches {
			r.Release()
		}
	}()
	for _, mode := range []struct {
		name       string
		ingestOnly bool
	}{{"raw-ingest", true}, {"quantize-int4", false}} {
		b.Run(mode.name, func(b *testing.B) {
			addr, stop := startBenchServer(b, mode.ingestOnly)
			defer stop()
			c := flightbench.Dial(b, addr)
			defer c.Close()
			b.SetBytes(flightbench.SourceBytes)
			i := 0
			for b.Loop() {
				flightbench.DoPut(b, c, fmt.Sprintf("m%d", i), false, batches)
				i++
			}
		})
	}
}

func BenchmarkFlightDoGet(b *testing.B) {
	batches := flightbench.Payload(memory.DefaultAllocator)
	addr, stop := startBenchServer(b, false)
	defer stop()
	c := flightbench.Dial(b, addr)
	defer c.Close()
	flightbench.DoPut(b, c, "m", false, batches)
	for _, r := range batches {
		r.Release()
	}
	for _, tk := range []struct{ name, ticket string }{
		{"quantized", `{"model":"m"}`},
		{"dequantized-f32", `{"model":"m","dequantize":true}`},
	} {
		b.Run(tk.name, func(b *testing.B) {
			b.SetBytes(flightbench.SourceBytes) // per FP16/BF16 source byte, comparable with DoPut
			for b.Loop() {
				stream, err := c.DoGet(context.Background(), &flight.Ticket{Ticket: []byte(tk.ticket)})
				if err != nil {
					b.Fatal(err)
				}
				rdr, err := flight.NewRecordReader(stream)
				if err != nil {
					b.Fatal(err)
				}
				for rdr.Next() {
				}
				if err := rdr.Err(); err != nil && err != io.EOF {
					b.Fatal(err)
				}
				rdr.Release()
			}
		})
	}
}
