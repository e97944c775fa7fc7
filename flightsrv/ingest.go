package flightsrv

import (
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/internal/checked"
	"github.com/arrowquant/arrowquant/internal/flightcodec"
	"github.com/arrowquant/arrowquant/internal/ipcguard"
	"github.com/arrowquant/arrowquant/internal/safe"
	"github.com/arrowquant/arrowquant/quant"
	"github.com/arrowquant/arrowquant/schema"
	"github.com/arrowquant/arrowquant/wire"
)

// ingestor turns DoPut rows into spooled tensors, checking the input contract.
type ingestor struct {
	src        *flightSource
	cur        *spoolTensor
	seen       map[string]bool
	bytes      int64 // received
	declared   int64 // declared by the shapes of the tensors started so far
	limitBytes int64 // 0 = none
	expect     int   // tensors declared by the client, 0 = not declared
	batches    int64
	cols       struct{ name, shape, dtype, off, values int }
}

func newIngestor(src *flightSource, limitBytes int64) *ingestor {
	return &ingestor{src: src, seen: map[string]bool{}, limitBytes: limitBytes}
}

func invalidf(format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, format, a...)
}

func (in *ingestor) setSchema(s *arrow.Schema) error {
	if err := schema.CheckInput(s); err != nil {
		return invalidf("%v", err)
	}
	idx := func(n string) int { return s.FieldIndices(n)[0] }
	in.cols.name, in.cols.shape, in.cols.dtype = idx(schema.ColName), idx(schema.ColShape), idx(schema.ColDType)
	in.cols.off, in.cols.values = idx(schema.ColChunkOffset), idx(schema.ColValues)
	return nil
}

// batch spools every row of rec and returns the ack for it.
func (in *ingestor) batch(rec arrow.RecordBatch) (wire.Ack, error) {
	names := rec.Column(in.cols.name)
	shapes := rec.Column(in.cols.shape).(*array.List)
	dtypes := rec.Column(in.cols.dtype)
	offs := rec.Column(in.cols.off).(*array.Int64)
	values := rec.Column(in.cols.values).(*array.List)
	// A string array's Value aliases the message body; a name kept in a
	// tensor's meta would keep the whole body alive (the first body of
	// every tensor: 720 MB of a 15 GB push), so keep copies.
	str := func(a arrow.Array, i int) string {
		if s, ok := a.(interface{ Value(int) string }); ok {
			return strings.Clone(s.Value(i))
		}
		return ""
	}
	// Offsets and buffers of a batch come from the client: check them
	// before any value is read (a bad offset would index out of range).
	if err := array.ValidateRecordFull(rec); err != nil {
		return wire.Ack{}, invalidf("input batch %d is not a valid Arrow record batch: %v", in.batches, err)
	}
	for _, c := range []arrow.Array{names, shapes, dtypes, offs, values} {
		if c.NullN() > 0 {
			return wire.Ack{}, invalidf("input batch %d: column %s has nulls", in.batches, c.DataType())
		}
	}
	if shapes.ListValues().NullN() > 0 {
		return wire.Ack{}, invalidf("input batch %d: column shape has null dimensions", in.batches)
	}
	for i := 0; i < int(rec.NumRows()); i++ {
		s, e := shapes.ValueOffsets(i)
		shape := append(make([]int64, 0, e-s), shapes.ListValues().(*array.Int64).Int64Values()[s:e]...) // [] for a scalar, never nil
		if err := in.row(str(names, i), shape, str(dtypes, i), offs.Value(i), values, i); err != nil {
			return wire.Ack{}, err
		}
	}
	in.batches++
	ack := wire.Ack{Batches: in.batches}
	if in.cur != nil {
		in.src.mu.Lock()
		ack.Tensor, ack.ElementsReceived = in.cur.meta.Name, in.cur.have
		in.src.mu.Unlock()
	}
	return ack, nil
}

func (in *ingestor) row(name string, shape []int64, dtype string, off int64, values *array.List, i int) error {
	if err := schema.CheckTensorName(name); err != nil {
		return invalidf("batch %d row %d: %v", in.batches, i, err)
	}
	vt, err := schema.ValueType(dtype)
	if err != nil {
		return invalidf("tensor %q: %v", name, err)
	}
	elem := values.DataType().(*arrow.ListType).Elem()
	if elem.ID() != vt.ID() && elem.ID() != arrow.FLOAT32 {
		return invalidf("tensor %q: dtype %s travels as list<%s> (or list<float>), the batch has list<%s>", name, dtype, vt, elem)
	}
	vt = elem
	if in.cur == nil || in.cur.meta.Name != name {
		if err := in.finishCurrent(); err != nil {
			return err
		}
		if in.seen[name] {
			return invalidf("tensor %q arrived again after other tensors: send each tensor's chunks together, in order", name)
		}
		if err := in.start(name, shape, dtype, vt); err != nil {
			return err
		}
	}
	t := in.cur
	if !slices.Equal(t.meta.Shape, shape) || t.meta.DType != dtype || t.vt.ID() != vt.ID() {
		return invalidf("tensor %q: chunk at %d has shape %v %s, earlier chunks %v %s", name, off, shape, dtype, t.meta.Shape, t.meta.DType)
	}
	in.src.mu.Lock()
	have := t.have
	in.src.mu.Unlock()
	s, e := values.ValueOffsets(i)
	n := e - s
	if off != have {
		return invalidf("tensor %q: chunk_offset %d, expected %d (chunks must arrive in order without gaps)", name, off, have)
	}
	if have+n > t.n {
		return invalidf("tensor %q: %d elements received, shape %v holds %d", name, have+n, shape, t.n)
	}
	if n == 0 {
		return nil // an empty chunk changes nothing
	}
	child := values.ListValues()
	if child.NullN() > 0 {
		return invalidf("tensor %q: null values in chunk at %d", name, off)
	}
	data := child.Data()
	raw := data.Buffers()[1].Bytes()[(int64(data.Offset())+s)*t.width : (int64(data.Offset())+e)*t.width]
	in.bytes += int64(len(raw))
	return t.store(raw)
}

func (in *ingestor) start(name string, shape []int64, dtype string, vt arrow.DataType) error {
	elems, err := schema.CheckShape(shape)
	if err != nil {
		return invalidf("tensor %q: %v", name, err)
	}
	width := int64(vt.(arrow.FixedWidthDataType).BitWidth() / 8)
	size, err := checked.Mul(elems, width)
	if err == nil {
		size, err = checked.Add(in.declared, size)
	}
	if err != nil || (in.limitBytes > 0 && size > in.limitBytes) {
		return status.Errorf(codes.ResourceExhausted, "tensor %q of shape %v takes the upload past the server's upload limit of %d bytes (--max-upload-gb)", name, shape, in.limitBytes)
	}
	in.declared = size
	in.seen[name] = true
	idx := len(in.seen)
	t := &spoolTensor{
		src: in.src, meta: quant.TensorMeta{Name: name, Shape: shape, DType: dtype},
		vt: vt, width: width, path: filepath.Join(in.src.dir, strconv.Itoa(idx)+".bin"), n: elems,
	}
	if in.src.budget == nil { // every value goes to the file, which exists even for an empty tensor
		if err := t.openFile(0); err != nil {
			return err
		}
	}
	in.src.mu.Lock()
	closed := in.src.closed
	in.src.mu.Unlock()
	if closed { // the call ended while this batch was on its way
		t.Release()
		return errUploadEnded
	}
	in.cur = t
	in.src.mu.Lock()
	in.src.queue = append(in.src.queue, t)
	in.src.all = append(in.src.all, t)
	in.src.changedLocked()
	in.src.mu.Unlock()
	return nil
}

// finishCurrent checks that the current tensor arrived whole.
func (in *ingestor) finishCurrent() error {
	t := in.cur
	if t == nil {
		return nil
	}
	in.src.mu.Lock()
	have := t.have
	in.src.mu.Unlock()
	if have != t.n {
		return invalidf("tensor %q: received %d of its %d elements (shape %v) before the next tensor or the end of the stream", t.meta.Name, have, t.n, t.meta.Shape)
	}
	return nil
}

// end closes the stream's contract: the last tensor is whole and there was one.
func (in *ingestor) end() error {
	if err := in.finishCurrent(); err != nil {
		return err
	}
	if len(in.seen) == 0 {
		return invalidf("the DoPut stream carried no tensors")
	}
	if in.expect > 0 && len(in.seen) != in.expect {
		return invalidf("the descriptor declared %d tensors but the stream ended after %d: refusing a partial upload", in.expect, len(in.seen))
	}
	in.src.mu.Lock()
	in.src.finished = true
	in.src.changedLocked()
	in.src.mu.Unlock()
	return nil
}

// maxDecompressedBytes bounds what one compressed buffer of a DoPut batch
// may declare uncompressed.
const maxDecompressedBytes = 1 << 30

// checkFlightData bounds-checks a FlightData message before arrow-go
// decodes it. arrow-go trusts the lengths a flatbuffer declares: a
// 200-byte schema message declaring 2^31 fields makes it allocate tens of
// GB and the runtime kills the process (found by FuzzIngest); such fatal
// errors cannot be recovered, so they are refused here. Only record
// batches, dictionaries and schemas travel in a DoPut.
func checkFlightData(header, body []byte) error {
	if _, err := ipcguard.CheckMessage(header); err != nil {
		return err
	}
	return ipcguard.CheckMessageBody(header, body, maxDecompressedBytes)
}

// metadataTolerantStream hides FlightData messages that carry only
// app_metadata (pyarrow's writer.write_metadata), which make
// flight.NewRecordReader fail with "index out of range" (REFERENCE §4).
type metadataTolerantStream struct {
	flight.FlightService_DoPutServer
	watch      *idleWatch
	onMetadata func([]byte)
	prev       *flight.FlightData // the message Recv returned last
}

func (s *metadataTolerantStream) Recv() (*flight.FlightData, error) {
	// The IPC reader releases the batch read from the previous message
	// before it asks for the next one, and the ingestor keeps no view of
	// it: its body goes back to the codec's pool.
	flightcodec.ReleaseFlightDataBody(s.prev)
	s.prev = nil
	for {
		s.watch.begin(waitRecv)
		d, err := s.FlightService_DoPutServer.Recv()
		s.watch.end(waitRecv, err == nil)
		if err != nil {
			return nil, err
		}
		if len(d.DataHeader) == 0 && len(d.DataBody) == 0 && d.FlightDescriptor == nil {
			if s.onMetadata != nil {
				s.onMetadata(d.AppMetadata)
			}
			continue
		}
		if len(d.DataHeader) > 0 {
			if err := checkFlightData(d.DataHeader, d.DataBody); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "DoPut stream: %v", err)
			}
		}
		s.prev = d
		return d, nil
	}
}

// putSender sends PutResults from one goroutine, so the upload never
// waits on a client that reads acknowledgements late. Acks are cumulative
// progress of their kind (received, quantized): when maxQueuedAcks are
// waiting, a new ack replaces the newest queued one of its kind (never
// one of another kind, whose latest count would be lost), so the queue
// stays bounded however slowly the client reads. The final result is
// never dropped.
type putSender struct {
	stream flight.FlightService_DoPutServer
	watch  *idleWatch
	mu     sync.Mutex
	queue  []queuedAck
	wake   chan struct{}
	closed bool
	err    error
	done   chan struct{}
}

type queuedAck struct {
	b     []byte
	kind  reflect.Type // the acknowledgement's Go type
	final bool
}

// maxQueuedAcks bounds the acknowledgements waiting for a slow client.
const maxQueuedAcks = 64

func newPutSender(stream flight.FlightService_DoPutServer, watch *idleWatch) *putSender {
	p := &putSender{stream: stream, watch: watch, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go p.loop()
	return p
}

// send queues a progress ack (coalesced when the queue is full).
func (p *putSender) send(v any) { p.enqueue(v, false) }

// sendFinal queues the call's result, which is never coalesced.
func (p *putSender) sendFinal(v any) { p.enqueue(v, true) }

func (p *putSender) enqueue(v any, final bool) {
	b, err := json.Marshal(v)
	if err != nil { // only a value with NaN/Inf; say so rather than send nothing
		b, _ = json.Marshal(map[string]string{"error": "cannot encode acknowledgement: " + err.Error()})
	}
	a := queuedAck{b: b, kind: reflect.TypeOf(v), final: final}
	p.mu.Lock()
	p.queue = coalesce(p.queue, a)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// coalesce adds a to q: in place of the newest queued ack of its kind
// when q is full (maxQueuedAcks), else at the end.
func coalesce(q []queuedAck, a queuedAck) []queuedAck {
	if !a.final && len(q) >= maxQueuedAcks {
		for i := len(q) - 1; i >= 0; i-- {
			if !q[i].final && q[i].kind == a.kind {
				q[i] = a
				return q
			}
		}
	}
	return append(q, a)
}

func (p *putSender) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

func (p *putSender) loop() {
	var err error
	defer close(p.done)
	defer func() {
		if err != nil {
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
		}
	}()
	defer safe.Recover("send DoPut acknowledgements", &err)
	for {
		p.mu.Lock()
		q := p.queue
		p.queue = nil
		closed := p.closed
		p.mu.Unlock()
		for _, a := range q {
			p.watch.begin(waitSend)
			err = p.stream.Send(&flight.PutResult{AppMetadata: a.b})
			p.watch.end(waitSend, err == nil)
			if err != nil {
				return
			}
		}
		if closed && len(q) == 0 {
			return
		}
		if len(q) == 0 {
			select {
			case <-p.wake:
			case <-p.stream.Context().Done():
				return
			}
		}
	}
}

// close flushes everything queued and stops the sender.
func (p *putSender) close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	select {
	case <-p.done:
	case <-p.watch.fired: // the client stopped reading: the loop ends with the stream
		return p.watch.err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil && !errors.Is(p.err, io.EOF) {
		return p.err
	}
	return nil
}
