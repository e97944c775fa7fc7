package gguf

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/rs/zerolog"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/internal/fsutil"
	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/q80"
	"github.com/arrowquant/arrowquant/schema"
)

// InputError marks an error caused by what the caller asked for: an input
// that is not an ArrowQuant artifact or is of a newer format, an output
// that exists (without Overwrite) or whose directory is missing, --exact
// with a tensor that is not exact. The CLI exits with its usage code.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErrorf(format string, a ...any) error { return &InputError{fmt.Errorf(format, a...)} }

// ExportOptions configure Export.
type ExportOptions struct {
	Input     string // an artifact directory (quantize's output) or its model.arrow
	Output    string // the .gguf file to write
	Exact     bool   // refuse, before writing anything, any tensor that is not exact
	Overwrite bool   // replace an existing Output
	// Verify dequantizes every exported tensor with the reference
	// dequantizer (Dequantize) and compares it with the artifact's
	// reconstruction: exact tensors must match bit for bit, and every
	// cosine in the report is then measured (re-encoded tensors' always is).
	Verify bool
	Plan   *Plan  // nil: original names, general.architecture from config.json
	Arch   string // overrides general.architecture (e.g. "sdxl" for ComfyUI-GGUF)
	Mem    memory.Allocator
	Logger zerolog.Logger
	// Progress, when set, gets the tensor data bytes written and the total.
	Progress func(done, total int64)
}

// ReportSuffix is appended to the output path for the export report.
const ReportSuffix = ".report.json"

// Export writes the artifact at o.Input as a GGUF v3 file at o.Output (and
// its report at o.Output+ReportSuffix). The header goes first (every
// tensor's size is known from the artifact index), then the data, one
// artifact row at a time: memory stays bounded by a few rows. The file is
// written under a temporary name beside the output, with its magic
// zeroed until the end, and renamed into place only when complete.
func Export(ctx context.Context, o ExportOptions) (*Report, error) {
	start := time.Now()
	if o.Mem == nil {
		o.Mem = memory.DefaultAllocator
	}
	if o.Input == "" || o.Output == "" {
		return nil, inputErrorf("export: input and output are required")
	}
	inDir, path := o.Input, o.Input
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, artifact.FileName)
	} else {
		inDir = filepath.Dir(path)
	}
	r, err := openArtifact(path, o.Mem)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if err := checkOutput(o.Output, o.Overwrite); err != nil {
		return nil, err
	}
	e := &exporter{o: o, r: r, path: path}
	if err := e.plan(ctx, inDir); err != nil {
		return nil, err
	}
	if o.Exact {
		if err := e.refuseInexact(); err != nil {
			return nil, err
		}
	}
	if err := e.write(ctx); err != nil {
		return nil, err
	}
	e.rep.TimeS = time.Since(start).Seconds()
	if err := e.commit(); err != nil {
		return nil, err
	}
	return e.rep, nil
}

// openArtifact opens path as an ArrowQuant artifact, with errors that
// say what the file is instead.
func openArtifact(path string, mem memory.Allocator) (*artifact.Reader, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, inputErrorf("export: input %s: %w", path, err)
	}
	r, err := artifact.Open(path, mem)
	if err != nil {
		return nil, &InputError{fmt.Errorf("export: %s is not a readable ArrowQuant artifact (truncated, another format, or a newer format version): %w", path, err)}
	}
	if f := r.Meta(schema.MetaFormat); f != schema.FormatName {
		r.Close()
		return nil, inputErrorf("export: %s is an Arrow file but not an ArrowQuant artifact (%s = %q)", path, schema.MetaFormat, f)
	}
	return r, nil
}

func checkOutput(out string, overwrite bool) error {
	dir := filepath.Dir(out)
	st, err := os.Stat(dir)
	if err != nil {
		return inputErrorf("export: output directory %s: %w", dir, err)
	}
	if !st.IsDir() {
		return inputErrorf("export: output directory %s is not a directory", dir)
	}
	if st, err := os.Stat(out); err == nil {
		if st.IsDir() {
			return inputErrorf("export: output %s is a directory", out)
		}
		if !overwrite {
			return inputErrorf("export: output %s exists (use --overwrite to replace it)", out)
		}
	}
	return nil
}

// How a tensor's data is produced.
type mode int

const (
	modeCopy     mode = iota // fp16/bf16 rows as stored (F16/BF16)
	modeF32                  // the float32 reconstruction (1-D tensors, a folded producer)
	modeQ4K                  // repack 4-bit super-block rows
	modeQ2K                  // repack 2-bit super-block rows
	modeQ41                  // repack 4/2-bit per-group rows
	modeQ80                  // repack q8_0 rows
	modeReencode             // re-encode the reconstruction with our kernels
)

// Stored row kinds.
const (
	kindRaw   = "raw"
	kindGroup = "group"
	kindSuper = "super"
)

type tensorPlan struct {
	entry  schema.TensorEntry
	rep    *TensorReport
	kind   string // kindRaw, kindGroup, kindSuper (from its first row)
	method string
	bits   int
	group  int
	// cs is the tensor's channel_scales (first row), nil if none; applyCS
	// says whether the exported values include them (else a fold moved
	// them into the producer).
	cs      []float32
	applyCS bool
	fold    []float32 // producer: multiply by these (a folded pair's scales)
	mode    mode
	typ     Type
	ne      []uint64
	perm    []int
	bytes   uint64
	cosine  float64 // artifact's cosine against the source (its rows' column)
}

type exporter struct {
	o       ExportOptions
	r       *artifact.Reader
	path    string
	tensors []*tensorPlan // exported, in file order
	rep     *Report
	kvs     []KV
	tmp     string // temporary output while writing
}

// plan reads the metadata and each tensor's first row, then chooses every
// tensor's GGUF name, type and path, and the header's KVs.
func (e *exporter) plan(ctx context.Context, inDir string) error {
	r := e.r
	e.rep = &Report{Input: e.path, Output: e.o.Output, FormatVersion: r.Meta(schema.MetaFormatVersion), Model: r.Meta(schema.MetaModelName),
		Skipped: []string{}, Folds: []Fold{}, Tensors: []*TensorReport{}}
	plan := e.o.Plan
	if plan == nil {
		plan = &Plan{}
	}
	names := map[string]string{}
	for _, t := range r.Tensors() {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := t.Name
		if plan.TensorName != nil {
			n, ok := plan.TensorName(t.Name)
			if !ok {
				e.rep.Skipped = append(e.rep.Skipped, t.Name)
				continue
			}
			name = n
		}
		if prev, dup := names[name]; dup {
			return fmt.Errorf("export: tensors %q and %q both map to GGUF name %q", prev, t.Name, name)
		}
		names[name] = t.Name
		tp := &tensorPlan{entry: t, rep: &TensorReport{Name: t.Name, GGUFName: name}}
		if err := e.readFirstRow(tp); err != nil {
			return err
		}
		tp.ne = neOf(t.Shape)
		if plan.RowOrder != nil && len(t.Shape) >= 1 { // 1-D too: llama's q/k biases follow their rows
			tp.perm = plan.RowOrder(t.Name, t.Shape)
		}
		e.tensors = append(e.tensors, tp)
	}
	if err := e.planFolds(); err != nil {
		return err
	}
	for _, tp := range e.tensors {
		choose(tp)
		size, err := DataBytes(tp.typ, tp.ne)
		if err != nil {
			return fmt.Errorf("export: tensor %q: %w", tp.entry.Name, err)
		}
		tp.bytes = size
		rep := tp.rep
		rep.Type, rep.NE, rep.Bytes = tp.typ, tp.ne, size
		rep.CosineArtifact = 1
		if rep.Exact {
			c := tp.cosine
			rep.CosineSource = &c
		}
		e.rep.DataBytes += int64(size)
		e.rep.Params += tp.entry.NumElements()
		e.rep.Tensors = append(e.rep.Tensors, rep)
	}
	arch := e.o.Arch
	if arch == "" {
		arch = plan.Arch
	}
	if arch == "" {
		arch = archFromConfig(filepath.Join(inDir, "config.json"))
	}
	e.rep.Architecture = arch
	return e.headerKVs(plan)
}

// readFirstRow reads a tensor's first row: how its rows are stored, its
// cosine and its channel scales.
func (e *exporter) readFirstRow(tp *tensorPlan) error {
	t := tp.entry
	rec, err := e.r.Batch(t.FirstBatch)
	if err != nil {
		return fmt.Errorf("export: tensor %q: %w", t.Name, err)
	}
	defer rec.Release()
	if rec.NumRows() < 1 {
		return fmt.Errorf("export: tensor %q: empty first batch", t.Name)
	}
	row := rowOf(rec, 0)
	if row.name != t.Name || row.off != 0 {
		return fmt.Errorf("export: tensor %q: its first batch holds %q at offset %d", t.Name, row.name, row.off)
	}
	// Arrow strings alias the batch's body: clone what outlives the batch.
	tp.method, tp.bits, tp.group, tp.cosine = strings.Clone(row.method), row.bits, row.group, row.cosine
	switch {
	case row.method == schema.MethodRawF16 || row.method == schema.MethodRawBF16:
		tp.kind = kindRaw
	case row.groupParams != nil:
		tp.kind = kindSuper
	default:
		tp.kind = kindGroup
	}
	if row.cs != nil {
		tp.cs = append([]float32(nil), row.cs...)
		tp.applyCS = true
	}
	return nil
}

// planFolds moves channel scales into their producer where that is exact:
// the pair's producer is a stored 1-D tensor (a norm) and every consumer
// carries the same channel_scales, as many as the producer has elements.
// Its consumers then export their stored blocks and the producer exports
// γ·channel_scales. Other channel-scaled tensors are re-encoded with the
// scales applied.
func (e *exporter) planFolds() error {
	raw := e.r.Meta(schema.MetaEqualization)
	if raw == "" || raw == "null" {
		return nil
	}
	var eq struct {
		Pairs []struct {
			Producer  string   `json:"producer"`
			Consumers []string `json:"consumers"`
		} `json:"pairs"`
	}
	if err := json.Unmarshal([]byte(raw), &eq); err != nil {
		return fmt.Errorf("export: %s: bad %s metadata: %w", e.path, schema.MetaEqualization, err)
	}
	byName := map[string]*tensorPlan{}
	for _, tp := range e.tensors {
		byName[tp.entry.Name] = tp
	}
	for _, pair := range eq.Pairs {
		f := Fold{Producer: pair.Producer, Consumers: pair.Consumers}
		prod := byName[pair.Producer]
		why := ""
		switch {
		case prod == nil:
			why = "producer not exported"
		case len(prod.entry.Shape) != 1 || prod.kind != kindRaw:
			why = "producer is not a stored 1-D tensor (a norm): its rows would change"
		case prod.fold != nil || prod.cs != nil:
			why = "producer already scaled"
		}
		var scales []float32
		for _, c := range pair.Consumers {
			if why != "" {
				break
			}
			tp := byName[c]
			switch {
			case tp == nil:
				why = "consumer " + c + " not exported"
			case tp.cs == nil:
				why = "consumer " + c + " carries no channel scales (kept unscaled, e.g. a 16-bit fallback)"
			case int64(len(tp.cs)) != prod.entry.Shape[0]:
				why = fmt.Sprintf("consumer %s has %d channel scales for a producer of %d", c, len(tp.cs), prod.entry.Shape[0])
			case scales == nil:
				scales = tp.cs
			case !sameBits(scales, tp.cs):
				why = "consumers carry different channel scales (AWQ smoothing multiplied its own factors in)"
			}
		}
		if why == "" {
			prod.fold = scales
			for _, c := range pair.Consumers {
				byName[c].applyCS = false
			}
			f.Folded = true
		} else {
			f.Reason = why
		}
		e.rep.Folds = append(e.rep.Folds, f)
	}
	return nil
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// choose sets a tensor's GGUF type, path and report entry (docs/GGUF.md,
// "Type mapping"): exact where ggml has our math, else re-encoded to the
// nearest type llama.cpp's own fallback policy would pick.
func choose(tp *tensorPlan) {
	rep := tp.rep
	ne0 := int(tp.ne[0])
	stored := storedName(tp)
	rep.Stored = stored
	exact := func(m mode, t Type, how, reason string) {
		tp.mode, tp.typ, rep.Exact, rep.How, rep.Reason = m, t, true, how, reason
	}
	reencode := func(t Type, reason string) {
		tp.mode, tp.typ, rep.Exact, rep.How, rep.Reason = modeReencode, t, false, "re-encode", reason
	}
	if tp.cs != nil && !tp.applyCS {
		rep.ChannelScales = "folded into the producer"
	} else if tp.cs != nil {
		rep.ChannelScales = "applied (no exact fold)"
	}
	if len(tp.entry.Shape) <= 1 {
		// llama.cpp keeps norms and biases in F32; F32 holds any float32
		// reconstruction exactly (fp16/bf16 widen exactly).
		how, reason := "widen", "1-D tensor as F32 (llama.cpp's type for norms and biases); "+stored+" widens exactly"
		if tp.fold != nil {
			how, reason = "fold", "1-D producer multiplied by its consumers' channel scales (float32), the DFQ fold; F32"
		} else if tp.kind != kindRaw {
			how, reason = "dequantize", "1-D tensor as F32: the float32 reconstruction, exactly"
		}
		exact(modeF32, F32, how, reason)
		return
	}
	if tp.applyCS {
		reencode(reencodeType(tp, ne0), "channel scales (AWQ/DFQ) cannot be folded exactly: re-encoded with them applied")
		return
	}
	how := "repack"
	if tp.cs != nil {
		how = "repack (channel scales folded)"
	}
	switch {
	case tp.kind == kindRaw:
		t := F16
		if tp.method == schema.MethodRawBF16 {
			t = BF16
		}
		exact(modeCopy, t, "copy", "kept at 16 bits: "+t.String()+" as stored")
	case tp.kind == kindSuper && tp.bits == 4 && ne0%QK_K == 0:
		exact(modeQ4K, Q4_K, how, "INT4 super-blocks are Q4_K's (fp16 d/dmin, 6-bit sub-scales/mins over 32)")
	case tp.kind == kindSuper && tp.bits == 2 && ne0%QK_K == 0:
		exact(modeQ2K, Q2_K, how, "INT2 super-blocks are Q2_K's (fp16 d/dmin, 4-bit sub-scales/mins over 16)")
	case tp.kind == kindSuper:
		reencode(reencodeType(tp, ne0), superReason(tp.bits, ne0))
	case tp.kind == kindGroup && tp.bits == 4 && tp.group%32 == 0 && ne0%32 == 0:
		exact(modeQ41, Q4_1, how, fmt.Sprintf("INT4 groups of %d: each block of 32 takes its group's fp16 (scale, min) as Q4_1's (d, m)", tp.group))
	case tp.kind == kindGroup && tp.bits == 2 && tp.group%32 == 0 && ne0%32 == 0 && ne0%QK_K != 0:
		exact(modeQ41, Q4_1, how, fmt.Sprintf("INT2 groups of %d as Q4_1 (codes 0-3): rows of %d do not divide Q2_K's 256, and Q4_1 holds them exactly", tp.group, ne0))
	case tp.kind == kindGroup && tp.bits == 8 && tp.method == q80.Name && tp.group%32 == 0 && ne0%32 == 0:
		exact(modeQ80, Q8_0, how, "q8_0 groups are Q8_0's (d = scale, q = code - 128)")
	default:
		reencode(reencodeType(tp, ne0), groupReason(tp, ne0))
	}
}

// reencodeType is the nearest ggml type for a re-encoded tensor, with
// llama.cpp's fallback for rows that do not divide a type's blocks
// (Q2_K/Q4_K -> a 32-block type, then F16).
func reencodeType(tp *tensorPlan, ne0 int) Type {
	switch {
	case tp.kind == kindRaw && tp.method == schema.MethodRawBF16:
		return BF16
	case tp.kind == kindRaw:
		return F16
	case tp.bits == 2 && ne0%QK_K == 0:
		return Q2_K
	case tp.bits == 4 && ne0%QK_K == 0:
		return Q4_K
	case tp.bits == 8 && ne0%32 == 0:
		return Q8_0
	case ne0%32 == 0:
		return Q4_1
	}
	return F16
}

func superReason(bits, ne0 int) string {
	if bits == 8 {
		return "INT8 super-blocks have no ggml type: re-encoded as Q8_0 by the q8_0 method"
	}
	return fmt.Sprintf("rows of %d do not divide the 256-element super-blocks, which then cross rows: re-encoded", ne0)
}

func groupReason(tp *tensorPlan, ne0 int) string {
	switch {
	case ne0%32 != 0:
		return fmt.Sprintf("rows of %d do not divide ggml's 32-element blocks: F16 of the reconstruction (llama.cpp's fallback)", ne0)
	case tp.group%32 != 0:
		return fmt.Sprintf("groups of %d do not align with ggml's 32-element blocks", tp.group)
	case tp.bits == 2:
		return fmt.Sprintf("INT2 groups of %d have no 2-bit ggml type (Q2_K quantizes its scales): re-encoded as Q2_K by the dq method (Q4_1 would be exact at 5 bits per weight)", tp.group)
	case tp.bits == 8:
		return fmt.Sprintf("%s INT8 groups are asymmetric (min ≠ -128·scale): re-encoded as Q8_0 by the q8_0 method", tp.method)
	}
	return "no exact ggml type"
}

func storedName(tp *tensorPlan) string {
	switch tp.kind {
	case kindRaw:
		return tp.method
	case kindSuper:
		return fmt.Sprintf("%s INT%d super-blocks", tp.method, tp.bits)
	}
	return fmt.Sprintf("%s INT%d g%d", tp.method, tp.bits, tp.group)
}

// neOf is a row-major shape in ggml order (innermost first); a scalar is [1].
func neOf(shape []int64) []uint64 {
	if len(shape) == 0 {
		return []uint64{1}
	}
	ne := make([]uint64, len(shape))
	for i, d := range shape {
		ne[len(shape)-1-i] = uint64(d)
	}
	return ne
}

// archFromConfig is config.json's model_type, else its _class_name,
// lower-cased; "unknown" without either.
func archFromConfig(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	var c map[string]any
	if json.Unmarshal(b, &c) != nil {
		return "unknown"
	}
	for _, k := range []string{"model_type", "_class_name"} {
		if s, ok := c[k].(string); ok && s != "" {
			return strings.ToLower(s)
		}
	}
	return "unknown"
}

// headerKVs builds the header: general.*, the plan's KVs, arrowquant.*.
func (e *exporter) headerKVs(plan *Plan) error {
	r := e.r
	kvs := []KV{
		{"general.architecture", e.rep.Architecture},
		{"general.quantization_version", uint32(2)},
	}
	if name := r.Meta(schema.MetaModelName); name != "" {
		kvs = append(kvs, KV{"general.name", name})
	}
	reserved := map[string]bool{"general.architecture": true, "general.quantization_version": true, KeyAlignment: true}
	for _, kv := range plan.KVs {
		if reserved[kv.Key] || strings.HasPrefix(kv.Key, "arrowquant.") {
			return fmt.Errorf("export: the plan's metadata key %q is written by the exporter", kv.Key)
		}
		if kv.Key == "general.name" {
			kvs = slicesDeleteKey(kvs, "general.name")
		}
		kvs = append(kvs, kv)
	}
	if v, err := strconv.ParseUint(e.rep.FormatVersion, 10, 32); err == nil {
		kvs = append(kvs, KV{"arrowquant.format_version", uint32(v)})
	}
	for _, k := range []struct{ gguf, meta string }{
		{"arrowquant.model", schema.MetaModelName}, {"arrowquant.modality", schema.MetaModality},
		{"arrowquant.config", schema.MetaConfig}, {"arrowquant.time_groups", schema.MetaTimeGroups},
		{"arrowquant.equalization", schema.MetaEqualization},
	} {
		if v := r.Meta(k.meta); v != "" && v != "null" {
			kvs = append(kvs, KV{k.gguf, v})
		}
	}
	if rep := r.Meta(schema.MetaReport); rep != "" {
		var m map[string]any
		if err := json.Unmarshal([]byte(rep), &m); err == nil {
			delete(m, "layers") // per-layer cosines go to arrowquant.export
			b, _ := json.Marshal(m)
			kvs = append(kvs, KV{"arrowquant.report", string(b)})
		}
	}
	type exactEntry struct {
		Name     string  `json:"name"`
		GGUFName string  `json:"gguf_name"`
		Type     Type    `json:"gguf_type"`
		Exact    bool    `json:"exact"`
		How      string  `json:"how"`
		Cosine   float64 `json:"artifact_cosine"`
	}
	ex := struct {
		Exact     int          `json:"exact_tensors"`
		Reencoded int          `json:"reencoded_tensors"`
		Folds     []Fold       `json:"folds"`
		Tensors   []exactEntry `json:"tensors"`
	}{Folds: e.rep.Folds}
	for _, tp := range e.tensors {
		if tp.rep.Exact {
			ex.Exact++
		} else {
			ex.Reencoded++
		}
		ex.Tensors = append(ex.Tensors, exactEntry{tp.entry.Name, tp.rep.GGUFName, tp.typ, tp.rep.Exact, tp.rep.How, tp.cosine})
	}
	e.rep.ExactTensors, e.rep.ReencodedTensors = ex.Exact, ex.Reencoded
	b, _ := json.Marshal(ex)
	kvs = append(kvs, KV{"arrowquant.export", string(b)})
	e.kvs = kvs
	return nil
}

func slicesDeleteKey(kvs []KV, key string) []KV {
	out := kvs[:0]
	for _, kv := range kvs {
		if kv.Key != key {
			out = append(out, kv)
		}
	}
	return out
}

// refuseInexact is --exact: the tensors that are not exact, by name.
func (e *exporter) refuseInexact() error {
	var bad []string
	first := ""
	for _, tp := range e.tensors {
		if !tp.rep.Exact {
			bad = append(bad, fmt.Sprintf("%s (%s -> %v)", tp.entry.Name, tp.rep.Stored, tp.typ))
			if first == "" {
				first = tp.entry.Name + ": " + tp.rep.Reason
			}
		}
	}
	if len(bad) == 0 {
		return nil
	}
	more := ""
	if len(bad) > 5 {
		more = fmt.Sprintf(", and %d more", len(bad)-5)
		bad = bad[:5]
	}
	return inputErrorf("export --exact: %d of %d tensors would be re-encoded, not exported exactly: %s%s (%s; quantize with --target gguf for an exact export)",
		e.rep.ReencodedTensors, len(e.tensors), strings.Join(bad, ", "), more, first)
}

// magicHider zeroes the first 4 bytes written (the magic) so that an
// unfinished file never looks like a GGUF; commit writes the magic last.
type magicHider struct {
	w io.Writer
	n int
}

func (m *magicHider) Write(p []byte) (int, error) {
	if m.n < len(Magic) && len(p) > 0 {
		q := append([]byte(nil), p...)
		for i := 0; i < len(q) && m.n+i < len(Magic); i++ {
			q[i] = 0
		}
		p = q
	}
	n, err := m.w.Write(p)
	m.n += n
	return n, err
}

// write streams the file to a temporary name beside the output.
func (e *exporter) write(ctx context.Context) (err error) {
	dir, base := filepath.Split(e.o.Output)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*.partial")
	if err != nil {
		return fmt.Errorf("export: create a temporary file beside %s: %w", e.o.Output, err)
	}
	e.tmp = f.Name()
	if err := f.Chmod(0o644); err != nil { // CreateTemp makes it 0600
		f.Close()
		os.Remove(e.tmp)
		return fmt.Errorf("export: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(e.tmp)
			e.tmp = ""
		}
	}()
	aw := newAsyncWriter(&magicHider{w: f}, 4, 4<<20)
	closed := false
	defer func() {
		if !closed {
			aw.Close()
		}
	}()
	bw := bufio.NewWriterSize(aw, 4<<20)
	infos := make([]TensorInfo, len(e.tensors))
	for i, tp := range e.tensors {
		infos[i] = TensorInfo{Name: tp.rep.GGUFName, NE: tp.ne, Type: tp.typ}
	}
	gw, err := NewWriter(bw, e.kvs, infos)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	st := &streamState{e: e, gw: gw, total: e.rep.DataBytes}
	for _, tp := range e.tensors {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := st.tensor(ctx, tp); err != nil {
			return err
		}
	}
	if err := gw.Close(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export: write %s: %w", e.o.Output, err)
	}
	closed = true
	if err := aw.Close(); err != nil {
		return fmt.Errorf("export: write %s: %w", e.o.Output, err)
	}
	if _, err := f.WriteAt([]byte(Magic), 0); err != nil {
		return fmt.Errorf("export: write %s: %w", e.o.Output, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("export: fsync %s: %w", e.o.Output, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("export: close %s: %w", e.o.Output, err)
	}
	e.rep.FileBytes = gw.Size()
	e.rep.Verified = e.o.Verify
	if e.rep.Params > 0 {
		e.rep.BitsPerWeight = float64(e.rep.DataBytes) * 8 / float64(e.rep.Params)
	}
	return nil
}

// commit writes the report and renames both files into place.
func (e *exporter) commit() error {
	defer func() {
		if e.tmp != "" {
			os.Remove(e.tmp)
		}
	}()
	abs, err := filepath.Abs(e.o.Output)
	if err == nil {
		e.rep.Output = abs
	}
	reportPath := e.o.Output + ReportSuffix
	rt, err := os.CreateTemp(filepath.Dir(e.o.Output), "."+filepath.Base(reportPath)+".*.partial")
	if err != nil {
		return fmt.Errorf("export: report: %w", err)
	}
	werr := rt.Chmod(0o644)
	if werr == nil {
		_, werr = rt.Write(append(e.rep.JSON(), '\n'))
	}
	if werr == nil {
		werr = rt.Sync()
	}
	if cerr := rt.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(rt.Name())
		return fmt.Errorf("export: write %s: %w", reportPath, werr)
	}
	if err := os.Rename(e.tmp, e.o.Output); err != nil {
		os.Remove(rt.Name())
		return fmt.Errorf("export: %w", err)
	}
	e.tmp = ""
	if err := os.Rename(rt.Name(), reportPath); err != nil {
		os.Remove(rt.Name())
		return fmt.Errorf("export: %w", err)
	}
	return fsutil.SyncDir(filepath.Dir(e.o.Output))
}

// row is one artifact row's columns.
type row struct {
	name               string
	shape              []int64
	off, n             int64
	method             string
	bits, group        int
	codes, groupParams []byte
	scales, mins       []uint16
	cosine             float64
	cs                 []float32 // nil when null
}

func rowOf(rec arrow.RecordBatch, i int) row {
	col := func(idx int) arrow.Array { return rec.Column(idx) }
	r := row{
		name:   col(schema.IdxName).(*array.String).Value(i),
		off:    col(schema.IdxChunkOffset).(*array.Int64).Value(i),
		n:      col(schema.IdxChunkElems).(*array.Int64).Value(i),
		method: col(schema.IdxMethod).(*array.String).Value(i),
		bits:   int(col(schema.IdxBitWidth).(*array.Int8).Value(i)),
		group:  int(col(schema.IdxGroupSize).(*array.Int32).Value(i)),
		codes:  col(schema.IdxCodes).(*array.Binary).Value(i),
		cosine: col(schema.IdxCosine).(*array.Float64).Value(i),
	}
	r.scales, r.mins = halves(col(schema.IdxScales).(*array.List), i), halves(col(schema.IdxMins).(*array.List), i)
	if rec.NumCols() > schema.IdxGroupParams {
		if gp := col(schema.IdxGroupParams).(*array.Binary); gp.IsValid(i) {
			r.groupParams = gp.Value(i)
			if r.groupParams == nil {
				r.groupParams = []byte{}
			}
		}
	}
	if rec.NumCols() > schema.IdxChannelScales {
		if cs := col(schema.IdxChannelScales).(*array.List); cs.IsValid(i) {
			s, end := cs.ValueOffsets(i)
			r.cs = cs.ListValues().(*array.Float32).Float32Values()[s:end]
			if r.cs == nil {
				r.cs = []float32{}
			}
		}
	}
	return r
}

func halves(l *array.List, i int) []uint16 {
	s, e := l.ValueOffsets(i)
	vals := l.ListValues().(*array.Float16).Values()[s:e]
	out := make([]uint16, len(vals))
	for k, v := range vals {
		out[k] = v.Uint16()
	}
	return out
}

// streamState carries the buffers of the data pass.
type streamState struct {
	e      *exporter
	gw     *Writer
	done   int64
	total  int64
	enc    Encoder
	out    []byte
	stored []float32 // the row's stored values (no channel scales)
	recon  []float32 // the artifact's reconstruction (with channel scales)
	back   []float32 // the exported blocks dequantized
}

// tensor streams one tensor, row by row.
func (s *streamState) tensor(ctx context.Context, tp *tensorPlan) error {
	t := tp.entry
	rows := 1 // slices of the outermost dimension (a plan's RowOrder moves them)
	if len(t.Shape) >= 2 || (len(t.Shape) == 1 && tp.perm != nil) {
		rows = int(t.Shape[0])
	}
	rowBytes := 0
	if rows > 0 {
		rowBytes = int(tp.bytes) / rows
	}
	sink, err := newRowSink(s.gw, rows, rowBytes, tp.perm)
	if err != nil {
		return fmt.Errorf("export: tensor %q: %w", t.Name, err)
	}
	var sim kernels.Similarity
	measured := tp.mode == modeReencode || s.e.o.Verify
	next := int64(0)
	for b := t.FirstBatch; b < t.FirstBatch+t.NumBatches; b++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := s.e.r.Batch(b)
		if err != nil {
			return fmt.Errorf("export: tensor %q: %w", t.Name, err)
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			r := rowOf(rec, i)
			if err := s.checkRow(tp, r, next); err != nil {
				rec.Release()
				return fmt.Errorf("export: tensor %q, row at element %d: %w", t.Name, r.off, err)
			}
			next += r.n
			rs, err := s.row(tp, r)
			if err == nil {
				_, err = sink.Write(s.out)
			}
			if err != nil {
				rec.Release()
				return fmt.Errorf("export: tensor %q, row at element %d: %w", t.Name, r.off, err)
			}
			sim.Add(rs)
			s.done += int64(len(s.out))
			if s.e.o.Progress != nil {
				s.e.o.Progress(s.done, s.total)
			}
		}
		rec.Release()
	}
	if next != t.NumElements() {
		return fmt.Errorf("export: tensor %q: rows hold %d of its %d elements", t.Name, next, t.NumElements())
	}
	s.e.o.Logger.Debug().Str("tensor", t.Name).Str("gguf", tp.rep.GGUFName).Stringer("type", tp.typ).
		Bool("exact", tp.rep.Exact).Str("how", tp.rep.How).Msg("exported")
	if measured {
		c := sim.Cosine()
		tp.rep.CosineArtifact, tp.rep.CosineMeasured = c, true
		if !tp.rep.Exact {
			b := cosineBound(tp.cosine, c)
			tp.rep.CosineSourceBound = &b
		}
	}
	return nil
}

// cosineBound is the smallest cosine of a and c given cos(a, b) = c1 and
// cos(b, c) = c2: angles obey the triangle inequality.
func cosineBound(c1, c2 float64) float64 {
	a := math.Acos(max(-1, min(1, c1))) + math.Acos(max(-1, min(1, c2)))
	return math.Cos(min(math.Pi, a))
}

// checkRow refuses rows that do not continue the tensor as its first row
// began it (every row of a tensor shares its storage).
func (s *streamState) checkRow(tp *tensorPlan, r row, next int64) error {
	switch {
	case r.name != tp.entry.Name:
		return fmt.Errorf("batch holds a row of %q", r.name)
	case r.off != next:
		return fmt.Errorf("rows out of order: expected element %d", next)
	case r.n < 0 || r.off+r.n > tp.entry.NumElements():
		return fmt.Errorf("%d elements run past the tensor's %d", r.n, tp.entry.NumElements())
	case r.method != tp.method || r.bits != tp.bits || r.group != tp.group || (r.groupParams != nil) != (tp.kind == kindSuper):
		return fmt.Errorf("stored as %s INT%d g%d, unlike the tensor's first row (%s)", r.method, r.bits, r.group, tp.rep.Stored)
	case r.off > 0 && r.cs != nil:
		return fmt.Errorf("channel_scales on a row other than the first")
	}
	n := r.n
	switch tp.kind {
	case kindRaw:
		if int64(len(r.codes)) != 2*n {
			return fmt.Errorf("%d bytes for %d 16-bit values", len(r.codes), n)
		}
	case kindGroup:
		if r.bits != 2 && r.bits != 4 && r.bits != 8 || r.group < 4 || r.group%4 != 0 {
			return fmt.Errorf("bit width %d, group size %d", r.bits, r.group)
		}
		ng := kernels.NumGroups(n, r.group)
		if int64(len(r.codes)) != kernels.PackedLen(n, r.bits) || int64(len(r.scales)) != ng || int64(len(r.mins)) != ng {
			return fmt.Errorf("%d code bytes, %d scales, %d mins for %d elements in groups of %d", len(r.codes), len(r.scales), len(r.mins), n, r.group)
		}
	case kindSuper:
		if _, _, _, err := kernels.SuperBlockLayout(r.bits); err != nil {
			return err
		}
		if int64(len(r.codes)) != kernels.PackedLen(n, r.bits) || int64(len(r.groupParams)) != kernels.SuperBlockParamsLen(n, r.bits) {
			return fmt.Errorf("%d code bytes and %d group_params bytes for %d elements", len(r.codes), len(r.groupParams), n)
		}
	}
	return nil
}

// row converts one artifact row to GGUF bytes in s.out and returns the
// similarity of the exported values with the artifact's reconstruction
// (zero unless measured).
func (s *streamState) row(tp *tensorPlan, r row) (kernels.Similarity, error) {
	n := int(r.n)
	blk := tp.typ.BlockSize()
	if n%blk != 0 {
		return kernels.Similarity{}, fmt.Errorf("%d elements are not whole %v blocks", n, tp.typ)
	}
	s.out = grow(&s.out, n/blk*tp.typ.BlockBytes())
	verify := s.e.o.Verify
	needStored := tp.mode == modeF32 || tp.mode == modeReencode || verify
	if needStored {
		s.stored = growF(&s.stored, n)
		if err := decodeStored(s.stored, tp, r); err != nil {
			return kernels.Similarity{}, err
		}
	}
	var err error
	switch tp.mode {
	case modeCopy:
		copy(s.out, r.codes)
	case modeQ4K:
		err = Q4KFromSuperBlocks(s.out, r.codes, r.groupParams, n)
	case modeQ2K:
		err = Q2KFromSuperBlocks(s.out, r.codes, r.groupParams, n)
	case modeQ41:
		err = Q41FromGroups(s.out, r.codes, r.scales, r.mins, r.bits, r.group, n)
	case modeQ80:
		err = Q80FromGroups(s.out, r.codes, r.scales, r.mins, r.group, n)
	case modeF32:
		v := s.stored
		if tp.fold != nil || tp.applyCS {
			v = s.scaled(tp, r, s.stored)
		}
		fp.EncodeF32(s.out, v)
	case modeReencode:
		v := s.stored
		if tp.applyCS {
			v = s.scaled(tp, r, s.stored)
		}
		err = s.enc.Encode(tp.typ, v, s.out, r.off)
	}
	if err != nil || !(tp.mode == modeReencode || verify) {
		return kernels.Similarity{}, err
	}
	// The exported values (times the channel scales a fold moved to the
	// producer) against the artifact's reconstruction.
	s.back = growF(&s.back, n)
	if err := Dequantize(tp.typ, s.out, s.back); err != nil {
		return kernels.Similarity{}, err
	}
	recon := s.stored
	if tp.cs != nil {
		recon = s.scaledInto(&s.recon, tp.cs, r, s.stored)
		if !tp.applyCS {
			artifact.ScaleChannels(s.back, r.off, tp.cs)
		}
	}
	if tp.fold != nil {
		recon = s.scaledInto(&s.recon, tp.fold, r, s.stored)
	}
	if verify && tp.rep.Exact {
		for k := range recon {
			if math.Float32bits(recon[k]) != math.Float32bits(s.back[k]) {
				return kernels.Similarity{}, fmt.Errorf("exact export differs from the artifact at element %d: %v, artifact %v", r.off+int64(k), s.back[k], recon[k])
			}
		}
	}
	return kernels.SimilarityOf(recon, s.back), nil
}

// scaled is the stored values times the channel scales the export
// applies to this tensor (its own, or a fold's for a producer).
func (s *streamState) scaled(tp *tensorPlan, r row, stored []float32) []float32 {
	cs := tp.cs
	if tp.fold != nil {
		cs = tp.fold
	}
	return s.scaledInto(&s.recon, cs, r, stored)
}

func (s *streamState) scaledInto(buf *[]float32, cs []float32, r row, stored []float32) []float32 {
	v := growF(buf, len(stored))
	copy(v, stored)
	artifact.ScaleChannels(v, r.off, cs)
	return v
}

// decodeStored writes a row's stored values (without channel scales):
// the artifact's dequantization kernels, bit for bit.
func decodeStored(dst []float32, tp *tensorPlan, r row) error {
	switch tp.kind {
	case kindRaw:
		if r.method == schema.MethodRawF16 {
			fp.DecodeHalf(dst, r.codes)
		} else {
			fp.DecodeBF16(dst, r.codes)
		}
	case kindGroup:
		kernels.DequantizeGroups(dst, r.codes, r.scales, r.mins, r.bits, r.group)
	case kindSuper:
		return kernels.DequantizeSuperBlocks(dst, r.codes, r.groupParams, r.bits)
	}
	return nil
}

func growF(b *[]float32, n int) []float32 {
	if cap(*b) < n {
		*b = make([]float32, n)
	}
	return (*b)[:n]
}
