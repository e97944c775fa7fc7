package flightsrv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/wire"
)

var actionTypes = []*flight.ActionType{
	{Type: wire.ActionQuantize, Description: `Re-quantize a stored FP source (server started with --keep-source) under a new configuration. Body: {"model": SOURCE, "name": NEW, "profile"?: P, "config"?: {...}, "method"?: M, "overwrite"?: bool}. Result: the quantization result JSON.`},
	{Type: wire.ActionValidateConfig, Description: `Resolve and validate a configuration against the server defaults. Body: {"profile"?: P, "config"?: {...}}. Result: {"valid": true, "config": {...}}; an invalid one fails with InvalidArgument "InvalidBitWidth(3): ...".`},
	{Type: wire.ActionProfiles, Description: `The deployment profiles' presets. Body: empty. Result: {"edge": {...}, "local": {...}, "cloud": {...}}.`},
	{Type: wire.ActionDelete, Description: `Delete a stored model. Body: {"model": NAME}. Result: {"deleted": NAME}.`},
	{Type: wire.ActionStats, Description: `Server statistics. Body: empty. Result: {"models", "bytes", "pending_uploads", "uptime_s", "defaults", "keep_source"}.`},
}

// ListActions lists the actions above.
func (s *Service) ListActions(_ *flight.Empty, stream flight.FlightService_ListActionsServer) error {
	if err := s.enter(stream.Context(), ""); err != nil {
		return err
	}
	for _, a := range actionTypes {
		if err := stream.Send(a); err != nil {
			return err
		}
	}
	return nil
}

func decodeBody(b []byte) (wire.ActionBody, error) {
	var body wire.ActionBody
	if len(strings.TrimSpace(string(b))) == 0 {
		return body, nil
	}
	if err := wire.DecodeStrict(b, &body); err != nil {
		return body, status.Errorf(codes.InvalidArgument, "action body must be a JSON object: %v", err)
	}
	return body, nil
}

// DoAction runs one action and sends one JSON result.
func (s *Service) DoAction(a *flight.Action, stream flight.FlightService_DoActionServer) error {
	ctx := stream.Context()
	body, err := decodeBody(a.GetBody())
	if err != nil {
		return err
	}
	if err := s.enter(ctx, body.Model); err != nil {
		return err
	}
	var result any
	switch a.GetType() {
	case wire.ActionValidateConfig:
		cfg, err := s.resolveConfig(body.Profile, body.Config)
		if err != nil {
			return err
		}
		result = map[string]any{"valid": true, "config": cfg}
	case wire.ActionProfiles:
		m := map[string]config.DiffusionQuantConfig{}
		for _, p := range config.Profiles() {
			m[string(p)] = config.FromProfile(p)
		}
		result = m
	case wire.ActionDelete:
		if body.Model == "" {
			return status.Error(codes.InvalidArgument, `delete needs {"model": NAME}`)
		}
		if err := s.o.Store.Delete(ctx, body.Model); err != nil {
			return storeErr(err)
		}
		s.reportModels(ctx)
		result = map[string]string{"deleted": body.Model}
	case wire.ActionStats:
		st, err := s.o.Store.Stats(ctx)
		if err != nil {
			return storeErr(err)
		}
		result = map[string]any{
			"models": st.Models, "bytes": st.Bytes, "pending_uploads": st.Pending,
			"uptime_s": time.Since(s.started).Seconds(), "defaults": s.o.Defaults, "keep_source": s.o.KeepSource,
		}
	case wire.ActionQuantize:
		leave, err := s.uploads.acquire(s.clientID(ctx))
		if err != nil {
			s.refused("uploads")
			return err
		}
		res, err := s.requantize(ctx, body)
		leave()
		if err != nil {
			return err
		}
		result = res
	default:
		return status.Errorf(codes.InvalidArgument, "unknown action %q (see ListActions: quantize, validate_config, profiles, delete, stats)", a.GetType())
	}
	b, _ := json.Marshal(result)
	return stream.Send(&flight.Result{Body: b})
}

// requantize runs the pipeline on a stored FP source into a new model.
func (s *Service) requantize(ctx context.Context, body wire.ActionBody) (*quant.Result, error) {
	if body.Model == "" || body.Name == "" {
		return nil, status.Error(codes.InvalidArgument, `quantize needs {"model": SOURCE, "name": NEW}`)
	}
	for _, n := range []string{body.Model, body.Name} {
		if err := store.ValidateName(n); err != nil {
			return nil, storeErr(err)
		}
	}
	cfg, err := s.resolveConfig(body.Profile, body.Config)
	if err != nil {
		return nil, err
	}
	if err := quant.CheckMethod(body.Method); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "method: %v", err)
	}
	mf, err := s.o.Store.Open(ctx, body.Model, wire.SourceManifestName)
	if err != nil {
		if status.Code(storeErr(err)) == codes.NotFound {
			if _, gerr := s.o.Store.Get(ctx, body.Model); gerr == nil {
				return nil, status.Errorf(codes.FailedPrecondition, "model %q was stored without its FP source: start the server with --keep-source and upload it again", body.Model)
			}
		}
		return nil, storeErr(err)
	}
	var manifest []sourceEntry
	err = json.NewDecoder(mf).Decode(&manifest)
	mf.Close()
	if err != nil {
		return nil, s.serverErr(fmt.Sprintf("read the source manifest of model %q", body.Model), err)
	}
	files := map[string][]byte{}
	entry, err := s.o.Store.Get(ctx, body.Model)
	if err != nil {
		return nil, storeErr(err)
	}
	for name := range entry.Files {
		if validFileName(name) && !strings.HasPrefix(name, ".") {
			if b, err := s.readFile(ctx, body.Model, name); err == nil {
				files[name] = b
			}
		}
	}
	modality, modalitySource, err := modalityFor(cfg, files)
	if err != nil {
		if rep, rerr := s.readReport(ctx, body.Model); rerr == nil && cfg.Modality == "" {
			if m, ok := rep["modality"].(string); ok && m != "" {
				modality, modalitySource, err = m, "source model "+body.Model, nil
			}
		}
		if err != nil {
			return nil, err
		}
	}
	stage, err := s.o.Store.Begin(ctx, body.Name, body.Overwrite)
	if err != nil {
		return nil, storeErr(err)
	}
	defer stage.Abort() // a no-op after Commit; also runs when a panic unwinds this handler
	src := &storedSource{s: s, model: body.Model, entries: manifest}
	defer src.close()
	res, stats, err := s.runPipeline(ctx, cfg, modality, modalitySource, src, stage.Dir(), body.Name, "", body.Method, nil, nil)
	if err != nil {
		return nil, s.internal(err, pipelineErr(err))
	}
	cmd := wire.PutCommand{Model: body.Name, Files: files}
	if err := s.finishModel(stage.Dir(), cmd, &flightSource{dir: filepath.Join(stage.Dir(), ".spool")}, res, stats); err != nil {
		return nil, s.serverErr("write the model's files", err)
	}
	if _, err := stage.Commit(ctx); err != nil {
		return nil, storeErr(err)
	}
	s.reportModels(ctx)
	if s.o.Hooks.Quantized != nil {
		s.o.Hooks.Quantized(time.Duration(res.QuantizationTimeS*float64(time.Second)), len(res.Fallbacks))
	}
	return res, nil
}

func (s *Service) readFile(ctx context.Context, model, name string) ([]byte, error) {
	f, err := s.o.Store.Open(ctx, model, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// storedSource reads a model's kept FP source from the store.
type storedSource struct {
	s       *Service
	model   string
	entries []sourceEntry
	next    int
	open    []store.File
}

func (src *storedSource) Next(ctx context.Context) (quant.Tensor, error) {
	if src.next >= len(src.entries) {
		return nil, io.EOF
	}
	e := src.entries[src.next]
	src.next++
	f, err := src.s.o.Store.Open(ctx, src.model, e.File)
	if err != nil {
		return nil, fmt.Errorf("source of %q: %w", e.Name, err)
	}
	src.open = append(src.open, f)
	vt, err := schema.ValueType(e.DType)
	if err != nil {
		return nil, err
	}
	width := int64(vt.(arrow.FixedWidthDataType).BitWidth() / 8)
	if f.Size() != e.Elements*width || e.Elements != schema.NumElements(e.Shape) {
		return nil, fmt.Errorf("source of %q: %d bytes for %d elements of shape %v", e.Name, f.Size(), e.Elements, e.Shape)
	}
	return &storedTensor{meta: quant.TensorMeta{Name: e.Name, Shape: e.Shape, DType: e.DType}, f: f, vt: vt, width: width}, nil
}

func (src *storedSource) close() {
	for _, f := range src.open {
		f.Close()
	}
}

type storedTensor struct {
	meta  quant.TensorMeta
	f     store.File
	vt    arrow.DataType
	width int64
}

func (t *storedTensor) Meta() quant.TensorMeta { return t.meta }

func (t *storedTensor) ReadChunk(ctx context.Context, mem memory.Allocator, off, n int64) (arrow.RecordBatch, error) {
	buf := memory.NewResizableBuffer(mem)
	defer buf.Release()
	buf.Resize(int(n * t.width))
	if _, err := t.f.ReadAt(buf.Bytes(), off*t.width); err != nil {
		return nil, fmt.Errorf("read source of %q: %w", t.meta.Name, err)
	}
	return quant.InputRecord(mem, t.meta, off, t.vt, buf), nil
}
