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
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
)

// ErrOutputNotEmpty is returned when the output directory holds files and
// overwriting was not asked for.
var ErrOutputNotEmpty = errors.New("output directory exists and is not empty")

// QuantizeOptions configure Quantize.
type QuantizeOptions struct {
	ModelDir    string
	OutputDir   string
	Config      config.DiffusionQuantConfig // effective, validated
	Method      string
	Calibration string
	Overwrite   bool
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
	modality, source := o.Config.Modality, "config"
	if modality == "" {
		modality, source, err = modelio.DetectModality(m)
		if err != nil {
			return nil, err
		}
	}
	var res *quant.Result
	err = WriteDir(o.OutputDir, o.Overwrite, func(tmp string) error {
		w, err := artifact.Create(filepath.Join(tmp, artifact.FileName), o.Mem)
		if err != nil {
			return err
		}
		defer w.Abort()
		var progress func(quant.Progress)
		if o.Progress != nil {
			total, count := m.SourceBytes(), len(m.Tensors)
			progress = func(p quant.Progress) { o.Progress(p, count, total) }
		}
		r, stats, err := quant.Run(ctx, quant.Options{
			Config: o.Config, Modality: modality, ModalitySource: source, Method: o.Method,
			Mem: o.Mem, Logger: o.Logger, Progress: progress, Calibration: o.Calibration,
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
	return writeFileSync(filepath.Join(dir, artifact.ReportName), append(res.JSON(), '\n'))
}

func writeFileSync(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return f.Close()
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
	in, err := os.Open(src)
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

// WriteDir builds the output directory dir through fill, which writes into
// a temporary sibling that is renamed into place only if fill succeeds.
// A non-empty dir is refused (ErrOutputNotEmpty) unless overwrite.
func WriteDir(dir string, overwrite bool, fill func(tmp string) error) error {
	out, err := prepareOutput(dir, overwrite)
	if err != nil {
		return err
	}
	defer out.cleanup()
	if err := fill(out.tmp); err != nil {
		return err
	}
	return out.commit()
}

// outputDir is an output directory under construction.
type outputDir struct {
	final, tmp string
	overwrite  bool
	done       bool
}

// prepareOutput checks the target and creates the temporary sibling.
func prepareOutput(dir string, overwrite bool) (*outputDir, error) {
	dir = filepath.Clean(dir)
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return nil, fmt.Errorf("output %s exists and is not a directory", dir)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		if len(ents) > 0 && !overwrite {
			return nil, fmt.Errorf("%w: %s (use --overwrite to replace it)", ErrOutputNotEmpty, dir)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("create parent of output: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("create temporary output: %w", err)
	}
	return &outputDir{final: dir, tmp: tmp, overwrite: overwrite}, nil
}

// commit moves the finished temporary directory into place.
func (o *outputDir) commit() error {
	if err := artifact.SyncDir(o.tmp); err != nil {
		return err
	}
	if err := os.Chmod(o.tmp, 0o755); err != nil {
		return err
	}
	var old string
	if _, err := os.Stat(o.final); err == nil {
		old = o.tmp + ".old"
		if err := os.Rename(o.final, old); err != nil {
			return fmt.Errorf("move old output aside: %w", err)
		}
	}
	if err := os.Rename(o.tmp, o.final); err != nil {
		if old != "" {
			os.Rename(old, o.final)
		}
		return fmt.Errorf("move output into place: %w", err)
	}
	o.done = true
	if old != "" {
		os.RemoveAll(old)
	}
	return artifact.SyncDir(filepath.Dir(o.final))
}

func (o *outputDir) cleanup() {
	if !o.done {
		os.RemoveAll(o.tmp)
	}
}
