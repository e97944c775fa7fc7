package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/client"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/flightsrv"
	"github.com/arrowquant/arrowquant/flightsrv/middleware"
	"github.com/arrowquant/arrowquant/internal/s3test"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/store/s3store"
	"github.com/arrowquant/arrowquant/wire"
)

// heartbeat of every server in these tests: the lease is 3 s.
const heartbeat = 500 * time.Millisecond

var (
	modelX, modelY string // two tiny models (different weights)
	microX, microY string // two 4-tensor models, quick to quantize
	tmpRoot        string
)

// writeMicro writes a model of four 128×256 float32 tensors.
func writeMicro(dir string, seed int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var hs []modelio.TensorHeader
	for i := range 4 {
		hs = append(hs, modelio.TensorHeader{Name: fmt.Sprintf("layers.%d.weight", i), DType: modelio.F32, Shape: []int64{128, 256}})
	}
	w, err := modelio.CreateSafetensors(filepath.Join(dir, "model.safetensors"), hs, nil)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewSource(seed))
	buf := make([]byte, 4)
	for range 4 * 128 * 256 {
		binary.LittleEndian.PutUint32(buf, math.Float32bits(float32(rng.NormFloat64()*0.02)))
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type": "llama"}`), 0o644)
}

func TestMain(m *testing.M) {
	var err error
	if tmpRoot, err = os.MkdirTemp("", "aq-cluster-"); err != nil {
		panic(err)
	}
	modelX, modelY = filepath.Join(tmpRoot, "x"), filepath.Join(tmpRoot, "y")
	for seed, dir := range map[int64]string{1: modelX, 2: modelY} {
		if err := modelio.Generate(context.Background(), modelio.GenOptions{Preset: "tiny", Out: dir, Seed: seed}); err != nil {
			panic(err)
		}
	}
	microX, microY = filepath.Join(tmpRoot, "micro-x"), filepath.Join(tmpRoot, "micro-y")
	for seed, dir := range map[int64]string{1: microX, 2: microY} {
		if err := writeMicro(dir, seed); err != nil {
			panic(err)
		}
	}
	code := s3test.Main(m)
	os.RemoveAll(tmpRoot)
	os.Exit(code)
}

var ctx = context.Background()

func s3Config(gw *s3test.Gateway, prefix, advertise, scratch string) s3store.Config {
	return s3store.Config{
		Bucket: s3test.Bucket, Prefix: prefix, Endpoint: gw.Endpoint, Region: s3test.Region, PathStyle: true,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Advertise: advertise, ScratchDir: scratch,
		Heartbeat: heartbeat, Logger: zerolog.Nop(),
	}
}

// server is an in-process Flight server on the S3 store.
type server struct {
	addr, loc string
	st        *s3store.Store
	stop      func()
}

func startServer(t *testing.T, gw *s3test.Gateway, prefix string) *server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: lis.Addr().String()}
	s.loc = "grpc://" + s.addr
	if s.st, err = s3store.Open(ctx, s3Config(gw, prefix, s.loc, t.TempDir())); err != nil {
		t.Fatal(err)
	}
	svc, err := flightsrv.New(flightsrv.Options{Store: s.st, Defaults: config.Default(), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	srv, health, err := middleware.NewServer(middleware.Config{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	flight.RegisterFlightServiceServer(srv, svc)
	go srv.Serve(lis)
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			middleware.GracefulStop(srv, health, 5*time.Second)
			s.st.Close()
		})
	}
	t.Cleanup(s.stop)
	return s
}

func dial(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, client.Options{Server: "grpc://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fingerprint hashes every record batch a DoGet of the model streams (not
// the schema metadata, which names the model): two models quantized from
// the same weights have the same fingerprint, and a partial or mixed one
// has none of the expected ones.
func fingerprint(c *client.Client, name string) (string, int, error) {
	h := sha256.New()
	n := 0
	err := c.Get(ctx, wire.Ticket{Model: name}, func(s *arrow.Schema, rec arrow.RecordBatch) error {
		n++
		for i := 0; i < int(rec.NumCols()); i++ {
			fmt.Fprintf(h, "%s=%v;", s.Field(i).Name, rec.Column(i))
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func mustFingerprint(t *testing.T, c *client.Client, name string) string {
	t.Helper()
	fp, _, err := fingerprint(c, name)
	if err != nil {
		t.Fatalf("DoGet %s: %v", name, err)
	}
	return fp
}

func names(infos []*flight.FlightInfo) []string {
	var out []string
	for _, i := range infos {
		out = append(out, i.GetFlightDescriptor().GetPath()[0])
	}
	return out
}

func locations(info *flight.FlightInfo) []string {
	var out []string
	for _, ep := range info.GetEndpoint() {
		for _, l := range ep.GetLocation() {
			out = append(out, l.GetUri())
		}
	}
	sort.Strings(out)
	return out
}

// dirFiles reads every file under dir by relative name.
func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTwoServers: push to A, pull from B bit-identical; both list the
// same; FlightInfo names both servers; a delete on B is seen on A; two
// uploads of one name on A and B: exactly one wins.
func TestTwoServers(t *testing.T) {
	srv := s3test.Shared(t)
	prefix := s3test.Prefix(t)
	a := startServer(t, srv.Gateway, prefix)
	b := startServer(t, srv.Gateway, prefix)
	ca, cb := dial(t, a.addr), dial(t, b.addr)

	res, err := ca.Push(ctx, modelX, client.PushOptions{Name: "org/m"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Push(ctx, modelY, client.PushOptions{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	// Pulled into one path (report.json names it), from B then from A.
	pull := func(c *client.Client) map[string][]byte {
		dir := filepath.Join(tmpRoot, "pulled")
		if err := c.Pull(ctx, "org/m", dir, client.PullOptions{Overwrite: true}); err != nil {
			t.Fatalf("pull: %v", err)
		}
		defer os.RemoveAll(dir)
		return dirFiles(t, dir)
	}
	fb := pull(cb) // what A committed, read through B
	fa := pull(ca)
	for f := range fa {
		if !bytes.Equal(fa[f], fb[f]) {
			t.Errorf("%s differs: %.300s\n%.300s", f, fa[f], fb[f])
		}
	}
	if len(fa) < 2 || !reflect.DeepEqual(fa, fb) {
		t.Fatalf("pull from A (%d files) and from B (%d files) differ", len(fa), len(fb))
	}
	if int64(len(fa["model.arrow"])) == 0 || res.NumTensors == 0 {
		t.Fatalf("empty model: %+v", res)
	}

	la, err := ca.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	lb, err := cb.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names(la), []string{"org/m", "other"}) || len(lb) != 2 {
		t.Fatalf("A lists %v, B lists %v", names(la), names(lb))
	}
	for i := range la {
		x, y := la[i], lb[i]
		if x.TotalBytes != y.TotalBytes || x.TotalRecords != y.TotalRecords || !bytes.Equal(x.Schema, y.Schema) ||
			!bytes.Equal(x.GetEndpoint()[0].GetTicket().GetTicket(), y.GetEndpoint()[0].GetTicket().GetTicket()) {
			t.Fatalf("ListFlights differ on %s", names(la)[i])
		}
		if want := []string{a.loc, b.loc}; !slices.Equal(locations(x), sortedCopy(want)) {
			t.Fatalf("FlightInfo locations = %v, want both servers %v", locations(x), want)
		}
	}
	// Any listed location serves the ticket.
	for _, loc := range locations(la[0]) {
		c := dial(t, strings.TrimPrefix(loc, "grpc://"))
		if mustFingerprint(t, c, "org/m") != mustFingerprint(t, ca, "org/m") {
			t.Fatalf("%s streams something else", loc)
		}
	}

	if err := cb.Action(ctx, wire.ActionDelete, map[string]string{"model": "org/m"}, nil); err != nil {
		t.Fatal(err)
	}
	if l, _ := ca.List(ctx, ""); !slices.Equal(names(l), []string{"other"}) {
		t.Fatalf("A lists %v after B deleted org/m", names(l))
	}
	if _, _, err := ca.Info(ctx, "org/m"); status.Code(err) != codes.NotFound {
		t.Fatalf("A's GetFlightInfo after B's delete = %v", err)
	}

	// The same name pushed on both at once: exactly one wins.
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, c := range []*client.Client{ca, cb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Push(ctx, []string{modelX, modelY}[i], client.PushOptions{Name: "dup"})
		}()
	}
	wg.Wait()
	ok, exists := 0, 0
	for _, err := range errs {
		switch status.Code(err) {
		case codes.OK:
			ok++
		case codes.AlreadyExists:
			exists++
		default:
			t.Fatalf("concurrent push: %v", err)
		}
	}
	if ok != 1 || exists != 1 {
		t.Fatalf("concurrent pushes of one name: %v", errs)
	}
	winner := modelX
	if errs[0] != nil {
		winner = modelY
	}
	if _, err := ca.Push(ctx, winner, client.PushOptions{Name: "ref"}); err != nil {
		t.Fatal(err)
	}
	if mustFingerprint(t, ca, "dup") != mustFingerprint(t, cb, "ref") {
		t.Fatal("dup is not the winner's model")
	}
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

// cleanCode says whether err is an outcome a client may see under load: a
// success or a clean refusal, never an internal error or a broken stream.
func cleanCode(err error) bool {
	switch status.Code(err) {
	case codes.OK, codes.AlreadyExists, codes.NotFound, codes.ResourceExhausted:
		return true
	}
	return false
}

// TestSixteenClients: 16 clients on two servers push, pull, list, get
// info and delete a few names for a bounded time. Every call succeeds or
// fails with a clean code, every pull is one whole model (never a mix),
// and the race detector (go test -race) watches both servers.
func TestSixteenClients(t *testing.T) {
	srv := s3test.Shared(t)
	prefix := s3test.Prefix(t)
	servers := []*server{startServer(t, srv.Gateway, prefix), startServer(t, srv.Gateway, prefix)}
	c0 := dial(t, servers[0].addr)
	t0 := time.Now()
	for name, dir := range map[string]string{"c0": microX, "c1": microY} {
		if _, err := c0.Push(ctx, dir, client.PushOptions{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("two pushes: %s", time.Since(t0))
	fps := map[string]string{mustFingerprint(t, c0, "c0"): "x", mustFingerprint(t, c0, "c1"): "y"}
	if len(fps) != 2 {
		t.Fatal("the two models have one fingerprint")
	}

	const clients = 16
	deadline := time.Now().Add(10 * time.Second)
	var (
		wg      sync.WaitGroup
		ops     [5]atomic.Int64 // successful push, pull, list, info, delete
		codesMu sync.Mutex
		refused = map[string]int{}
	)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(t, servers[i%2].addr)
			rng := rand.New(rand.NewSource(int64(i)))
			for n := 0; time.Now().Before(deadline) && n < 40; n++ {
				name := fmt.Sprintf("c%d", rng.Intn(3))
				var (
					op  int
					err error
				)
				switch r := rng.Intn(10); {
				case r < 3:
					_, err = c.Push(ctx, []string{microX, microY}[rng.Intn(2)], client.PushOptions{Name: name, Overwrite: rng.Intn(2) == 0})
				case r < 6:
					op = 1
					var fp string
					var batches int
					fp, batches, err = fingerprint(c, name)
					if err == nil && fps[fp] == "" {
						t.Errorf("client %d: DoGet of %s streamed %d batches of no known model (partial or mixed)", i, name, batches)
					}
				case r < 8:
					op = 2
					var infos []*flight.FlightInfo
					infos, err = c.List(ctx, "")
					for _, info := range infos {
						if err == nil && len(locations(info)) != 2 {
							t.Errorf("client %d: %s lists locations %v", i, names(infos), locations(info))
						}
					}
				case r < 9:
					op = 3
					_, _, err = c.Info(ctx, name)
				default:
					op = 4
					err = c.Action(ctx, wire.ActionDelete, map[string]string{"model": name}, nil)
				}
				if !cleanCode(err) {
					t.Errorf("client %d op %d on %s: %v", i, op, name, err)
					return
				}
				if err == nil {
					ops[op].Add(1)
				} else {
					codesMu.Lock()
					refused[fmt.Sprintf("op%d:%s", op, status.Code(err))]++
					codesMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("successful push, pull, list, info, delete: %d %d %d %d %d; refused: %v", ops[0].Load(), ops[1].Load(), ops[2].Load(), ops[3].Load(), ops[4].Load(), refused)
	for op := range ops {
		if ops[op].Load() == 0 {
			t.Errorf("no successful operation of kind %d", op)
		}
	}
	// Both servers agree on the catalog at the end.
	la, err := dial(t, servers[0].addr).List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	lb, err := dial(t, servers[1].addr).List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names(la), names(lb)) {
		t.Fatalf("A lists %v, B lists %v", names(la), names(lb))
	}
}

// arrowquantBin is the arrowquant binary: ARROW_QUANT_BIN (make test
// passes bin/arrowquant), else built once into a temporary directory.
var arrowquantBin = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("ARROW_QUANT_BIN"); p != "" {
		return p, nil
	}
	p := filepath.Join(tmpRoot, "arrowquant")
	out, err := exec.Command("go", "build", "-o", p, "github.com/arrowquant/arrowquant/cmd/arrowquant").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return p, nil
})

// child is an `arrowquant serve --store s3://...` process.
type child struct {
	cmd    *exec.Cmd
	addr   string
	stderr *bytes.Buffer
	done   chan struct{}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startChild(t *testing.T, gw *s3test.Gateway, prefix, scratch string) *child {
	t.Helper()
	bin, err := arrowquantBin()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "serve", "--addr", addr, "--store", "s3://"+s3test.Bucket+"/"+prefix, "--s3-path-style",
		"--advertise", "grpc://"+addr, "--scratch-dir", scratch, "--s3-heartbeat", heartbeat.String(), "--startup-gc", "0")
	cmd.Env = append(os.Environ(), gw.Env()...)
	c := &child{cmd: cmd, addr: addr, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "serving Arrow Flight on") {
				ready <- true
			}
		}
		ready <- false
	}()
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.kill() })
	select {
	case ok := <-ready:
		if !ok {
			<-c.done
			t.Fatalf("arrowquant serve exited: %s", c.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("arrowquant serve did not start: %s", c.stderr)
	}
	return c
}

func (c *child) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// checker checks that every model a server lists is whole: one of the
// models pushed under its name (want: name -> allowed fingerprints). A
// (name, version) already checked is not streamed again.
type checker struct {
	c       *client.Client
	want    func(name string) []string
	checked map[string]bool
}

func (k *checker) check(t *testing.T) []string {
	t.Helper()
	infos, err := k.c.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range infos {
		name := info.GetFlightDescriptor().GetPath()[0]
		var md struct{ Version int64 }
		if err := json.Unmarshal(info.GetAppMetadata(), &md); err != nil || md.Version < 1 {
			t.Fatalf("%s: FlightInfo app_metadata without a version: %v", name, err)
		}
		key := fmt.Sprintf("%s@%d", name, md.Version)
		if k.checked[key] {
			continue
		}
		fp, batches, err := fingerprint(k.c, name)
		if err != nil {
			t.Fatalf("%s is listed but cannot be read: %v", name, err)
		}
		if !slices.Contains(k.want(name), fp) {
			t.Fatalf("%s is listed with %d batches of no model pushed under that name (partial or mixed)", name, batches)
		}
		k.checked[key] = true
	}
	return names(infos)
}

// TestKillDuringPut: 20 times, a server is killed with SIGKILL at a random
// moment of two uploads (an overwrite of m and a new name). The other
// server never lists a partial model, m is always the old or the new
// model, never a mix; `arrowquant store gc` then collects every leftover,
// and a restarted server removes the dead servers' scratch directories.
func TestKillDuringPut(t *testing.T) {
	srv := s3test.Shared(t)
	prefix := s3test.Prefix(t)
	scratch := t.TempDir()
	b := startServer(t, srv.Gateway, prefix)
	cb := dial(t, b.addr)
	for name, dir := range map[string]string{"m": modelX, "ref-y": modelY} {
		if _, err := cb.Push(ctx, dir, client.PushOptions{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	fpX, fpY := mustFingerprint(t, cb, "m"), mustFingerprint(t, cb, "ref-y")
	k := &checker{c: cb, checked: map[string]bool{}}
	k.want = func(name string) []string {
		switch {
		case name == "m":
			return []string{fpX, fpY}
		case name == "ref-y", name == "warm", strings.HasPrefix(name, "p"):
			return []string{fpY}
		}
		return nil
	}

	// How long the two uploads of a round take on a live server.
	a := startChild(t, srv.Gateway, prefix, scratch)
	ca := dial(t, a.addr)
	start := time.Now()
	var wg sync.WaitGroup
	for _, name := range []string{"m", "warm"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := ca.Push(ctx, modelY, client.PushOptions{Name: name, Overwrite: true}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	span := time.Since(start)
	ca.Close()
	a.kill()
	t.Logf("a round's uploads take %s: kills fall in [0, %s]", span, span*3/2)

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	committed, failed := 0, 0
	for round := range 20 {
		a := startChild(t, srv.Gateway, prefix, scratch)
		ca, err := client.Dial(ctx, client.Options{Server: "grpc://" + a.addr})
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 2)
		go func() {
			_, err := ca.Push(ctx, modelY, client.PushOptions{Name: "m", Overwrite: true})
			errs <- err
		}()
		go func() {
			_, err := ca.Push(ctx, modelY, client.PushOptions{Name: fmt.Sprintf("p%d", round)})
			errs <- err
		}()
		time.Sleep(time.Duration(rng.Int63n(int64(span * 3 / 2))))
		a.kill()
		for range 2 {
			if err := <-errs; err == nil {
				committed++
			} else {
				failed++
			}
		}
		ca.Close()
		k.check(t)
	}
	t.Logf("20 kills: %d uploads committed before the kill, %d cut short", committed, failed)
	if failed == 0 {
		t.Fatal("no kill landed during an upload")
	}

	// Everything the killed servers left is garbage once silent for the
	// lease; `arrowquant store gc` collects it.
	time.Sleep(3*time.Second + 1500*time.Millisecond)
	bin, _ := arrowquantBin()
	gc := exec.Command(bin, "store", "gc", "--store", "s3://"+s3test.Bucket+"/"+prefix, "--s3-path-style",
		"--s3-heartbeat", heartbeat.String(), "--older-than", "3s")
	gc.Env = append(os.Environ(), srv.Env()...)
	out, err := gc.CombinedOutput()
	if err != nil {
		t.Fatalf("store gc: %v\n%s", err, out)
	}
	t.Logf("store gc: %s", out)
	if !strings.Contains(string(out), "collected ") {
		t.Fatalf("store gc printed %q", out)
	}
	assertOnlyLive(t, b.st, srv.Gateway, prefix)
	final := k.check(t)
	if !slices.Contains(final, "m") {
		t.Fatalf("m is gone: %v", final)
	}

	// The dead servers' scratch directories go when a server starts.
	ents, _ := os.ReadDir(scratch)
	if len(ents) == 0 {
		t.Fatal("the killed servers left no scratch directory (nothing to check)")
	}
	startChild(t, srv.Gateway, prefix, scratch)
	if ents, _ := os.ReadDir(scratch); len(ents) != 1 {
		t.Fatalf("scratch after a restart: %d directories, want the live server's only", len(ents))
	}
}

// assertOnlyLive checks that the bucket prefix holds only the catalog, the
// data of current versions and the registrations of live servers.
func assertOnlyLive(t *testing.T, st *s3store.Store, gw *s3test.Gateway, prefix string) {
	t.Helper()
	entries, err := st.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := gw.ListKeys(prefix + "/")
	if err != nil {
		t.Fatal(err)
	}
	dataSets := map[string]bool{}
	for _, k := range keys {
		rest := strings.TrimPrefix(k, prefix+"/")
		switch {
		case strings.HasPrefix(rest, "catalog/"), strings.HasPrefix(rest, "servers/"):
		case strings.HasPrefix(rest, "data/"):
			dataSets[strings.SplitN(rest, "/", 3)[1]] = true
		default:
			t.Errorf("left after gc: %s", rest)
		}
	}
	if len(dataSets) != len(entries) {
		t.Errorf("%d data sets for %d models after gc", len(dataSets), len(entries))
	}
}

// TestS3StoppedMidUpload: the S3 server goes away while a client uploads;
// the client gets Unavailable and nothing is committed; once S3 is back
// the same upload succeeds.
func TestS3StoppedMidUpload(t *testing.T) {
	srv := s3test.Shared(t)
	gw := srv.NewGateway(t)
	prefix := s3test.Prefix(t)
	a := startServer(t, gw, prefix)
	ca := dial(t, a.addr)
	if _, err := ca.Push(ctx, modelX, client.PushOptions{Name: "kept"}); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	_, err := ca.Push(ctx, modelY, client.PushOptions{Name: "m", Progress: func(sent, total int64) {
		if sent > total/2 {
			once.Do(gw.Stop)
		}
	}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "store unavailable") {
		t.Fatalf("push with S3 down = %v, want Unavailable", err)
	}
	if _, _, err := ca.Info(ctx, "kept"); status.Code(err) != codes.Unavailable {
		t.Fatalf("GetFlightInfo with S3 down = %v, want Unavailable", err)
	}
	if _, _, err := fingerprint(ca, "kept"); status.Code(err) != codes.Unavailable {
		t.Fatalf("DoGet with S3 down = %v, want Unavailable", err)
	}
	if _, err := ca.List(ctx, ""); status.Code(err) != codes.Unavailable {
		t.Fatalf("ListFlights with S3 down = %v, want Unavailable", err)
	}
	if err := gw.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Info(ctx, "m"); status.Code(err) != codes.NotFound {
		t.Fatalf("after S3 is back, m = %v, want NotFound (nothing committed)", err)
	}
	if _, err := ca.Push(ctx, modelY, client.PushOptions{Name: "m"}); err != nil {
		t.Fatalf("retried push: %v", err)
	}
	if l, _ := ca.List(ctx, ""); !slices.Equal(names(l), []string{"kept", "m"}) {
		t.Fatalf("list = %v", names(l))
	}
	if _, err := a.st.Get(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.st.Get(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
}
