//go:build llamacpp

// Command compare measures ArrowQuant's quantizers against llama.cpp's in
// one process run (`make compare`; build tag llamacpp, cgo):
//
//	go run -tags llamacpp ./bench/compare -lib .../libggml-base.so -out docs/QUALITY.md
//
// On the data of `make quality` (bench/internal/synth: the same bytes), it
// quantizes with llama.cpp's ggml_quantize_chunk (Q2_K, Q4_0, Q4_K, Q4_1,
// Q6_K, Q8_0; no importance matrix, as llama-quantize without --imatrix)
// and with ArrowQuant's kernels to the GGUF blocks `arrowquant export`
// writes (dq INT2 → Q2_K, dq INT4 → Q4_K, INT4 g32 → Q4_1, q8_0 → Q8_0),
// interleaved on one thread and timed with the same clock, and measures
// both sides' quality through llama.cpp's own dequantize_row_*. It writes
// the tables into the "comparison" section of -out (and the dq sentence
// of -readme), leaving the rest of each file alone.
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/arrowquant/arrowquant/bench/internal/mdsection"
	"github.com/arrowquant/arrowquant/bench/internal/synth"
	"github.com/arrowquant/arrowquant/gguf"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/clip"
	"github.com/arrowquant/arrowquant/kernels/dq"
	"github.com/arrowquant/arrowquant/kernels/lsq"
	"github.com/arrowquant/arrowquant/kernels/q80"
	"github.com/arrowquant/arrowquant/schema"
)

func main() {
	lib := flag.String("lib", os.Getenv("LLAMA_GGML_LIB"), "llama.cpp's libggml-base.so")
	llamaDesc := flag.String("llama", "llama.cpp", "how llama.cpp was built, for the report")
	out := flag.String("out", "", "markdown file whose comparison section to replace (docs/QUALITY.md)")
	readme := flag.String("readme", "", "README whose dq-speed sentence to replace")
	n := flag.Int("n", synth.DefaultN, "samples of each i.i.d. distribution (as make quality)")
	side := flag.Int("llm", synth.DefaultSide, "rows and columns of the LLM-like matrix (as make quality)")
	reps := flag.Int("reps", 5, "interleaved timed runs of every quantizer")
	flag.Parse()
	if *lib == "" {
		fmt.Fprintln(os.Stderr, "compare: -lib (or LLAMA_GGML_LIB) must name llama.cpp's libggml-base.so")
		os.Exit(2)
	}
	// One core, one OS thread: ggml_quantize_chunk runs on the calling
	// thread, our kernels on the goroutine that calls them.
	runtime.GOMAXPROCS(1)
	runtime.LockOSThread()
	g, err := openGGML(*lib)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
	start := time.Now()
	res, err := run(g, *n, *side, *reps)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
	res.elapsed = time.Since(start)
	res.llama, res.reps = *llamaDesc, *reps
	md := res.markdown()
	fmt.Print(md)
	fmt.Print(res.summary())
	for _, f := range []struct{ path, section, body string }{{*out, "comparison", md}, {*readme, "dq-speed", res.readmeSentence()}} {
		if f.path == "" {
			continue
		}
		if err := mdsection.ReplaceFile(f.path, f.section, f.body); err != nil {
			fmt.Fprintln(os.Stderr, "compare:", err)
			os.Exit(1)
		}
	}
	if bad := res.failures(); len(bad) > 0 {
		fmt.Fprintln(os.Stderr, "compare: llama.cpp's dequantization of our blocks differs from ours:", strings.Join(bad, "; "))
		os.Exit(1)
	}
}

// contender is one quantizer: llama.cpp's ggml_quantize_chunk to a type,
// or one of ours to the GGUF blocks export writes (gtype set), or one of
// ours whose artifact has no GGUF type at its bits (gtype nil, context).
type contender struct {
	label, side string // side: "llama.cpp" or "ArrowQuant"
	gtype       *ggmlType
	bpw         float64
	pairWith    string // ours: the llama.cpp label its speed is compared with
	// quantize x (rows of row elements) into dst; timed.
	quantize func(x []float32, row int, dst []byte) error
	// reconstruct the artifact-only rows (gtype nil) from dst.
	reconstruct func(dst []byte, y []float32)
	dstLen      func(n int) int
}

// cellResult is one contender on one dataset.
type cellResult struct {
	c                contender
	sim              kernels.Similarity
	best, bestWall   float64   // fastest run, thread-CPU and wall seconds
	times, walls     []float64 // every run, in order
	exactChecked     int64     // ours: elements where llama.cpp's dequantize was compared with ours
	exactMismatch    int64
	loadBeg, loadEnd float64
}

type datasetResult struct {
	d                synth.Dataset
	cells            []cellResult
	loadBeg, loadEnd float64
}

type results struct {
	sets           []datasetResult
	elapsed        time.Duration
	llama          string
	reps           int
	loadBeg, loadE float64
	date           string
}

func run(g *ggml, n, side, reps int) (*results, error) {
	r := &results{loadBeg: loadavg(), date: time.Now().UTC().Format("2006-01-02 15:04 UTC")}
	cs := contenders(g)
	for _, d := range synth.Datasets(n, side) {
		fmt.Fprintf(os.Stderr, "compare: %s (%d elements), %d quantizers × %d runs\n", d.Name, len(d.X), len(cs), reps)
		runtime.GC()
		dr := datasetResult{d: d, loadBeg: loadavg()}
		dsts := make([][]byte, len(cs))
		cells := make([]cellResult, len(cs))
		for i, c := range cs {
			dsts[i] = make([]byte, c.dstLen(len(d.X)))
			cells[i].c = c
		}
		// Interleaved: every run times each quantizer once, in table
		// order, so each of ours sits beside its llama.cpp type.
		for rep := 0; rep < reps; rep++ {
			for i, c := range cs {
				sw := startWatch()
				if err := c.quantize(d.X, d.Row, dsts[i]); err != nil {
					return nil, fmt.Errorf("%s on %s: %w", c.label, d.Name, err)
				}
				wall, cpu := sw.elapsed()
				cell := &cells[i]
				cell.times, cell.walls = append(cell.times, cpu), append(cell.walls, wall)
				if rep == 0 || cpu < cell.best {
					cell.best = cpu
				}
				if rep == 0 || wall < cell.bestWall {
					cell.bestWall = wall
				}
			}
		}
		y := make([]float32, len(d.X))
		ref := make([]float32, len(d.X))
		for i, c := range cs {
			cell := &cells[i]
			if c.gtype == nil {
				c.reconstruct(dsts[i], y)
				cell.sim = kernels.SimilarityOf(d.X, y)
				continue
			}
			g.dequantizeRow(*c.gtype, dsts[i], y)
			cell.sim = kernels.SimilarityOf(d.X, y)
			if c.side == "ArrowQuant" {
				// Ours: llama.cpp's dequantization equals our reference
				// dequantizer (gguf.Dequantize) bit for bit.
				if err := gguf.Dequantize(ggufType(c.gtype.name), dsts[i], ref); err != nil {
					return nil, err
				}
				cell.exactChecked = int64(len(y))
				for k := range y {
					if math.Float32bits(y[k]) != math.Float32bits(ref[k]) {
						cell.exactMismatch++
					}
				}
			}
		}
		dr.cells, dr.loadEnd = cells, loadavg()
		r.sets = append(r.sets, dr)
	}
	r.loadE = loadavg()
	return r, nil
}

func ggufType(name string) gguf.Type {
	for _, t := range []gguf.Type{gguf.Q2_K, gguf.Q4_0, gguf.Q4_K, gguf.Q4_1, gguf.Q8_0} {
		if t.String() == name {
			return t
		}
	}
	panic("no gguf type " + name)
}

// contenders is the table: each budget's llama.cpp type, then ours.
func contenders(g *ggml) []contender {
	var cs []contender
	llama := func(name string) {
		t := lookupType(name)
		bs := g.rowBytes(t, 256) // every type here has blocks dividing 256
		cs = append(cs, contender{
			label: "llama.cpp " + name, side: "llama.cpp", gtype: &t, bpw: float64(8*bs) / 256,
			quantize: func(x []float32, row int, dst []byte) error { return g.quantize(t, x, row, dst) },
			dstLen:   func(n int) int { return g.rowBytes(t, n) },
		})
	}
	ours := func(label, gname, pair string, enc func(x []float32, dst []byte) error) {
		t := lookupType(gname)
		gt := ggufType(gname)
		cs = append(cs, contender{
			label: label, side: "ArrowQuant", gtype: &t, bpw: gt.BitsPerWeight(), pairWith: "llama.cpp " + pair,
			quantize: func(x []float32, _ int, dst []byte) error { return inChunks(x, dst, gt, enc) },
			dstLen:   func(n int) int { return n / gt.BlockSize() * gt.BlockBytes() },
		})
	}
	artifact := func(label, pair string, params kernels.GroupParamsFunc, bits, gs int) {
		var scales, mins []uint16
		cs = append(cs, contender{
			label: label, side: "ArrowQuant", bpw: float64(bits) + 32/float64(gs), pairWith: "llama.cpp " + pair,
			quantize: func(x []float32, _ int, dst []byte) error {
				ng := int(kernels.NumGroups(int64(len(x)), gs))
				scales, mins = make([]uint16, ng), make([]uint16, ng)
				for s := 0; s < len(x); s += schema.ChunkElems {
					e := min(len(x), s+schema.ChunkElems)
					if err := params(x[s:e], bits, gs, scales[s/gs:], mins[s/gs:], int64(s)); err != nil {
						return err
					}
					kernels.PackGroups(dst[s*bits/8:], x[s:e], scales[s/gs:], mins[s/gs:], bits, gs)
				}
				return nil
			},
			reconstruct: func(dst []byte, y []float32) { kernels.DequantizeGroups(y, dst, scales, mins, bits, gs) },
			dstLen:      func(n int) int { return int(kernels.PackedLen(int64(n), bits)) },
		})
	}
	llama("Q2_K")
	ours("dq INT2 → Q2_K", "Q2_K", "Q2_K", superBlocks(2))
	llama("Q4_0")
	llama("Q4_K")
	ours("dq INT4 → Q4_K", "Q4_K", "Q4_K", superBlocks(4))
	artifact("lsq INT4 g64 (artifact)", "Q4_0", lsq.GroupParams, 4, 64)
	artifact("clip INT4 g64 (artifact)", "Q4_0", clip.GroupParams, 4, 64)
	llama("Q4_1")
	ours("minmax INT4 g32 → Q4_1", "Q4_1", "Q4_1", groups32(kernels.MinMaxGroupParams, 4))
	ours("lsq INT4 g32 → Q4_1", "Q4_1", "Q4_1", groups32(lsq.GroupParams, 4))
	ours("clip INT4 g32 → Q4_1", "Q4_1", "Q4_1", groups32(clip.GroupParams, 4))
	llama("Q6_K")
	llama("Q8_0")
	ours("q8_0 INT8 → Q8_0", "Q8_0", "Q8_0", groups32(q80.GroupParams, 8))
	return cs
}

// inChunks runs enc over x in pipeline-sized chunks (schema.ChunkElems,
// a multiple of every block size), each into its blocks of dst.
func inChunks(x []float32, dst []byte, t gguf.Type, enc func(x []float32, dst []byte) error) error {
	bs, bb := t.BlockSize(), t.BlockBytes()
	for s := 0; s < len(x); s += schema.ChunkElems {
		e := min(len(x), s+schema.ChunkElems)
		if err := enc(x[s:e], dst[s/bs*bb:e/bs*bb]); err != nil {
			return err
		}
	}
	return nil
}

// superBlocks is the dq kernel at bits, then the Q4_K / Q2_K repack: what
// `quantize --method dq` and `export` do to a chunk.
func superBlocks(bits int) func(x []float32, dst []byte) error {
	var codes, params []byte
	return func(x []float32, dst []byte) error {
		n := len(x)
		codes = grow(codes, int(kernels.PackedLen(int64(n), bits)))
		params = grow(params, int(kernels.SuperBlockParamsLen(int64(n), bits)))
		if err := dq.Quantize(x, nil, bits, codes, params, 0); err != nil {
			return err
		}
		if bits == 4 {
			return gguf.Q4KFromSuperBlocks(dst, codes, params, n)
		}
		return gguf.Q2KFromSuperBlocks(dst, codes, params, n)
	}
}

// groups32 is a per-group method at group 32, the shared packer, then the
// Q4_1 (INT4) or Q8_0 (INT8) repack.
func groups32(params kernels.GroupParamsFunc, bits int) func(x []float32, dst []byte) error {
	var codes []byte
	var scales, mins []uint16
	return func(x []float32, dst []byte) error {
		n := len(x)
		ng := n / 32
		if cap(scales) < ng {
			scales, mins = make([]uint16, ng), make([]uint16, ng)
		}
		scales, mins = scales[:ng], mins[:ng]
		if err := params(x, bits, 32, scales, mins, 0); err != nil {
			return err
		}
		codes = grow(codes, int(kernels.PackedLen(int64(n), bits)))
		kernels.PackGroups(codes, x, scales, mins, bits, 32)
		if bits == 8 {
			return gguf.Q80FromGroups(dst, codes, scales, mins, 32, n)
		}
		return gguf.Q41FromGroups(dst, codes, scales, mins, bits, 32, n)
	}
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// loadavg is the 1-minute load average (0 where /proc is missing).
func loadavg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscanf(string(b), "%g", &l)
	return l
}
