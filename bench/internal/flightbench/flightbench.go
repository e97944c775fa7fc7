// Package flightbench is what the Flight benchmarks (bench/ and
// bench/s3bench) share: an in-process server on a loopback port, the
// upload payload, a client, and a DoPut that waits for the result.
package flightbench

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

// The payload: Tensors BF16 tensors of Rows x Cols (134 MB), rows of
// schema.ChunkElems elements.
const (
	Tensors     = 8
	Rows        = 2048
	Cols        = 4096
	SourceBytes = 2 * Tensors * Rows * Cols
)

// StartServer serves st (text modality, the default config) on a loopback
// port; stop stops the server and closes st.
func StartServer(tb testing.TB, st store.Store, ingestOnly bool) (addr string, stop func()) {
	cfg := config.Default()
	cfg.Modality = "text"
	svc, err := flightsrv.New(flightsrv.Options{Store: st, Defaults: cfg, IngestOnly: ingestOnly})
	if err != nil {
		tb.Fatal(err)
	}
	srv, health, err := middleware.NewServer(middleware.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	flight.RegisterFlightServiceServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(lis)
	return lis.Addr().String(), func() { middleware.GracefulStop(srv, health, 5*time.Second); st.Close() }
}

// Payload builds the upload's batches (BF16 bits as uint16 lists, N(0,
// 0.02) values, seeded); the caller releases them.
func Payload(mem memory.Allocator) []arrow.RecordBatch {
	rng := rand.New(rand.NewPCG(1, 2))
	var out []arrow.RecordBatch
	vals := make([]float32, schema.ChunkElems)
	raw := make([]byte, 2*len(vals))
	n := int64(Rows * Cols)
	for t := 0; t < Tensors; t++ {
		for off := int64(0); off < n; off += schema.ChunkElems {
			for i := range vals {
				vals[i] = float32(rng.NormFloat64() * 0.02)
			}
			fp.EncodeBF16(raw, vals)
			b := array.NewRecordBuilder(mem, schema.Input(arrow.PrimitiveTypes.Uint16))
			b.Field(0).(*array.StringBuilder).Append(fmt.Sprintf("layers.%d.weight", t))
			lb := b.Field(1).(*array.ListBuilder)
			lb.Append(true)
			lb.ValueBuilder().(*array.Int64Builder).AppendValues([]int64{Rows, Cols}, nil)
			b.Field(2).(*array.StringBuilder).Append(schema.DTypeBF16)
			b.Field(3).(*array.Int64Builder).Append(off)
			vb := b.Field(4).(*array.ListBuilder)
			vb.Append(true)
			vb.ValueBuilder().(*array.Uint16Builder).AppendValues(arrow.Uint16Traits.CastFromBytes(raw), nil)
			out = append(out, b.NewRecordBatch())
			b.Release()
		}
	}
	return out
}

// Dial connects a plain Flight client with 256 MiB message limits.
func Dial(tb testing.TB, addr string) flight.Client {
	c, err := flight.NewClientWithMiddleware(addr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// DoPut uploads batches as model name and waits for the server's result.
func DoPut(tb testing.TB, c flight.Client, name string, overwrite bool, batches []arrow.RecordBatch) {
	stream, err := c.DoPut(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	cmd, _ := json.Marshal(wire.PutCommand{Model: name, Overwrite: overwrite})
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
			tb.Fatal(err)
		}
	}
	w.Close()
	stream.CloseSend()
	if err := <-done; err != nil {
		tb.Fatal(err)
	}
}
