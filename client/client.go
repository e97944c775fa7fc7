// Package client is the Go client of the ArrowQuant Flight service, used
// by `arrowquant push`, `pull`, `ls` and `info`.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/internal/bufpool"
	"github.com/arrowquant/arrowquant/internal/flightcodec"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/internal/fsutil"
	"github.com/arrowquant/arrowquant/internal/outdir"
	"github.com/arrowquant/arrowquant/local"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
	"github.com/arrowquant/arrowquant/wire"
)

// DefaultMaxMessageBytes matches the server's default message limit.
const DefaultMaxMessageBytes = 256 << 20

// Options say how to reach and authenticate to a server.
type Options struct {
	Server          string           // grpc://HOST:PORT, grpc+tls://HOST:PORT or HOST:PORT
	Token           string           // bearer token (server --auth-token)
	User, Password  string           // basic auth (server --auth-basic)
	TLSCAFile       string           // CA for grpc+tls (default: system roots)
	MaxMessageBytes int              // 0 = DefaultMaxMessageBytes
	Mem             memory.Allocator // nil: memory.DefaultAllocator (the CLI's is an internal/bufpool pool)
}

// Client talks to one server.
type Client struct {
	fc   flight.Client
	auth context.Context // carries the authorization header
	mem  memory.Allocator
}

// Dial connects (and authenticates with basic auth when a user is given).
func Dial(ctx context.Context, o Options) (*Client, error) {
	addr, useTLS, err := parseServer(o.Server)
	if err != nil {
		return nil, err
	}
	max := o.MaxMessageBytes
	if max == 0 {
		max = DefaultMaxMessageBytes
	}
	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(max), grpc.MaxCallSendMsgSize(max)),
		experimental.WithBufferPool(bufpool.Transport)}
	if useTLS {
		creds := credentials.NewTLS(nil)
		if o.TLSCAFile != "" {
			if creds, err = credentials.NewClientTLSFromFile(o.TLSCAFile, ""); err != nil {
				return nil, fmt.Errorf("client: TLS CA %s: %w", o.TLSCAFile, err)
			}
		}
		opts = append(opts, grpc.WithTransportCredentials(creds))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	fc, err := flight.NewClientWithMiddlewareCtx(ctx, addr, nil, nil, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: connect %s: %w", o.Server, err)
	}
	c := &Client{fc: fc, auth: context.Background(), mem: o.Mem}
	if c.mem == nil {
		c.mem = memory.DefaultAllocator
	}
	switch {
	case o.Token != "":
		c.auth = metadata.AppendToOutgoingContext(c.auth, "authorization", "Bearer "+o.Token)
	case o.User != "":
		actx, err := fc.AuthenticateBasicToken(ctx, o.User, o.Password)
		if err != nil {
			fc.Close()
			return nil, fmt.Errorf("client: authenticate %s: %w", o.User, err)
		}
		md, _ := metadata.FromOutgoingContext(actx)
		c.auth = metadata.NewOutgoingContext(context.Background(), md)
	}
	return c, nil
}

func parseServer(s string) (addr string, useTLS bool, err error) {
	if s == "" {
		return "", false, errors.New("client: no server address (--server grpc://HOST:PORT)")
	}
	if !strings.Contains(s, "://") {
		return s, false, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", false, fmt.Errorf("client: server %q: %w", s, err)
	}
	switch u.Scheme {
	case "grpc", "grpc+tcp":
		return u.Host, false, nil
	case "grpc+tls":
		return u.Host, true, nil
	}
	return "", false, fmt.Errorf("client: server %q: scheme must be grpc:// or grpc+tls://", s)
}

// Close closes the connection.
func (c *Client) Close() error { return c.fc.Close() }

// withAuth merges the authorization metadata into ctx.
func (c *Client) withAuth(ctx context.Context) context.Context {
	md, ok := metadata.FromOutgoingContext(c.auth)
	if !ok {
		return ctx
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// PushOptions configure a push.
type PushOptions struct {
	Name       string
	Profile    string
	Config     map[string]any // overrides (snake_case keys)
	Overwrite  bool
	ChunkElems int64 // elements per row; default schema.ChunkElems
	// Calibration is a calibration file (docs/FORMAT.md) sent with the upload.
	Calibration string
	// Method forces one quantization method at every bit width ("" = defaults).
	Method string
	// Progress receives source bytes sent and the total.
	Progress func(sent, total int64)
	// Quantized receives the server's progress: tensors quantized so far,
	// of the total, and the last one's name.
	Quantized func(done, total int, name string)
}

// Push uploads the model in dir and returns the server's result.
func (c *Client) Push(ctx context.Context, dir string, o PushOptions) (*quant.Result, error) {
	m, err := modelio.Open(dir, modelio.OpenOptions{})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if o.Name == "" {
		o.Name = filepath.Base(filepath.Clean(dir))
	}
	if o.ChunkElems <= 0 {
		o.ChunkElems = schema.ChunkElems
	}
	cmd := wire.PutCommand{Model: o.Name, Profile: o.Profile, Config: o.Config, Overwrite: o.Overwrite,
		Files: map[string][]byte{}, Tensors: len(m.Tensors), Method: o.Method}
	aux, err := m.AuxFiles()
	if err != nil {
		return nil, err
	}
	for _, name := range aux {
		if name != filepath.Base(name) || strings.HasPrefix(name, ".") || name == artifact.ReportName || name == artifact.FileName {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.Dir, name))
		if err != nil {
			return nil, err
		}
		cmd.Files[name] = b
	}
	if o.Calibration != "" {
		data, err := os.ReadFile(o.Calibration)
		if err != nil {
			return nil, fmt.Errorf("client: calibration: %w", err)
		}
		cmd.Calibration = &wire.CalibrationFile{Name: filepath.Base(o.Calibration), Data: data}
	}
	body, _ := json.Marshal(cmd)

	vt := wireType(m)
	descriptor, err := proto.Marshal(&flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: body})
	if err != nil {
		return nil, fmt.Errorf("client: encode the upload's descriptor: %w", err)
	}
	stream, err := c.fc.DoPut(c.withAuth(ctx), grpc.ForceCodecV2(flightcodec.New()))
	if err != nil {
		return nil, err
	}
	w := newPutWriter(stream, descriptor, ipc.WithSchema(schema.Input(vt)), ipc.WithAllocator(c.mem))

	// Read acknowledgements concurrently; the last message is the result.
	type outcome struct {
		last []byte
		err  error
	}
	results := make(chan outcome, 1)
	go func() {
		var last []byte
		for {
			pr, err := stream.Recv()
			if err == io.EOF {
				results <- outcome{last: last}
				return
			}
			if err != nil {
				results <- outcome{err: err}
				return
			}
			last = pr.GetAppMetadata()
			if o.Quantized != nil && bytes.Contains(last, []byte(`"tensors_quantized"`)) {
				var q wire.Quantized
				if json.Unmarshal(last, &q) == nil {
					o.Quantized(q.TensorsQuantized, len(m.Tensors), q.Tensor)
				}
			}
		}
	}()
	sendErr := c.sendTensors(ctx, m, w, vt, o)
	w.Close()
	if sendErr == nil {
		sendErr = stream.CloseSend()
	}
	out := <-results
	if out.err != nil {
		return nil, out.err // the server's status explains a failed upload best
	}
	if sendErr != nil {
		return nil, sendErr
	}
	var res quant.Result
	if err := json.Unmarshal(out.last, &res); err != nil || res.Layers == nil {
		return nil, fmt.Errorf("client: the server's last message is not a result: %s", truncate(out.last))
	}
	return &res, nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// wireType is the stream's value type: the model's one 16-bit type, or
// float32 when it has F32/F64 tensors or mixes F16 and BF16.
func wireType(m *modelio.Model) arrow.DataType {
	seen := map[modelio.DType]bool{}
	for _, t := range m.Tensors {
		seen[t.DType] = true
	}
	if len(seen) == 1 {
		for d := range seen {
			if vt, err := schema.ValueType(string(d)); err == nil {
				return vt
			}
		}
	}
	return arrow.PrimitiveTypes.Float32
}

func (c *Client) sendTensors(ctx context.Context, m *modelio.Model, w *putWriter, wire arrow.DataType, o PushOptions) error {
	total, sent := m.SourceBytes(), int64(0)
	raw := []byte{}
	for _, t := range m.Tensors {
		n := t.NumElements()
		for off := int64(0); off < n || (n == 0 && off == 0); off += o.ChunkElems {
			if err := ctx.Err(); err != nil {
				return err
			}
			cnt := min(o.ChunkElems, n-off)
			rec, err := c.readChunk(m, t, off, cnt, wire, &raw)
			if err != nil {
				return err
			}
			err = w.Write(rec)
			rec.Release()
			if err != nil {
				return fmt.Errorf("client: send %q: %w", t.Name, err)
			}
			sent += cnt * int64(t.DType.Size())
			if o.Progress != nil {
				o.Progress(sent, total)
			}
			if n == 0 {
				break
			}
		}
	}
	return nil
}

// readChunk reads a chunk in the wire type, widening to float32 if needed.
func (c *Client) readChunk(m *modelio.Model, t modelio.TensorInfo, off, n int64, wire arrow.DataType, raw *[]byte) (arrow.RecordBatch, error) {
	meta := quant.TensorMeta{Name: t.Name, Shape: t.Shape, DType: string(t.DType)}
	width := int64(wire.(arrow.FixedWidthDataType).BitWidth() / 8)
	buf := memory.NewResizableBuffer(bufpool.UninitOf(c.mem)) // filled in full below
	defer buf.Release()
	buf.Resize(int(n * width))
	native, _ := schema.ValueType(string(t.DType))
	if native.ID() == wire.ID() && t.DType != modelio.F64 {
		if err := m.ReadRaw(t, off, n, buf.Bytes()); err != nil {
			return nil, err
		}
	} else {
		size := int64(t.DType.Size())
		if int64(cap(*raw)) < n*size {
			*raw = make([]byte, n*size)
		}
		r := (*raw)[:n*size]
		if err := m.ReadRaw(t, off, n, r); err != nil {
			return nil, err
		}
		dst := arrow.Float32Traits.CastFromBytes(buf.Bytes())
		switch t.DType {
		case modelio.F16:
			fp.DecodeHalf(dst, r)
		case modelio.BF16:
			fp.DecodeBF16(dst, r)
		case modelio.F32:
			fp.DecodeF32(dst, r)
		case modelio.F64:
			fp.DecodeF64(dst, r)
		}
	}
	return quant.InputRecord(c.mem, meta, off, wire, buf), nil
}

// Info returns a stored model's FlightInfo and its decoded app_metadata.
func (c *Client) Info(ctx context.Context, name string) (*flight.FlightInfo, map[string]any, error) {
	info, err := c.fc.GetFlightInfo(c.withAuth(ctx), &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{name}})
	if err != nil {
		return nil, nil, err
	}
	var md map[string]any
	if err := json.Unmarshal(info.GetAppMetadata(), &md); err != nil {
		return nil, nil, fmt.Errorf("client: app_metadata of %q: %w", name, err)
	}
	return info, md, nil
}

// List returns the stored models whose name starts with prefix.
func (c *Client) List(ctx context.Context, prefix string) ([]*flight.FlightInfo, error) {
	stream, err := c.fc.ListFlights(c.withAuth(ctx), &flight.Criteria{Expression: []byte(prefix)})
	if err != nil {
		return nil, err
	}
	var out []*flight.FlightInfo
	for {
		info, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
}

// Action runs a DoAction and decodes its JSON result into v (may be nil).
func (c *Client) Action(ctx context.Context, typ string, body any, v any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	if body == nil {
		b = nil
	}
	stream, err := c.fc.DoAction(c.withAuth(ctx), &flight.Action{Type: typ, Body: b})
	if err != nil {
		return err
	}
	res, err := stream.Recv()
	if err != nil {
		return err
	}
	for { // drain
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(res.GetBody(), v)
}

// Get streams a ticket's batches to fn (the reader's schema first).
func (c *Client) Get(ctx context.Context, t wire.Ticket, fn func(s *arrow.Schema, rec arrow.RecordBatch) error) error {
	b, _ := json.Marshal(t)
	stream, err := c.fc.DoGet(c.withAuth(ctx), &flight.Ticket{Ticket: b})
	if err != nil {
		return err
	}
	rdr, err := flight.NewRecordReader(stream, ipc.WithAllocator(c.mem))
	if err != nil {
		return err
	}
	defer rdr.Release()
	for rdr.Next() {
		if err := fn(rdr.Schema(), rdr.RecordBatch()); err != nil {
			return err
		}
	}
	if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// PullOptions configure Pull.
type PullOptions struct {
	Overwrite bool                    // replace a non-empty directory ArrowQuant created
	Force     bool                    // with Overwrite: replace it even if ArrowQuant did not create it
	Progress  func(done, total int64) // record batches received of the total
}

// Pull writes a stored model into dir with the layout of `arrowquant
// quantize`: model.arrow, report.json and the model's other files. The
// directory is built in a temporary sibling and renamed into place.
func (c *Client) Pull(ctx context.Context, name, dir string, o PullOptions) error {
	progress := o.Progress
	info, md, err := c.Info(ctx, name)
	if err != nil {
		return err
	}
	return outdir.Write(dir, outdir.Options{Overwrite: o.Overwrite, Force: o.Force, Command: "pull"}, func(tmp string) error {
		f, err := os.Create(filepath.Join(tmp, artifact.FileName))
		if err != nil {
			return err
		}
		defer f.Close()
		var fw *ipc.FileWriter
		var done int64
		err = c.Get(ctx, wire.Ticket{Model: name}, func(s *arrow.Schema, rec arrow.RecordBatch) error {
			if fw == nil {
				// Writeback starts as the file grows: the final fsync then
				// waits for its last part (3.0 s -> 0.6 s for 4 GB, docs/PERF.md).
				if fw, err = ipc.NewFileWriter(&fsutil.WritebackFile{F: f}, ipc.WithSchema(s), ipc.WithAllocator(c.mem)); err != nil {
					return err
				}
			}
			done++
			if progress != nil {
				progress(done, info.GetTotalRecords())
			}
			return fw.Write(rec)
		})
		if err != nil {
			return err
		}
		if fw == nil {
			return fmt.Errorf("client: model %q streamed no batches", name)
		}
		if err := fw.Close(); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		files, _ := md["files"].([]any)
		for _, fn := range files {
			fname, _ := fn.(string)
			if fname == "" || fname != filepath.Base(fname) {
				continue
			}
			if err := c.Get(ctx, wire.Ticket{Model: name, File: fname}, func(_ *arrow.Schema, rec arrow.RecordBatch) error {
				data := rec.Column(1).(*array.Binary).Value(0)
				return os.WriteFile(filepath.Join(tmp, fname), data, 0o644)
			}); err != nil {
				return fmt.Errorf("client: fetch %s: %w", fname, err)
			}
		}
		return localizeReport(tmp, dir)
	})
}

// localizeReport rewrites the pulled report.json with the keys of the local
// copy (quantized_path, model_size_mb, compression_ratio), as quantize writes them.
func localizeReport(tmp, dir string) error {
	b, err := os.ReadFile(filepath.Join(tmp, artifact.ReportName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var res quant.Result
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("client: pulled report.json: %w", err)
	}
	if err := local.FinishResult(&res, filepath.Join(tmp, artifact.FileName), filepath.Join(dir, artifact.FileName)); err != nil {
		return err
	}
	return local.WriteReport(tmp, &res)
}

// GGUFOptions configure ExportGGUF.
type GGUFOptions struct {
	Exact, Runnable bool             // as `arrowquant export`
	Overwrite       bool             // replace an existing output file
	Progress        func(done int64) // GGUF bytes received
}

// ExportGGUF has the server export a stored model as GGUF and writes it to
// out (through a temporary sibling renamed at the end, so a failure leaves
// no file that looks like a valid GGUF) and the export report to
// out+".report.json". It returns the report JSON.
func (c *Client) ExportGGUF(ctx context.Context, name, out string, o GGUFOptions) ([]byte, error) {
	if _, err := os.Stat(out); err == nil && !o.Overwrite {
		return nil, fmt.Errorf("%w: %s (add --overwrite to replace it)", outdir.ErrFileExists, out)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		tmp.Close()
		if !done {
			os.Remove(tmp.Name())
		}
	}()
	var report []byte
	var written int64
	wb := &fsutil.WritebackFile{F: tmp}
	err = c.Get(ctx, wire.Ticket{Model: name, Format: "gguf", Exact: o.Exact, Runnable: o.Runnable}, func(_ *arrow.Schema, rec arrow.RecordBatch) error {
		offs := rec.Column(0).(*array.Int64)
		data := rec.Column(1).(*array.Binary)
		rep := rec.Column(2).(*array.String)
		for i := 0; i < int(rec.NumRows()); i++ {
			if offs.Value(i) != written {
				return fmt.Errorf("client: GGUF stream: chunk at %d, expected %d", offs.Value(i), written)
			}
			n, err := wb.Write(data.Value(i))
			written += int64(n)
			if err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			if rep.IsValid(i) {
				report = []byte(rep.Value(i))
			}
		}
		if o.Progress != nil {
			o.Progress(written)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if report == nil {
		return nil, fmt.Errorf("client: the GGUF stream of %s ended without its report", name)
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return nil, err
	}
	done = true
	if err := os.WriteFile(out+".report.json", append(report, '\n'), 0o644); err != nil {
		return nil, err
	}
	return report, nil
}
