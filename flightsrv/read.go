package flightsrv

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/internal/flightcodec"
	"github.com/arrowquant/arrowquant/internal/ipcguard"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/wire"
)

// openArtifact opens a stored model's artifact.
func (s *Service) openArtifact(ctx context.Context, name string) (*artifact.Reader, store.File, error) {
	f, err := s.o.Store.Open(ctx, name, artifact.FileName)
	if err != nil {
		return nil, nil, storeErr(err)
	}
	r, err := artifact.NewReader(f, f, name+"/"+artifact.FileName, s.o.Mem)
	if err != nil {
		return nil, nil, readErr(status.Errorf(codes.Internal, "model %q: %v", name, err), err)
	}
	return r, f, nil
}

// readReport reads a stored model's report.json.
func (s *Service) readReport(ctx context.Context, name string) (map[string]any, error) {
	f, err := s.o.Store.Open(ctx, name, artifact.ReportName)
	if err != nil {
		return nil, storeErr(err)
	}
	defer f.Close()
	var rep map[string]any
	if err := json.NewDecoder(f).Decode(&rep); err != nil {
		return nil, status.Errorf(codes.Internal, "model %q: report.json: %v", name, err)
	}
	return rep, nil
}

// flightInfo describes a stored model: schema with metadata, one endpoint
// whose ticket streams the whole model, totals, and the report (with time
// groups and fallbacks) as app_metadata.
func (s *Service) flightInfo(ctx context.Context, name string) (*flight.FlightInfo, error) {
	r, f, err := s.openArtifact(ctx, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	rep, err := s.readReport(ctx, name)
	if err != nil {
		return nil, err
	}
	var tg any
	if raw := r.Meta(schema.MetaTimeGroups); raw != "" {
		json.Unmarshal([]byte(raw), &tg)
	}
	rep["model"] = name
	rep["time_groups"] = tg
	if e, err := s.o.Store.Get(ctx, name); err == nil {
		rep["files"] = modelFiles(e)
		rep["version"] = e.Version
	}
	if _, ok := rep["fallbacks"]; !ok {
		rep["fallbacks"] = []quant.Fallback{}
	}
	app, _ := json.Marshal(rep)
	ticket, _ := json.Marshal(wire.Ticket{Model: name})
	return &flight.FlightInfo{
		Schema:           flight.SerializeSchema(r.Schema(), s.o.Mem),
		FlightDescriptor: &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{name}},
		Endpoint:         s.endpoints(ctx, ticket),
		TotalRecords:     int64(r.NumBatches()),
		TotalBytes:       f.Size(),
		AppMetadata:      app,
	}, nil
}

// GetFlightInfo describes one stored model ([NAME] or {"model": NAME}).
func (s *Service) GetFlightInfo(ctx context.Context, d *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	name, err := modelFromDescriptor(d)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.enter(ctx, name); err != nil {
		return nil, err
	}
	return s.flightInfo(ctx, name)
}

// GetSchema returns a stored model's quantized schema with its metadata.
func (s *Service) GetSchema(ctx context.Context, d *flight.FlightDescriptor) (*flight.SchemaResult, error) {
	name, err := modelFromDescriptor(d)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.enter(ctx, name); err != nil {
		return nil, err
	}
	r, _, err := s.openArtifact(ctx, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return &flight.SchemaResult{Schema: flight.SerializeSchema(r.Schema(), s.o.Mem)}, nil
}

// ListFlights lists stored models whose name starts with the criteria.
func (s *Service) ListFlights(c *flight.Criteria, stream flight.FlightService_ListFlightsServer) error {
	ctx := stream.Context()
	if err := s.enter(ctx, ""); err != nil {
		return err
	}
	entries, err := s.o.Store.List(ctx, string(c.GetExpression()))
	if err != nil {
		return storeErr(err)
	}
	for _, e := range entries {
		info, err := s.flightInfo(ctx, e.Name)
		if status.Code(err) == codes.NotFound { // deleted meanwhile
			continue
		}
		if err != nil {
			return err
		}
		if err := stream.Send(info); err != nil {
			return err
		}
	}
	return nil
}

// DoGet streams a stored model: its quantized batches, one tensor's, or
// their float32 reconstruction (schema.Dequantized).
func (s *Service) DoGet(t *flight.Ticket, stream flight.FlightService_DoGetServer) error {
	ctx := stream.Context()
	tk, err := parseTicket(t.GetTicket())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.enter(ctx, tk.Model); err != nil {
		return err
	}
	if tk.Format != "" {
		return s.sendGGUF(ctx, tk, stream)
	}
	if tk.File != "" {
		return s.sendFile(ctx, tk, stream)
	}
	// One open file serves the index and the batches: a concurrent
	// overwrite or delete cannot mix two versions of the model.
	r, f, err := s.openArtifact(ctx, tk.Model)
	if err != nil {
		return err
	}
	defer r.Close()
	first, count := 0, r.NumBatches()
	if tk.Tensor != "" {
		found := false
		for _, e := range r.Tensors() {
			if e.Name == tk.Tensor {
				first, count, found = e.FirstBatch, e.NumBatches, true
				break
			}
		}
		if !found {
			return status.Errorf(codes.NotFound, "model %q has no tensor %q", tk.Model, tk.Tensor)
		}
	}
	if !tk.Dequantize {
		return s.streamStored(ctx, tk.Model, f, r, first, count, stream)
	}
	out := dequantizedSchema(r.Schema().Metadata())
	w := flight.NewRecordWriter(stream, ipc.WithSchema(out), ipc.WithAllocator(s.o.Mem))
	defer w.Close()
	deq := artifact.NewDequantizer(s.o.Mem) // batches go in file order, each tensor from its first
	for b := first; b < first+count; b++ {
		if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		rec, err := r.Batch(b)
		if err != nil {
			return readErr(status.Error(codes.Internal, err.Error()), err)
		}
		back, err := dequantizedRecord(ctx, s, deq, out, rec)
		rec.Release()
		if err != nil {
			return err
		}
		rec = back
		err = w.Write(rec)
		rec.Release()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
	return nil
}

// streamStored sends record batches [first, first+count) of the stored
// artifact r reads from f as they are in the file: each batch's IPC message
// (metadata and body) is read once into a pooled buffer and sent as one
// FlightData whose body the transport writes from that buffer (no decoding,
// no copy before the transport's). The blocks come
// from the footer r checked; the schema message is the footer's schema
// (with its metadata). Every message's metadata is bounds-checked first.
func (s *Service) streamStored(ctx context.Context, model string, f store.File, r *artifact.Reader, first, count int, stream flight.FlightService_DoGetServer) error {
	// An unreachable or collected store version is Unavailable / NotFound.
	fail := func(err error) error {
		return readErr(s.serverErr("read the stored artifact of "+model, err), err)
	}
	blocks := r.Blocks()
	if first < 0 || first+count > len(blocks) {
		return fail(fmt.Errorf("batches [%d, %d) of %d", first, first+count, len(blocks)))
	}
	// The stream starts with the schema as the footer has it (with the
	// metadata; the file's first message has none).
	buf, err := artifact.SchemaMessage(r.Schema(), s.o.Mem)
	if err != nil {
		return fail(err)
	}
	if err := stream.Send(&flight.FlightData{DataHeader: buf}); err != nil {
		return err
	}
	for b := first; b < first+count; b++ {
		if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		whole, body, meta, err := s.readStoredBatch(f, blocks[b])
		if err != nil {
			return fail(fmt.Errorf("batch %d: %w", b, err))
		}
		err = stream.SendMsg(&flightcodec.OutgoingData{Header: meta, Body: mem.BufferSlice{body}})
		body.Free()
		whole.Free()
		if err != nil {
			return err
		}
	}
	return nil
}

// readStoredBatch reads one stored batch's IPC message as it is in the
// file into a pooled buffer (whole) and checks its metadata. Sent as
// flightcodec.OutgoingData, the body (a reference into whole) goes to the
// transport without a copy and back to the pool once written; the caller
// frees whole and body after the send.
func (s *Service) readStoredBatch(f store.File, blk ipcguard.Block) (whole, body mem.Buffer, meta []byte, err error) {
	size := int64(blk.MetaLen) + blk.BodyLen
	whole, msg := flightcodec.NewBodyBuffer(s.bodyMem, int(size))
	if _, err := f.ReadAt(msg, blk.Offset); err != nil {
		whole.Free()
		return nil, nil, nil, err
	}
	prefix := 4 // a message starts with its metadata length, after a continuation marker since format 0.15
	if binary.LittleEndian.Uint32(msg) == 0xFFFFFFFF {
		prefix = 8
	}
	meta = msg[prefix:blk.MetaLen]
	if _, err := ipcguard.CheckMessage(meta); err != nil {
		whole.Free()
		return nil, nil, nil, err
	}
	return whole, whole.Slice(int(blk.MetaLen), int(size)), meta, nil
}

// sendFile streams one of the model's files as a wire.FileSchema batch.
func (s *Service) sendFile(ctx context.Context, tk wire.Ticket, stream flight.FlightService_DoGetServer) error {
	if tk.File == artifact.FileName || tk.Tensor != "" || tk.Dequantize {
		return status.Errorf(codes.InvalidArgument, "a file ticket names one file other than %s, without tensor or dequantize", artifact.FileName)
	}
	if tk.File != artifact.ReportName && !validFileName(tk.File) {
		return status.Errorf(codes.InvalidArgument, "file %.200q: a file ticket names one plain file of the model (config.json, report.json, tokenizer files: see GetFlightInfo's \"files\")", tk.File)
	}
	data, err := s.readFile(ctx, tk.Model, tk.File)
	if err != nil {
		return storeErr(err)
	}
	nb := array.NewStringBuilder(s.o.Mem)
	nb.Append(tk.File)
	names := nb.NewArray()
	nb.Release()
	defer names.Release()
	db := array.NewBinaryBuilder(s.o.Mem, arrow.BinaryTypes.Binary)
	db.Append(data)
	datas := db.NewArray()
	db.Release()
	defer datas.Release()
	rec := array.NewRecordBatch(wire.FileSchema, []arrow.Array{names, datas}, 1)
	defer rec.Release()
	w := flight.NewRecordWriter(stream, ipc.WithSchema(wire.FileSchema), ipc.WithAllocator(s.o.Mem))
	defer w.Close()
	return w.Write(rec)
}

// modelFiles lists a model's plain files for clients to fetch (config,
// tokenizer, report), leaving out the artifact, the kept source and hidden files.
func modelFiles(e store.Entry) []string {
	var out []string
	for name := range e.Files {
		if name != artifact.FileName && !strings.HasPrefix(name, "source/") && !strings.HasPrefix(name, ".") {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func dequantizedSchema(md arrow.Metadata) *arrow.Schema {
	base := schema.Dequantized()
	return arrow.NewSchema(base.Fields(), &md)
}

// dequantizedRecord turns one quantized batch into a float32 batch of the
// input schema (dtype "F32"; the source dtype stays in the metadata index).
func dequantizedRecord(ctx context.Context, s *Service, deq *artifact.Dequantizer, out *arrow.Schema, rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	vals, err := deq.Batch(ctx, rec)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	defer vals.Release()
	mem := s.o.Mem
	db := array.NewStringBuilder(mem)
	defer db.Release()
	for i := 0; i < int(rec.NumRows()); i++ {
		db.Append(schema.DTypeF32)
	}
	dtypes := db.NewArray()
	defer dtypes.Release()
	cols := []arrow.Array{rec.Column(schema.IdxName), rec.Column(schema.IdxShape), dtypes, rec.Column(schema.IdxChunkOffset), vals}
	return array.NewRecordBatch(out, cols, rec.NumRows()), nil
}
