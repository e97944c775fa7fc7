package flightsrv

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Defaults of the server's limits (serve flags; docs/FLIGHT.md "Limits").
const (
	DefaultMaxUploads          = 16
	DefaultMaxUploadsPerClient = 8
	DefaultIdleTimeout         = 5 * time.Minute
)

// uploadLimiter caps concurrent uploads (DoPut and the quantize action),
// in all and per client. It never queues: over a cap the call fails at
// once with ResourceExhausted, so a client can back off and retry.
type uploadLimiter struct {
	max, perClient int // 0 = unlimited

	mu     sync.Mutex
	total  int
	client map[string]int
}

func newUploadLimiter(max, perClient int) *uploadLimiter {
	return &uploadLimiter{max: max, perClient: perClient, client: map[string]int{}}
}

// acquire takes a slot for client or returns ResourceExhausted; the
// returned func gives it back (call it once).
func (l *uploadLimiter) acquire(client string) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return nil, status.Errorf(codes.ResourceExhausted, "the server is running its limit of %d concurrent uploads (--max-uploads): retry later", l.max)
	}
	if l.perClient > 0 && l.client[client] >= l.perClient {
		return nil, status.Errorf(codes.ResourceExhausted, "this client already runs %d concurrent uploads, the server's per-client limit (--max-uploads-per-client): wait for one to finish", l.perClient)
	}
	l.total++
	l.client[client]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.client[client]--; l.client[client] == 0 {
				delete(l.client, client)
			}
		})
	}, nil
}

// clientID names the caller for per-client limits: the authenticated
// identity when there is one, else the peer's host.
func (s *Service) clientID(ctx context.Context) string {
	if s.o.Hooks.Identity != nil {
		if id := s.o.Hooks.Identity(ctx); id != "" {
			return "user:" + id
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			return "host:" + host
		}
		return "addr:" + p.Addr.String()
	}
	return ""
}

// idleWatch ends a call whose client has stalled: it fires when the call
// has been waiting on the client (a Recv that gets nothing, a Send the
// client does not take) and no message went either way for longer than
// the timeout. Time the server spends working (quantizing after the last
// batch) never counts.
type idleWatch struct {
	timeout  time.Duration
	fired    chan struct{}
	err      error
	waiting  [2]atomic.Int64 // start of the current wait (unix ns) per direction, 0 = not waiting
	progress atomic.Int64    // last message received or sent (unix ns)
	stop     chan struct{}
	once     sync.Once
}

const (
	waitRecv = iota
	waitSend
)

// newIdleWatch starts the watch; onFire runs once when it fires. A zero
// timeout never fires.
func newIdleWatch(timeout time.Duration, onFire func(error)) *idleWatch {
	w := &idleWatch{timeout: timeout, fired: make(chan struct{}), stop: make(chan struct{})}
	w.err = status.Errorf(codes.DeadlineExceeded, "no data from the client for %v (the server's --idle-timeout): the call was ended and its upload discarded", timeout)
	w.progress.Store(time.Now().UnixNano())
	if timeout <= 0 {
		return w
	}
	go func() {
		tick := time.NewTicker(max(min(timeout/4, time.Second), time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case now := <-tick.C:
				if w.stalled(now) {
					onFire(w.err)
					close(w.fired)
					return
				}
			}
		}
	}()
	return w
}

func (w *idleWatch) stalled(now time.Time) bool {
	if now.Sub(time.Unix(0, w.progress.Load())) <= w.timeout {
		return false
	}
	for i := range w.waiting {
		if since := w.waiting[i].Load(); since != 0 && now.Sub(time.Unix(0, since)) > w.timeout {
			return true
		}
	}
	return false
}

// begin marks the start of a wait on the client; end its end, which is
// progress when a message went through.
func (w *idleWatch) begin(dir int) { w.waiting[dir].Store(time.Now().UnixNano()) }
func (w *idleWatch) end(dir int, moved bool) {
	w.waiting[dir].Store(0)
	if moved {
		w.progress.Store(time.Now().UnixNano())
	}
}

// close stops the watch.
func (w *idleWatch) close() { w.once.Do(func() { close(w.stop) }) }
