package flightsrv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/calib"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/internal/bufpool"
	"github.com/arrowquant/arrowquant/internal/safe"
	"github.com/arrowquant/arrowquant/local"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/wire"
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
	// MaxUploads and MaxUploadsPerClient cap concurrent uploads (DoPut,
	// the quantize action): DefaultMaxUploads and
	// DefaultMaxUploadsPerClient when 0, unlimited when negative.
	MaxUploads, MaxUploadsPerClient int
	// IdleTimeout ends an upload whose client stalls (DefaultIdleTimeout
	// when 0, never when negative).
	IdleTimeout time.Duration
	// SpoolMemoryBytes is the memory all uploads together may hold
	// received values in before they are quantized; the rest goes through
	// files (0: every value does).
	SpoolMemoryBytes int64
	Mem              memory.Allocator
	Logger           zerolog.Logger
	Hooks            Hooks
}

// Hooks let the server observe the service (metrics, request logs).
type Hooks struct {
	Quantized   func(d time.Duration, fallbacks int)
	ModelsTotal func(n int)
	SetModel    func(ctx context.Context, name string)
	Panic       func(where string)               // a panic was contained in a request's goroutine
	Refused     func(limit string)               // a call refused or ended by a server limit
	Identity    func(ctx context.Context) string // the authenticated user, for per-client limits
}

// Service implements flight.FlightServer.
type Service struct {
	flight.BaseFlightServer
	o       Options
	bodyMem memory.Allocator // o.Mem without zeroing: DoGet's batch buffers, read in full
	closing atomic.Bool
	started time.Time
	uploads *uploadLimiter
	spool   *spoolMemory // nil: uploads spool to files only

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
	if o.MaxUploads == 0 {
		o.MaxUploads = DefaultMaxUploads
	}
	if o.MaxUploadsPerClient == 0 {
		o.MaxUploadsPerClient = DefaultMaxUploadsPerClient
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	s := &Service{o: o, bodyMem: bufpool.UninitOf(o.Mem), started: time.Now(), uploads: newUploadLimiter(max(o.MaxUploads, 0), max(o.MaxUploadsPerClient, 0))}
	if o.SpoolMemoryBytes > 0 {
		s.spool = newSpoolMemory(o.SpoolMemoryBytes, o.Mem)
	}
	s.reportModels(context.Background())
	return s, nil
}

// BeginShutdown makes new calls fail with Unavailable.
func (s *Service) BeginShutdown() { s.closing.Store(true) }

func (s *Service) enter(ctx context.Context, model string) error {
	if s.closing.Load() {
		return status.Error(codes.Unavailable, "server is shutting down")
	}
	s.nameModel(ctx, model)
	return nil
}

// nameModel records the model a call works on for its request log line.
func (s *Service) nameModel(ctx context.Context, model string) {
	if model != "" && s.o.Hooks.SetModel != nil {
		s.o.Hooks.SetModel(ctx, model)
	}
}

func (s *Service) reportModels(ctx context.Context) {
	if s.o.Hooks.ModelsTotal == nil {
		return
	}
	if st, err := s.o.Store.Stats(ctx); err == nil {
		s.o.Hooks.ModelsTotal(st.Models)
	}
}

// internal logs and counts a recovered panic behind err (the call fails
// with Internal; the server goes on) and returns mapped, the error for the
// client. Other errors pass through.
func (s *Service) internal(err, mapped error) error {
	pe, ok := safe.As(err)
	if !ok {
		return mapped
	}
	s.o.Logger.Error().Str("where", pe.Where).Str("panic", fmt.Sprint(pe.Value)).Str("stack", string(pe.Stack)).
		Msg("panic contained: the call fails with Internal, the server goes on")
	if s.o.Hooks.Panic != nil {
		s.o.Hooks.Panic(pe.Where)
	}
	return status.Error(codes.Internal, "internal error (logged on the server)")
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
	case errors.Is(err, store.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
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
	var ce *calib.FormatError
	var me *calib.MismatchError
	switch {
	case errors.As(err, &ce), errors.As(err, &me):
		return status.Error(codes.InvalidArgument, err.Error())
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
		return "", "not detected: no config.json in \"files\" and no \"modality\" in the config", nil
	}
	var cj map[string]any
	if err := json.Unmarshal(raw, &cj); err != nil {
		return "", "", status.Errorf(codes.InvalidArgument, "files: config.json is not a JSON object: %v", err)
	}
	m, ev, err := modelio.DetectModalityFromConfig(cj, "")
	var me *modelio.ModalityError
	if errors.As(err, &me) && !me.Invalid {
		return "", "not detected: " + me.Reason, nil
	}
	if err != nil {
		return "", "", status.Error(codes.InvalidArgument, err.Error())
	}
	return m, ev, nil
}

// validFileName accepts the plain names of a model's extra files
// (config.json, tokenizer files): no directories, no dot files, nothing
// ArrowQuant writes itself, at most 255 bytes of printable UTF-8.
func validFileName(name string) bool {
	if name == "" || len(name) > 255 || name != filepath.Base(name) || name[0] == '.' ||
		name == artifact.FileName || name == artifact.ReportName || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == '/' || r == '\\' {
			return false
		}
	}
	return true
}

// DoPut receives FP weights, quantizes them as they arrive and commits the model.
//
// Three goroutines serve one upload: this handler runs the pipeline, one
// receives and spools the stream (receive), one sends acknowledgements
// (putSender). A panic in any of them fails this call alone with
// Internal. An idle watch ends the call when the client stalls: the
// handler then returns at once, and the receiver, blocked in Recv until
// gRPC cancels the stream, cleans up after itself.
func (s *Service) DoPut(stream flight.FlightService_DoPutServer) (err error) {
	defer func() { err = s.internal(err, err) }()
	defer safe.Recover("DoPut handler", &err)
	return s.doPut(stream)
}

func (s *Service) doPut(stream flight.FlightService_DoPutServer) (err error) {
	ctx := stream.Context()
	if err := s.enter(ctx, ""); err != nil {
		return err
	}
	var onIdle atomic.Pointer[func(error)]
	watch := newIdleWatch(s.o.IdleTimeout, func(e error) {
		s.refused("idle_timeout")
		if f := onIdle.Load(); f != nil {
			(*f)(e)
		}
	})
	defer watch.close()
	var metaMsgs atomic.Int64
	tolerant := &metadataTolerantStream{FlightService_DoPutServer: stream, watch: watch, onMetadata: func([]byte) { metaMsgs.Add(1) }}
	rdr, err := openPutReader(tolerant, watch, s.o.Mem)
	if err != nil {
		return s.internal(err, err)
	}
	// The reader is released by the last of this handler and the receiver.
	var rdrRefs atomic.Int32
	rdrRefs.Store(1)
	releaseReader := func() {
		if rdrRefs.Add(-1) == 0 {
			rdr.Release()
		}
	}
	defer releaseReader()
	cmd, err := parsePutDescriptor(rdr.LatestFlightDescriptor())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	s.nameModel(ctx, cmd.Model)
	cfg, err := s.resolveConfig(cmd.Profile, cmd.Config)
	if err != nil {
		return err
	}
	if err := quant.CheckMethod(cmd.Method); err != nil {
		return status.Errorf(codes.InvalidArgument, "method: %v", err)
	}
	for name := range cmd.Files {
		if !validFileName(name) {
			return status.Errorf(codes.InvalidArgument, "files: %.200q is not a plain file name", name)
		}
	}
	modality, modalitySource, err := modalityFor(cfg, cmd.Files)
	if err != nil {
		return err
	}
	if err := checkSchema(rdr.Schema()); err != nil {
		return err
	}
	leave, err := s.uploads.acquire(s.clientID(ctx))
	if err != nil {
		s.refused("uploads")
		return err
	}
	defer leave()
	stage, err := s.o.Store.Begin(ctx, cmd.Model, cmd.Overwrite)
	if err != nil {
		return storeErr(err)
	}
	defer stage.Abort() // a no-op after Commit; also runs when a panic unwinds this handler
	spoolRel := ".spool"
	if s.o.KeepSource || s.o.IngestOnly {
		spoolRel = "source"
	}
	src, err := newFlightSource(filepath.Join(stage.Dir(), spoolRel), spoolRel, s.o.KeepSource || s.o.IngestOnly, s.spool)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	defer src.close()
	failSrc := src.fail
	onIdle.Store(&failSrc)
	ingest := newIngestor(src, s.o.MaxUploadBytes)
	ingest.expect = cmd.Tensors
	if err := ingest.setSchema(rdr.Schema()); err != nil {
		return err
	}
	sender := newPutSender(stream, watch)
	defer sender.close()
	calibPath := ""
	if !s.o.IngestOnly {
		if calibPath, err = writeCalibration(cmd.Calibration); err != nil {
			return err
		}
		if calibPath != "" {
			defer os.RemoveAll(filepath.Dir(calibPath))
		}
	}

	// Receive in the background; the pipeline below reads from the spool.
	recvDone := make(chan error, 1)
	rdrRefs.Add(1)
	go func() {
		var err error
		defer releaseReader()
		defer func() {
			if err != nil {
				src.fail(err)
			}
			recvDone <- err
		}()
		defer safe.Recover("receive the DoPut stream of "+cmd.Model, &err)
		err = receive(rdr, ingest, func(a wire.Ack) { sender.send(a) })
	}()
	waitReceived := func() error {
		select {
		case err := <-recvDone:
			return s.internal(err, err)
		case <-watch.fired:
			return watch.err
		}
	}
	if s.o.IngestOnly {
		if err := waitReceived(); err != nil {
			return err
		}
		return s.commitIngested(ctx, ingest, sender, stage, src)
	}
	res, stats, runErr := s.runPipeline(ctx, cfg, modality, modalitySource, src, stage.Dir(), cmd.Model, calibPath, cmd.Method, cmd.Files,
		func(n int, name string) { sender.send(wire.Quantized{TensorsQuantized: n, Tensor: name}) })
	if runErr != nil {
		src.fail(runErr) // the receiver stops at the next batch
	}
	if err := waitReceived(); err != nil { // the upload's own error explains a pipeline failure best
		return err
	}
	if runErr != nil {
		mapped := pipelineErr(runErr)
		if calibPath != "" { // name the client's file, never the server's temporary path
			st := status.Convert(mapped)
			msg := strings.ReplaceAll(st.Message(), calibPath, cmd.Calibration.Name)
			mapped = status.Error(st.Code(), strings.ReplaceAll(msg, filepath.Dir(calibPath), "."))
		}
		return s.internal(runErr, mapped)
	}
	if err := s.finishModel(stage.Dir(), cmd, src, res, stats); err != nil {
		return s.serverErr("write the model's files", err)
	}
	if _, err := stage.Commit(ctx); err != nil {
		return storeErr(err)
	}
	s.reportModels(ctx)
	if s.o.Hooks.Quantized != nil {
		s.o.Hooks.Quantized(time.Duration(res.QuantizationTimeS*float64(time.Second)), len(res.Fallbacks))
	}
	s.o.Logger.Info().Str("model", cmd.Model).Int("tensors", res.NumTensors).Float64("cosine", res.CosineSimilarity).
		Int64("metadata_messages", metaMsgs.Load()).Int64("spilled_bytes", src.spilledBytes()).Msg("model committed")
	sender.sendFinal(res)
	return sender.close()
}

// openPutReader reads the stream's first message (schema and descriptor)
// without outliving the idle watch: a client that opens a DoPut and sends
// nothing is ended like one that stalls later.
func openPutReader(stream *metadataTolerantStream, watch *idleWatch, mem memory.Allocator) (*flight.Reader, error) {
	type result struct {
		rdr *flight.Reader
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		defer func() { ch <- r }()
		defer func() {
			if p := recover(); p != nil { // the decoder choked on the client's bytes
				r.err = status.Errorf(codes.InvalidArgument, "DoPut: malformed Arrow IPC stream (the decoder failed: %v)", p)
			}
		}()
		r.rdr, r.err = flight.NewRecordReader(stream, ipc.WithAllocator(mem))
		if r.err != nil {
			if _, ok := status.FromError(r.err); !ok || status.Code(r.err) == codes.Unknown {
				r.err = status.Errorf(codes.InvalidArgument, "DoPut: cannot read the Arrow stream: %v", r.err)
			}
		}
	}()
	select {
	case r := <-ch:
		return r.rdr, r.err
	case <-watch.fired:
		go func() { // release what the abandoned read still opens
			if r := <-ch; r.rdr != nil {
				r.rdr.Release()
			}
		}()
		return nil, watch.err
	}
}

// checkSchema refuses an input schema before anything is reserved.
func checkSchema(sc *arrow.Schema) error {
	if err := schema.CheckInput(sc); err != nil {
		return invalidf("%v", err)
	}
	return nil
}

// commitIngested stores the upload's raw spool and manifest (benchmark baseline).
func (s *Service) commitIngested(ctx context.Context, ingest *ingestor, sender *putSender, stage store.Staging, src *flightSource) error {
	src.close()
	b, _ := json.MarshalIndent(src.manifest(), "", "  ")
	if err := os.WriteFile(filepath.Join(stage.Dir(), wire.SourceManifestName), b, 0o644); err != nil {
		return s.serverErr("write the source manifest", err)
	}
	if _, err := stage.Commit(ctx); err != nil {
		return storeErr(err)
	}
	sender.sendFinal(map[string]int64{"ingested_bytes": ingest.bytes})
	return sender.close()
}

// serverErr logs a server-side failure (a full disk, a permission
// problem) in full and fails the call with Internal, saying what could
// not be done without the server's paths.
func (s *Service) serverErr(what string, err error) error {
	s.o.Logger.Error().Err(err).Msg("cannot " + what)
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return status.Errorf(codes.Internal, "server error: cannot %s: %v", what, err)
}

// refused counts a call ended by a server limit.
func (s *Service) refused(limit string) {
	if s.o.Hooks.Refused != nil {
		s.o.Hooks.Refused(limit)
	}
}

// writeCalibration stores a command's calibration file in a temporary
// directory (outside the model) and returns its path ("" without one).
func writeCalibration(c *wire.CalibrationFile) (string, error) {
	if c == nil {
		return "", nil
	}
	if !validFileName(c.Name) || len(c.Data) == 0 {
		return "", status.Errorf(codes.InvalidArgument, "calibration: needs a plain file name (.arrow, .parquet or .jsonl) and data")
	}
	if !calib.KnownExtension(c.Name) {
		return "", status.Errorf(codes.InvalidArgument, "calibration: %q: %s", c.Name, calib.ExtensionHelp)
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

// recordStream is what receive reads: a flight.Reader on the server, an
// ipc.Reader in the fuzz test.
type recordStream interface {
	Next() bool
	RecordBatch() arrow.RecordBatch
	Err() error
}

// receive spools the stream and acknowledges every batch through ack.
func receive(rdr recordStream, ingest *ingestor, ack func(wire.Ack)) error {
	for {
		more, err := nextBatch(rdr)
		if err != nil {
			ingest.src.fail(err)
			return err
		}
		if !more {
			break
		}
		a, err := ingest.batch(rdr.RecordBatch())
		if err != nil {
			ingest.src.fail(err)
			return err
		}
		ack(a)
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

// nextBatch advances the stream. The bytes it decodes are the client's: a
// panic in the IPC decoder is malformed input (InvalidArgument), not a
// server fault.
func nextBatch(rdr recordStream) (more bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			more, err = false, status.Errorf(codes.InvalidArgument, "DoPut stream: malformed Arrow IPC message (the decoder failed: %v)", p)
		}
	}()
	return rdr.Next(), nil
}

// runPipeline quantizes src into the artifact file of dir. tensorDone,
// when set, hears of every quantized tensor (the count so far and its name).
func (s *Service) runPipeline(ctx context.Context, cfg config.DiffusionQuantConfig, modality, modalitySource string, src quant.Source, dir, model, calibration, method string, files map[string][]byte, tensorDone func(n int, name string)) (*quant.Result, *quant.Stats, error) {
	w, err := artifact.Create(filepath.Join(dir, artifact.FileName), s.o.Mem)
	if err != nil {
		return nil, nil, err
	}
	defer w.Abort()
	var maxTimestep float64
	var timestepFrom string
	if raw, ok := files[modelio.ConfigFile]; ok && calibration != "" {
		var cj map[string]any
		if json.Unmarshal(raw, &cj) == nil {
			maxTimestep, timestepFrom = modelio.TimestepLimitFromConfig(cj)
		}
	}
	var progress func(quant.Progress)
	if tensorDone != nil {
		last := 0
		progress = func(p quant.Progress) { // serialized by the pipeline
			if p.TensorsDone != last {
				last = p.TensorsDone
				tensorDone(p.TensorsDone, p.Last)
			}
		}
	}
	res, stats, err := quant.Run(ctx, quant.Options{
		Config: cfg, Modality: modality, ModalitySource: modalitySource, Mem: s.o.Mem, Calibration: calibration, Method: method,
		CalibrationName: filepath.Base(calibration), // the client's file name, never the server's temporary path
		MaxTimestep:     maxTimestep, TimestepFrom: timestepFrom,
		Logger: s.o.Logger.With().Str("model", model).Logger(), Progress: progress,
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
func (s *Service) finishModel(dir string, cmd wire.PutCommand, src *flightSource, res *quant.Result, stats *quant.Stats) error {
	for name, data := range cmd.Files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	if src.keep {
		b, _ := json.MarshalIndent(src.manifest(), "", "  ")
		if err := os.WriteFile(filepath.Join(dir, wire.SourceManifestName), b, 0o644); err != nil {
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
