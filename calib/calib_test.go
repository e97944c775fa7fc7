package calib

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// fixture: two layers, 4 channels, timesteps 0..99; channel 3 of layer "a"
// grows with the timestep (an outlier channel that moves with time).
func fixture() []Row {
	var rows []Row
	for t := 0; t < 100; t++ {
		for _, l := range []string{"a", "b"} {
			x := []float32{1, -2, 0.5, float32(t) / 10}
			if l == "b" {
				x = []float32{float32(t % 3), 1, 1, 1}
			}
			rows = append(rows, Row{Layer: l, Timestep: float64(t), Activation: x})
		}
	}
	return rows
}

var calibSchema = arrow.NewSchema([]arrow.Field{
	{Name: ColLayer, Type: arrow.BinaryTypes.String},
	{Name: ColTimestep, Type: arrow.PrimitiveTypes.Float64},
	{Name: ColActivation, Type: arrow.ListOf(arrow.PrimitiveTypes.Float32)},
}, nil)

func record(rows []Row) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, calibSchema)
	defer b.Release()
	for _, r := range rows {
		b.Field(0).(*array.StringBuilder).Append(r.Layer)
		b.Field(1).(*array.Float64Builder).Append(r.Timestep)
		lb := b.Field(2).(*array.ListBuilder)
		lb.Append(true)
		lb.ValueBuilder().(*array.Float32Builder).AppendValues(r.Activation, nil)
	}
	return b.NewRecordBatch()
}

func writeAll(t *testing.T, dir string, rows []Row) map[string]string {
	t.Helper()
	paths := map[string]string{}
	// JSONL
	p := filepath.Join(dir, "c.jsonl")
	f, _ := os.Create(p)
	enc := json.NewEncoder(f)
	for _, r := range rows {
		enc.Encode(map[string]any{"layer": r.Layer, "timestep": r.Timestep, "activation": r.Activation})
	}
	f.Close()
	paths["jsonl"] = p
	rec := record(rows)
	defer rec.Release()
	// Arrow IPC file, in two batches
	p = filepath.Join(dir, "c.arrow")
	f, _ = os.Create(p)
	w, err := ipc.NewFileWriter(f, ipc.WithSchema(calibSchema))
	if err != nil {
		t.Fatal(err)
	}
	half := rec.NewSlice(0, rec.NumRows()/2)
	rest := rec.NewSlice(rec.NumRows()/2, rec.NumRows())
	w.Write(half)
	w.Write(rest)
	half.Release()
	rest.Release()
	w.Close()
	f.Close()
	paths["arrow"] = p
	// Arrow IPC stream
	p = filepath.Join(dir, "c.arrows")
	f, _ = os.Create(p)
	sw := ipc.NewWriter(f, ipc.WithSchema(calibSchema))
	sw.Write(rec)
	sw.Close()
	f.Close()
	paths["arrows"] = p
	// Parquet
	p = filepath.Join(dir, "c.parquet")
	f, _ = os.Create(p)
	pw, err := pqarrow.NewFileWriter(calibSchema, f, parquet.NewWriterProperties(), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := pw.Write(rec); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	paths["parquet"] = p
	return paths
}

func TestFormatsAgreeAndStats(t *testing.T) {
	paths := writeAll(t, t.TempDir(), fixture())
	var ref *Stats
	for kind, p := range paths {
		st, err := Collect(p, Options{NumTimeGroups: 4, SamplesPerLayer: 100})
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if st.RowsRead != 200 || st.RowsUsed != 200 || len(st.TimeGroups) != 4 {
			t.Fatalf("%s: read %d used %d groups %d", kind, st.RowsRead, st.RowsUsed, len(st.TimeGroups))
		}
		a := st.Layers["a"]
		// group 0 covers t in [0, 24.75): 25 rows; channel 3 mean |x| = mean(t/10) = 1.2
		if a.Groups[0].Rows != 25 || math.Abs(float64(a.Groups[0].MeanAbs[3])-1.2) > 1e-5 {
			t.Fatalf("%s: group 0 rows %d meanabs %v", kind, a.Groups[0].Rows, a.Groups[0].MeanAbs)
		}
		if a.Groups[3].Max != 9.9 || a.Groups[3].Min != -2 {
			t.Errorf("%s: group 3 max %v min %v", kind, a.Groups[3].Max, a.Groups[3].Min)
		}
		// INT8 params cover [-2, 9.9] with zero exact.
		act := a.Groups[3].Act
		if act.Zero != int32(math.Round(2/float64(act.Scale))) || math.Abs(float64(act.Scale)-11.9/255) > 1e-6 {
			t.Errorf("%s: act params %+v", kind, act)
		}
		if ref == nil {
			ref = st
			continue
		}
		for _, l := range []string{"a", "b"} {
			for g := range ref.Layers[l].Groups {
				x, y := ref.Layers[l].Groups[g], st.Layers[l].Groups[g]
				if x.Rows != y.Rows || x.Act != y.Act || x.MeanSq[3] != y.MeanSq[3] {
					t.Errorf("%s differs from the first format at layer %s group %d", kind, l, g)
				}
			}
		}
	}
}

func TestSamplingEvenAcrossGroups(t *testing.T) {
	p := writeAll(t, t.TempDir(), fixture())["jsonl"]
	st, err := Collect(p, Options{NumTimeGroups: 4, SamplesPerLayer: 10})
	if err != nil {
		t.Fatal(err)
	}
	if st.RowsUsed != 20 {
		t.Fatalf("used %d rows, want 10 per layer", st.RowsUsed)
	}
	for _, g := range st.Layers["a"].Groups {
		if g.Rows < 2 || g.Rows > 3 {
			t.Errorf("group rows %d: 10 samples over 4 groups must be 2 or 3 each", g.Rows)
		}
	}
}

func TestImportanceEqualWeightPerGroup(t *testing.T) {
	p := writeAll(t, t.TempDir(), fixture())["jsonl"]
	st, err := Collect(p, Options{NumTimeGroups: 2, SamplesPerLayer: 200})
	if err != nil {
		t.Fatal(err)
	}
	imp := st.Layers["a"].Importance()
	// Channel 3 grows with t: it must matter, but the late group (larger
	// inputs overall) must not make it dominate beyond its normalized share.
	if imp[3] <= imp[2] || imp[1] <= imp[0] {
		t.Errorf("importance %v", imp)
	}
	var sum float32
	for _, v := range imp {
		sum += v
	}
	if math.Abs(float64(sum)-4) > 1e-4 { // each group normalized to mean 1 over 4 channels
		t.Errorf("importance sums to %v, want 4", sum)
	}
}

func TestMalformedFilesNameTheProblem(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct{ body, want string }{
		"missing.jsonl":  {`{"layer":"a","timestep":1}` + "\n", `needs "layer", "timestep" and "activation"`},
		"mismatch.jsonl": {`{"layer":"a","timestep":1,"activation":[1,2]}` + "\n" + `{"layer":"a","timestep":2,"activation":[1]}` + "\n", `row 1: layer "a": activation has 1 values`},
		"nan.jsonl":      {`{"layer":"a","timestep":1,"activation":[1,null]}` + "\n", "activation[1] is null"},
		"garbage.jsonl":  {"not json\n", "row 0"},
		"x.csv":          {"a,b\n", "unknown extension"},
		"bad.arrow":      {"not arrow", "not an Arrow IPC"},
	}
	for name, c := range cases {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(c.body), 0o644)
		_, err := Collect(p, Options{NumTimeGroups: 2, SamplesPerLayer: 8})
		var fe *FormatError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want a FormatError naming the file and %q", name, err, c.want)
		}
	}
}
