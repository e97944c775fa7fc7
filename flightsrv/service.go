package flightsrv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/local"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/store"
)

// Options configure the service.
type Options struct {
	Store      store.Store
	Defaults   config.DiffusionQuantConfig // server defaults (--config, environment)
	KeepSource bool                        // store the FP source of every upload (for the quantize action)
	// IngestOnly stores uploads raw, without quantizing: the baseline the
	// DoPut benchmark compares quantization against. Not for production.
	IngestOnly     bool
	MaxUploadBytes int64 // 0 = unlimited
	Mem            memory.Allocator
	Logger         zerolog.Logger
	Hooks          Hooks
}

// Hooks let the server observe the service (metrics, request logs).
type Hooks struct {
	Quantized   func(d time.Duration, fallbacks int)
	ModelsTotal func(n int)
	SetModel    func(ctx context.Context, name string)
}

// Service implements flight.FlightServer.
type Service struct {
	flight.BaseFlightServer
	o       Options
	closing atomic.Bool
	started time.Time

	mu      sync.Mutex
	puts    int64
	gets    int64
	actions int64
}

// New builds the service.
func New(o Options) (*Service, error) {
	if o.Store == nil {
		return nil, errors.New("flightsrv: no store")
	}
	if o.Mem == nil {
		o.Mem = memory.DefaultAllocator
	}
	if err := o.Defaults.Validate(); err != nil {
		return nil, fmt.Errorf("flightsrv: server default configuration: %w", err)
	}
	s := &Service{o: o, started: time.Now()}
	s.reportModels(context.Background())
	return s, nil
}

// BeginShutdown makes new calls fail with Unavailable.
func (s *Service) BeginShutdown() { s.closing.Store(true) }

func (s *Service) enter(ctx context.Context, model string) error {
	if s.closing.Load() {
		return status.Error(codes.Unavailable, "server is shutting down")
	}
	if model != "" && s.o.Hooks.SetModel != nil {
		s.o.Hooks.SetModel(ctx, model)
	}
	return nil
}

func (s *Service) reportModels(ctx context.Context) {
	if s.o.Hooks.ModelsTotal == nil {
		return
	}
	if st, err := s.o.Store.Stats(ctx); err == nil {
		s.o.Hooks.ModelsTotal(st.Models)
	}
}

// storeErr maps store errors to gRPC codes.
func storeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error()+" (set \"overwrite\": true to replace it)")
	case errors.Is(err, store.ErrInvalidName):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

// configErr maps configuration errors to InvalidArgument, starting the
// message with the error kind (InvalidBitWidth(3): ..., UnknownKey: ...).
func configErr(err error) error {
	msg := err.Error()
	if k := config.Kind(err); k != "" && !startsWith(msg, k) {
		msg = k + ": " + msg
	}
	return status.Error(codes.InvalidArgument, msg)
}

func startsWith(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// pipelineErr maps errors of a pipeline run.
func pipelineErr(err error) error {
	var ae *quant.AccuracyError
	var te *quant.TensorError
	switch {
	case errors.As(err, &ae):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case config.Kind(err) != "":
		return configErr(err)
	case errors.Is(err, quant.ErrMethodWithTarget):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.As(err, &te) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// resolveConfig applies a request's profile and overrides to the server defaults.
func (s *Service) resolveConfig(profile string, overrides map[string]any) (config.DiffusionQuantConfig, error) {
	cfg := s.o.Defaults
	if profile != "" {
		p, err := config.ParseProfile(profile)
		if err != nil {
			return cfg, configErr(err)
		}
		cfg = config.FromProfile(p)
	}
	if err := cfg.ApplyMap(overrides); err != nil {
		return cfg, configErr(err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, configErr(err)
	}
	return cfg, nil
}

// modalityFor resolves the modality: the configuration, else config.json
// among the uploaded files.
func modalityFor(cfg config.DiffusionQuantConfig, files map[string][]byte) (string, string, error) {
	if cfg.Modality != "" {
		return cfg.Modality, "config", nil
	}
	raw, ok := files[modelio.ConfigFile]
	if !ok {
		return "", "", status.Error(codes.InvalidArgument, "cannot detect the modality: set \"modality\" (text, code, image or audio) in the config, or send config.json in \"files\"")
	}
	var cj map[string]any
	if err := json.Unmarshal(raw, &cj); err != nil {
		return "", "", status.Errorf(codes.InvalidArgument, "files: config.json is not a JSON object: %v", err)
	}
	m, ev, err := modelio.DetectModalityFromConfig(cj, "")
	if err != nil {
		return "", "", status.Error(codes.InvalidArgument, err.Error())
	}
	return m, ev, nil
}

func validFileName(name string) bool {
	return name != "" && name == filepath.Base(name) && name != "." && name != ".." &&
		name != artifact.FileName && name != artifact.ReportName && name[0] != '.'
}

// DoPut receives FP weights, quantizes them as they arrive and commits the model.
func (s *Service) DoPut(stream flight.FlightService_DoPutServer) (err error) {
	ctx := stream.Context()
	if err := s.enter(ctx, ""); err != nil {
		return err
	}
	var metaMsgs int
	tolerant := &metadataTolerantStream{FlightService_DoPutServer: stream, onMetadata: func([]byte) { metaMsgs++ }}
	rdr, err := flight.NewRecordReader(tolerant, ipc.WithAllocator(s.o.Mem))
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "DoPut: cannot read the Arrow stream: %v", err)
	}
	defer rdr.Release()
	cmd, err := parsePutDescriptor(rdr.LatestFlightDescriptor())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	s.enter(ctx, cmd.Model)
	cfg, err := s.resolveConfig(cmd.Profile, cmd.Config)
	if err != nil {
		return err
	}
	if err := quant.CheckMethod(cmd.Method); err != nil {
		return status.Errorf(codes.InvalidArgument, "method: %v", err)
	}
	for name := range cmd.Files {
		if !validFileName(name) {
			return status.Errorf(codes.InvalidArgument, "files: %q is not a plain file name", name)
		}
	}
	modality, modalitySource, err := modalityFor(cfg, cmd.Files)
	if err != nil {
		return err
	}
	stage, err := s.o.Store.Begin(ctx, cmd.Model, cmd.Overwrite)
	if err != nil {
		return storeErr(err)
	}
	defer func() {
		if err != nil {
			stage.Abort()
		}
	}()
	spoolRel := ".spool"
	if s.o.KeepSource || s.o.IngestOnly {
		spoolRel = "source"
	}
	src, err := newFlightSource(filepath.Join(stage.Dir(), spoolRel), spoolRel, s.o.KeepSource || s.o.IngestOnly)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	defer src.close()
	ingest := newIngestor(src, s.o.MaxUploadBytes)
	ingest.expect = cmd.Tensors
	if err := ingest.setSchema(rdr.Schema()); err != nil {
		return err
	}
	sender := newPutSender(stream)
	defer sender.close()

	if s.o.IngestOnly {
		return s.ingestOnly(ctx, rdr, ingest, sender, stage, src)
	}
	calibPath, err := writeCalibration(cmd.Calibration)
	if err != nil {
		return err
	}
	if calibPath != "" {
		defer os.RemoveAll(filepath.Dir(calibPath))
	}
	// Receive in the background; the pipeline below reads from the spool.
	recvDone := make(chan error, 1)
	go func() {
		recvDone <- s.receive(rdr, ingest, sender)
	}()
	res, stats, runErr := s.runPipeline(ctx, cfg, modality, modalitySource, src, stage.Dir(), cmd.Model, calibPath, cmd.Method)
	if runErr != nil {
		src.fail(runErr) // the receiver stops at the next batch
	}
	recvErr := <-recvDone
	if recvErr != nil { // the upload's own error explains a pipeline failure best
		return recvErr
	}
	if runErr != nil {
		return pipelineErr(runErr)
	}
	if err := s.finishModel(stage.Dir(), cmd, src, res, stats); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if _, err := stage.Commit(ctx); err != nil {
		return storeErr(err)
	}
	s.reportModels(ctx)
	if s.o.Hooks.Quantized != nil {
		s.o.Hooks.Quantized(time.Duration(res.QuantizationTimeS*float64(time.Second)), len(res.Fallbacks))
	}
	s.o.Logger.Info().Str("model", cmd.Model).Int("tensors", res.NumTensors).Float64("cosine", res.CosineSimilarity).
		Int("metadata_messages", metaMsgs).Msg("model committed")
	sender.send(res)
	return sender.close()
}

// ingestOnly stores the upload's raw spool and manifest (benchmark baseline).
func (s *Service) ingestOnly(ctx context.Context, rdr *flight.Reader, ingest *ingestor, sender *putSender, stage store.Staging, src *flightSource) error {
	if err := s.receive(rdr, ingest, sender); err != nil {
		return err
	}
	src.close()
	b, _ := json.MarshalIndent(src.manifest(), "", "  ")
	if err := os.WriteFile(filepath.Join(stage.Dir(), SourceManifestName), b, 0o644); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if _, err := stage.Commit(ctx); err != nil {
		return storeErr(err)
	}
	sender.send(map[string]int64{"ingested_bytes": ingest.bytes})
	return sender.close()
}

// writeCalibration stores a command's calibration file in a temporary
// directory (outside the model) and returns its path ("" without one).
func writeCalibration(c *CalibrationFile) (string, error) {
	if c == nil {
		return "", nil
	}
	if !validFileName(c.Name) || len(c.Data) == 0 {
		return "", status.Errorf(codes.InvalidArgument, "calibration: needs a plain file name (.arrow, .parquet or .jsonl) and data")
	}
	dir, err := os.MkdirTemp("", "arrowquant-calib-")
	if err != nil {
		return "", status.Error(codes.Internal, err.Error())
	}
	p := filepath.Join(dir, c.Name)
	if err := os.WriteFile(p, c.Data, 0o600); err != nil {
		os.RemoveAll(dir)
		return "", status.Error(codes.Internal, err.Error())
	}
	return p, nil
}

// receive spools the stream and acknowledges every batch.
func (s *Service) receive(rdr *flight.Reader, ingest *ingestor, sender *putSender) error {
	for rdr.Next() {
		ack, err := ingest.batch(rdr.RecordBatch())
		if err != nil {
			ingest.src.fail(err)
			return err
		}
		sender.send(ack)
		if ingest.src.failure() != nil {
			return nil // the pipeline failed; DoPut returns its error and the client stops sending
		}
	}
	if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
		ingest.src.fail(err)
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
			return err
		}
		return status.Errorf(codes.InvalidArgument, "DoPut stream: %v", err)
	}
	if err := ingest.end(); err != nil {
		ingest.src.fail(err)
		return err
	}
	return nil
}

// runPipeline quantizes src into the artifact file of dir.
func (s *Service) runPipeline(ctx context.Context, cfg config.DiffusionQuantConfig, modality, modalitySource string, src quant.Source, dir, model, calibration, method string) (*quant.Result, *quant.Stats, error) {
	w, err := artifact.Create(filepath.Join(dir, artifact.FileName), s.o.Mem)
	if err != nil {
		return nil, nil, err
	}
	defer w.Abort()
	res, stats, err := quant.Run(ctx, quant.Options{
		Config: cfg, Modality: modality, ModalitySource: modalitySource, Mem: s.o.Mem, Calibration: calibration, Method: method,
		Logger: s.o.Logger.With().Str("model", model).Logger(),
	}, src, w)
	if err != nil {
		return nil, nil, err
	}
	if err := w.Commit(local.ArtifactMetadata(res, stats, model)); err != nil {
		return nil, nil, err
	}
	return res, stats, nil
}

// finishModel writes report.json, the uploaded files and the source manifest.
func (s *Service) finishModel(dir string, cmd PutCommand, src *flightSource, res *quant.Result, stats *quant.Stats) error {
	for name, data := range cmd.Files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	if src.keep {
		b, _ := json.MarshalIndent(src.manifest(), "", "  ")
		if err := os.WriteFile(filepath.Join(dir, SourceManifestName), b, 0o644); err != nil {
			return err
		}
	} else if err := os.RemoveAll(src.dir); err != nil {
		return fmt.Errorf("remove spool: %w", err)
	}
	if err := local.FinishResult(res, filepath.Join(dir, artifact.FileName), cmd.Model+"/"+artifact.FileName); err != nil {
		return err
	}
	res.QuantizedPath = "flight://" + cmd.Model + "/" + artifact.FileName
	return local.WriteReport(dir, res)
}
