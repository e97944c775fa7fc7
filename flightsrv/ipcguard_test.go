package flightsrv

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/flight"
)

// headers returns the FlightData messages of a small valid stream.
func headers(t *testing.T) []*flight.FlightData {
	data := ipcStream(t, arrow.PrimitiveTypes.Float32, []fuzzRow{{"w", []int64{4, 8}, "F32", 0, 32}})
	s := &framedStream{data: data}
	var out []*flight.FlightData
	for {
		d, err := s.Recv()
		if err != nil {
			return out
		}
		out = append(out, d)
	}
}

func TestIPCGuardAcceptsValidMessages(t *testing.T) {
	msgs := headers(t)
	if len(msgs) < 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	for i, d := range msgs {
		if err := checkFlightData(d.DataHeader, d.DataBody); err != nil {
			t.Errorf("message %d refused: %v", i, err)
		}
	}
}

func TestIPCGuardRefusesLiesAndTruncation(t *testing.T) {
	msgs := headers(t)
	schemaMsg, batch := msgs[0], msgs[1]
	// Every truncation of a valid header is refused or harmless, never a panic.
	for n := 0; n < len(schemaMsg.DataHeader); n++ {
		_ = checkFlightData(schemaMsg.DataHeader[:n], nil)
	}
	// The fuzzer's crasher (replayed from FuzzIngest's corpus) was a schema
	// whose fields vector declares billions of entries; the same lie by hand:
	hdr := append([]byte(nil), schemaMsg.DataHeader...)
	lied := false
	for at := 0; at+4 <= len(hdr); at += 4 { // the fields vector length is 5 (the input schema's columns)
		if binary.LittleEndian.Uint32(hdr[at:]) == 5 {
			binary.LittleEndian.PutUint32(hdr[at:], 1<<31)
			if err := checkFlightData(hdr, nil); err != nil && strings.Contains(err.Error(), "vector") {
				lied = true
				break
			}
			binary.LittleEndian.PutUint32(hdr[at:], 5)
		}
	}
	if !lied {
		t.Error("a fields vector declaring 2^31 entries was not refused")
	}
	// A batch whose buffers point past its body.
	if err := checkFlightData(batch.DataHeader, batch.DataBody[:len(batch.DataBody)/2]); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("buffers past the body: %v", err)
	}
}
