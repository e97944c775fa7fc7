package s3store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rs/zerolog"

	"github.com/arrowquant/arrowquant/internal/s3test"
	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

var ctx = context.Background()

// testConfig is a store on prefix of srv with a fast heartbeat (lease
// 3 s), small reads (so small files span chunks) and no startup GC.
func testConfig(srv *s3test.Server, prefix, scratch string) Config {
	return gwConfig(srv.Gateway, prefix, scratch)
}

func gwConfig(gw *s3test.Gateway, prefix, scratch string) Config {
	return Config{
		Bucket: s3test.Bucket, Prefix: prefix, Endpoint: gw.Endpoint, Region: s3test.Region, PathStyle: true,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, ScratchDir: scratch,
		PartSize: minPartSize, ReadChunk: 64 << 10, ReadAhead: 3, Heartbeat: 500 * time.Millisecond,
		Logger: zerolog.Nop(),
	}
}

func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// listKeys lists every key under the store's prefix, without it.
func listKeys(t *testing.T, s *Store) []string {
	t.Helper()
	objs, err := s.list(ctx, s.p)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, strings.TrimPrefix(o.key, s.p))
	}
	sort.Strings(keys)
	return keys
}

// leftovers collects everything unreferenced at once (no grace) and lists
// what is neither the catalog nor the data of a committed version, nor a
// registered server, plus the staging directories left in scratch.
func leftovers(t *testing.T, cfg Config) []string {
	t.Helper()
	cfg.Advertise = ""
	s := openStore(t, cfg)
	defer s.Close()
	if _, err := s.gc(ctx, -2*time.Second); err != nil {
		t.Fatal(err)
	}
	recs, _, err := s.catalog(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	for _, r := range recs {
		live[r.Data] = true
	}
	var out []string
	for _, k := range listKeys(t, s) {
		switch {
		case strings.HasPrefix(k, "catalog/"), strings.HasPrefix(k, "servers/"):
		case strings.HasPrefix(k, "data/") && live[strings.SplitN(k, "/", 3)[1]]:
		default:
			out = append(out, k)
		}
	}
	ents, _ := os.ReadDir(cfg.ScratchDir)
	for _, e := range ents {
		sub, _ := os.ReadDir(filepath.Join(cfg.ScratchDir, e.Name()))
		for _, d := range sub {
			out = append(out, "scratch:"+e.Name()+"/"+d.Name())
		}
	}
	return out
}

func TestConformance(t *testing.T) {
	srv := s3test.Shared(t)
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		cfg := testConfig(srv, s3test.Prefix(t), t.TempDir())
		return storetest.Backend{
			Open: func(t *testing.T) store.Store {
				s, err := Open(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			Leftovers: func(t *testing.T) []string { return leftovers(t, cfg) },
		}
	})
}

// TestConditionalWrites records what the SeaweedFS under test supports,
// the ground the commit protocol stands on: If-None-Match: * and If-Match
// on PUT and If-Match on DELETE answer 412, and under contention exactly
// one conditional create wins and compare-and-swap loses no update.
func TestConditionalWrites(t *testing.T) {
	srv := s3test.Shared(t)
	s := openStore(t, testConfig(srv, s3test.Prefix(t), t.TempDir()))
	key := s.p + "cas"
	tag, err := s.put(ctx, key, []byte("0"), putIfNoneMatch)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := s.put(ctx, key, []byte("x"), putIfNoneMatch); !isPrecondition(err) || httpStatus(err) != 412 {
		t.Fatalf("second If-None-Match: * = %v, want 412", err)
	}
	if _, err := s.put(ctx, key, []byte("x"), `"bad"`); !isPrecondition(err) || httpStatus(err) != 412 {
		t.Fatalf("If-Match with a stale ETag = %v, want 412", err)
	}
	if _, err := s.put(ctx, s.p+"absent", []byte("x"), `"bad"`); !isNotFound(err) {
		t.Fatalf("If-Match on a missing key = %v, want 404", err)
	}
	_, err = s.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(key), IfMatch: aws.String(`"bad"`)})
	if !isPrecondition(err) {
		t.Fatalf("DELETE If-Match with a stale ETag = %v, want 412", err)
	}
	if _, err := s.put(ctx, key, []byte("1"), tag); err != nil {
		t.Fatalf("If-Match with the current ETag: %v", err)
	}

	// Racing creates of one key: exactly one wins. (SeaweedFS serialises
	// conditional writes of a key with a filer lock whose waiters retry
	// every second: n racers take up to n-1 seconds.)
	var wins, losses atomic.Int32
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.put(ctx, s.p+"race", []byte(fmt.Sprint(i)), putIfNoneMatch)
			switch {
			case err == nil:
				wins.Add(1)
			case isPrecondition(err):
				losses.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || losses.Load() != 5 {
		t.Fatalf("racing creates: %d won, %d lost; want 1 and 5", wins.Load(), losses.Load())
	}

	// 4 writers × 5 increments of a counter by compare-and-swap.
	if _, err := s.put(ctx, s.p+"counter", []byte("0"), ""); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < 5; {
				out, err := s.c.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(s.p + "counter")})
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(out.Body)
				out.Body.Close()
				var n int
				fmt.Sscan(string(b), &n)
				_, err = s.put(ctx, s.p+"counter", []byte(fmt.Sprint(n+1)), aws.ToString(out.ETag))
				if isPrecondition(err) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				done++
			}
		}()
	}
	wg.Wait()
	out, err := s.c.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(s.p + "counter")})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(b) != "20" {
		t.Fatalf("counter after 20 CAS increments = %s (lost updates)", b)
	}
}

func TestParseURL(t *testing.T) {
	for _, c := range []struct{ in, bucket, prefix string }{
		{"s3://b", "b", ""}, {"s3://b/", "b", ""}, {"s3://b/p", "b", "p"}, {"s3://b/p/q/", "b", "p/q"},
	} {
		b, p, err := ParseURL(c.in)
		if err != nil || b != c.bucket || p != c.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v", c.in, b, p, err)
		}
	}
	for _, bad := range []string{"b/p", "s3:///p", "http://b/p", "s3://b/p?x=1", "s3://b/a//c", "s3://u@b/p"} {
		if _, _, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) succeeded", bad)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	srv := s3test.Shared(t)
	cfg := testConfig(srv, s3test.Prefix(t), t.TempDir())
	cfg.Bucket = "no-such-bucket-here"
	if _, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), `bucket "no-such-bucket-here" does not exist`) {
		t.Fatalf("Open of a missing bucket = %v", err)
	}
	cfg = testConfig(srv, s3test.Prefix(t), t.TempDir())
	cfg.SecretKey = "wrong"
	if _, err := Open(ctx, cfg); err == nil || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open with a wrong secret = %v, want a plain (not Unavailable) error", err)
	}
	cfg = testConfig(srv, s3test.Prefix(t), t.TempDir())
	cfg.Endpoint = "http://127.0.0.1:1" // nothing listens there
	cfg.MaxAttempts = 1
	if _, err := Open(ctx, cfg); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open of an unreachable endpoint = %v, want ErrUnavailable", err)
	}
}

func randomBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// TestLargeFile: a file over the part size goes up in parts and comes back
// identical through sequential reads (chunked, with read-ahead), random
// ReadAt (one ranged GET each) and reads larger than a chunk.
func TestLargeFile(t *testing.T) {
	for _, ranges := range []bool{false, true} {
		t.Run(fmt.Sprintf("RangeReads=%v", ranges), func(t *testing.T) { testLargeFile(t, ranges) })
	}
}

func testLargeFile(t *testing.T, ranges bool) {
	srv := s3test.Shared(t)
	cfg := testConfig(srv, s3test.Prefix(t), t.TempDir())
	cfg.RangeReads = ranges
	s := openStore(t, cfg)
	data := randomBytes(3*minPartSize+12345, 1) // 4 parts
	st, err := s.Begin(ctx, "big", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(st.Dir(), "model.arrow"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	storetest.WriteFiles(t, st.Dir(), map[string]string{"report.json": "{}", "empty": ""})
	e, err := st.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e.Files["model.arrow"] != int64(len(data)) || e.Files["empty"] != 0 {
		t.Fatalf("entry = %+v", e)
	}
	if got := storetest.ReadAll(t, s, "big", "empty"); got != "" {
		t.Fatalf("empty file reads %q", got)
	}

	f, err := s.Open(ctx, "big", "model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if n, err := io.CopyBuffer(h, f, make([]byte, 40<<10)); err != nil || n != int64(len(data)) {
		t.Fatalf("copy = %d, %v", n, err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("sequential read differs from the upload")
	}
	ff := f.(*file)
	want := 1 // one streaming GET
	if ranges {
		want = (len(data) + int(ff.chunk) - 1) / int(ff.chunk) // one per chunk
	}
	if ff.chunkGets != want || ff.directGets != 0 {
		t.Fatalf("sequential read: %d chunk GETs (want %d) and %d direct GETs", ff.chunkGets, want, ff.directGets)
	}

	rng := rand.New(rand.NewSource(2))
	for range 20 {
		off := rng.Int63n(int64(len(data)))
		n := rng.Intn(3000) + 1
		buf := make([]byte, n)
		got, err := f.ReadAt(buf, off)
		if want := min(n, len(data)-int(off)); got != want || (err != nil && err != io.EOF) || !bytes.Equal(buf[:got], data[off:off+int64(got)]) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", n, off, got, err)
		}
	}
	if ff.directGets < 15 { // a few may land in the window of the previous read
		t.Fatalf("random reads made %d direct GETs", ff.directGets)
	}
	// One read spanning many chunks, unaligned.
	buf := make([]byte, 10*ff.chunk+77)
	if n, err := f.ReadAt(buf, 1000); err != nil || n != len(buf) || !bytes.Equal(buf, data[1000:1000+len(buf)]) {
		t.Fatalf("large ReadAt = %d, %v", n, err)
	}
	// Concurrent readers of one file.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(i) * int64(len(data)) / 4
			b := make([]byte, 100000)
			if n, err := f.ReadAt(b, off); err != nil || !bytes.Equal(b[:n], data[off:off+int64(n)]) {
				t.Errorf("concurrent ReadAt at %d: %v", off, err)
			}
		}()
	}
	wg.Wait()
}

// TestTwoStores: two stores on one prefix are two servers: a reservation
// holds across them, each sees the other's commits and deletes, and a
// reader keeps its version while the other overwrites and deletes.
func TestTwoStores(t *testing.T) {
	srv := s3test.Shared(t)
	prefix := s3test.Prefix(t)
	a := openStore(t, testConfig(srv, prefix, t.TempDir()))
	b := openStore(t, testConfig(srv, prefix, t.TempDir()))

	sa, err := a.Begin(ctx, "m", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Begin(ctx, "m", false); !errors.Is(err, store.ErrExists) || !strings.Contains(err.Error(), "in progress on server "+a.serverID) {
		t.Fatalf("Begin on B while A uploads = %v, want ErrExists naming A", err)
	}
	if st, _ := b.Stats(ctx); st.Pending != 1 {
		t.Fatalf("B sees %d pending uploads, want A's 1", st.Pending)
	}
	v1 := string(randomBytes(300000, 3))
	storetest.WriteFiles(t, sa.Dir(), map[string]string{"model.arrow": v1})
	time.Sleep(1200 * time.Millisecond) // a few heartbeats: the reservation stays A's
	if _, err := b.Begin(ctx, "m", false); !errors.Is(err, store.ErrExists) {
		t.Fatalf("Begin on B after heartbeats = %v", err)
	}
	if _, err := sa.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := storetest.ReadAll(t, b, "m", "model.arrow"); got != v1 {
		t.Fatal("B reads something else than A committed")
	}
	// A reader on A keeps v1 while B overwrites and then deletes.
	f, err := a.Open(ctx, "m", "model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	e2 := storetest.Put(t, b, "m", true, map[string]string{"model.arrow": "v2"})
	if got, err := a.Get(ctx, "m"); err != nil || !reflect.DeepEqual(got, e2) {
		t.Fatalf("A's Get after B's overwrite = %+v, %v", got, err)
	}
	if err := b.Delete(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(ctx, "m"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("A's Get after B's delete = %v", err)
	}
	if l, _ := a.List(ctx, ""); len(l) != 0 {
		t.Fatalf("A lists %v after B's delete", storetest.EntryNames(l))
	}
	// GC within the grace period keeps the retired versions.
	if r, err := a.GC(ctx, a.cfg.MinGCAge()); err != nil || r.Versions != 0 || r.Kept != 2 {
		t.Fatalf("GC within the grace period = %+v, %v; want 2 kept", r, err)
	}
	rest, err := io.ReadAll(f)
	if err != nil || string(head)+string(rest) != v1 {
		t.Fatalf("A's reader after B's overwrite and delete: %d bytes, %v", len(head)+len(rest), err)
	}
	// After the grace period the retired versions go, and a reader still
	// holding one learns why.
	if r, err := a.gc(ctx, -2*time.Second); err != nil || r.Versions != 2 {
		t.Fatalf("GC after the grace period = %+v, %v; want 2 versions", r, err)
	}
	if _, err := f.ReadAt(head, 0); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "collected by GC") {
		t.Fatalf("reading a collected version = %v", err)
	}
}

// TestCrashedUpload: an upload whose server died leaves a reservation, a
// heartbeat, data objects and an incomplete multipart upload. Nothing is
// visible; the reservation is taken over once silent for the lease; GC
// keeps it all while younger than its threshold and collects it after.
func TestCrashedUpload(t *testing.T) {
	srv := s3test.Shared(t)
	prefix := s3test.Prefix(t)
	cfg := testConfig(srv, prefix, t.TempDir())
	a, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.Begin(ctx, "m", false)
	if err != nil {
		t.Fatal(err)
	}
	sa := st.(*staging)
	storetest.WriteFiles(t, sa.Dir(), map[string]string{"model.arrow": "half", "report.json": "{}"})
	if _, err := sa.upload(ctx, map[string]int64{"model.arrow": 4, "report.json": 2}); err != nil {
		t.Fatal(err)
	}
	big, err := os.Create(filepath.Join(sa.Dir(), "big"))
	if err != nil {
		t.Fatal(err)
	}
	big.Truncate(2 * minPartSize)
	m, err := a.startMultipart(ctx, a.dataPrefix(sa.id)+"big", big, 2*minPartSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.uploadPart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	close(a.stop) // the crash: heartbeats stop, nothing is cleaned up
	a.bg.Wait()

	b := openStore(t, cfg)
	if l, _ := b.List(ctx, ""); len(l) != 0 {
		t.Fatalf("a crashed upload is listed: %v", storetest.EntryNames(l))
	}
	if _, err := b.Begin(ctx, "m", false); !errors.Is(err, store.ErrExists) {
		t.Fatalf("Begin while the reservation is fresh = %v", err)
	}
	if r, err := b.GC(ctx, b.cfg.MinGCAge()); err != nil || r.Versions != 0 || r.Multipart != 0 || r.Kept != 1 {
		t.Fatalf("GC of a fresh crash = %+v, %v; want everything kept", r, err)
	}
	time.Sleep(b.cfg.LeaseTTL() + 1500*time.Millisecond)
	sb, err := b.Begin(ctx, "m", false) // takes the silent reservation over
	if err != nil {
		t.Fatalf("Begin after the lease = %v", err)
	}
	sb.Abort()
	r, err := b.GC(ctx, b.cfg.MinGCAge())
	if err != nil || r.Versions != 1 || r.Objects != 2 || r.Uploads != 1 || r.Multipart != 1 {
		t.Fatalf("GC after the lease = %+v, %v; want 1 version of 2 objects, 1 heartbeat, 1 multipart", r, err)
	}
	if got := listKeys(t, b); len(got) != 0 {
		t.Fatalf("left after GC: %v", got)
	}
	// The crashed server's commit fails: its lease expired.
	if _, err := sa.Commit(ctx); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "heartbeat") {
		t.Fatalf("commit after the lease = %v", err)
	}
	if _, err := b.GC(ctx, time.Second); err == nil || !strings.Contains(err.Error(), "lease") {
		t.Fatalf("GC under the lease = %v, want a refusal", err)
	}
}

// TestUnavailable: with the S3 server down every call fails with
// ErrUnavailable and nothing is half-committed; after a restart the same
// upload succeeds.
func TestUnavailable(t *testing.T) {
	gw := s3test.Shared(t).NewGateway(t) // stopped and restarted below
	cfg := gwConfig(gw, s3test.Prefix(t), t.TempDir())
	cfg.MaxAttempts = 2
	s := openStore(t, cfg)
	storetest.Put(t, s, "old", false, map[string]string{"model.arrow": "old"})
	st, err := s.Begin(ctx, "m", false)
	if err != nil {
		t.Fatal(err)
	}
	storetest.WriteFiles(t, st.Dir(), map[string]string{"model.arrow": string(randomBytes(2*minPartSize, 4)), "report.json": "{}"})
	f, err := s.Open(ctx, "old", "model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gw.Stop()
	if _, err := f.ReadAt(make([]byte, 3), 0); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), `model "old": file "model.arrow"`) {
		t.Fatalf("read of an open file with S3 down = %v, want ErrUnavailable naming the file", err)
	}
	if _, err := st.Commit(ctx); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), `store: model "m": commit: `) {
		t.Fatalf("Commit with S3 down = %v, want ErrUnavailable", err)
	}
	for what, err := range map[string]error{
		"Get":  func() error { _, err := s.Get(ctx, "old"); return err }(),
		"List": func() error { _, err := s.List(ctx, ""); return err }(),
		"Open": func() error { _, err := s.Open(ctx, "old", "model.arrow"); return err }(),
		"Begin": func() error {
			st, err := s.Begin(ctx, "x", false)
			if err == nil {
				st.Abort()
			}
			return err
		}(),
		"Delete": s.Delete(ctx, "old"),
	} {
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with S3 down = %v, want ErrUnavailable", what, err)
		}
	}
	if err := gw.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "m"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after restart Get(m) = %v, want not found", err)
	}
	if got := storetest.ReadAll(t, s, "old", "model.arrow"); got != "old" {
		t.Fatalf("old = %q", got)
	}
	e := storetest.Put(t, s, "m", false, map[string]string{"model.arrow": "retried"})
	if e.Version != 1 {
		t.Fatalf("retried commit = %+v", e)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What the failed commit left is garbage to GC, nothing else.
	for _, k := range leftovers(t, cfg) {
		t.Errorf("left over: %s", k)
	}
}

// TestLocations: servers register their advertised location; every
// store sees all live ones, and a closed server drops out.
func TestLocations(t *testing.T) {
	srv := s3test.Shared(t)
	prefix := s3test.Prefix(t)
	ca := testConfig(srv, prefix, t.TempDir())
	ca.Advertise = "grpc://10.0.0.1:8815"
	cb := testConfig(srv, prefix, t.TempDir())
	cb.Advertise = "grpc+tls://b.example:443"
	a := openStore(t, ca)
	b := openStore(t, cb)
	c := openStore(t, testConfig(srv, prefix, t.TempDir())) // no location of its own
	want := []string{"grpc+tls://b.example:443", "grpc://10.0.0.1:8815"}
	for name, s := range map[string]*Store{"a": a, "b": b, "c": c} {
		if got, err := s.Locations(ctx); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: Locations = %v, %v", name, got, err)
		}
	}
	b.Close()
	time.Sleep(time.Second) // the cache
	if got, _ := a.Locations(ctx); !reflect.DeepEqual(got, []string{"grpc://10.0.0.1:8815"}) {
		t.Fatalf("after B closed: %v", got)
	}
	cb.Advertise = "http://x"
	if _, err := Open(ctx, cb); err == nil || !strings.Contains(err.Error(), "grpc://HOST:PORT") {
		t.Fatalf("bad advertise = %v", err)
	}
}
