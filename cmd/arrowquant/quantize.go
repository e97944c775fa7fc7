package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/local"
	"github.com/arrowquant/arrowquant/quant"
)

// configFlags are the configuration flags shared by quantize and push.
type configFlags struct {
	file, profile string
	// flag name -> config key; a flag overrides only when set explicitly.
	keys map[string]string
}

const methodFlagHelp = "force one quantization method at every bit width: minmax, lsq, clip, dq (double-quantized super-blocks: 2.625 / 4.5 bits per weight at INT2 / INT4, group size set by the format), or q8_0 (INT8 with ggml's Q8_0 math: symmetric, exact GGUF export at group 32; minmax's params at INT2/INT4); default: clip for INT2, lsq for INT4, minmax for INT8"

// checkMethodFlag refuses an unknown --method as a usage error (exit 2).
func checkMethodFlag(method string) error {
	if err := quant.CheckMethod(method); err != nil {
		return usagef("--method: %v", err)
	}
	return nil
}

func addConfigFlags(fs *pflag.FlagSet) *configFlags {
	c := &configFlags{keys: map[string]string{
		"bit-width": "bit_width", "group-size": "group_size", "num-time-groups": "num_time_groups",
		"min-accuracy": "min_accuracy", "modality": "modality", "calibration-samples": "calibration_samples",
		"fail-fast": "fail_fast", "threads": "num_threads", "streaming": "enable_streaming",
		"time-aware": "enable_time_aware", "spatial": "enable_spatial", "target": "target",
	}}
	fs.StringVar(&c.file, "config", "", "YAML configuration file (see config.example.yaml)")
	fs.StringVar(&c.profile, "profile", "", "deployment profile giving the base presets: edge, local or cloud")
	fs.Int("bit-width", 4, "target bit width: 2, 4 or 8")
	fs.Int("group-size", 128, "elements per quantization group: 32, 64, 128 or 256")
	fs.Int("num-time-groups", 10, "time groups for time-aware quantization (1-100)")
	fs.Float64("min-accuracy", 0.85, "minimum cosine similarity per tensor before falling back to more bits")
	fs.String("modality", "", "text, code, image or audio (default: detect from model metadata)")
	fs.Int("calibration-samples", 128, "calibration samples per layer")
	fs.Bool("fail-fast", false, "stop at the first tensor below min-accuracy instead of falling back")
	fs.Int("threads", 0, "worker threads (0 = all cores)")
	fs.Bool("streaming", false, "one tensor in flight at a time (bounded memory)")
	fs.Bool("time-aware", true, "time-aware quantization: timestep-conditioned layers at >= 8 bits, time groups in the metadata")
	fs.Bool("spatial", true, "spatial quantization: channel equalization between Llama-family layer pairs (calibration-free) and, with --calibration, AWQ-style smoothing, where they lower the estimated output error")
	fs.String("target", "", "export target: gguf makes every choice exact in GGUF (dq super-blocks / INT4 g32 / q8_0 per tensor, equalization only into norms; see docs/GGUF.md), so `arrowquant export --exact` succeeds (env ARROW_QUANT_TARGET)")
	return c
}

// resolve applies presets < YAML < ARROW_QUANT_* env < explicit flags.
func (c *configFlags) resolve(fs *pflag.FlagSet) (config.DiffusionQuantConfig, error) {
	if err := checkConfigFile(c.file); err != nil {
		return config.DiffusionQuantConfig{}, err
	}
	over, flagOf := map[string]string{}, map[string]string{}
	fs.Visit(func(f *pflag.Flag) {
		if key, ok := c.keys[f.Name]; ok {
			over[key], flagOf[key] = f.Value.String(), "--"+f.Name
		}
	})
	return config.Resolve(config.Options{Profile: c.profile, YAMLPath: c.file, Lookup: os.LookupEnv, Overrides: over,
		OverrideSource: func(key string) string { return flagOf[key] }})
}

// checkTargetMethod refuses --method with target gguf (exit 2): the
// target chooses every tensor's method.
func checkTargetMethod(cfg config.DiffusionQuantConfig, method string) error {
	if cfg.Target == config.TargetGGUF && method != quant.DefaultMethod {
		return usagef("--method %s cannot be combined with target gguf, which chooses each tensor's method (dq, lsq INT4 g32, q8_0)", method)
	}
	return nil
}

func newQuantizeCmd() *cobra.Command {
	var (
		model, output, calibration, method string
		asJSON, overwrite, force           bool
	)
	cmd := &cobra.Command{
		Use:   "quantize --model DIR --output DIR [flags]",
		Short: "Quantize a Hugging Face model directory (safetensors) into an ArrowQuant artifact",
		Args:  exactArgs(0),
	}
	cf := addConfigFlags(cmd.Flags())
	cmd.Flags().StringVar(&model, "model", "", "model directory (model.safetensors or a sharded index)")
	cmd.Flags().StringVar(&output, "output", "", "output directory (created; must be empty unless --overwrite)")
	cmd.Flags().StringVar(&calibration, "calibration", "", "calibration activations (.arrow, .parquet or .jsonl rows of layer, timestep, activation; see docs/FORMAT.md): INT8 activation parameters per layer and time group, importance-weighted weight search, AWQ smoothing with --spatial")
	cmd.Flags().StringVar(&method, "method", quant.DefaultMethod, methodFlagHelp)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object on stdout")
	addOverwriteFlags(cmd.Flags(), &overwrite, &force)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		out := cmd.OutOrStdout()
		if model == "" || output == "" {
			return usagef("quantize needs --model and --output")
		}
		if err := checkModelDir(model); err != nil {
			return err
		}
		if err := checkMethodFlag(method); err != nil {
			return err
		}
		cfg, err := cf.resolve(cmd.Flags())
		if err != nil {
			return err
		}
		if err := checkTargetMethod(cfg, method); err != nil {
			return err
		}
		bar := newProgress(0, "quantizing", true)
		res, err := local.Quantize(cmd.Context(), local.QuantizeOptions{
			ModelDir: model, OutputDir: output, Config: cfg, Method: method,
			Calibration: calibration, Overwrite: overwrite, Force: force, Logger: newLogger(),
			Progress: func(p quant.Progress, tensors int, total int64) {
				bar.update(p.BytesDone, total, fmt.Sprintf("%d/%d tensors", p.TensorsDone, tensors))
			},
		})
		bar.finish(err)
		if err != nil {
			return err
		}
		printResult(out, res, asJSON)
		return nil
	}
	return cmd
}

// printResult prints the result as one JSON object or as a summary.
func printResult(out io.Writer, r *quant.Result, asJSON bool) {
	if asJSON {
		fmt.Fprintln(out, string(r.JSON()))
		return
	}
	printSummary(out, r)
}

func printSummary(out io.Writer, r *quant.Result) {
	fmt.Fprintf(out, "quantized %d tensors (%s params) in %.1fs -> %s\n", r.NumTensors, humanCount(r.NumParams), r.QuantizationTimeS, r.QuantizedPath)
	fmt.Fprintf(out, "  size            %.1f MB (%.2f bits/weight), %.2fx smaller than the source\n", r.ModelSizeMB, r.BitsPerWeight, r.CompressionRatio)
	fmt.Fprintf(out, "  cosine          %.4f mean, %.4f min (modality %s)\n", r.CosineSimilarity, r.MinCosineSimilarity, r.Modality)
	fmt.Fprintf(out, "  bit width       INT%d requested, widest used %d\n", r.BitWidth, r.ActualBitWidth)
	if r.Target != "" {
		fmt.Fprintf(out, "  target          %s (every tensor stored as a GGUF type holds it: export with --exact)\n", r.Target)
	}
	if r.FallbackReason != nil {
		fmt.Fprintf(out, "  fallback        %s\n", *r.FallbackReason)
	}
	for _, f := range []struct {
		name string
		s    quant.FeatureStatus
	}{{"time-aware", r.TimeAware}, {"spatial", r.Spatial}} {
		switch {
		case f.s.Requested && f.s.Applied:
			fmt.Fprintf(out, "  %-15s %s\n", f.name, f.s.Reason)
		case f.s.Requested:
			fmt.Fprintf(out, "  %-15s not applied: %s\n", f.name, f.s.Reason)
		}
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(out, "  warning         %s\n", w)
	}
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return strconv.FormatFloat(float64(n)/1e9, 'f', 2, 64) + "B"
	case n >= 1e6:
		return strconv.FormatFloat(float64(n)/1e6, 'f', 2, 64) + "M"
	}
	return strconv.FormatInt(n, 10)
}

// checkModelDir refuses a --model that is not an existing directory
// (a usage error, exit 2) before any work starts.
func checkModelDir(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return usagef("--model %s: no such directory", dir)
	case err != nil:
		return usagef("--model %s: %v", dir, err)
	case !st.IsDir():
		return usagef("--model %s is not a directory: give the model's directory (with its .safetensors files and config.json)", dir)
	}
	return nil
}

// checkConfigFile refuses a --config that cannot be read as a usage error
// (exit 2) before anything starts ("" = none given).
func checkConfigFile(path string) error {
	if path == "" {
		return nil
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return usagef("--config %s: no such file (config.example.yaml is an annotated example)", path)
	case err != nil:
		return usagef("--config %s: %v", path, err)
	case st.IsDir():
		return usagef("--config %s is a directory, not a YAML file", path)
	}
	return nil
}
