package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/arrowquant/arrowquant/gguf"
	"github.com/arrowquant/arrowquant/gguf/hfarch"
)

func newExportCmd() *cobra.Command {
	var (
		input, output, format, arch      string
		exact, overwrite, asJSON, verify bool
		runnable                         bool
	)
	cmd := &cobra.Command{
		Use:   "export --model DIR|model.arrow --format gguf --output model.gguf [--exact] [--runnable] [--overwrite] [--verify] [--json]",
		Short: "Export a quantized artifact as GGUF for llama.cpp / ggml, bit-exact where the formats agree (docs/GGUF.md)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if input == "" || output == "" {
				return usagef("export needs --model and --output")
			}
			if strings.ToLower(format) != "gguf" {
				return usagef("--format %q: the only export format is gguf", format)
			}
			plan, err := gguf.PlanFor(input, runnable)
			var ae *gguf.ArchError
			if errors.As(err, &ae) && runnable {
				return usagef("--runnable: %v", err)
			}
			if err != nil {
				return err
			}
			bar := newProgress(0, "exporting", true)
			rep, err := gguf.Export(cmd.Context(), gguf.ExportOptions{
				Input: input, Output: output, Exact: exact, Overwrite: overwrite, Verify: verify,
				Plan: plan, Arch: arch, Logger: newLogger(),
				Progress: func(done, total int64) { bar.update(done, total, "") },
			})
			bar.finish(err)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				fmt.Fprintln(out, string(rep.JSON()))
				return nil
			}
			printExportSummary(out, rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&input, "model", "", "the quantized model: an output directory of quantize or pull (or its model.arrow)")
	addAlias(f, &input, "input", "model")
	f.StringVar(&output, "output", "", "GGUF file to write (its directory must exist); the report goes to OUTPUT"+gguf.ReportSuffix)
	f.StringVar(&format, "format", "gguf", "export format: gguf")
	f.BoolVar(&exact, "exact", false, "refuse (exit 2, nothing written) if any tensor would be re-encoded rather than exported bit-exactly")
	f.BoolVar(&overwrite, "overwrite", false, "replace an existing output file")
	f.BoolVar(&verify, "verify", false, "dequantize every exported tensor and compare with the artifact (exact ones bit for bit); measures every cosine")
	f.StringVar(&arch, "arch", "", "general.architecture to write (default: config.json's model_type or _class_name, lower-cased)")
	f.BoolVar(&asJSON, "json", false, "print the export report as JSON")
	f.BoolVar(&runnable, "runnable", false, "require a model llama.cpp can run: a known architecture ("+strings.Join(hfarch.Known(), ", ")+") with its hyper-parameters and tokenizer, else exit 2")
	return cmd
}

func printExportSummary(out io.Writer, r *gguf.Report) {
	fmt.Fprintf(out, "exported %d tensors (%s params) in %.1fs -> %s\n", len(r.Tensors), humanCount(r.Params), r.TimeS, r.Output)
	fmt.Fprintf(out, "  exact           %d bit-exact, %d re-encoded\n", r.ExactTensors, r.ReencodedTensors)
	fmt.Fprintf(out, "  size            %.1f MB (%.3f bits/weight of tensor data)\n", float64(r.FileBytes)/(1<<20), r.BitsPerWeight)
	types := map[gguf.Type]int{}
	var order []gguf.Type
	minCos, minName := 2.0, ""
	for _, t := range r.Tensors {
		if types[t.Type] == 0 {
			order = append(order, t.Type)
		}
		types[t.Type]++
		if !t.Exact && t.CosineArtifact < minCos {
			minCos, minName = t.CosineArtifact, t.Name
		}
	}
	var parts []string
	for _, t := range order {
		parts = append(parts, fmt.Sprintf("%s %d", t, types[t]))
	}
	fmt.Fprintf(out, "  types           %s\n", strings.Join(parts, ", "))
	folded := 0
	for _, f := range r.Folds {
		if f.Folded {
			folded++
		}
	}
	if len(r.Folds) > 0 {
		fmt.Fprintf(out, "  channel scales  %d of %d equalization pairs folded into their producer\n", folded, len(r.Folds))
	}
	if minName != "" {
		fmt.Fprintf(out, "  re-encoded      lowest cosine vs the artifact %.6f (%s)\n", minCos, minName)
	}
	fmt.Fprintf(out, "  architecture    %s; report %s\n", r.Architecture, r.Output+gguf.ReportSuffix)
}
