package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/spf13/cobra"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
)

func newInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect OUT_DIR|model.arrow [--json]",
		Short: "Show a quantized model tensor by tensor: shape, dtype -> bits/method, bytes before -> after, cosine, fallback",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, fileBytes, err := loadResult(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(inspection(res, fileBytes))
			}
			printTable(cmd.OutOrStdout(), res, fileBytes)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the table as JSON: {tensors: [...], totals: {...}}")
	return cmd
}

// loadResult reads a quantized model's result: report.json of an output
// directory, else the report embedded in model.arrow's metadata. It also
// returns the artifact file's size.
func loadResult(path string) (*quant.Result, int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, usagef("%s: no such output directory or model.arrow", path)
	}
	dir, file := path, path
	if st.IsDir() {
		file = filepath.Join(path, artifact.FileName)
	} else {
		dir = filepath.Dir(path)
	}
	fst, err := os.Stat(file)
	if err != nil {
		return nil, 0, usagef("%s holds no %s: give an output directory of quantize or pull", dir, artifact.FileName)
	}
	var res quant.Result
	if b, err := os.ReadFile(filepath.Join(dir, artifact.ReportName)); err == nil && filepath.Base(file) == artifact.FileName {
		if err := json.Unmarshal(b, &res); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", filepath.Join(dir, artifact.ReportName), err)
		}
		return &res, fst.Size(), nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, 0, err
	}
	r, err := artifact.Open(file, memory.DefaultAllocator)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	raw := r.Meta(schema.MetaReport)
	if raw == "" {
		return nil, 0, fmt.Errorf("%s has no embedded report (%s)", file, schema.MetaReport)
	}
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		return nil, 0, fmt.Errorf("%s: embedded report: %w", file, err)
	}
	return &res, fst.Size(), nil
}

// tensorRow is one line of the table.
type tensorRow struct {
	Name        string  `json:"name"`
	Shape       []int64 `json:"shape"`
	DType       string  `json:"dtype"`
	Bits        int     `json:"bits"`
	Method      string  `json:"method"`
	GroupSize   int     `json:"group_size"`
	BytesBefore int64   `json:"bytes_before"`
	BytesAfter  int64   `json:"bytes_after"`
	Cosine      float64 `json:"cosine"`
	Fallback    string  `json:"fallback,omitempty"`
	Note        string  `json:"note,omitempty"` // kept by policy, protected, equalized
}

type inspectTotals struct {
	Tensors        int     `json:"tensors"`
	Params         int64   `json:"params"`
	SourceBytes    int64   `json:"source_bytes"`
	PayloadBytes   int64   `json:"payload_bytes"` // codes, params and kept values: the result's artifact_bytes
	FileBytes      int64   `json:"file_bytes"`    // model.arrow on disk: payload plus Arrow framing and metadata
	BitsPerWeight  float64 `json:"bits_per_weight"`
	Ratio          float64 `json:"compression_ratio"`
	MeanCosine     float64 `json:"cosine_similarity"`
	MinCosine      float64 `json:"min_cosine_similarity"`
	Fallbacks      int     `json:"fallbacks"`
	BitWidth       int     `json:"bit_width"`
	ActualBitWidth int     `json:"actual_bit_width"`
}

func inspection(res *quant.Result, fileBytes int64) map[string]any {
	rows := make([]tensorRow, len(res.Layers))
	for i, l := range res.Layers {
		rows[i] = tensorRow{Name: l.Name, Shape: l.Shape, DType: l.DType, Bits: l.BitWidth, Method: l.Method,
			GroupSize: l.GroupSize, BytesBefore: l.Params * dtypeBytes(l.DType), BytesAfter: l.Bytes,
			Cosine: l.CosineSimilarity, Note: firstNonEmpty(l.Policy, l.Protection, l.Equalization)}
		if l.FallbackReason != nil {
			rows[i].Fallback = *l.FallbackReason
		}
	}
	t := inspectTotals{Tensors: len(res.Layers), Params: res.NumParams, SourceBytes: res.SourceBytes,
		PayloadBytes: res.ArtifactBytes, FileBytes: fileBytes, BitsPerWeight: res.BitsPerWeight,
		MeanCosine: res.CosineSimilarity, MinCosine: res.MinCosineSimilarity, Fallbacks: len(res.Fallbacks),
		BitWidth: res.BitWidth, ActualBitWidth: res.ActualBitWidth}
	if fileBytes > 0 {
		t.Ratio = float64(res.SourceBytes) / float64(fileBytes)
	}
	return map[string]any{"tensors": rows, "totals": t}
}

// printTable prints the per-tensor table and the totals, the view
// llama-quantize users expect.
func printTable(out io.Writer, res *quant.Result, fileBytes int64) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "tensor\tshape\tdtype -> bits/method\tbytes before -> after\tcosine\tfallback / note\t")
	for _, l := range res.Layers {
		quantTo := fmt.Sprintf("%d/%s", l.BitWidth, l.Method)
		if l.GroupSize > 0 {
			quantTo += fmt.Sprintf(" g%d", l.GroupSize)
		}
		note := firstNonEmpty(l.Policy, l.Protection, l.Equalization)
		if l.FallbackReason != nil {
			note = *l.FallbackReason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s -> %s\t%s -> %s\t%.5f\t%s\t\n", l.Name, shapeString(l.Shape), l.DType, quantTo,
			humanBytes(l.Params*dtypeBytes(l.DType)), humanBytes(l.Bytes), l.CosineSimilarity, truncateNote(note))
	}
	tw.Flush()
	fmt.Fprintf(out, "\n%d tensors, %s params: %s -> %s payload (%.3f bits/weight)", len(res.Layers), humanCount(res.NumParams),
		humanBytes(res.SourceBytes), humanBytes(res.ArtifactBytes), res.BitsPerWeight)
	if fileBytes > 0 {
		fmt.Fprintf(out, " in a %s file (%.2fx smaller; the rest is Arrow framing and metadata)", humanBytes(fileBytes), float64(res.SourceBytes)/float64(fileBytes))
	}
	fmt.Fprintf(out, "\ncosine %.5f mean, %.5f min; INT%d requested, widest used %d; %d fallbacks\n",
		res.CosineSimilarity, res.MinCosineSimilarity, res.BitWidth, res.ActualBitWidth, len(res.Fallbacks))
}

func dtypeBytes(dt string) int64 {
	switch dt {
	case "F64":
		return 8
	case "F32":
		return 4
	}
	return 2
}

func shapeString(s []int64) string {
	p := make([]string, len(s))
	for i, d := range s {
		p[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(p, ", ") + "]"
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func truncateNote(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}
