// Package outdir builds ArrowQuant's output directories (quantize,
// dequantize, pull, gen-model) so that no run can destroy what it reads or
// what it did not create:
//
//   - an output that is, contains or lies inside one of the run's inputs
//     (after resolving symlinks) is refused (*ConflictError);
//   - the output is built in a temporary sibling, locked while in use,
//     and renamed into place only when complete; a crashed run's
//     temporaries are swept by the next run (their lock is free);
//   - a non-empty directory is replaced only with Overwrite, and only if
//     it carries the marker file ArrowQuant writes into every directory it
//     creates, unless Force is also given.
package outdir

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/arrowquant/arrowquant/internal/flock"
	"github.com/arrowquant/arrowquant/internal/fsutil"
)

// MarkerFile is written into every directory ArrowQuant creates.
const MarkerFile = ".arrowquant-output.json"

// lockFile, inside a temporary directory, is held while the run is alive.
const lockFile = ".arrowquant-building.lock"

// ErrNotEmpty is returned (wrapped) when the output holds files and
// overwriting was not asked for.
var ErrNotEmpty = errors.New("output directory exists and is not empty")

// ErrFileExists is returned (wrapped) when an output file exists and
// overwriting was not asked for.
var ErrFileExists = errors.New("output file exists")

// ConflictError is an output that overlaps an input of the same run.
type ConflictError struct {
	Output, Input string // as resolved (absolute, symlinks followed)
	Relation      string // "is", "is inside", "contains"
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("output %s %s the input %s: ArrowQuant never writes where it reads; choose another output directory", e.Output, e.Relation, e.Input)
}

// NotOursError is an existing directory that --overwrite would replace
// but ArrowQuant did not create.
type NotOursError struct{ Dir string }

func (e *NotOursError) Error() string {
	return fmt.Sprintf("output %s exists and was not created by ArrowQuant (no %s in it): refusing to replace it; add --force to replace it anyway", e.Dir, MarkerFile)
}

// Options configure Write.
type Options struct {
	Overwrite bool     // replace a non-empty directory that ArrowQuant created
	Force     bool     // with Overwrite: replace it even if ArrowQuant did not create it
	Inputs    []string // paths this run reads; the output must not overlap them
	Command   string   // recorded in the marker ("quantize", "gen-model", ...)
}

// marker is the content of MarkerFile (no time stamp: the same run gives
// the same bytes).
type marker struct {
	CreatedBy string `json:"created_by"`
	Command   string `json:"command"`
}

// Write builds the directory dir through fill, which writes into a
// temporary sibling that is renamed into place only if fill succeeds.
func Write(dir string, o Options, fill func(tmp string) error) error {
	out, err := prepare(dir, o)
	if err != nil {
		return err
	}
	defer out.cleanup()
	if err := fill(out.tmp); err != nil {
		return err
	}
	return out.commit(o.Command)
}

// Resolve returns p absolute with every symlink of its existing part
// followed (a missing tail is appended as given).
func Resolve(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	var tail []string
	cur := abs
	for {
		real, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(append([]string{real}, tail...)...), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return abs, nil
		}
		tail = append([]string{filepath.Base(cur)}, tail...)
		cur = parent
	}
}

// CheckDisjoint refuses an output that is, contains or lies inside one of
// the inputs, symlinks resolved.
func CheckDisjoint(output string, inputs ...string) error {
	o, err := Resolve(output)
	if err != nil {
		return fmt.Errorf("output %s: %w", output, err)
	}
	for _, in := range inputs {
		if in == "" {
			continue
		}
		i, err := Resolve(in)
		if err != nil {
			return fmt.Errorf("input %s: %w", in, err)
		}
		switch {
		case o == i:
			return &ConflictError{Output: o, Input: i, Relation: "is"}
		case within(o, i):
			return &ConflictError{Output: o, Input: i, Relation: "is inside"}
		case within(i, o):
			return &ConflictError{Output: o, Input: i, Relation: "contains"}
		}
	}
	return nil
}

// within reports whether p lies strictly inside dir.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// IsOurs reports whether dir carries ArrowQuant's marker file.
func IsOurs(dir string) bool {
	st, err := os.Lstat(filepath.Join(dir, MarkerFile))
	return err == nil && st.Mode().IsRegular()
}

type building struct {
	final, tmp string
	lock       *os.File
	done       bool
}

func prepare(dir string, o Options) (*building, error) {
	if err := CheckDisjoint(dir, o.Inputs...); err != nil {
		return nil, err
	}
	final, err := Resolve(dir)
	if err != nil {
		return nil, fmt.Errorf("output %s: %w", dir, err)
	}
	if st, err := os.Stat(final); err == nil {
		if !st.IsDir() {
			return nil, fmt.Errorf("output %s exists and is not a directory", dir)
		}
		ents, err := os.ReadDir(final)
		if err != nil {
			return nil, fmt.Errorf("output %s: %w", dir, err)
		}
		switch {
		case len(ents) > 0 && !o.Overwrite:
			return nil, fmt.Errorf("%w: %s (add --overwrite to replace it)", ErrNotEmpty, dir)
		case len(ents) > 0 && !o.Force && !IsOurs(final):
			return nil, &NotOursError{Dir: dir}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("output %s: %w", dir, err)
	}
	parent := filepath.Dir(final)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("create the parent of output %s: %w", dir, err)
	}
	SweepStale(final)
	tmp, err := os.MkdirTemp(parent, tempPrefix(final))
	if err != nil {
		return nil, fmt.Errorf("create a temporary directory beside output %s: %w", dir, err)
	}
	lock, err := flock.Lock(filepath.Join(tmp, lockFile))
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("lock the temporary directory %s: %w", tmp, err)
	}
	return &building{final: final, tmp: tmp, lock: lock}, nil
}

func tempPrefix(final string) string { return "." + filepath.Base(final) + ".tmp-" }

// SweepStale removes the temporary siblings of final left by runs that
// died (killed, terminal closed): those whose lock no process holds. A
// live run's temporaries are left alone. A run that died between moving
// the old output aside and moving the new one in gets the old one back.
func SweepStale(final string) {
	parent, prefix := filepath.Dir(final), tempPrefix(final)
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	live := func(tmp string) bool {
		if _, err := os.Stat(filepath.Join(tmp, lockFile)); errors.Is(err, os.ErrNotExist) {
			st, err := os.Stat(tmp) // just created, lock not taken yet: leave it
			return err == nil && time.Since(st.ModTime()) < time.Minute
		}
		l, err := flock.Lock(filepath.Join(tmp, lockFile))
		if err != nil {
			return errors.Is(err, flock.ErrLocked)
		}
		l.Close()
		return false
	}
	var temps []string
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		p := filepath.Join(parent, e.Name())
		tmp, isOld := strings.CutSuffix(p, ".old")
		if !isOld {
			temps = append(temps, p)
			continue
		}
		if _, err := os.Stat(tmp); err == nil && live(tmp) {
			continue // its run is committing right now
		}
		if _, err := os.Stat(final); errors.Is(err, os.ErrNotExist) {
			os.Rename(p, final) // the new output never arrived: the old one returns
			continue
		}
		os.RemoveAll(p)
	}
	for _, p := range temps {
		if _, err := os.Stat(p); err == nil && !live(p) {
			os.RemoveAll(p)
		}
	}
}

// commit writes the marker and moves the finished directory into place.
func (b *building) commit(command string) error {
	m, _ := json.MarshalIndent(marker{CreatedBy: "arrowquant", Command: command}, "", "  ")
	if err := fsutil.WriteFileSync(filepath.Join(b.tmp, MarkerFile), append(m, '\n'), false); err != nil {
		return err
	}
	os.Remove(filepath.Join(b.tmp, lockFile)) // the open descriptor keeps the lock until cleanup
	if err := fsutil.SyncDir(b.tmp); err != nil {
		return err
	}
	if err := os.Chmod(b.tmp, 0o755); err != nil {
		return err
	}
	var old string
	if _, err := os.Stat(b.final); err == nil {
		old = b.tmp + ".old"
		if err := os.Rename(b.final, old); err != nil {
			return fmt.Errorf("move the old output aside: %w", err)
		}
	}
	if err := os.Rename(b.tmp, b.final); err != nil {
		if old != "" {
			os.Rename(old, b.final)
		}
		return fmt.Errorf("move the output into place: %w", err)
	}
	b.done = true
	if old != "" {
		os.RemoveAll(old)
	}
	return fsutil.SyncDir(filepath.Dir(b.final))
}

func (b *building) cleanup() {
	if !b.done {
		os.RemoveAll(b.tmp)
	}
	b.lock.Close()
}
