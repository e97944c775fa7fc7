package flightsrv

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/gguf"
	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/wire"
)

// ggufChunkBytes is the data each GGUFSchema row carries.
const ggufChunkBytes = 4 << 20

// sendGGUF exports a stored model as GGUF into a temporary file (the
// export writes its header first and seeks back at the end) and streams
// the file's bytes, then the report. Memory stays bounded by one chunk.
func (s *Service) sendGGUF(ctx context.Context, tk wire.Ticket, stream flight.FlightService_DoGetServer) error {
	if tk.Format != "gguf" {
		return status.Errorf(codes.InvalidArgument, "format %q: the only export format is gguf", tk.Format)
	}
	if tk.Tensor != "" || tk.Dequantize || tk.File != "" {
		return status.Error(codes.InvalidArgument, `a {"format": "gguf"} ticket exports the whole model: no tensor, dequantize or file`)
	}
	entry, err := s.o.Store.Get(ctx, tk.Model)
	if err != nil {
		return storeErr(err)
	}
	work, err := os.MkdirTemp("", "arrowquant-gguf-")
	if err != nil {
		return s.serverErr("create a temporary directory for the export", err)
	}
	defer os.RemoveAll(work)
	input, err := s.exportInput(ctx, tk.Model, entry, work)
	if err != nil {
		return err
	}
	plan, err := gguf.PlanFor(input, tk.Runnable)
	var ae *gguf.ArchError
	var ie *gguf.InputError
	switch {
	case errors.As(err, &ae) && tk.Runnable:
		return status.Errorf(codes.InvalidArgument, "runnable: %v", err)
	case err != nil:
		return s.serverErr("read the artifact of "+tk.Model, err)
	}
	out := filepath.Join(work, "model.gguf")
	rep, err := gguf.Export(ctx, gguf.ExportOptions{Input: input, Output: out, Exact: tk.Exact, Plan: plan, Mem: s.o.Mem, Logger: s.o.Logger})
	switch {
	case errors.As(err, &ie) && tk.Exact && strings.Contains(err.Error(), "exact"):
		return status.Errorf(codes.FailedPrecondition, "exact: %v", err)
	case errors.As(err, &ie):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case err != nil:
		return s.serverErr("export "+tk.Model+" as GGUF", err)
	}
	rep.Output = tk.Model + ".gguf" // never the server's path
	f, err := os.Open(out)
	if err != nil {
		return s.serverErr("read the exported GGUF", err)
	}
	defer f.Close()
	w := flight.NewRecordWriter(stream, ipc.WithSchema(wire.GGUFSchema), ipc.WithAllocator(s.o.Mem))
	defer w.Close()
	buf := make([]byte, ggufChunkBytes)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			if err := s.writeGGUFRow(w, off, buf[:n], nil); err != nil {
				return err
			}
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return s.serverErr("read the exported GGUF", rerr)
		}
	}
	b, _ := json.Marshal(rep)
	report := string(b)
	return s.writeGGUFRow(w, off, nil, &report)
}

func (s *Service) writeGGUFRow(w *flight.Writer, off int64, data []byte, report *string) error {
	b := array.NewRecordBuilder(s.o.Mem, wire.GGUFSchema)
	defer b.Release()
	b.Field(0).(*array.Int64Builder).Append(off)
	b.Field(1).(*array.BinaryBuilder).Append(data)
	if report != nil {
		b.Field(2).(*array.StringBuilder).Append(*report)
	} else {
		b.Field(2).AppendNull()
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if err := w.Write(rec); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// exportInput is a directory holding the model's artifact and its config
// and tokenizer files: the store's own directory when it is local, else a
// copy in work.
func (s *Service) exportInput(ctx context.Context, name string, entry store.Entry, work string) (string, error) {
	if lp, ok := s.o.Store.(store.LocalPather); ok {
		if p, err := lp.Path(name, artifact.FileName); err == nil {
			return filepath.Dir(p), nil
		}
	}
	for file := range entry.Files {
		if file != artifact.FileName && !validFileName(file) {
			continue
		}
		if err := s.copyOut(ctx, name, file, filepath.Join(work, file)); err != nil {
			return "", err
		}
	}
	return work, nil
}

func (s *Service) copyOut(ctx context.Context, name, file, dst string) error {
	src, err := s.o.Store.Open(ctx, name, file)
	if err != nil {
		return storeErr(err)
	}
	defer src.Close()
	out, err := os.Create(dst)
	if err != nil {
		return s.serverErr("copy "+file+" for the export", err)
	}
	defer out.Close()
	if _, err := io.Copy(out, src); err != nil {
		return s.serverErr("copy "+file+" for the export", err)
	}
	return nil
}
