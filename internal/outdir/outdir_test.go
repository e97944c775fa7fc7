package outdir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arrowquant/arrowquant/internal/flock"
)

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fill(name string) func(string) error {
	return func(tmp string) error { return os.WriteFile(filepath.Join(tmp, name), []byte(name), 0o644) }
}

func TestConflictsAreRefusedWithSymlinksResolved(t *testing.T) {
	base := t.TempDir()
	model := filepath.Join(base, "m")
	writeFile(t, filepath.Join(model, "model.safetensors"), "weights")
	if err := os.Symlink(model, filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(base, filepath.Join(t.TempDir(), "parentlink")); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		out, rel string
	}{
		"same":                 {model, "is"},
		"inside":               {filepath.Join(model, "out"), "is inside"},
		"contains":             {base, "contains"},
		"symlink to the input": {filepath.Join(base, "link"), "is"},
		"inside via symlink":   {filepath.Join(base, "link", "sub", "out"), "is inside"},
		"relative":             {"", "is"}, // filled below
	}
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	if err := os.Chdir(model); err != nil {
		t.Fatal(err)
	}
	cases["relative"] = struct{ out, rel string }{".", "is"}
	for name, c := range cases {
		err := Write(c.out, Options{Overwrite: true, Force: true, Inputs: []string{model}}, fill("x"))
		var ce *ConflictError
		if !errors.As(err, &ce) || ce.Relation != c.rel {
			t.Errorf("%s: Write(%s) = %v, want a %q conflict", name, c.out, err, c.rel)
			continue
		}
		if !strings.Contains(err.Error(), ce.Output) || !strings.Contains(err.Error(), ce.Input) {
			t.Errorf("%s: message %q does not name both paths", name, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(model, "model.safetensors")); err != nil || string(b) != "weights" {
		t.Fatalf("the input changed: %q, %v", b, err)
	}
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary %s left behind", e.Name())
		}
	}
}

func TestOverwriteOnlyReplacesOurOwn(t *testing.T) {
	base := t.TempDir()
	foreign := filepath.Join(base, "foreign")
	writeFile(t, filepath.Join(foreign, "precious"), "keep")
	if err := Write(foreign, Options{}, fill("a")); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("without overwrite: %v", err)
	}
	var no *NotOursError
	if err := Write(foreign, Options{Overwrite: true}, fill("a")); !errors.As(err, &no) {
		t.Fatalf("overwrite of a foreign dir: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(foreign, "precious")); string(b) != "keep" {
		t.Fatal("the foreign directory changed")
	}
	if err := Write(foreign, Options{Overwrite: true, Force: true}, fill("a")); err != nil {
		t.Fatalf("overwrite --force: %v", err)
	}
	if !IsOurs(foreign) {
		t.Fatal("no marker after Write")
	}
	if _, err := os.Stat(filepath.Join(foreign, "precious")); !os.IsNotExist(err) {
		t.Fatal("force did not replace the directory")
	}
	// Ours now: overwrite alone replaces it; the lock file never lands.
	if err := Write(foreign, Options{Overwrite: true}, fill("b")); err != nil {
		t.Fatalf("overwrite of our own output: %v", err)
	}
	ents, _ := os.ReadDir(foreign)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != MarkerFile+",b" {
		t.Fatalf("output holds %v", names)
	}
}

func TestFailedFillLeavesNothing(t *testing.T) {
	base := t.TempDir()
	out := filepath.Join(base, "out")
	boom := errors.New("boom")
	if err := Write(out, Options{}, func(tmp string) error {
		fill("partial")(tmp)
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(base); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestSweepStaleRemovesDeadRunsOnly(t *testing.T) {
	base := t.TempDir()
	out := filepath.Join(base, "out")
	dead := filepath.Join(base, ".out.tmp-111")
	writeFile(t, filepath.Join(dead, ".model.arrow.partial"), "15 MB of nothing")
	writeFile(t, filepath.Join(dead, lockFile), "")
	alive := filepath.Join(base, ".out.tmp-222")
	writeFile(t, filepath.Join(alive, "x"), "")
	l, err := flock.Lock(filepath.Join(alive, lockFile))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	other := filepath.Join(base, ".other.tmp-333") // another output's temporary
	writeFile(t, filepath.Join(other, lockFile), "")

	if err := Write(out, Options{}, fill("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Error("a dead run's temporary survived the next run")
	}
	if _, err := os.Stat(alive); err != nil {
		t.Error("a live run's temporary was removed")
	}
	if _, err := os.Stat(other); err != nil {
		t.Error("another output's temporary was removed")
	}
}

func TestSweepRestoresOldOutputOfADeadCommit(t *testing.T) {
	base := t.TempDir()
	out := filepath.Join(base, "out")
	// A run died after moving the old output aside, before moving the new one in.
	writeFile(t, filepath.Join(base, ".out.tmp-9.old", "old"), "old")
	writeFile(t, filepath.Join(base, ".out.tmp-9", lockFile), "")
	SweepStale(out)
	if b, err := os.ReadFile(filepath.Join(out, "old")); err != nil || string(b) != "old" {
		t.Fatalf("old output not restored: %q %v", b, err)
	}
	if ents, _ := os.ReadDir(base); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}
