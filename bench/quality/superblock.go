package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/bench/internal/synth"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/methods"
	"github.com/arrowquant/arrowquant/schema"
)

// superBlockSection writes the super-block (dq) table: dq INT2/INT4 next
// to the plain per-group methods at comparable budgets, on every dataset.
// llama.cpp's K-quants are not here: they are measured in the same run as
// ours by `make compare` (bench/compare), whose section this report keeps.
func superBlockSection(w io.Writer, ctx context.Context, mem memory.Allocator, n, side, reps int) error {
	fmt.Fprintf(w, "## Super-block method (dq)\n\n")
	fmt.Fprintf(w, "`dq` stores 256-element super-blocks with fp16 d and dmin and P-bit sub-block scale and min codes (INT2: sub-blocks of 16, 4-bit codes, 2.625 bits/weight like Q2_K; INT4: sub-blocks of 32, 6-bit codes, 4.5 bits/weight like Q4_K). ")
	fmt.Fprintf(w, "Bits/weight count every stored byte (codes plus group_params, or fp16 scale and min per group). ")
	fmt.Fprintf(w, "Quantize GB/s is params plus pack on one core (for dq its SuperBlockFunc; for the per-group methods, and the fused column of every method, the fused kernel with dequantization and similarity). ")
	fmt.Fprintf(w, "llama.cpp's Q2_K and Q4_K (and Q4_0, Q4_1, Q6_K, Q8_0) on the same data, measured in the same process run as ours, are in the next section (`make compare`).\n\n")
	type row struct {
		name       string
		bits, gs   int
		superBlock bool
	}
	rowsSpec := []row{
		{"dq", 2, 0, true}, {"clip", 2, 64, false}, {"lsq", 2, 32, false},
		{"dq", 4, 0, true}, {"lsq", 4, 32, false}, {"lsq", 4, 64, false},
	}
	for _, d := range synth.Datasets(n, side) {
		chunked := chunks(mem, d.X)
		fmt.Fprintf(w, "### %s\n\n", d.Name)
		fmt.Fprintf(w, "| bits | method | bits/weight | cosine | rel MSE | quantize GB/s | fused GB/s |\n|---|---|---|---|---|---|---|\n")
		for _, r := range rowsSpec {
			m, err := methods.Default().Lookup(r.name)
			if err != nil {
				continue // not registered in this binary
			}
			if r.superBlock {
				c, q, err := measureSuperBlock(ctx, m, chunked, d.X, r.bits, reps)
				if err != nil {
					chunked.Release()
					return err
				}
				fmt.Fprintf(w, "| %d | **dq** | %.3f | %.5f | %.4g | %.3f | %.3f |\n", r.bits, c.bitsPerWeight(), c.sim.Cosine(), c.sim.RelMSE(), q, c.gbps())
				continue
			}
			c, err := measure(ctx, m, chunked, r.bits, r.gs, reps)
			if err != nil {
				chunked.Release()
				return err
			}
			fmt.Fprintf(w, "| %d | %s g%d | %.3f | %.5f | %.4g | — | %.3f |\n", r.bits, r.name, r.gs, c.bitsPerWeight(), c.sim.Cosine(), c.sim.RelMSE(), c.gbps())
		}
		fmt.Fprintln(w)
		chunked.Release()
	}
	return nil
}

// measureSuperBlock runs a super-block method's fused kernel over rows
// (the cell: quality, stored bytes, fused time) and its SuperBlockFunc
// alone over x in the same chunks (quantize GB/s), the fastest of reps.
func measureSuperBlock(ctx context.Context, m kernels.Method, rows arrow.Array, x []float32, bits, reps int) (cell, float64, error) {
	var c cell
	opts := &kernels.QuantOptions{Bits: bits}
	for rep := 0; rep < reps; rep++ {
		in := compute.NewDatum(rows)
		start := time.Now()
		out, err := compute.CallFunction(ctx, m.QuantizeFunc(), opts, in)
		el := time.Since(start).Seconds()
		in.Release()
		if err != nil {
			return c, 0, fmt.Errorf("%s INT%d: %w", m.Name, bits, err)
		}
		res := out.(*compute.ArrayDatum).MakeArray().(*array.Struct)
		out.Release()
		if rep == 0 || el < c.seconds {
			c.seconds = el
		}
		if rep == 0 {
			c.bytes = int64(len(res.Field(0).(*array.Binary).ValueBytes())) + int64(len(res.Field(5).(*array.Binary).ValueBytes()))
			s := res.Field(3).(*array.Struct)
			for i := 0; i < s.Len(); i++ {
				f := func(j int) float64 { return s.Field(j).(*array.Float64).Value(i) }
				c.sim.Add(kernels.Similarity{Dot: f(2), AA: f(3), BB: f(4), Err2: f(5), N: s.Field(6).(*array.Int64).Value(i)})
			}
		}
		res.Release()
	}
	codes := make([]byte, kernels.PackedLen(schema.ChunkElems, bits))
	params := make([]byte, kernels.SuperBlockParamsLen(schema.ChunkElems, bits))
	best := 0.0
	for rep := 0; rep < reps; rep++ {
		start := time.Now()
		for s := 0; s < len(x); s += schema.ChunkElems {
			chunk := x[s:min(len(x), s+schema.ChunkElems)]
			nc, np := kernels.PackedLen(int64(len(chunk)), bits), kernels.SuperBlockParamsLen(int64(len(chunk)), bits)
			if err := m.SuperBlock(chunk, nil, bits, codes[:nc], params[:np], 0); err != nil {
				return c, 0, err
			}
		}
		if el := time.Since(start).Seconds(); rep == 0 || el < best {
			best = el
		}
	}
	return c, float64(4*len(x)) / best / 1e9, nil
}
