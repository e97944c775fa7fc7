package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/internal/outdir"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/schema"
)

// DequantizeOptions configure Dequantize.
type DequantizeOptions struct {
	InputDir  string // an output directory of Quantize (or a path to model.arrow)
	OutputDir string
	DType     modelio.DType // F32 (default), F16 or BF16
	Overwrite bool
	Force     bool // with Overwrite: replace an output ArrowQuant did not create
	Mem       memory.Allocator
	Progress  func(done, total int)
}

// Dequantize reconstructs every tensor of an artifact into a safetensors
// model.safetensors with the original names and shapes, and copies the
// directory's other files (config, tokenizer) beside it.
func Dequantize(ctx context.Context, o DequantizeOptions) error {
	if o.Mem == nil {
		o.Mem = memory.DefaultAllocator
	}
	if o.DType == "" {
		o.DType = modelio.F32
	}
	if o.DType != modelio.F32 && o.DType != modelio.F16 && o.DType != modelio.BF16 {
		return fmt.Errorf("dequantize: dtype %q not supported (f32, f16 or bf16)", o.DType)
	}
	inDir, path := o.InputDir, o.InputDir
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, artifact.FileName)
	} else {
		inDir = filepath.Dir(path)
	}
	if err := outdir.CheckDisjoint(o.OutputDir, inDir); err != nil {
		return err
	}
	r, err := artifact.Open(path, o.Mem)
	if err != nil {
		return err
	}
	defer r.Close()
	return outdir.Write(o.OutputDir, outdir.Options{Overwrite: o.Overwrite, Force: o.Force, Inputs: []string{inDir}, Command: "dequantize"}, func(tmp string) error {
		headers := make([]modelio.TensorHeader, len(r.Tensors()))
		for i, t := range r.Tensors() {
			headers[i] = modelio.TensorHeader{Name: t.Name, DType: o.DType, Shape: t.Shape}
		}
		w, err := modelio.CreateSafetensors(filepath.Join(tmp, modelio.SingleFile), headers, map[string]string{
			"format": "pt", "arrowquant.dequantized_from": r.Meta(schema.MetaModelName),
		})
		if err != nil {
			return err
		}
		defer func() {
			if w != nil {
				w.Close()
			}
		}()
		var buf []byte
		deq := artifact.NewDequantizer(o.Mem)
		for ti, t := range r.Tensors() {
			for b := t.FirstBatch; b < t.FirstBatch+t.NumBatches; b++ {
				if err := ctx.Err(); err != nil {
					return err
				}
				rec, err := r.Batch(b)
				if err != nil {
					return err
				}
				vals, err := deq.Batch(ctx, rec)
				rec.Release()
				if err != nil {
					return err
				}
				f32 := vals.ListValues().(*array.Float32).Float32Values()
				size := int(o.DType.Size())
				if cap(buf) < size*len(f32) {
					buf = make([]byte, size*len(f32))
				}
				buf = buf[:size*len(f32)]
				switch o.DType {
				case modelio.F32:
					fp.EncodeF32(buf, f32)
				case modelio.F16:
					fp.EncodeHalf(buf, f32)
				case modelio.BF16:
					fp.EncodeBF16(buf, f32)
				}
				vals.Release()
				if _, err := w.Write(buf); err != nil {
					return fmt.Errorf("dequantize: write tensor %q: %w", t.Name, err)
				}
			}
			if o.Progress != nil {
				o.Progress(ti+1, len(r.Tensors()))
			}
		}
		err = w.Close()
		w = nil
		if err != nil {
			return err
		}
		ents, err := os.ReadDir(inDir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			n := e.Name()
			if e.Type().IsRegular() && n != artifact.FileName && n != artifact.ReportName && n[0] != '.' {
				if err := copyFile(filepath.Join(inDir, n), filepath.Join(tmp, n)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
