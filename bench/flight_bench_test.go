package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/flightsrv"
	"github.com/arrowquant/arrowquant/flightsrv/middleware"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/schema"
	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/wire"
)

// Flight throughput on loopback, in GB/s of FP input (BF16 bytes):
// DoPut with quantization against the same server storing the upload raw
// (flightsrv.Options.IngestOnly), and DoGet of the quantized model.
// Payload: 8 BF16 tensors of 2048x4096 (134 MB), rows of 1 Mi elements.

const (
	benchTensors = 8
	benchRows    = 2048
	benchCols    = 4096
)

func startBenchServer(b *testing.B, ingestOnly bool) (string, func()) {
	st, err := store.OpenLocal(b.TempDir(), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	cfg := config.Default()
	cfg.Modality = "text"
	svc, err := flightsrv.New(flightsrv.Options{Store: st, Defaults: cfg, IngestOnly: ingestOnly})
	if err != nil {
		b.Fatal(err)
	}
	srv, health, err := middleware.NewServer(middleware.Config{})
	if err != nil {
		b.Fatal(err)
	}
	flight.RegisterFlightServiceServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	return lis.Addr().String(), func() { middleware.GracefulStop(srv, health, 5*time.Second); st.Close() }
}

// payload builds the upload's batches once (BF16 bits as uint16 lists).
func payload(mem memory.Allocator) []arrow.RecordBatch {
	rng := rand.New(rand.NewPCG(1, 2))
	var out []arrow.RecordBatch
	vals := make([]float32, schema.ChunkElems)
	raw := make([]byte, 2*len(vals))
	n := int64(benchRows * benchCols)
	for t := 0; t < benchTensors; t++ {
		for off := int64(0); off < n; off += schema.ChunkElems {
			for i := range vals {
				vals[i] = float32(rng.NormFloat64() * 0.02)
			}
			fp.EncodeBF16(raw, vals)
			b := array.NewRecordBuilder(mem, schema.Input(arrow.PrimitiveTypes.Uint16))
			b.Field(0).(*array.StringBuilder).Append(fmt.Sprintf("layers.%d.weight", t))
			lb := b.Field(1).(*array.ListBuilder)
			lb.Append(true)
			lb.ValueBuilder().(*array.Int64Builder).AppendValues([]int64{benchRows, benchCols}, nil)
			b.Field(2).(*array.StringBuilder).Append(schema.DTypeBF16)
			b.Field(3).(*array.Int64Builder).Append(off)
			vb := b.Field(4).(*array.ListBuilder)
			vb.Append(true)
			ub := vb.ValueBuilder().(*array.Uint16Builder)
			ub.AppendValues(arrow.Uint16Traits.CastFromBytes(raw), nil)
			out = append(out, b.NewRecordBatch())
			b.Release()
		}
	}
	return out
}

func dialBench(b *testing.B, addr string) flight.Client {
	c, err := flight.NewClientWithMiddleware(addr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func doPut(b *testing.B, c flight.Client, name string, batches []arrow.RecordBatch) {
	stream, err := c.DoPut(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	cmd, _ := json.Marshal(wire.PutCommand{Model: name})
	w := flight.NewRecordWriter(stream, ipc.WithSchema(batches[0].Schema()))
	w.SetFlightDescriptor(&flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: cmd})
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				if err == io.EOF {
					err = nil
				}
				done <- err
				return
			}
		}
	}()
	for _, rec := range batches {
		if err := w.Write(rec); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	stream.CloseSend()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

func BenchmarkFlightDoPut(b *testing.B) {
	batches := payload(memory.DefaultAllocator)
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
			c := dialBench(b, addr)
			defer c.Close()
			b.SetBytes(2 * benchTensors * benchRows * benchCols)
			i := 0
			for b.Loop() {
				doPut(b, c, fmt.Sprintf("m%d", i), batches)
				i++
			}
		})
	}
}

func BenchmarkFlightDoGet(b *testing.B) {
	batches := payload(memory.DefaultAllocator)
	addr, stop := startBenchServer(b, false)
	defer stop()
	c := dialBench(b, addr)
	defer c.Close()
	doPut(b, c, "m", batches)
	for _, r := range batches {
		r.Release()
	}
	for _, tk := range []struct{ name, ticket string }{
		{"quantized", `{"model":"m"}`},
		{"dequantized-f32", `{"model":"m","dequantize":true}`},
	} {
		b.Run(tk.name, func(b *testing.B) {
			b.SetBytes(2 * benchTensors * benchRows * benchCols) // per FP16/BF16 source byte, comparable with DoPut
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
