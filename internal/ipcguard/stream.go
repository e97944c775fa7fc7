package ipcguard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// StreamReader is an ipc.MessageReader for an IPC stream that checks each
// message's metadata (CheckMessage) before arrow-go sees it, and reads a
// body as its bytes arrive, so that a length claimed by a short stream
// costs no more memory than the stream holds.
type StreamReader struct {
	r        io.Reader
	maxMeta  int64
	maxBody  int64
	msg      *ipc.Message
	refCount atomic.Int64
}

// NewStreamReader reads messages from r, refusing metadata above maxMeta
// and bodies above maxBody bytes. Hand it to ipc.NewReaderFromMessageReader.
func NewStreamReader(r io.Reader, maxMeta, maxBody int64) *StreamReader {
	s := &StreamReader{r: r, maxMeta: maxMeta, maxBody: maxBody}
	s.refCount.Add(1)
	return s
}

// Retain increases the reference count.
func (s *StreamReader) Retain() { s.refCount.Add(1) }

// Release decreases the reference count and frees the current message at 0.
func (s *StreamReader) Release() {
	if s.refCount.Add(-1) == 0 && s.msg != nil {
		s.msg.Release()
		s.msg = nil
	}
}

// Message reads the next message (io.EOF at the end-of-stream marker or
// at the end of the input); it is valid until the next call.
func (s *StreamReader) Message() (*ipc.Message, error) {
	if s.msg != nil {
		s.msg.Release()
		s.msg = nil
	}
	var hdr [4]byte
	if _, err := io.ReadFull(s.r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("read message length: %w", err)
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n == 0xFFFFFFFF { // continuation marker, then the length
		if _, err := io.ReadFull(s.r, hdr[:]); err != nil {
			return nil, fmt.Errorf("read message length: %w", unexpected(err))
		}
		n = binary.LittleEndian.Uint32(hdr[:])
	}
	if n == 0 {
		return nil, io.EOF
	}
	if int64(n) > s.maxMeta || n < 4 {
		return nil, errorf("message metadata of %d bytes (limit %d)", int32(n), s.maxMeta)
	}
	meta, err := readN(s.r, int64(n))
	if err != nil {
		return nil, fmt.Errorf("read message metadata: %w", err)
	}
	bodyLen, err := CheckMessage(meta)
	if err != nil {
		return nil, err
	}
	if bodyLen > s.maxBody {
		return nil, errorf("message body of %d bytes (limit %d)", bodyLen, s.maxBody)
	}
	body, err := readN(s.r, bodyLen)
	if err != nil {
		return nil, fmt.Errorf("read message body: %w", err)
	}
	s.msg = ipc.NewMessage(memory.NewBufferBytes(meta), memory.NewBufferBytes(body))
	return s.msg, nil
}

// readN reads exactly n bytes, growing the buffer as they arrive.
func readN(r io.Reader, n int64) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(int(min(n, 1<<20)))
	got, err := io.Copy(&b, io.LimitReader(r, n))
	if err != nil {
		return nil, err
	}
	if got != n {
		return nil, fmt.Errorf("%w after %d of %d bytes", io.ErrUnexpectedEOF, got, n)
	}
	return b.Bytes(), nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
