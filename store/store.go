// Package store keeps quantized models: each committed model is a set of
// named files that appears atomically and durably, or not at all.
//
// The interface is file-oriented and narrow so that backends other than
// the local directory (OpenLocal), such as an S3-compatible object store
// shared by several servers, can implement it. Only LocalPather exposes
// local paths, and callers must treat it as optional.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Sentinel errors. Returned errors wrap them together with the model name,
// e.g. `store: model "x": not found`; test with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrInvalidName = errors.New("invalid name")
	ErrClosed      = errors.New("store is closed")
	// ErrUnavailable: the backend cannot be reached or refused for now
	// (an object store that is down, throttling or timing out); the same
	// call may succeed later. Nothing was committed by the failed call.
	ErrUnavailable = errors.New("store unavailable")
)

// MaxNameLen is the longest model name ValidateName accepts.
const MaxNameLen = 200

// Entry describes a committed model.
type Entry struct {
	Name      string           // model name as given by the client
	Files     map[string]int64 // relative file name ('/'-separated) -> size in bytes
	Committed time.Time        // commit time, from the commit marker
	Version   int64            // 1 on first commit, +1 on each overwrite commit of the name
}

// Size is the total size of the model's files in bytes.
func (e Entry) Size() int64 {
	var n int64
	for _, s := range e.Files {
		n += s
	}
	return n
}

// Stats summarises a store.
type Stats struct {
	Models  int   // committed models
	Bytes   int64 // total size of the committed models' files
	Pending int   // open Staging areas (uploads in progress)
}

// Store holds committed models. Implementations are safe for concurrent use.
type Store interface {
	// Begin reserves name for writing and returns a Staging area. Without
	// overwrite, a name that is committed or currently reserved by another
	// Begin fails with an error matching ErrExists. With overwrite,
	// concurrent Begins of one name are allowed and their commits apply in
	// commit order (last wins, each atomic).
	Begin(ctx context.Context, name string, overwrite bool) (Staging, error)
	// Get describes a committed model (ErrNotFound).
	Get(ctx context.Context, name string) (Entry, error)
	// List returns the committed models whose name starts with prefix,
	// sorted by name.
	List(ctx context.Context, prefix string) ([]Entry, error)
	// Open opens one file of a committed model (ErrNotFound for the model
	// or the file). The File stays readable until closed, even if the
	// model is deleted or overwritten meanwhile.
	Open(ctx context.Context, name, file string) (File, error)
	// Delete removes a committed model atomically (ErrNotFound): a
	// concurrent reader sees either the whole model or ErrNotFound.
	Delete(ctx context.Context, name string) error
	// Stats counts models, their bytes, and pending reservations.
	Stats(ctx context.Context) (Stats, error)
	// Close aborts the Staging areas still open and releases the store.
	Close() error
}

// File is an open file of a committed model.
type File interface {
	io.ReaderAt
	io.Reader
	io.Seeker
	io.Closer
	Size() int64
}

// Staging is a model being written. Exactly one of Commit or Abort ends
// it; defer Abort right after Begin, it is a no-op after Commit.
type Staging interface {
	// Dir is a local directory to write the model's files into
	// (subdirectories allowed). Every regular file under it at Commit
	// becomes a file of the model.
	Dir() string
	// Commit makes the files durable and then the model visible
	// atomically. Without overwrite it fails with ErrExists if the name
	// was committed meanwhile. Commit ends the staging even when it fails
	// (the files are discarded and the reservation released).
	Commit(ctx context.Context) (Entry, error)
	// Abort discards the staging; idempotent, and a no-op after Commit.
	Abort() error
}

// Locator is implemented by stores that several servers share: Locations
// lists the advertised Flight locations (grpc://HOST:PORT) of the servers
// that are live on the store now, so a FlightInfo can name all of them.
type Locator interface {
	Locations(ctx context.Context) ([]string, error)
}

// LocalPather is implemented by stores whose files are local, so callers
// can avoid copies. The path names the file of the current version of the
// model; open it promptly, it does not pin the version the way an open
// File does.
type LocalPather interface {
	Path(name, file string) (string, error)
}

// ValidateName checks a model name: 1..200 characters of A-Z a-z 0-9 . _ - /,
// no leading or trailing '/', no "//", no "." or ".." segment, and no
// leading '.'. The error wraps ErrInvalidName and names the broken rule.
func ValidateName(name string) error {
	bad := func(rule string) error {
		if len(name) > MaxNameLen { // never echo a huge name back whole
			return fmt.Errorf("store: model %.64q… (%d bytes): %w: %s", name, len(name), ErrInvalidName, rule)
		}
		return fmt.Errorf("store: model %q: %w: %s", name, ErrInvalidName, rule)
	}
	if name == "" {
		return bad("must not be empty")
	}
	for i, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/') {
			return bad(fmt.Sprintf("character %q at byte %d is not allowed (allowed: A-Z a-z 0-9 . _ - /)", c, i))
		}
	}
	if len(name) > MaxNameLen {
		return bad(fmt.Sprintf("longer than %d characters (%d)", MaxNameLen, len(name)))
	}
	if name[0] == '.' {
		return bad("must not start with '.'")
	}
	if name[0] == '/' || name[len(name)-1] == '/' {
		return bad("must not start or end with '/'")
	}
	if strings.Contains(name, "//") {
		return bad(`must not contain "//"`)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "." || seg == ".." {
			return bad(`must not contain a "." or ".." segment`)
		}
	}
	return nil
}

func notFound(name string) error {
	return fmt.Errorf("store: model %q: %w", name, ErrNotFound)
}

func fileNotFound(name, file string) error {
	return fmt.Errorf("store: model %q: file %q: %w", name, file, ErrNotFound)
}

func closedErr() error { return fmt.Errorf("store: %w", ErrClosed) }
