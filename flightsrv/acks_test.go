package flightsrv

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/arrowquant/arrowquant/wire"
)

func ackOf(t *testing.T, v any, final bool) queuedAck {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return queuedAck{b: b, kind: reflect.TypeOf(v), final: final}
}

// With the queue full, an ack replaces the newest queued one of its own
// kind: the latest received count survives a quantized ack that comes
// after it (and the other way round), the queue stays bounded, and the
// final result is kept last.
func TestCoalescedAcksKeepEachKindsLatest(t *testing.T) {
	var q []queuedAck
	for i := range 200 {
		q = coalesce(q, ackOf(t, wire.Ack{Tensor: "w", ElementsReceived: int64(i + 1)}, false))
		if i%50 == 0 {
			q = coalesce(q, ackOf(t, wire.Quantized{TensorsQuantized: i / 50}, false))
		}
	}
	q = coalesce(q, ackOf(t, wire.Ack{Tensor: "w", ElementsReceived: 64000}, false))
	q = coalesce(q, ackOf(t, wire.Quantized{TensorsQuantized: 9}, false))
	q = coalesce(q, ackOf(t, map[string]int{"result": 1}, true))
	if len(q) > maxQueuedAcks+2 {
		t.Fatalf("%d acks queued, want at most %d", len(q), maxQueuedAcks+2)
	}
	if !q[len(q)-1].final {
		t.Fatal("the final result is not last")
	}
	var lastRecv wire.Ack
	var lastQuant wire.Quantized
	for _, a := range q[:len(q)-1] {
		switch a.kind {
		case reflect.TypeOf(wire.Ack{}):
			json.Unmarshal(a.b, &lastRecv)
		case reflect.TypeOf(wire.Quantized{}):
			json.Unmarshal(a.b, &lastQuant)
		}
	}
	if lastRecv.ElementsReceived != 64000 || lastQuant.TensorsQuantized != 9 {
		t.Fatalf("newest acks: %d elements received, %d tensors quantized; want 64000 and 9", lastRecv.ElementsReceived, lastQuant.TensorsQuantized)
	}
}
