package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"

	"github.com/arrowquant/arrowquant/store"
)

// staging is a Staging area: a local scratch directory, a heartbeat
// object, and for a non-overwrite upload a lock object on the name.
type staging struct {
	s         *Store
	id        string
	name      string
	overwrite bool
	dir       string

	mu       sync.Mutex // held through Commit and Abort
	done     bool
	released bool // the in-process reservation is dropped (Store.mu)

	beatMu   sync.Mutex // the heartbeat and the end of the staging
	ended    bool
	lastBeat time.Time // last successful heartbeat (our clock)
	lockTag  string    // ETag of our lock object ("" without one)
	lockLost bool
}

// beat is the body of a heartbeat or lock object.
type beat struct {
	Name      string    `json:"name"`
	ID        string    `json:"id"`
	Server    string    `json:"server"`
	Overwrite bool      `json:"overwrite,omitempty"`
	Started   time.Time `json:"started"`
}

// Begin implements store.Store. A non-overwrite Begin reserves the name
// for every server: it creates locks/<name> with If-None-Match: * (a lock
// silent for LeaseTTL is taken over), so a second upload of the name
// anywhere fails with ErrExists at once. The commit itself does not rely
// on the lock: the catalog entry is created with If-None-Match: *.
func (s *Store) Begin(ctx context.Context, name string, overwrite bool) (store.Staging, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: model %q: begin: %w", name, err)
	}
	if err := store.ValidateName(name); err != nil {
		return nil, err
	}
	st := &staging{s: s, id: newID(), name: name, overwrite: overwrite}
	s.mu.Lock()
	var err error
	switch {
	case s.closed:
		err = fmt.Errorf("store: %w", store.ErrClosed)
	case !overwrite && s.reserved[name] > 0:
		err = fmt.Errorf("store: model %q: %w (an upload of it is in progress)", name, store.ErrExists)
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.reserved[name]++
	s.mu.Unlock()
	if err := st.begin(ctx); err != nil {
		st.release()
		return nil, err
	}
	// Only now does the heartbeat loop (and Close) see the staging.
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.pending[st.id] = st
	}
	s.mu.Unlock()
	if closed {
		st.end(ctx)
		os.RemoveAll(st.dir)
		st.release()
		return nil, fmt.Errorf("store: %w", store.ErrClosed)
	}
	s.log.Debug().Str("model", name).Bool("overwrite", overwrite).Str("upload", st.id).Msg("staging begun")
	return st, nil
}

func (st *staging) begin(ctx context.Context) error {
	s := st.s
	b := beat{Name: st.name, ID: st.id, Server: s.serverID, Overwrite: st.overwrite, Started: time.Now().UTC()}
	if !st.overwrite {
		if _, _, err := s.getRecord(ctx, st.name); err == nil {
			return fmt.Errorf("store: model %q: %w", st.name, store.ErrExists)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := st.lock(ctx, b); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp(s.scratch, escape(st.name)+".")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		st.unlock()
		return fmt.Errorf("store: model %q: create staging directory: %w", st.name, err)
	}
	st.dir = dir
	if _, err := s.putJSON(ctx, s.uploadKey(st.id), b, ""); err != nil {
		st.unlock()
		os.RemoveAll(dir)
		return wrap(err, "store: model %q: write heartbeat %s", st.name, s.uploadKey(st.id))
	}
	st.beatMu.Lock()
	st.lastBeat = time.Now()
	st.beatMu.Unlock()
	if !st.overwrite { // committed while we took the lock?
		if _, _, err := s.getRecord(ctx, st.name); err == nil {
			st.end(context.WithoutCancel(ctx))
			return fmt.Errorf("store: model %q: %w", st.name, store.ErrExists)
		}
	}
	return nil
}

// lock creates locks/<name>, or takes over one whose holder went silent.
func (st *staging) lock(ctx context.Context, b beat) error {
	s := st.s
	key := s.lockKey(st.name)
	for attempt := 0; attempt < 5; attempt++ {
		tag, err := s.putJSON(ctx, key, b, putIfNoneMatch)
		if err == nil {
			st.lockTag = tag
			return nil
		}
		if !isPrecondition(err) {
			return wrap(err, "store: model %q: reserve %s", st.name, key)
		}
		var held beat
		etag, mod, err := s.getJSON(ctx, key, &held)
		if isNotFound(err) {
			continue // released meanwhile
		}
		if err != nil {
			return wrap(err, "store: model %q: read reservation %s", st.name, key)
		}
		// Our own server's lock is never live here (this process holds no
		// other reservation of the name): a cleanup that failed left it.
		if age := s.s3Now().Sub(mod); age < s.cfg.LeaseTTL() && held.Server != s.serverID {
			return fmt.Errorf("store: model %q: %w (an upload of it is in progress on server %s, heartbeat %s ago)", st.name, store.ErrExists, held.Server, age.Round(time.Second))
		}
		tag, err = s.putJSON(ctx, key, b, etag) // take over the stale lock
		if err == nil {
			s.log.Info().Str("model", st.name).Str("holder", held.Server).Msg("took over the reservation of a silent upload")
			st.lockTag = tag
			return nil
		}
		if !isPrecondition(err) {
			return wrap(err, "store: model %q: take over reservation %s", st.name, key)
		}
	}
	return fmt.Errorf("store: model %q: %w (its reservation keeps changing hands)", st.name, store.ErrExists)
}

// unlock deletes our lock object if it is still ours.
func (st *staging) unlock() {
	if st.lockTag == "" {
		return
	}
	s := st.s
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(s.lockKey(st.name)), IfMatch: aws.String(st.lockTag)})
	if err != nil && !isNotFound(err) && !isPrecondition(err) {
		s.log.Warn().Err(err).Str("model", st.name).Msg("cannot release the reservation (it expires by itself)")
	}
	st.lockTag = ""
}

// refresh renews the heartbeat and the lock (the heartbeat loop).
func (st *staging) refresh(ctx context.Context) {
	st.beatMu.Lock()
	defer st.beatMu.Unlock()
	if st.ended {
		return
	}
	s := st.s
	b := beat{Name: st.name, ID: st.id, Server: s.serverID, Overwrite: st.overwrite, Started: time.Now().UTC()}
	if _, err := s.putJSON(ctx, s.uploadKey(st.id), b, ""); err != nil {
		s.log.Warn().Err(err).Str("model", st.name).Msg("cannot refresh the upload's heartbeat")
		return
	}
	st.lastBeat = time.Now()
	if st.lockTag != "" && !st.lockLost {
		tag, err := s.putJSON(ctx, s.lockKey(st.name), b, st.lockTag)
		switch {
		case err == nil:
			st.lockTag = tag
		case isPrecondition(err) || isNotFound(err):
			st.lockLost = true
			st.lockTag = ""
			s.log.Warn().Str("model", st.name).Msg("the name's reservation was taken over (the commit stays safe: it is conditional)")
		default:
			s.log.Warn().Err(err).Str("model", st.name).Msg("cannot refresh the name's reservation")
		}
	}
}

// end stops the heartbeat and deletes the heartbeat and lock objects.
func (st *staging) end(ctx context.Context) {
	st.beatMu.Lock()
	st.ended = true
	st.beatMu.Unlock()
	s := st.s
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.deleteKey(ctx, s.uploadKey(st.id)); err != nil {
		s.log.Warn().Err(err).Str("model", st.name).Msg("cannot delete the upload's heartbeat (GC removes it)")
	}
	st.unlock()
}

// release drops the in-process reservation (once).
func (st *staging) release() {
	s := st.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.released {
		return
	}
	st.released = true
	delete(s.pending, st.id)
	if s.reserved[st.name]--; s.reserved[st.name] <= 0 {
		delete(s.reserved, st.name)
	}
}

func (st *staging) Dir() string { return st.dir }

// Abort implements store.Staging.
func (st *staging) Abort() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return nil
	}
	st.done = true
	return st.discard(nil)
}

// discard ends a staging that did not commit: uploaded objects, heartbeat,
// lock, scratch files and the reservation go. Object deletions that fail
// are logged and left to GC; only a local failure is returned.
func (st *staging) discard(uploaded []string) error {
	s := st.s
	st.end(context.Background())
	if len(uploaded) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := s.deleteKeys(ctx, uploaded); err != nil {
			s.log.Warn().Err(err).Str("model", st.name).Str("upload", st.id).Msg("cannot delete the objects of a failed upload (GC removes them)")
		}
		cancel()
	}
	err := os.RemoveAll(st.dir)
	st.release()
	if err != nil {
		return fmt.Errorf("store: model %q: discard staging: %w", st.name, err)
	}
	s.log.Debug().Str("model", st.name).Msg("staging discarded")
	return nil
}

// Commit implements store.Staging: upload the files under data/<id>/,
// then publish the catalog entry conditionally (create: If-None-Match: *;
// overwrite: If-Match on the current entry's ETag, retried on conflict).
func (st *staging) Commit(ctx context.Context) (store.Entry, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return store.Entry{}, fmt.Errorf("store: model %q: commit: staging already committed or aborted", st.name)
	}
	st.done = true
	s := st.s
	if err := s.startOp(); err != nil {
		st.discard(nil)
		return store.Entry{}, err
	}
	defer s.inflight.Done()
	start := time.Now()
	r, uploaded, err := st.commit(ctx)
	if err != nil {
		st.discard(uploaded)
		return store.Entry{}, fmt.Errorf("store: model %q: commit: %w", st.name, err)
	}
	st.end(ctx)
	if err := os.RemoveAll(st.dir); err != nil {
		s.log.Warn().Err(err).Str("dir", st.dir).Msg("cannot remove the staging directory")
	}
	st.release()
	e := r.entry()
	s.log.Info().Str("model", e.Name).Int64("version", e.Version).Int("files", len(e.Files)).Int64("bytes", e.Size()).
		Dur("took", time.Since(start)).Msg("model committed")
	return e, nil
}

func (st *staging) commit(ctx context.Context) (record, []string, error) {
	s := st.s
	files, err := scan(ctx, st.dir)
	if err != nil {
		return record{}, nil, err
	}
	uploaded, err := st.upload(ctx, files)
	if err != nil {
		return record{}, uploaded, err
	}
	// The lease: GC collects only what has been silent for longer than
	// LeaseTTL, so a commit whose heartbeat kept going is safe from it.
	st.beatMu.Lock()
	silent := time.Since(st.lastBeat)
	st.beatMu.Unlock()
	if silent > s.cfg.LeaseTTL() {
		return record{}, uploaded, fmt.Errorf("%w: the upload's heartbeat failed for %s (longer than the %s lease): its objects may have been collected", store.ErrUnavailable, silent.Round(time.Second), s.cfg.LeaseTTL())
	}
	if err := ctx.Err(); err != nil {
		return record{}, uploaded, err
	}
	r := record{Name: st.name, Files: files, Data: st.id, Server: s.serverID}
	if err := st.publish(ctx, &r); err != nil {
		return record{}, uploaded, err
	}
	return r, nil, nil
}

// publish writes the catalog entry, the commit point.
func (st *staging) publish(ctx context.Context, r *record) error {
	s := st.s
	key := s.catalogKey(st.name)
	for attempt := 0; ; attempt++ {
		cond := putIfNoneMatch
		r.Version = 1
		if st.overwrite {
			cur, etag, err := s.getRecord(ctx, st.name)
			switch {
			case err == nil:
				if err := s.retire(ctx, cur); err != nil {
					return err
				}
				cond, r.Version = etag, cur.Version+1
			case !errors.Is(err, store.ErrNotFound):
				return err
			}
		}
		r.Committed = time.Now().UTC().Round(0)
		etag, err := s.putJSON(ctx, key, r, cond)
		if err == nil {
			s.remember(key, etag, *r)
			return nil
		}
		// If-Match on an entry deleted meanwhile answers 404: re-read too.
		if isPrecondition(err) || (cond != putIfNoneMatch && isNotFound(err)) {
			if !st.overwrite && httpStatus(err) != 409 {
				return fmt.Errorf("%w (committed by another upload meanwhile)", store.ErrExists)
			}
			if attempt < 100 {
				backoff(attempt)
				continue
			}
		}
		// The request may have been applied and its answer lost: the
		// catalog says whether this upload is the current version.
		if cur, _, gerr := s.getRecord(context.WithoutCancel(ctx), st.name); gerr == nil && cur.Data == st.id {
			*r = cur
			return nil
		}
		return wrap(err, "write catalog entry %s", key)
	}
}

// scan lists the regular files under root by '/'-separated relative name.
func scan(ctx context.Context, root string) (map[string]int64, error) {
	files := map[string]int64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root || d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !d.Type().IsRegular() {
			return fmt.Errorf("file %q is not a regular file (%s)", rel, d.Type())
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files[rel] = info.Size()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("no files to commit")
	}
	return files, nil
}

// upload puts every file under data/<id>/: small ones in one PUT, larger
// ones in multipart uploads, Concurrency requests at a time, each body a
// section of the open file (nothing is buffered in memory). It returns the
// keys written so far, for the cleanup of a failure.
func (st *staging) upload(ctx context.Context, files map[string]int64) (uploaded []string, err error) {
	s := st.s
	names := make([]string, 0, len(files))
	for f := range files {
		names = append(names, f)
	}
	sort.Slice(names, func(i, j int) bool { return files[names[i]] > files[names[j]] }) // largest first
	var (
		mu   sync.Mutex
		done []string
		mpus []*multipart
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Concurrency)
	defer func() {
		if err != nil {
			for _, m := range mpus {
				m.abort()
			}
		}
	}()
	for _, rel := range names {
		key := s.dataPrefix(st.id) + rel
		f, err := os.Open(filepath.Join(st.dir, filepath.FromSlash(rel)))
		if err != nil {
			g.Wait()
			return done, err
		}
		defer f.Close()
		size := files[rel]
		if fi, err := f.Stat(); err != nil || fi.Size() != size {
			g.Wait()
			return done, fmt.Errorf("file %q changed during the commit", rel)
		}
		if size <= s.cfg.PartSize {
			g.Go(func() error {
				_, err := s.c.PutObject(gctx, &s3.PutObjectInput{
					Bucket: &s.cfg.Bucket, Key: aws.String(key), Body: io.NewSectionReader(f, 0, size), ContentLength: aws.Int64(size),
				})
				if err != nil {
					return wrap(err, "upload %s", key)
				}
				mu.Lock()
				done = append(done, key)
				mu.Unlock()
				return nil
			})
			continue
		}
		m, err := s.startMultipart(gctx, key, f, size)
		if err != nil {
			g.Wait()
			return done, err
		}
		mpus = append(mpus, m)
		for i := range m.parts {
			g.Go(func() error { return m.uploadPart(gctx, i) })
		}
	}
	if err := g.Wait(); err != nil {
		return done, err
	}
	for _, m := range mpus {
		if err := m.complete(ctx); err != nil {
			return done, err
		}
		done = append(done, m.key)
	}
	mpus = nil
	return done, nil
}

// multipart is one multipart upload of a local file.
type multipart struct {
	s        *Store
	key, id  string
	f        *os.File
	size     int64
	partSize int64
	parts    []types.CompletedPart
}

func (s *Store) startMultipart(ctx context.Context, key string, f *os.File, size int64) (*multipart, error) {
	partSize := s.cfg.PartSize
	if min := (size + maxParts - 1) / maxParts; partSize < min {
		partSize = min
	}
	out, err := s.c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.cfg.Bucket, Key: aws.String(key)})
	if err != nil {
		return nil, wrap(err, "start multipart upload of %s", key)
	}
	n := (size + partSize - 1) / partSize
	return &multipart{s: s, key: key, id: aws.ToString(out.UploadId), f: f, size: size, partSize: partSize, parts: make([]types.CompletedPart, n)}, nil
}

func (m *multipart) uploadPart(ctx context.Context, i int) error {
	off := int64(i) * m.partSize
	n := min(m.partSize, m.size-off)
	out, err := m.s.c.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: &m.s.cfg.Bucket, Key: aws.String(m.key), UploadId: aws.String(m.id), PartNumber: aws.Int32(int32(i + 1)),
		Body: io.NewSectionReader(m.f, off, n), ContentLength: aws.Int64(n),
	})
	if err != nil {
		return wrap(err, "upload part %d of %s", i+1, m.key)
	}
	m.parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
	return nil
}

func (m *multipart) complete(ctx context.Context) error {
	_, err := m.s.c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &m.s.cfg.Bucket, Key: aws.String(m.key), UploadId: aws.String(m.id),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: m.parts},
	})
	if err != nil {
		m.abort()
		return wrap(err, "complete multipart upload of %s", m.key)
	}
	return nil
}

// abort abandons the multipart upload (GC aborts it if this fails).
func (m *multipart) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := m.s.c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &m.s.cfg.Bucket, Key: aws.String(m.key), UploadId: aws.String(m.id)})
	if err != nil && !isNotFound(err) {
		m.s.log.Warn().Err(err).Str("key", m.key).Msg("cannot abort a multipart upload (GC aborts it)")
	}
}

// deleteKeys deletes objects, 1000 per request.
func (s *Store) deleteKeys(ctx context.Context, keys []string) error {
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		objs := make([]types.ObjectIdentifier, n)
		for i, k := range keys[:n] {
			objs[i] = types.ObjectIdentifier{Key: aws.String(k)}
		}
		out, err := s.c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &s.cfg.Bucket, Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(true)}})
		if err != nil {
			return wrap(err, "delete %d objects", n)
		}
		for _, e := range out.Errors {
			if aws.ToString(e.Code) != "NoSuchKey" {
				return fmt.Errorf("delete %s: %s: %s", aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message))
			}
		}
		keys = keys[n:]
	}
	return nil
}

// heartbeatLoop refreshes the open uploads' heartbeats and locks and the
// server's registration every Heartbeat until Close.
func (s *Store) heartbeatLoop() {
	defer s.bg.Done()
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Heartbeat*3)
		s.mu.Lock()
		open := make([]*staging, 0, len(s.pending))
		for _, st := range s.pending {
			open = append(open, st)
		}
		s.mu.Unlock()
		var wg sync.WaitGroup
		for _, st := range open {
			wg.Add(1)
			go func() { defer wg.Done(); st.refresh(ctx) }()
		}
		if s.cfg.Advertise != "" {
			if err := s.register(ctx); err != nil {
				s.log.Warn().Err(err).Msg("cannot refresh the server's registration")
			}
		}
		wg.Wait()
		cancel()
	}
}
