//go:build unix

package flock

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestLockExcludesAndReleases(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	f, err := Lock(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(p); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock = %v, want ErrLocked", err)
	}
	f.Close()
	g, err := Lock(p)
	if err != nil {
		t.Fatalf("Lock after release = %v", err)
	}
	g.Close()
}
