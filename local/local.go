// Package local runs ArrowQuant on the local file system: a Hugging Face
// model directory in, an output directory out (the artifact, report.json,
// and the model's config and tokenizer files), and back to safetensors.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/rs/zerolog"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/fsutil"
	"github.com/arrowquant/arrowquant/internal/outdir"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
)

// ErrOutputNotEmpty is returned when the output directory holds files and
// overwriting was not asked for.
var ErrOutputNotEmpty = outdir.ErrNotEmpty

// QuantizeOptions configure Quantize.
type QuantizeOptions struct {
	ModelDir    string
	OutputDir   string
	Config      config.DiffusionQuantConfig // effective, validated
	Method      string
	Calibration string
	Overwrite   bool
	Force       bool // with Overwrite: replace an output ArrowQuant did not create
	Mem         memory.Allocator
	Logger      zerolog.Logger
	// Progress receives tensors done, source bytes done, and the totals.
	Progress func(p quant.Progress, totalTensors int, totalBytes int64)
}

// Quantize quantizes the model in ModelDir into OutputDir. The output is
// built in a temporary sibling directory and renamed into place at the
// end, so a failure (bad input, full disk, cancellation) leaves no
// valid-looking artifact behind.
func Quantize(ctx context.Context, o QuantizeOptions) (*quant.Result, error) {
	if o.Mem == nil {
		o.Mem = memory.DefaultAllocator
	}
	if o.Calibration != "" {
		if _, err := os.Stat(o.Calibration); err != nil {
			return nil, fmt.Errorf("calibration file: %w", err)
		}
	}
	m, err := modelio.Open(o.ModelDir, modelio.OpenOptions{})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	modality, source, err := ResolveModality(o.Config.Modality, m)
	if err != nil {
		return nil, err
	}
	var res *quant.Result
	err = outdir.Write(o.OutputDir, outdir.Options{Overwrite: o.Overwrite, Force: o.Force, Inputs: []string{o.ModelDir, o.Calibration}, Command: "quantize"}, func(tmp string) error {
		w, err := artifact.Create(filepath.Join(tmp, artifact.FileName), o.Mem, artifact.BypassPageCache())
		if err != nil {
			return err
		}
		defer w.Abort()
		var progress func(quant.Progress)
		if o.Progress != nil {
			total, count := m.SourceBytes(), len(m.Tensors)
			progress = func(p quant.Progress) { o.Progress(p, count, total) }
		}
		maxT, tFrom := m.TimestepLimit()
		r, stats, err := quant.Run(ctx, quant.Options{
			Config: o.Config, Modality: modality, ModalitySource: source, Method: o.Method,
			Mem: o.Mem, Logger: o.Logger, Progress: progress, Calibration: o.Calibration,
			MaxTimestep: maxT, TimestepFrom: tFrom,
		}, quant.ModelSource(m), w)
		if err != nil {
			return err
		}
		if err := w.Commit(ArtifactMetadata(r, stats, filepath.Base(filepath.Clean(o.ModelDir)))); err != nil {
			return err
		}
		if err := copyAux(m, tmp); err != nil {
			return err
		}
		final := filepath.Join(filepath.Clean(o.OutputDir), artifact.FileName)
		if err := FinishResult(r, filepath.Join(tmp, artifact.FileName), final); err != nil {
			return err
		}
		res = r
		return WriteReport(tmp, r)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// ResolveModality returns the configured modality, else the detected one;
// an undetectable modality is no error (it is recorded as "" with the
// reason), a declared but invalid one is.
func ResolveModality(configured string, m *modelio.Model) (modality, source string, err error) {
	if configured != "" {
		return configured, "config", nil
	}
	modality, source, err = modelio.DetectModality(m)
	var me *modelio.ModalityError
	if errors.As(err, &me) && !me.Invalid {
		return "", "not detected: " + me.Reason, nil
	}
	return modality, source, err
}

// ArtifactMetadata is the schema-level metadata of an artifact. Its report
// omits the keys that depend on the committed file (model_size_mb,
// compression_ratio, quantized_path); report.json has them.
func ArtifactMetadata(res *quant.Result, stats *quant.Stats, model string) map[string]string {
	cfg, _ := json.Marshal(res.Config)
	idx, _ := json.Marshal(stats.Index)
	report := embeddedReport(res)
	timeGroups, _ := json.Marshal(res.TimeGroups)     // null when time-aware quantization is off
	equalization, _ := json.Marshal(res.Equalization) // null when channel equalization did not run
	return map[string]string{
		schema.MetaFormat:        schema.FormatName,
		schema.MetaFormatVersion: schema.FormatVersion,
		schema.MetaConfig:        string(cfg),
		schema.MetaModality:      res.Modality,
		schema.MetaTimeGroups:    string(timeGroups),
		schema.MetaReport:        report,
		schema.MetaModelName:     model,
		schema.MetaIndex:         string(idx),
		schema.MetaEqualization:  string(equalization),
	}
}

// embeddedReport is the result JSON without the keys that depend on the
// committed file, which the artifact cannot know about itself.
func embeddedReport(res *quant.Result) string {
	var m map[string]any
	raw, _ := json.Marshal(res)
	if err := json.Unmarshal(raw, &m); err != nil {
		return string(raw)
	}
	for _, k := range []string{"quantized_path", "model_size_mb", "compression_ratio", "compression_basis"} {
		delete(m, k)
	}
	out, _ := json.Marshal(m)
	return string(out)
}

// FinishResult fills the keys that depend on the committed artifact file
// at path, reported under its final location finalPath.
func FinishResult(res *quant.Result, path, finalPath string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat artifact: %w", err)
	}
	abs, err := filepath.Abs(finalPath)
	if err != nil {
		return err
	}
	res.QuantizedPath = abs
	res.ModelSizeMB = float64(st.Size()) / (1 << 20)
	if st.Size() > 0 {
		res.CompressionRatio = float64(res.SourceBytes) / float64(st.Size())
	}
	res.CompressionBasis = "source tensor bytes (" + sourceDTypes(res) + ") / artifact file bytes"
	return nil
}

func sourceDTypes(res *quant.Result) string {
	seen := map[string]bool{}
	var ds []string
	for _, l := range res.Layers {
		if !seen[l.DType] {
			seen[l.DType] = true
			ds = append(ds, l.DType)
		}
	}
	return strings.Join(ds, ", ")
}

// WriteReport writes report.json (fsynced) into dir.
func WriteReport(dir string, res *quant.Result) error {
	return fsutil.WriteFileSync(filepath.Join(dir, artifact.ReportName), append(res.JSON(), '\n'), false)
}

func copyAux(m *modelio.Model, dst string) error {
	names, err := m.AuxFiles()
	if err != nil {
		return err
	}
	for _, name := range names {
		if name == artifact.ReportName || name == artifact.FileName {
			continue
		}
		if err := copyFile(filepath.Join(m.Dir, name), filepath.Join(dst, name)); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := fsutil.OpenRegular(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
