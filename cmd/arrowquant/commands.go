package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/local"
	"github.com/arrowquant/arrowquant/modelio"
)

func newDequantizeCmd() *cobra.Command {
	var input, output, dtype string
	var overwrite, force bool
	cmd := &cobra.Command{
		Use:   "dequantize --model DIR --output DIR [--dtype f32|f16|bf16]",
		Short: "Reconstruct a quantized artifact as safetensors with the original names and shapes",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if input == "" || output == "" {
				return usagef("dequantize needs --model and --output")
			}
			if _, err := os.Stat(input); err != nil {
				return usagef("--model %s: no such output directory or model.arrow (give what `arrowquant quantize` or `pull` wrote)", input)
			}
			dt := modelio.DType(strings.ToUpper(dtype))
			if dt != modelio.F32 && dt != modelio.F16 && dt != modelio.BF16 {
				return usagef("--dtype %q: want f32, f16 or bf16", dtype)
			}
			bar := newProgress(0, "dequantizing", false)
			err := local.Dequantize(cmd.Context(), local.DequantizeOptions{
				InputDir: input, OutputDir: output, DType: dt, Overwrite: overwrite, Force: force,
				Progress: func(done, total int) {
					bar.update(int64(done), int64(total), "")
				},
			})
			bar.finish(err)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "wrote %s\n", output)
			return nil
		},
	}
	cmd.Flags().StringVar(&input, "model", "", "the quantized model: an output directory of quantize or pull (or its model.arrow)")
	cmd.Flags().StringVar(&output, "output", "", "directory for model.safetensors and the copied config/tokenizer files")
	addAlias(cmd.Flags(), &input, "input", "model")
	cmd.Flags().StringVar(&dtype, "dtype", "f32", "output dtype: f32, f16 or bf16")
	addOverwriteFlags(cmd.Flags(), &overwrite, &force)
	return cmd
}

func newGenModelCmd() *cobra.Command {
	var preset, dtype, outDir string
	var seed int64
	var overwrite, force bool
	cmd := &cobra.Command{
		Use:   "gen-model --preset tiny|dream-7b --output DIR [--dtype bf16|f16|f32] [--seed N]",
		Short: "Write a synthetic Hugging Face model with realistic weights (Dream layout)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if outDir == "" {
				return usagef("gen-model needs --output")
			}
			dt := modelio.DType(strings.ToUpper(dtype))
			if dt != modelio.F32 && dt != modelio.F16 && dt != modelio.BF16 {
				return usagef("--dtype %q: want bf16, f16 or f32", dtype)
			}
			known := false
			for _, p := range modelio.Presets() {
				known = known || p == preset
			}
			if !known {
				return usagef("--preset %q: want one of %s", preset, strings.Join(modelio.Presets(), ", "))
			}
			bar := newProgress(0, "generating "+preset, true)
			err := modelio.Generate(cmd.Context(), modelio.GenOptions{
				Preset: preset, DType: dt, Out: outDir, Seed: seed, Overwrite: overwrite, Force: force,
				Progress: func(done, total int64) {
					bar.update(done, total, "")
				},
			})
			bar.finish(err)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "wrote %s model to %s\n", preset, outDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&preset, "preset", "tiny", "model layout: "+strings.Join(modelio.Presets(), ", "))
	cmd.Flags().StringVar(&dtype, "dtype", "bf16", "weight dtype: bf16, f16 or f32")
	cmd.Flags().StringVar(&outDir, "output", "", "output directory (must not exist or be empty, unless --overwrite)")
	addAlias(cmd.Flags(), &outDir, "out", "output")
	cmd.Flags().Int64Var(&seed, "seed", 0, "random seed (same seed, same bytes)")
	addOverwriteFlags(cmd.Flags(), &overwrite, &force)
	return cmd
}

func newValidateConfigCmd() *cobra.Command {
	var withEnv bool
	cmd := &cobra.Command{
		Use:   "validate-config FILE",
		Short: "Validate a YAML configuration and print the effective configuration as JSON",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if err := checkConfigFile(args[0]); err != nil {
				return err
			}
			opts := config.Options{YAMLPath: args[0]}
			if withEnv {
				opts.Lookup = os.LookupEnv
			}
			cfg, err := config.Resolve(opts)
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(cfg, "", "  ")
			fmt.Fprintln(out, string(b))
			return nil
		},
	}
	cmd.Flags().BoolVar(&withEnv, "env", true, "apply ARROW_QUANT_* environment overrides")
	return cmd
}

func newProfilesCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "profiles",
		Short: "Show the deployment profiles and their presets",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if asJSON {
				m := map[string]config.DiffusionQuantConfig{}
				for _, p := range config.Profiles() {
					m[string(p)] = config.FromProfile(p)
				}
				b, _ := json.MarshalIndent(m, "", "  ")
				fmt.Fprintln(out, string(b))
				return nil
			}
			ps := config.Profiles()
			cfgs := make([]config.DiffusionQuantConfig, len(ps))
			fmt.Fprintf(out, "%-20s", "parameter")
			for i, p := range ps {
				cfgs[i] = config.FromProfile(p)
				fmt.Fprintf(out, "%-8s", p)
			}
			fmt.Fprintln(out)
			rows := []struct {
				key string
				get func(c config.DiffusionQuantConfig) any
			}{
				{"bit_width", func(c config.DiffusionQuantConfig) any { return c.BitWidth }},
				{"num_time_groups", func(c config.DiffusionQuantConfig) any { return c.NumTimeGroups }},
				{"group_size", func(c config.DiffusionQuantConfig) any { return c.GroupSize }},
				{"enable_time_aware", func(c config.DiffusionQuantConfig) any { return c.EnableTimeAware }},
				{"enable_spatial", func(c config.DiffusionQuantConfig) any { return c.EnableSpatial }},
				{"min_accuracy", func(c config.DiffusionQuantConfig) any { return c.MinAccuracy }},
				{"calibration_samples", func(c config.DiffusionQuantConfig) any { return c.CalibrationSamples }},
				{"enable_streaming", func(c config.DiffusionQuantConfig) any { return c.EnableStreaming }},
				{"num_threads", func(c config.DiffusionQuantConfig) any { return c.NumThreads }},
			}
			for _, r := range rows {
				fmt.Fprintf(out, "%-20s", r.key)
				for _, c := range cfgs {
					fmt.Fprintf(out, "%-8v", r.get(c))
				}
				fmt.Fprintln(out)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
