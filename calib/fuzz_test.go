package calib

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/float16"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/arrowquant/arrowquant/internal/ipcguard"
)

var fuzzOptions = Options{NumTimeGroups: 3, SamplesPerLayer: 8}

// collectBytes writes data to a file with extension ext and collects it:
// never a panic; a rejection is a *FormatError naming the file; accepted
// statistics are finite and consistent.
func collectBytes(t *testing.T, ext string, data []byte) (*Stats, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "calib"+ext)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := Collect(p, fuzzOptions)
	if err != nil {
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Fatalf("rejection is %T, want *FormatError: %v", err, err)
		}
		if fe.File != p || !strings.HasPrefix(err.Error(), "calibration "+p+": ") || fe.Row < -1 {
			t.Fatalf("rejection does not name the file (or names row %d): %v", fe.Row, err)
		}
		return nil, err
	}
	checkStats(t, st)
	return st, nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// checkStats asserts what every consumer of Stats relies on.
func checkStats(t *testing.T, st *Stats) {
	t.Helper()
	if st.RowsRead < 1 || st.RowsUsed < 1 || st.RowsUsed > st.RowsRead || len(st.Layers) == 0 {
		t.Fatalf("read %d rows, used %d, %d layers", st.RowsRead, st.RowsUsed, len(st.Layers))
	}
	if len(st.TimeGroups) != fuzzOptions.NumTimeGroups {
		t.Fatalf("%d time groups", len(st.TimeGroups))
	}
	for i, g := range st.TimeGroups {
		if !finite(g.Start) || !finite(g.End) || g.End < g.Start || (i > 0 && g.Start < st.TimeGroups[i-1].Start) {
			t.Fatalf("time groups %+v", st.TimeGroups)
		}
	}
	for name, l := range st.Layers {
		if name == "" || l.Channels < 1 || len(l.Groups) != fuzzOptions.NumTimeGroups {
			t.Fatalf("layer %q: %d channels, %d groups", name, l.Channels, len(l.Groups))
		}
		rows := 0
		for g, gs := range l.Groups {
			rows += gs.Rows
			for _, s := range [][]float32{gs.MeanAbs, gs.MeanSq} {
				if len(s) != l.Channels {
					t.Fatalf("layer %q group %d: %d values for %d channels", name, g, len(s), l.Channels)
				}
				for j, v := range s {
					if !finite(float64(v)) || v < 0 {
						t.Fatalf("layer %q group %d channel %d: statistic %v", name, g, j, v)
					}
				}
			}
			if !finite(float64(gs.Min)) || !finite(float64(gs.Max)) || gs.Min > gs.Max {
				t.Fatalf("layer %q group %d: min %v max %v", name, g, gs.Min, gs.Max)
			}
			switch {
			case gs.Rows == 0 && gs.Act != (ActParams{}): // no samples: no params
				t.Fatalf("layer %q group %d without rows: INT8 params %+v", name, g, gs.Act)
			case gs.Rows > 0 && (!finite(float64(gs.Act.Scale)) || gs.Act.Scale <= 0 || gs.Act.Zero < 0 || gs.Act.Zero > 255):
				t.Fatalf("layer %q group %d: INT8 params %+v", name, g, gs.Act)
			}
		}
		if rows < 1 || rows > fuzzOptions.SamplesPerLayer {
			t.Fatalf("layer %q: %d rows used (at most %d)", name, rows, fuzzOptions.SamplesPerLayer)
		}
		for _, s := range [][]float32{l.Importance(), l.ChannelMagnitude()} {
			if s != nil && len(s) != l.Channels {
				t.Fatalf("layer %q: %d weights for %d channels", name, len(s), l.Channels)
			}
			for _, v := range s {
				if !finite(float64(v)) || v < 0 {
					t.Fatalf("layer %q: weight %v", name, v)
				}
			}
		}
	}
}

// seedRows is a small calibration set: two layers, 6 timesteps.
func seedRows() []Row {
	var rows []Row
	for ts := 0; ts < 6; ts++ {
		rows = append(rows, Row{Layer: "blk.q", Timestep: float64(ts * 200), Activation: []float32{1, -2, 0.5, float32(ts)}})
		rows = append(rows, Row{Layer: "blk.up", Timestep: float64(ts * 200), Activation: []float32{float32(ts % 3), 1}})
	}
	return rows
}

func jsonl(rows []Row) []byte {
	var b bytes.Buffer
	for _, r := range rows {
		b.WriteString(`{"layer":"` + r.Layer + `","timestep":`)
		b.WriteString(formatFloat(r.Timestep))
		b.WriteString(`,"activation":[`)
		for j, v := range r.Activation {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(formatFloat(float64(v)))
		}
		b.WriteString("]}\n")
	}
	return b.Bytes()
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// table builds a record batch of the given columns.
func table(cols map[string]arrow.Array, names ...string) arrow.RecordBatch {
	var fields []arrow.Field
	var arrs []arrow.Array
	for _, n := range names {
		fields = append(fields, arrow.Field{Name: n, Type: cols[n].DataType(), Nullable: true})
		arrs = append(arrs, cols[n])
	}
	return array.NewRecordBatch(arrow.NewSchema(fields, nil), arrs, int64(arrs[0].Len()))
}

// variants are record batches of the seed rows with the columns' types
// varied (and broken): what the IPC and Parquet seeds are made of.
func variants(tb testing.TB) map[string]arrow.RecordBatch {
	mem := memory.DefaultAllocator
	rows := seedRows()
	str := array.NewStringBuilder(mem)
	f64 := array.NewFloat64Builder(mem)
	i32 := array.NewInt32Builder(mem)
	l32 := array.NewListBuilder(mem, arrow.PrimitiveTypes.Float32)
	l16 := array.NewListBuilder(mem, arrow.FixedWidthTypes.Float16)
	nan := array.NewFloat64Builder(mem)
	nulls := array.NewListBuilder(mem, arrow.PrimitiveTypes.Float32)
	for i, r := range rows {
		str.Append(r.Layer)
		f64.Append(r.Timestep)
		i32.Append(int32(r.Timestep))
		if i == 3 {
			nan.Append(math.NaN())
		} else {
			nan.Append(r.Timestep)
		}
		l32.Append(true)
		l16.Append(true)
		nulls.Append(true)
		for j, v := range r.Activation {
			l32.ValueBuilder().(*array.Float32Builder).Append(v)
			l16.ValueBuilder().(*array.Float16Builder).Append(float16.New(v))
			if i == 5 && j == 1 {
				nulls.ValueBuilder().(*array.Float32Builder).AppendNull()
			} else {
				nulls.ValueBuilder().(*array.Float32Builder).Append(v)
			}
		}
	}
	cols := map[string]arrow.Array{
		ColLayer: str.NewArray(), ColTimestep: f64.NewArray(), ColActivation: l32.NewArray(),
		"ts_i32": i32.NewArray(), "act_f16": l16.NewArray(), "ts_nan": nan.NewArray(), "act_nulls": nulls.NewArray(),
	}
	rename := func(rec arrow.RecordBatch, names ...string) arrow.RecordBatch {
		fields := rec.Schema().Fields()
		for i := range fields {
			fields[i].Name = names[i]
		}
		return array.NewRecordBatch(arrow.NewSchema(fields, nil), rec.Columns(), rec.NumRows())
	}
	std := []string{ColLayer, ColTimestep, ColActivation}
	return map[string]arrow.RecordBatch{
		"float32":          table(cols, std...),
		"float16":          rename(table(cols, ColLayer, ColTimestep, "act_f16"), std...),
		"int32 timesteps":  rename(table(cols, ColLayer, "ts_i32", ColActivation), std...),
		"NaN timestep":     rename(table(cols, ColLayer, "ts_nan", ColActivation), std...),
		"null activation":  rename(table(cols, ColLayer, ColTimestep, "act_nulls"), std...),
		"timestep strings": rename(table(cols, ColLayer, ColLayer, ColActivation), std...),
		"no activation":    table(cols, ColLayer, ColTimestep),
	}
}

func ipcFileBytes(tb testing.TB, rec arrow.RecordBatch) []byte {
	var b bytes.Buffer
	w, err := ipc.NewFileWriter(&b, ipc.WithSchema(rec.Schema()))
	if err != nil {
		tb.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func ipcStreamBytes(tb testing.TB, rec arrow.RecordBatch, opts ...ipc.Option) []byte {
	var b bytes.Buffer
	w := ipc.NewWriter(&b, append([]ipc.Option{ipc.WithSchema(rec.Schema())}, opts...)...)
	if err := w.Write(rec); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func parquetBytes(tb testing.TB, rec arrow.RecordBatch) []byte {
	var b bytes.Buffer
	w, err := pqarrow.NewFileWriter(rec.Schema(), &b, parquet.NewWriterProperties(), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		tb.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// hugeBody sets the body length of a stream's second message (its first
// record batch) to 1 TB.
func hugeBody(tb testing.TB, stream []byte) []byte {
	out := bytes.Clone(stream)
	first := 8 + int(binary.LittleEndian.Uint32(out[4:]))
	n := int(binary.LittleEndian.Uint32(out[first+4:]))
	meta := out[first+8 : first+8+n]
	body, err := ipcguard.CheckMessage(meta)
	if err != nil || body == 0 {
		tb.Fatalf("second message: body %d, %v", body, err)
	}
	for p := 0; p+8 <= len(meta); p++ {
		if int64(binary.LittleEndian.Uint64(meta[p:])) == body {
			binary.LittleEndian.PutUint64(meta[p:], 1<<40)
			return out
		}
	}
	tb.Fatal("no body length in the metadata")
	return nil
}

// jsonlSeeds are the JSON Lines seeds, valid and not.
func jsonlSeeds() map[string][]byte {
	return map[string][]byte{
		"valid":         jsonl(seedRows()),
		"empty":         {},
		"blank lines":   []byte("\n\n  \n"),
		"not an object": []byte("[1,2,3]\n"),
		"huge timestep": []byte(`{"layer":"a","timestep":-1.7e308,"activation":[1]}` + "\n" + `{"layer":"a","timestep":1.7e308,"activation":[2]}` + "\n"),
		"huge values":   []byte(`{"layer":"a","timestep":0,"activation":[3e38,-3e38]}` + "\n" + `{"layer":"a","timestep":1,"activation":[3e38,1]}` + "\n"),
		"tiny range":    []byte(`{"layer":"a","timestep":0,"activation":[1e-45,0]}` + "\n"),
		"beyond float":  []byte(`{"layer":"a","timestep":0,"activation":[1e39]}` + "\n"),
		"empty layer":   []byte(`{"layer":"","timestep":0,"activation":[1]}` + "\n"),
		"no values":     []byte(`{"layer":"a","timestep":0,"activation":[]}` + "\n"),
	}
}

// FuzzCalibJSONL collects arbitrary JSON Lines files.
func FuzzCalibJSONL(f *testing.F) {
	for _, s := range jsonlSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) { collectBytes(t, ".jsonl", data) })
}

// ipcSeeds are Arrow IPC files and streams of every variant, and streams
// whose lengths claim more than they hold.
func ipcSeeds(tb testing.TB) map[string][]byte {
	out := map[string][]byte{"empty": {}, "magic only": []byte("ARROW1\x00\x00ARROW1")}
	for name, rec := range variants(tb) {
		out["file "+name] = ipcFileBytes(tb, rec)
		out["stream "+name] = ipcStreamBytes(tb, rec)
	}
	rec := variants(tb)["float32"]
	out["stream lz4"] = ipcStreamBytes(tb, rec, ipc.WithLZ4())
	stream := out["stream float32"]
	out["stream huge metadata"] = append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, stream[8:]...)
	out["stream truncated"] = stream[:len(stream)*2/3]
	out["stream huge body"] = hugeBody(tb, stream)
	return out
}

// FuzzCalibIPC collects arbitrary Arrow IPC files and streams.
func FuzzCalibIPC(f *testing.F) {
	for _, s := range ipcSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) { collectBytes(t, ".arrow", data) })
}

// parquetSeeds are Parquet files of every variant.
func parquetSeeds(tb testing.TB) map[string][]byte {
	out := map[string][]byte{"empty": {}, "magic only": []byte("PAR1PAR1")}
	for name, rec := range variants(tb) {
		out[name] = parquetBytes(tb, rec)
	}
	out["hostile schema"] = hostileSchema(tb)
	out["hostile children"] = hostileChildren(tb)
	return out
}

// FuzzCalibParquet collects arbitrary Parquet files.
func FuzzCalibParquet(f *testing.F) {
	for _, s := range parquetSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) { collectBytes(t, ".parquet", data) })
}

// TestSeedsCollect pins what Collect says about each seed.
func TestSeedsCollect(t *testing.T) {
	accept := map[string]bool{"valid": true, "huge values": true, "tiny range": true,
		"file float32": true, "stream float32": true, "file float16": true, "stream float16": true,
		"file int32 timesteps": true, "stream int32 timesteps": true, "stream lz4": true,
		"float32": true, "float16": true, "int32 timesteps": true}
	want := map[string]string{
		"empty": "no rows", "blank lines": "no rows", "IPC empty": "not an Arrow IPC file or stream",
		"parquet empty": "malformed Parquet file: parquet: file too small", "parquet magic only": "malformed Parquet file",
		"hostile schema":   "malformed Parquet file: ARROW:schema metadata: malformed Arrow IPC metadata: schema.fields: vector of 2147483647",
		"hostile children": "malformed Parquet file: schema element 0 claims 2147483647 children, 5 elements follow it", "not an object": "row 0: not a JSON object",
		"huge timestep": "timesteps from -1.7e+308 to 1.7e+308", "beyond float": "activation[0] is +Inf",
		"empty layer": "row 0: empty layer name", "no values": `row 0: layer "a": empty activation`,
		"magic only": "malformed", "NaN timestep": "row 3: timestep is not finite",
		"null activation": "row 5: activation[1] is null", "timestep strings": "column timestep is utf8, want a number",
		"no activation": `needs one column "activation"`, "stream huge metadata": "message metadata of",
		"stream truncated": "malformed Arrow IPC stream", "stream huge body": "message body of 1099511627776 bytes",
	}
	check := func(kind, name, ext string, data []byte) {
		t.Run(kind+" "+name, func(t *testing.T) {
			st, err := collectBytes(t, ext, data)
			base := strings.TrimPrefix(strings.TrimPrefix(name, "file "), "stream ")
			switch {
			case accept[name] || accept[base] && kind == "parquet":
				if err != nil {
					t.Fatal(err)
				}
				if st.Layers["blk.q"] != nil && st.Layers["blk.q"].Channels != 4 && name != "huge values" {
					t.Fatalf("blk.q has %d channels", st.Layers["blk.q"].Channels)
				}
			case err == nil:
				t.Fatalf("accepted")
			default:
				w := want[name]
				if w == "" {
					w = want[base]
				}
				if w2, ok := want[kind+" "+name]; ok {
					w = w2
				}
				if w == "" || !strings.Contains(err.Error(), w) {
					t.Fatalf("got %v, want %q", err, w)
				}
			}
		})
	}
	for name, data := range jsonlSeeds() {
		check("jsonl", name, ".jsonl", data)
	}
	for name, data := range ipcSeeds(t) {
		check("IPC", name, ".arrow", data)
	}
	for name, data := range parquetSeeds(t) {
		check("parquet", name, ".parquet", data)
	}
}

// TestMain turns off the minimization of new fuzz inputs unless
// -test.fuzzminimizetime is given. The inputs are KB-sized files, and
// minimizing each new one (Go's default: up to 60 s) took most of a run:
// FuzzCalibParquet ran 1,529 executions in 2 minutes with minimization
// bounded to 3 s, 28,937 in 1 minute without. Crashing inputs are then
// kept as found.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		flag.Set("test.fuzzminimizetime", "0")
	}
	os.Exit(m.Run())
}

// hostileSchema is a Parquet file whose stored Arrow schema (ARROW:schema,
// an IPC message pqarrow decodes with arrow-go) claims 2^31-1 fields.
func hostileSchema(tb testing.TB) []byte {
	data := parquetBytes(tb, variants(tb)["float32"])
	for start := 0; start < len(data); start++ {
		// The base64 of an IPC message starts with the continuation marker.
		if !bytes.HasPrefix(data[start:], []byte("/////")) {
			continue
		}
		end := start
		for end < len(data) && strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", data[end]) >= 0 {
			end++
		}
		msg, err := base64.StdEncoding.DecodeString(string(data[start:end]))
		if err != nil {
			tb.Fatal(err)
		}
		for p := 8; p+4 <= len(msg); p++ {
			if binary.LittleEndian.Uint32(msg[p:]) != 3 { // the fields vector's length
				continue
			}
			bad := bytes.Clone(msg)
			binary.LittleEndian.PutUint32(bad[p:], 1<<31-1)
			if _, err := ipcguard.CheckMessage(bad[8:]); err != nil && strings.Contains(err.Error(), "schema.fields: vector of 2147483647") {
				out := bytes.Clone(data)
				copy(out[start:end], base64.StdEncoding.EncodeToString(bad))
				return out
			}
		}
	}
	tb.Fatal("no ARROW:schema fields vector found")
	return nil
}

// hostileChildren is a Parquet file whose root schema element claims
// 2^31-1 children (arrow-go sizes a slice by it: 32 GB).
func hostileChildren(tb testing.TB) []byte {
	data := parquetBytes(tb, variants(tb)["float32"])
	n := int(binary.LittleEndian.Uint32(data[len(data)-8:]))
	start := len(data) - 8 - n
	// Root element: name "schema" (field 4), then num_children (field 5,
	// i32, compact header 0x15) = 3 (zigzag varint 0x06).
	i := bytes.Index(data[start:], []byte("schema\x15\x06"))
	if i < 0 {
		tb.Fatal("no root schema element found")
	}
	at := start + i + len("schema\x15")
	out := append(bytes.Clone(data[:at]), 0xFE, 0xFF, 0xFF, 0xFF, 0x0F) // zigzag varint of 2^31-1
	out = append(out, data[at+1:len(data)-8]...)
	out = binary.LittleEndian.AppendUint32(out, uint32(n+4))
	return append(out, "PAR1"...)
}
