package s3store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/arrowquant/arrowquant/store"
)

// Store is the S3 store. It implements store.Store and store.Locator.
type Store struct {
	cfg      Config
	c        *s3.Client
	log      zerolog.Logger
	p        string // key prefix: "" or "prefix/"
	serverID string
	scratch  string // this process's staging directories

	mu       sync.Mutex
	closed   bool
	reserved map[string]int      // name -> open Staging areas of this process
	pending  map[string]*staging // upload id -> open Staging area
	inflight sync.WaitGroup      // Commits and Deletes

	cacheMu sync.Mutex
	cache   map[string]cached // catalog key -> last record read

	skew atomic.Int64 // the S3 server's clock minus ours, in ns

	locMu  sync.Mutex
	locs   []string
	locsAt time.Time

	stop chan struct{}
	bg   sync.WaitGroup
}

var (
	_ store.Store   = (*Store)(nil)
	_ store.Locator = (*Store)(nil)
)

// record is a catalog entry: the model and where its files are.
type record struct {
	Name      string           `json:"name"`
	Version   int64            `json:"version"`
	Committed time.Time        `json:"committed"`
	Files     map[string]int64 `json:"files"`
	Data      string           `json:"data"`             // upload id: the files are data/<id>/<file>
	Server    string           `json:"server,omitempty"` // the server that committed it (for humans)
}

type cached struct {
	etag string
	rec  record
}

func (r record) entry() store.Entry {
	files := make(map[string]int64, len(r.Files))
	for k, v := range r.Files {
		files[k] = v
	}
	return store.Entry{Name: r.Name, Files: files, Committed: r.Committed, Version: r.Version}
}

func (r record) check(key string, s *Store) error {
	if err := store.ValidateName(r.Name); err != nil {
		return err
	}
	if s.catalogKey(r.Name) != key {
		return fmt.Errorf("model %q belongs in %s", r.Name, s.catalogKey(r.Name))
	}
	if r.Version < 1 || r.Committed.IsZero() || len(r.Files) == 0 || !validID(r.Data) {
		return errors.New("missing version, time, files or data id")
	}
	for f, size := range r.Files {
		if !fs.ValidPath(f) || f == "." || size < 0 {
			return fmt.Errorf("file %q (%d bytes)", f, size)
		}
	}
	return nil
}

// escape maps a valid model name to one key segment: '/' (never in a
// segment) becomes '~' (never in a valid name), one-to-one and
// prefix-preserving, so listing a name prefix is listing a key prefix.
func escape(name string) string                { return strings.ReplaceAll(name, "/", "~") }
func unescape(seg string) string               { return strings.ReplaceAll(seg, "~", "/") }
func (s *Store) catalogKey(name string) string { return s.p + "catalog/" + escape(name) }
func (s *Store) dataPrefix(id string) string   { return s.p + "data/" + id + "/" }
func (s *Store) uploadKey(id string) string    { return s.p + "uploads/" + id }
func (s *Store) lockKey(name string) string    { return s.p + "locks/" + escape(name) }
func (s *Store) retiredKey(id string) string   { return s.p + "retired/" + id }

// newID is a unique, roughly time-ordered upload id.
func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + hex.EncodeToString(b[:])
}

func validID(id string) bool {
	if len(id) < 3 || len(id) > 40 {
		return false
	}
	for _, c := range id {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Open connects to the bucket, checks that it honours conditional writes
// (the commit protocol depends on them), registers this server's
// advertised location and starts the heartbeat (and, unless disabled, one
// background GC pass).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("store: s3: %w", err)
	}
	c, err := newClient(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: s3: %w", err)
	}
	s := &Store{
		cfg: cfg, c: c, log: cfg.Logger.With().Str("component", "store").Str("bucket", cfg.Bucket).Logger(),
		serverID: newID(), reserved: map[string]int{}, pending: map[string]*staging{}, cache: map[string]cached{},
		stop: make(chan struct{}),
	}
	if cfg.Prefix != "" {
		s.p = cfg.Prefix + "/"
	}
	if err := s.probe(ctx); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.ScratchDir, 0o755); err != nil {
		return nil, fmt.Errorf("store: s3: scratch directory: %w", err)
	}
	sweepScratch(cfg.ScratchDir, s.log)
	if s.scratch, err = os.MkdirTemp(cfg.ScratchDir, scratchPrefix+strconv.Itoa(os.Getpid())+"-"); err != nil {
		return nil, fmt.Errorf("store: s3: scratch directory: %w", err)
	}
	if cfg.Advertise != "" {
		if err := s.register(ctx); err != nil {
			os.RemoveAll(s.scratch)
			return nil, err
		}
	}
	s.bg.Add(1)
	go s.heartbeatLoop()
	if cfg.StartupGC > 0 {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			gctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				select {
				case <-s.stop:
					cancel()
				case <-gctx.Done():
				}
			}()
			r, err := s.GC(gctx, cfg.StartupGC)
			if err != nil && gctx.Err() == nil {
				s.log.Warn().Err(err).Msg("startup GC failed; `arrowquant store gc` collects later")
				return
			}
			if r.Versions+r.Uploads+r.Multipart > 0 {
				s.log.Info().Int("versions", r.Versions).Int("uploads", r.Uploads).Int("multipart", r.Multipart).
					Int64("bytes", r.Bytes).Msg("startup GC collected garbage")
			}
		}()
	}
	s.log.Info().Str("prefix", cfg.Prefix).Str("advertise", cfg.Advertise).Msg("S3 store opened")
	return s, nil
}

// probe checks that the bucket exists and that the server enforces
// If-None-Match: * and If-Match on PUT (a server that ignored them would
// let two uploads of one name both win).
func (s *Store) probe(ctx context.Context) error {
	key := s.p + "probe/" + s.serverID
	body := []byte("conditional write probe")
	_, err := s.put(ctx, key, body, putIfNoneMatch)
	if err != nil {
		if isNotFound(err) || errorCode(err) == "NoSuchBucket" {
			return fmt.Errorf("store: s3: bucket %q does not exist (create it first): %w", s.cfg.Bucket, err)
		}
		return wrap(err, "store: s3: bucket %q: write %s", s.cfg.Bucket, key)
	}
	defer s.deleteKey(context.WithoutCancel(ctx), key)
	if _, err := s.put(ctx, key, body, putIfNoneMatch); !isPrecondition(err) {
		return fmt.Errorf("store: s3: bucket %q: the server ignores If-None-Match: * on PUT (got %v instead of 412 Precondition Failed): atomic commits are impossible on it", s.cfg.Bucket, err)
	}
	if _, err := s.put(ctx, key, body, `"0123456789abcdef0123456789abcdef"`); !isPrecondition(err) {
		return fmt.Errorf("store: s3: bucket %q: the server ignores If-Match on PUT (got %v instead of 412 Precondition Failed): overwrites cannot be compare-and-swap", s.cfg.Bucket, err)
	}
	return nil
}

// putIfNoneMatch as the condition of put: create only.
const putIfNoneMatch = "*create*"

// put writes a small object. cond: "" unconditional, putIfNoneMatch
// (If-None-Match: *), else an ETag for If-Match. It returns the new ETag.
func (s *Store) put(ctx context.Context, key string, body []byte, cond string) (string, error) {
	in := &s3.PutObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(key), Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body)))}
	switch cond {
	case "":
	case putIfNoneMatch:
		in.IfNoneMatch = aws.String("*")
	default:
		in.IfMatch = aws.String(cond)
	}
	out, err := s.c.PutObject(ctx, in)
	if err != nil {
		return "", err
	}
	s.observe(out.ResultMetadata)
	return aws.ToString(out.ETag), nil
}

func (s *Store) putJSON(ctx context.Context, key string, v any, cond string) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return s.put(ctx, key, b, cond)
}

// getJSON reads a small object; it returns its ETag and Last-Modified.
func (s *Store) getJSON(ctx context.Context, key string, v any) (etag string, mod time.Time, err error) {
	out, err := s.c.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(key)})
	if err != nil {
		return "", time.Time{}, err
	}
	defer out.Body.Close()
	s.observe(out.ResultMetadata)
	b, err := io.ReadAll(io.LimitReader(out.Body, 16<<20))
	if err != nil {
		return "", time.Time{}, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return "", time.Time{}, fmt.Errorf("object %s is not valid JSON: %w", key, err)
	}
	return aws.ToString(out.ETag), aws.ToTime(out.LastModified), nil
}

// deleteKey deletes one object; a missing one is not an error.
func (s *Store) deleteKey(ctx context.Context, key string) error {
	_, err := s.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(key)})
	if err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// observe tracks the S3 server's clock from a response's Date header, so
// ages of objects (their Last-Modified, the server's clock) are measured
// on the server's clock whatever ours says.
func (s *Store) observe(md middleware.Metadata) {
	raw, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response)
	if !ok || raw == nil {
		return
	}
	d, err := http.ParseTime(raw.Header.Get("Date"))
	if err != nil {
		return
	}
	// Date is truncated to the second: on average half a second behind.
	s.skew.Store(int64(d.Add(500 * time.Millisecond).Sub(time.Now())))
}

// s3Now is the S3 server's time now.
func (s *Store) s3Now() time.Time { return time.Now().Add(time.Duration(s.skew.Load())) }

// listed is one object of a listing.
type listed struct {
	key  string
	etag string
	size int64
	mod  time.Time
}

// list lists every object under prefix.
func (s *Store) list(ctx context.Context, prefix string) ([]listed, error) {
	var out []listed
	p := s3.NewListObjectsV2Paginator(s.c, &s3.ListObjectsV2Input{Bucket: &s.cfg.Bucket, Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		s.observe(page.ResultMetadata)
		for _, o := range page.Contents {
			out = append(out, listed{key: aws.ToString(o.Key), etag: aws.ToString(o.ETag), size: aws.ToInt64(o.Size), mod: aws.ToTime(o.LastModified)})
		}
	}
	return out, nil
}

func (s *Store) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("store: %w", store.ErrClosed)
	}
	return nil
}

// startOp registers a Commit or Delete that Close waits for.
func (s *Store) startOp() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("store: %w", store.ErrClosed)
	}
	s.inflight.Add(1)
	return nil
}

func notFound(name string) error {
	return fmt.Errorf("store: model %q: %w", name, store.ErrNotFound)
}

// getRecord reads name's catalog entry (store.ErrNotFound when absent).
func (s *Store) getRecord(ctx context.Context, name string) (record, string, error) {
	key := s.catalogKey(name)
	var r record
	etag, _, err := s.getJSON(ctx, key, &r)
	if isNotFound(err) {
		s.forget(key)
		return record{}, "", notFound(name)
	}
	if err != nil {
		return record{}, "", wrap(err, "store: model %q: read catalog entry %s", name, key)
	}
	if err := r.check(key, s); err != nil {
		return record{}, "", fmt.Errorf("store: model %q: bad catalog entry %s: %w", name, key, err)
	}
	s.remember(key, etag, r)
	return r, etag, nil
}

func (s *Store) remember(key, etag string, r record) {
	s.cacheMu.Lock()
	s.cache[key] = cached{etag: etag, rec: r}
	s.cacheMu.Unlock()
}

func (s *Store) forget(key string) {
	s.cacheMu.Lock()
	delete(s.cache, key)
	s.cacheMu.Unlock()
}

// Get implements store.Store: one GET of the catalog entry, so it sees
// every commit that completed before it, on any server.
func (s *Store) Get(ctx context.Context, name string) (store.Entry, error) {
	if err := ctx.Err(); err != nil {
		return store.Entry{}, fmt.Errorf("store: model %q: %w", name, err)
	}
	if err := s.checkOpen(); err != nil {
		return store.Entry{}, err
	}
	if err := store.ValidateName(name); err != nil {
		return store.Entry{}, notFound(name)
	}
	r, _, err := s.getRecord(ctx, name)
	if err != nil {
		return store.Entry{}, err
	}
	return r.entry(), nil
}

// List implements store.Store: a listing of the catalog, reading only the
// entries whose ETag changed since this process last read them.
func (s *Store) List(ctx context.Context, prefix string) ([]store.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: list: %w", err)
	}
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	recs, _, err := s.catalog(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]store.Entry, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.entry())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// catalog lists the committed models whose name starts with prefix, and
// the keys of catalog entries that cannot be read (logged, skipped).
func (s *Store) catalog(ctx context.Context, prefix string) ([]record, []string, error) {
	base := s.p + "catalog/"
	objs, err := s.list(ctx, base+escape(prefix))
	if err != nil {
		return nil, nil, wrap(err, "store: list the catalog %s", base)
	}
	var (
		badMu sync.Mutex
		bad   []string
	)
	recs := make([]record, len(objs))
	ok := make([]bool, len(objs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, o := range objs {
		s.cacheMu.Lock()
		c, hit := s.cache[o.key]
		s.cacheMu.Unlock()
		if hit && c.etag == o.etag {
			recs[i], ok[i] = c.rec, true
			continue
		}
		g.Go(func() error {
			name := unescape(strings.TrimPrefix(o.key, base))
			r, _, err := s.getRecord(gctx, name)
			switch {
			case errors.Is(err, store.ErrNotFound): // deleted since the listing
			case err != nil && errors.Is(err, store.ErrUnavailable):
				return err
			case err != nil:
				s.log.Warn().Err(err).Str("key", o.key).Msg("skipping a bad catalog entry")
				badMu.Lock()
				bad = append(bad, o.key)
				badMu.Unlock()
			default:
				recs[i], ok[i] = r, true
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	out := recs[:0]
	for i := range recs {
		if ok[i] {
			out = append(out, recs[i])
		}
	}
	if prefix == "" { // forget what is gone
		seen := make(map[string]bool, len(objs))
		for _, o := range objs {
			seen[o.key] = true
		}
		s.cacheMu.Lock()
		for k := range s.cache {
			if !seen[k] {
				delete(s.cache, k)
			}
		}
		s.cacheMu.Unlock()
	}
	return out, bad, nil
}

// Open implements store.Store. The File reads the version that was
// current at Open: its objects never change, and stay until GC collects
// them, a grace period after an overwrite or delete retired them.
func (s *Store) Open(ctx context.Context, name, file string) (store.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: model %q: %w", name, err)
	}
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := store.ValidateName(name); err != nil {
		return nil, notFound(name)
	}
	r, _, err := s.getRecord(ctx, name)
	if err != nil {
		return nil, err
	}
	size, ok := r.Files[file]
	if !ok {
		return nil, fmt.Errorf("store: model %q: file %q: %w", name, file, store.ErrNotFound)
	}
	return s.newFile(name, file, s.dataPrefix(r.Data)+file, size), nil
}

// Delete implements store.Store: the catalog entry is deleted if it is
// still the one read (If-Match); the version's data is retired first, so
// readers that opened it keep reading for the grace period.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: model %q: delete: %w", name, err)
	}
	if err := s.startOp(); err != nil {
		return err
	}
	defer s.inflight.Done()
	if err := store.ValidateName(name); err != nil {
		return notFound(name)
	}
	key := s.catalogKey(name)
	for attempt := 0; ; attempt++ {
		r, etag, err := s.getRecord(ctx, name)
		if err != nil {
			return err
		}
		if err := s.retire(ctx, r); err != nil {
			return err
		}
		_, err = s.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(key), IfMatch: aws.String(etag)})
		if isPrecondition(err) && attempt < 50 {
			backoff(attempt) // overwritten meanwhile: delete the newer version
			continue
		}
		if isNotFound(err) {
			return notFound(name)
		}
		if err != nil {
			return wrap(err, "store: model %q: delete catalog entry %s", name, key)
		}
		s.forget(key)
		s.log.Info().Str("model", name).Int64("version", r.Version).Msg("model deleted")
		return nil
	}
}

// retire records that version r stops being current, before the catalog
// change that makes it so: GC keeps its data for the grace period after.
func (s *Store) retire(ctx context.Context, r record) error {
	key := s.retiredKey(r.Data)
	_, err := s.putJSON(ctx, key, map[string]any{"name": r.Name, "version": r.Version, "server": s.serverID}, "")
	return wrap(err, "store: model %q: retire version %d (%s)", r.Name, r.Version, key)
}

func backoff(attempt int) {
	d := time.Duration(5+attempt*attempt) * time.Millisecond
	if d > 200*time.Millisecond {
		d = 200 * time.Millisecond
	}
	var b [1]byte
	rand.Read(b[:])
	time.Sleep(d + time.Duration(b[0])*d/256)
}

// Stats implements store.Store. Pending counts the live uploads of every
// server on the store (fresh heartbeats).
func (s *Store) Stats(ctx context.Context) (store.Stats, error) {
	if err := ctx.Err(); err != nil {
		return store.Stats{}, fmt.Errorf("store: stats: %w", err)
	}
	if err := s.checkOpen(); err != nil {
		return store.Stats{}, err
	}
	recs, _, err := s.catalog(ctx, "")
	if err != nil {
		return store.Stats{}, err
	}
	st := store.Stats{Models: len(recs)}
	for _, r := range recs {
		st.Bytes += r.entry().Size()
	}
	ups, err := s.list(ctx, s.p+"uploads/")
	if err != nil {
		return store.Stats{}, wrap(err, "store: list uploads")
	}
	live := s.s3Now().Add(-s.cfg.LeaseTTL())
	for _, u := range ups {
		if u.mod.After(live) {
			st.Pending++
		}
	}
	return st, nil
}

// Close aborts the Staging areas still open, waits for commits and
// deletes in progress, stops the heartbeat and unregisters the server.
// Files already open stay readable. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	open := make([]*staging, 0, len(s.pending))
	for _, st := range s.pending {
		open = append(open, st)
	}
	s.mu.Unlock()
	var errs []error
	for _, st := range open {
		if err := st.Abort(); err != nil {
			errs = append(errs, err)
		}
	}
	s.inflight.Wait()
	close(s.stop)
	s.bg.Wait()
	if s.cfg.Advertise != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.deleteKey(ctx, s.serverKey()); err != nil {
			s.log.Warn().Err(err).Msg("cannot unregister the server (its heartbeat expires by itself)")
		}
		cancel()
	}
	if err := os.RemoveAll(s.scratch); err != nil {
		errs = append(errs, fmt.Errorf("store: remove scratch %s: %w", s.scratch, err))
	}
	if len(open) > 0 {
		s.log.Info().Int("aborted", len(open)).Msg("store closed with uploads in progress")
	}
	return errors.Join(errs...)
}

// scratchPrefix names this package's scratch directories:
// arrowquant-s3-<pid>-<random>.
const scratchPrefix = "arrowquant-s3-"

// sweepScratch removes the scratch directories of processes that are gone
// (a killed server leaves its staged files behind).
func sweepScratch(dir string, log zerolog.Logger) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), scratchPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		log.Info().Str("path", p).Int("pid", pid).Msg("removing the scratch directory of a process that is gone")
		os.RemoveAll(p)
	}
}
