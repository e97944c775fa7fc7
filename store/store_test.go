package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

var ctx = context.Background()

func openStore(t *testing.T, dir string) *Local {
	t.Helper()
	l, err := OpenLocal(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// put commits name with files (relative name -> content).
func put(t testing.TB, l *Local, name string, overwrite bool, files map[string]string) Entry {
	t.Helper()
	s, err := l.Begin(ctx, name, overwrite)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Abort()
	writeFiles(t, s.Dir(), files)
	e, err := s.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for f, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readAll(t testing.TB, l *Local, name, file string) string {
	t.Helper()
	f, err := l.Open(ctx, name, file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != f.Size() {
		t.Fatalf("%s/%s: read %d bytes, Size() = %d", name, file, len(b), f.Size())
	}
	return string(b)
}

// dirNames lists the entries of dir (sorted).
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestValidateName(t *testing.T) {
	long := strings.Repeat("a", MaxNameLen)
	slashy := strings.Repeat("a/", MaxNameLen/2-1) + "aa" // 200 chars, 99 slashes
	for _, name := range []string{"dream-7b", "org/model.v2", "a_b", "a", "A.B-c_d/9", "org/.hidden", "a..b", long, slashy} {
		if err := ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", name, err)
		}
	}
	for _, c := range []struct{ name, rule string }{
		{"", "empty"},
		{"../x", "start with '.'"},
		{"a//b", `"//"`},
		{"/a", "start or end with '/'"},
		{"a/", "start or end with '/'"},
		{".hidden", "start with '.'"},
		{"a/../b", `".." segment`},
		{"a/./b", `".." segment`},
		{"a/..", `".." segment`},
		{long + "a", "longer than 200"},
		{"a b", "' ' at byte 1"},
		{"é", "'é' at byte 0"},
		{"a\x00", "not allowed"},
		{"a\\b", "not allowed"},
	} {
		err := ValidateName(c.name)
		if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), c.rule) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName mentioning %q", c.name, err, c.rule)
		}
	}
	// The longest names must fit in one directory entry (255 bytes).
	l := openStore(t, t.TempDir())
	put(t, l, slashy, false, map[string]string{"f": "x"})
	put(t, l, long, false, map[string]string{"f": "x"})
}

// writeModelDir fakes a model directory with files and a marker (nil: none).
func writeModelDir(t *testing.T, dir string, files map[string]string, m *marker) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, files)
	if m != nil {
		raw := []byte("{not json")
		if m.Name != "" {
			raw = mustJSON(t, m)
		}
		if err := os.WriteFile(filepath.Join(dir, markerName), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRecovery(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLocal(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	a := put(t, l, "a", false, map[string]string{"model.arrow": "aaaa", "sub/x": "x"})
	b := put(t, l, "org/b", false, map[string]string{"model.arrow": "bb"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// What a crash or a foreign hand could leave behind.
	models := filepath.Join(dir, modelsDir)
	m := func(name string, files map[string]int64) *marker {
		return &marker{Name: name, Version: 1, Committed: a.Committed, Files: files}
	}
	writeModelDir(t, filepath.Join(models, "nomarker"), map[string]string{"model.arrow": "x"}, nil)
	writeModelDir(t, filepath.Join(models, "missing"), map[string]string{"model.arrow": "x"}, m("missing", map[string]int64{"model.arrow": 1, "report.json": 5}))
	writeModelDir(t, filepath.Join(models, "badsize"), map[string]string{"model.arrow": "x"}, m("badsize", map[string]int64{"model.arrow": 2}))
	writeModelDir(t, filepath.Join(models, "badjson"), map[string]string{"model.arrow": "x"}, &marker{})
	writeModelDir(t, filepath.Join(models, "elsewhere"), map[string]string{"model.arrow": "x"}, m("other", map[string]int64{"model.arrow": 1}))
	writeModelDir(t, filepath.Join(models, "escape"), map[string]string{"model.arrow": "x"}, m("escape", map[string]int64{"../../a/model.arrow": 4}))
	writeModelDir(t, filepath.Join(models, "noversion"), map[string]string{"model.arrow": "x"}, &marker{Name: "noversion", Committed: a.Committed, Files: map[string]int64{"model.arrow": 1}})
	writeFiles(t, models, map[string]string{"stray-file": "?"})
	writeFiles(t, filepath.Join(dir, stagingDir), map[string]string{"c.123/model.arrow": "half", "loose": "?"})
	writeFiles(t, filepath.Join(dir, trashDir), map[string]string{"a.old/model.arrow": "old"})

	var logs bytes.Buffer
	l2, err := OpenLocal(dir, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	all, _ := l2.List(ctx, "")
	if !reflect.DeepEqual(all, []Entry{a, b}) {
		t.Fatalf("List after recovery = %+v, want a and org/b", all)
	}
	if got := dirNames(t, models); !reflect.DeepEqual(got, []string{"a", "org~b"}) {
		t.Fatalf("models/ after recovery = %v", got)
	}
	for _, d := range []string{stagingDir, trashDir} {
		if got := dirNames(t, filepath.Join(dir, d)); len(got) != 0 {
			t.Fatalf("%s/ after recovery = %v", d, got)
		}
	}
	if n := strings.Count(logs.String(), `"level":"warn"`); n != 8 {
		t.Fatalf("%d warnings, want 8 (one per bad models/ entry):\n%s", n, logs.String())
	}
	for _, want := range []string{"no commit marker", "report.json", "has 1 bytes, the marker says 2", "bad commit marker", "belongs in other", "not a directory"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
	if got := readAll(t, l2, "a", "sub/x"); got != "x" {
		t.Fatalf("a/sub/x = %q", got)
	}

	// One process per directory.
	if _, err := OpenLocal(dir, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second OpenLocal = %v, want in use", err)
	}
}

func mustJSON(t *testing.T, m *marker) []byte {
	t.Helper()
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestLocalLayout: what the local store keeps where, its local paths and
// its reserved marker name (the backend-neutral semantics are in
// storetest, run by TestConformance).
func TestLocalLayout(t *testing.T) {
	dir := t.TempDir()
	l := openStore(t, dir)
	files := map[string]string{"model.arrow": "ARROW1", "source/model.safetensors": strings.Repeat("w", 1000)}
	put(t, l, "org/model.v2", false, files)
	put(t, l, "dream-7b", false, map[string]string{"model.arrow": "d"})
	put(t, l, "org/other", false, map[string]string{"model.arrow": "o"})
	p, err := l.Path("org/model.v2", "source/model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != files["source/model.safetensors"] {
		t.Fatalf("Path %s holds %d bytes", p, len(b))
	}
	// '/' in names never nests directories.
	if got := dirNames(t, filepath.Join(dir, modelsDir)); !reflect.DeepEqual(got, []string{"dream-7b", "org~model.v2", "org~other"}) {
		t.Fatalf("models/ = %v", got)
	}
	for _, c := range []struct{ name, file string }{{"nope", "model.arrow"}, {"org/model.v2", "nope"}, {"org/model.v2", markerName}, {"org/model.v2", "source"}} {
		if _, err := l.Open(ctx, c.name, c.file); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%q, %q) = %v, want ErrNotFound", c.name, c.file, err)
		}
		if _, err := l.Path(c.name, c.file); !errors.Is(err, ErrNotFound) {
			t.Errorf("Path(%q, %q) = %v, want ErrNotFound", c.name, c.file, err)
		}
	}
	if got := readAll(t, l, "org/model.v2", "model.arrow"); got != "ARROW1" {
		t.Fatalf("model.arrow = %q", got)
	}
	if err := l.Delete(ctx, "org/model.v2"); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, filepath.Join(dir, modelsDir)); !reflect.DeepEqual(got, []string{"dream-7b", "org~other"}) {
		t.Fatalf("models/ after Delete = %v", got)
	}

	// The commit marker's name is reserved.
	s, err := l.Begin(ctx, "x", false)
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, s.Dir(), map[string]string{markerName: "{}"})
	if _, err := s.Commit(ctx); !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("Commit of %s = %v, want ErrInvalidName (reserved)", markerName, err)
	}
	for _, d := range []string{stagingDir, trashDir} {
		if got := dirNames(t, filepath.Join(dir, d)); len(got) != 0 {
			t.Fatalf("%s/ = %v", d, got)
		}
	}
}

// TestOpenFileSurvivesRenameAside: without RENAME_EXCHANGE an overwrite
// renames the old version aside; open files keep reading it.
func TestOpenFileSurvivesRenameAside(t *testing.T) {
	dir := t.TempDir()
	l := openStore(t, dir)
	l.noExchange.Store(true)
	v1 := strings.Repeat("1", 4096)
	put(t, l, "m", false, map[string]string{"model.arrow": v1})
	f1, err := l.Open(ctx, "m", "model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	put(t, l, "m", true, map[string]string{"model.arrow": "v2"})
	if err := l.Delete(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if _, err := f1.ReadAt(got, 0); err != nil || string(got) != v1 {
		t.Fatalf("v1 after overwrite and delete: %v", err)
	}
	for _, d := range []string{modelsDir, stagingDir, trashDir} {
		if names := dirNames(t, filepath.Join(dir, d)); len(names) != 0 {
			t.Fatalf("%s/ = %v", d, names)
		}
	}
}
