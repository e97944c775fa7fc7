package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/arrowquant/arrowquant/internal/fsutil"
)

// Layout of a local store directory.
const (
	modelsDir  = "models"  // committed models, one directory each
	stagingDir = "staging" // Staging areas; emptied at start
	trashDir   = "trash"   // replaced or deleted models awaiting removal; emptied at start
	lockFile   = ".lock"   // flock: one process per store directory
	markerName = ".commit.json"
)

// marker is the commit marker, the last file written into a model's
// directory before it is renamed into models/. A directory in models/
// without a valid marker whose files match it is not a model.
type marker struct {
	Name      string           `json:"name"`
	Version   int64            `json:"version"`
	Committed time.Time        `json:"committed"`
	Files     map[string]int64 `json:"files"`
}

// Local is the local-directory Store. It also implements LocalPather.
//
// Layout: dir/models/<escaped name>/ holds a committed model (its files and
// the .commit.json marker); dir/staging/ holds Staging areas; dir/trash/
// holds replaced or deleted models until they are removed. A commit fsyncs
// every file and directory of the staged model, writes and fsyncs the
// marker, and renames the directory into models/ (exchanging it with the
// previous version on overwrite), so a crash at any moment leaves each
// model either absent or complete. OpenLocal rebuilds the catalog from
// models/ and moves anything incomplete to the trash.
type Local struct {
	dir, models, staging, trash string
	log                         zerolog.Logger
	lock                        *os.File // holds the flock on dir/.lock

	mu       sync.RWMutex
	closed   bool
	catalog  map[string]Entry         // committed models
	reserved map[string]int           // name -> open Staging areas
	pending  map[uint64]*localStaging // open Staging areas
	seq      uint64
	inflight sync.WaitGroup // Commits and Deletes touching the disk

	nlMu      sync.Mutex
	nameLocks map[string]*nameLock // serialise commits and deletes per name

	trashSeq   atomic.Uint64
	noExchange atomic.Bool // RENAME_EXCHANGE unsupported: rename aside
}

type nameLock struct {
	mu   sync.Mutex
	refs int
}

var (
	_ Store       = (*Local)(nil)
	_ LocalPather = (*Local)(nil)
)

// OpenLocal opens (creating it if needed) the store in dir. It empties
// staging/ and trash/, and loads every models/ directory with a valid
// commit marker whose files exist with the listed sizes; anything else in
// models/ is logged and moved to the trash. A store directory is used by
// one process at a time (an flock on dir/.lock, released on exit).
func OpenLocal(dir string, log zerolog.Logger) (*Local, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", dir, err)
	}
	l := &Local{
		dir:       abs,
		models:    filepath.Join(abs, modelsDir),
		staging:   filepath.Join(abs, stagingDir),
		trash:     filepath.Join(abs, trashDir),
		log:       log.With().Str("component", "store").Logger(),
		catalog:   map[string]Entry{},
		reserved:  map[string]int{},
		pending:   map[uint64]*localStaging{},
		nameLocks: map[string]*nameLock{},
	}
	for _, d := range []string{l.dir, l.models, l.staging, l.trash} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("store: create %s: %w", d, err)
		}
	}
	if l.lock, err = lockDir(filepath.Join(l.dir, lockFile)); err != nil {
		return nil, fmt.Errorf("store: %s: %w", l.dir, err)
	}
	if err := l.recover(); err != nil {
		unlockDir(l.lock)
		return nil, err
	}
	var bytes int64
	for _, e := range l.catalog {
		bytes += e.Size()
	}
	l.log.Info().Str("dir", l.dir).Int("models", len(l.catalog)).Int64("bytes", bytes).Msg("store opened")
	return l, nil
}

// recover empties staging/ and trash/ and loads the catalog from models/.
func (l *Local) recover() error {
	for _, d := range []string{l.staging, l.trash} {
		ents, err := os.ReadDir(d)
		if err != nil {
			return fmt.Errorf("store: read %s: %w", d, err)
		}
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			l.log.Info().Str("path", p).Msg("removing leftover from a previous run")
			if err := os.RemoveAll(p); err != nil {
				return fmt.Errorf("store: remove leftover %s: %w", p, err)
			}
		}
	}
	ents, err := os.ReadDir(l.models)
	if err != nil {
		return fmt.Errorf("store: read %s: %w", l.models, err)
	}
	moved := false
	for _, de := range ents {
		p := filepath.Join(l.models, de.Name())
		e, err := loadModel(p, de)
		if err == nil {
			l.catalog[e.Name] = e
			continue
		}
		l.log.Warn().Str("path", p).Err(err).Msg("not a complete model (interrupted commit or foreign file): moving it to the trash")
		t := l.trashPath(de.Name())
		if err := os.Rename(p, t); err != nil {
			return fmt.Errorf("store: move %s to the trash: %w", p, err)
		}
		moved = true
		if err := os.RemoveAll(t); err != nil {
			l.log.Error().Str("path", t).Err(err).Msg("cannot empty the trash")
		}
	}
	if moved {
		return fsutil.SyncDir(l.models)
	}
	return nil
}

// loadModel validates the model directory p against its commit marker.
func loadModel(p string, de fs.DirEntry) (Entry, error) {
	if !de.IsDir() {
		return Entry{}, errors.New("not a directory")
	}
	raw, err := os.ReadFile(filepath.Join(p, markerName))
	if err != nil {
		return Entry{}, fmt.Errorf("no commit marker: %w", err)
	}
	var m marker
	if err := json.Unmarshal(raw, &m); err != nil {
		return Entry{}, fmt.Errorf("bad commit marker: %w", err)
	}
	if err := ValidateName(m.Name); err != nil {
		return Entry{}, fmt.Errorf("bad commit marker: %w", err)
	}
	if esc := escapeName(m.Name); esc != de.Name() {
		return Entry{}, fmt.Errorf("bad commit marker: model %q belongs in %s", m.Name, esc)
	}
	if m.Version < 1 || m.Committed.IsZero() || len(m.Files) == 0 {
		return Entry{}, errors.New("bad commit marker: missing version, time or files")
	}
	for f, size := range m.Files {
		if !fs.ValidPath(f) || f == markerName {
			return Entry{}, fmt.Errorf("bad commit marker: file name %q", f)
		}
		st, err := os.Lstat(filepath.Join(p, filepath.FromSlash(f)))
		if err != nil {
			return Entry{}, fmt.Errorf("file %q: %w", f, err)
		}
		if !st.Mode().IsRegular() {
			return Entry{}, fmt.Errorf("file %q is not a regular file", f)
		}
		if st.Size() != size {
			return Entry{}, fmt.Errorf("file %q has %d bytes, the marker says %d", f, st.Size(), size)
		}
	}
	return Entry{Name: m.Name, Files: m.Files, Committed: m.Committed, Version: m.Version}, nil
}

// escapeName maps a valid model name to a single directory name. '/' (the
// only character of a valid name that cannot appear in a file name)
// becomes '~', which valid names never contain, so the mapping is
// one-to-one and an escaped name is at most MaxNameLen bytes (percent
// escaping could exceed the 255-byte file name limit). Valid names never
// start with '.', so escaped names are never hidden nor "." or "..".
func escapeName(name string) string {
	return strings.ReplaceAll(name, "/", "~")
}

func (l *Local) modelPath(name string) string {
	return filepath.Join(l.models, escapeName(name))
}

// trashPath is a fresh path in the trash for something called base.
func (l *Local) trashPath(base string) string {
	if len(base) > MaxNameLen {
		base = base[:MaxNameLen] // keep within the 255-byte file name limit
	}
	return filepath.Join(l.trash, base+"."+strconv.FormatInt(time.Now().UnixNano(), 36)+"-"+strconv.FormatUint(l.trashSeq.Add(1), 10))
}

// lockName serialises the disk changes (commit, delete) of one name.
func (l *Local) lockName(name string) (unlock func()) {
	l.nlMu.Lock()
	nl := l.nameLocks[name]
	if nl == nil {
		nl = &nameLock{}
		l.nameLocks[name] = nl
	}
	nl.refs++
	l.nlMu.Unlock()
	nl.mu.Lock()
	return func() {
		nl.mu.Unlock()
		l.nlMu.Lock()
		if nl.refs--; nl.refs == 0 {
			delete(l.nameLocks, name)
		}
		l.nlMu.Unlock()
	}
}

// startOp registers a disk-changing operation that Close waits for.
func (l *Local) startOp() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return closedErr()
	}
	l.inflight.Add(1)
	return nil
}

// Begin implements Store.
func (l *Local) Begin(ctx context.Context, name string, overwrite bool) (Staging, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: model %q: begin: %w", name, err)
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(l.staging, escapeName(name)+".")
	if err != nil {
		return nil, fmt.Errorf("store: model %q: create staging directory: %w", name, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("store: model %q: %w", name, err)
	}
	l.mu.Lock()
	err = nil
	switch {
	case l.closed:
		err = closedErr()
	case overwrite:
	case l.catalog[name].Version > 0:
		err = fmt.Errorf("store: model %q: %w", name, ErrExists)
	case l.reserved[name] > 0:
		err = fmt.Errorf("store: model %q: %w (an upload of it is in progress)", name, ErrExists)
	}
	if err != nil {
		l.mu.Unlock()
		os.RemoveAll(dir)
		return nil, err
	}
	l.seq++
	s := &localStaging{l: l, id: l.seq, name: name, overwrite: overwrite, dir: dir}
	l.reserved[name]++
	l.pending[s.id] = s
	l.mu.Unlock()
	l.log.Debug().Str("model", name).Bool("overwrite", overwrite).Str("dir", dir).Msg("staging begun")
	return s, nil
}

// release drops s's reservation; the caller holds l.mu.
func (l *Local) release(s *localStaging) {
	if _, ok := l.pending[s.id]; !ok {
		return
	}
	delete(l.pending, s.id)
	if l.reserved[s.name]--; l.reserved[s.name] <= 0 {
		delete(l.reserved, s.name)
	}
}

// Get implements Store.
func (l *Local) Get(ctx context.Context, name string) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, fmt.Errorf("store: model %q: %w", name, err)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return Entry{}, closedErr()
	}
	e, ok := l.catalog[name]
	if !ok {
		return Entry{}, notFound(name)
	}
	return e.clone(), nil
}

// List implements Store.
func (l *Local) List(ctx context.Context, prefix string) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: list: %w", err)
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return nil, closedErr()
	}
	out := make([]Entry, 0, len(l.catalog))
	for name, e := range l.catalog {
		if strings.HasPrefix(name, prefix) {
			out = append(out, e.clone())
		}
	}
	l.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (e Entry) clone() Entry {
	files := make(map[string]int64, len(e.Files))
	for k, v := range e.Files {
		files[k] = v
	}
	e.Files = files
	return e
}

// localFile is an open file of a committed model. Embedding *os.File keeps
// its io.WriterTo (sendfile) for io.Copy.
type localFile struct {
	*os.File
	size int64
}

func (f *localFile) Size() int64 { return f.size }

// Open implements Store. The file is opened under the catalog lock, so it
// belongs to the version Get would have returned at that moment.
func (l *Local) Open(ctx context.Context, name, file string) (File, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: model %q: %w", name, err)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, closedErr()
	}
	e, ok := l.catalog[name]
	if !ok {
		return nil, notFound(name)
	}
	size, ok := e.Files[file]
	if !ok {
		return nil, fileNotFound(name, file)
	}
	f, err := os.Open(filepath.Join(l.modelPath(name), filepath.FromSlash(file)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store: model %q: file %q: %w (removed behind the store's back: %v)", name, file, ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: model %q: file %q: %w", name, file, err)
	}
	return &localFile{File: f, size: size}, nil
}

// Path implements LocalPather.
func (l *Local) Path(name, file string) (string, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return "", closedErr()
	}
	e, ok := l.catalog[name]
	if !ok {
		return "", notFound(name)
	}
	if _, ok := e.Files[file]; !ok {
		return "", fileNotFound(name, file)
	}
	return filepath.Join(l.modelPath(name), filepath.FromSlash(file)), nil
}

// Delete implements Store. The model directory is renamed into the trash
// (atomic for readers; open Files stay readable) and then removed.
func (l *Local) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: model %q: delete: %w", name, err)
	}
	if err := l.startOp(); err != nil {
		return err
	}
	defer l.inflight.Done()
	unlock := l.lockName(name)
	defer unlock()
	esc := escapeName(name)
	t := l.trashPath(esc)
	l.mu.Lock()
	e, ok := l.catalog[name]
	if !ok {
		l.mu.Unlock()
		return notFound(name)
	}
	if err := os.Rename(l.modelPath(name), t); err != nil {
		l.mu.Unlock()
		return fmt.Errorf("store: model %q: delete: %w", name, err)
	}
	delete(l.catalog, name)
	l.mu.Unlock()
	err := fsutil.SyncDir(l.models)
	if rerr := os.RemoveAll(t); rerr != nil {
		l.log.Error().Str("path", t).Err(rerr).Msg("cannot empty the trash")
	}
	if err != nil {
		return fmt.Errorf("store: model %q: deleted but not durably: %w", name, err)
	}
	l.log.Info().Str("model", name).Int64("version", e.Version).Msg("model deleted")
	return nil
}

// Stats implements Store.
func (l *Local) Stats(ctx context.Context) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, fmt.Errorf("store: stats: %w", err)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return Stats{}, closedErr()
	}
	st := Stats{Models: len(l.catalog), Pending: len(l.pending)}
	for _, e := range l.catalog {
		st.Bytes += e.Size()
	}
	return st, nil
}

// Close aborts the Staging areas still open, waits for commits and
// deletes in progress (a Commit already running completes), and releases
// the directory. Files already open stay readable. Close is idempotent.
func (l *Local) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	open := make([]*localStaging, 0, len(l.pending))
	for _, s := range l.pending {
		open = append(open, s)
	}
	l.mu.Unlock()
	var errs []error
	for _, s := range open {
		if err := s.Abort(); err != nil {
			errs = append(errs, err)
		}
	}
	l.inflight.Wait()
	if err := unlockDir(l.lock); err != nil {
		errs = append(errs, fmt.Errorf("store: release %s: %w", l.dir, err))
	}
	if len(open) > 0 {
		l.log.Info().Int("aborted", len(open)).Msg("store closed with uploads in progress")
	}
	return errors.Join(errs...)
}

// localStaging is a Staging area: a directory in staging/.
type localStaging struct {
	l         *Local
	id        uint64
	name      string
	overwrite bool
	dir       string

	mu   sync.Mutex // held through Commit
	done bool
}

func (s *localStaging) Dir() string { return s.dir }

// Abort implements Staging.
func (s *localStaging) Abort() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil
	}
	s.done = true
	return s.discard()
}

// discard removes the staging directory and drops the reservation.
func (s *localStaging) discard() error {
	err := os.RemoveAll(s.dir)
	s.l.mu.Lock()
	s.l.release(s)
	s.l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("store: model %q: discard staging: %w", s.name, err)
	}
	s.l.log.Debug().Str("model", s.name).Msg("staging discarded")
	return nil
}

// Commit implements Staging.
func (s *localStaging) Commit(ctx context.Context) (Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return Entry{}, fmt.Errorf("store: model %q: commit: staging already committed or aborted", s.name)
	}
	s.done = true
	l := s.l
	if err := l.startOp(); err != nil {
		s.discard()
		return Entry{}, err
	}
	defer l.inflight.Done()
	e, published, err := s.commit(ctx)
	if err != nil && !published {
		s.discard()
		return Entry{}, err
	}
	if err != nil {
		l.log.Error().Str("model", s.name).Err(err).Msg("model committed, but not durably")
		return e.clone(), err
	}
	l.log.Info().Str("model", e.Name).Int64("version", e.Version).Int("files", len(e.Files)).Int64("bytes", e.Size()).Msg("model committed")
	return e.clone(), nil
}

// commit does the work of Commit. published reports whether the model has
// become visible (then the reservation is released and the staging
// directory gone, even if err reports a failed final fsync).
func (s *localStaging) commit(ctx context.Context) (e Entry, published bool, err error) {
	l := s.l
	files, err := syncTree(ctx, s.dir)
	if err != nil {
		return Entry{}, false, fmt.Errorf("store: model %q: commit: %w", s.name, err)
	}

	unlock := l.lockName(s.name)
	defer unlock()
	l.mu.RLock()
	prev, exists := l.catalog[s.name]
	l.mu.RUnlock()
	if exists && !s.overwrite {
		return Entry{}, false, fmt.Errorf("store: model %q: %w (committed by another upload meanwhile)", s.name, ErrExists)
	}
	e = Entry{Name: s.name, Files: files, Committed: time.Now().UTC().Round(0), Version: prev.Version + 1}
	raw, err := json.Marshal(marker{Name: e.Name, Version: e.Version, Committed: e.Committed, Files: e.Files})
	if err != nil {
		return Entry{}, false, fmt.Errorf("store: model %q: commit: %w", s.name, err)
	}
	if err := fsutil.WriteFileSync(filepath.Join(s.dir, markerName), raw, true); err != nil {
		return Entry{}, false, fmt.Errorf("store: model %q: commit: %w", s.name, err)
	}
	if err := fsutil.SyncDir(s.dir); err != nil {
		return Entry{}, false, fmt.Errorf("store: model %q: commit: %w", s.name, err)
	}

	target := l.modelPath(s.name)
	var old string // where the replaced version is now
	l.mu.Lock()
	if exists {
		old, err = l.replace(s.dir, target)
	} else {
		err = os.Rename(s.dir, target)
	}
	if err != nil {
		l.mu.Unlock()
		return Entry{}, false, fmt.Errorf("store: model %q: commit: %w", s.name, err)
	}
	l.catalog[s.name] = e
	l.release(s)
	l.mu.Unlock()

	err = fsutil.SyncDir(l.models)
	if old != "" {
		l.removeOld(old)
	}
	if err != nil {
		return e, true, fmt.Errorf("store: model %q: committed but not durably: %w", s.name, err)
	}
	return e, true, nil
}

// replace puts the directory src in place of the existing directory
// target, atomically with RENAME_EXCHANGE where supported (the old version
// then sits at src), else by renaming target aside into the trash first
// (a crash between the two renames loses the model). It returns where the
// old version now is.
func (l *Local) replace(src, target string) (old string, err error) {
	if !l.noExchange.Load() {
		err := exchange(src, target)
		if err == nil {
			return src, nil
		}
		if !errors.Is(err, errExchangeUnsupported) {
			return "", fmt.Errorf("exchange %s and %s: %w", src, target, err)
		}
		l.noExchange.Store(true)
		l.log.Warn().Err(err).Msg("RENAME_EXCHANGE unsupported: overwrites will rename the old version aside (not crash-atomic)")
	}
	aside := l.trashPath(filepath.Base(target))
	if err := os.Rename(target, aside); err != nil {
		return "", fmt.Errorf("move old version aside: %w", err)
	}
	if err := os.Rename(src, target); err != nil {
		if rerr := os.Rename(aside, target); rerr != nil {
			l.log.Error().Str("path", aside).Err(rerr).Msg("cannot restore the old version")
		}
		return "", err
	}
	return aside, nil
}

// removeOld removes a replaced version (open Files of it stay readable).
func (l *Local) removeOld(old string) {
	if filepath.Dir(old) != l.trash {
		t := l.trashPath(filepath.Base(old))
		if err := os.Rename(old, t); err == nil {
			old = t
		}
	}
	if err := os.RemoveAll(old); err != nil {
		l.log.Error().Str("path", old).Err(err).Msg("cannot empty the trash")
	}
}

// syncTree fsyncs every regular file and directory under root (not root
// itself) and returns the files' sizes by '/'-separated relative name.
func syncTree(ctx context.Context, root string) (map[string]int64, error) {
	files := map[string]int64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case rel == markerName:
			return fmt.Errorf("file %q: %w: reserved for the commit marker", rel, ErrInvalidName)
		case d.IsDir():
			return fsutil.SyncDir(p)
		case !d.Type().IsRegular():
			return fmt.Errorf("file %q is not a regular file (%s)", rel, d.Type())
		}
		size, err := syncFile(p)
		if err != nil {
			return err
		}
		files[rel] = size
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

// syncFile fsyncs the file at p and returns its size.
func syncFile(p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("fsync %s: %w", p, err)
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
