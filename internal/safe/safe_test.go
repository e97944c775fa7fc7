package safe

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRecoverInGoroutine(t *testing.T) {
	done := make(chan error, 1)
	go func() {
		var err error
		defer func() { done <- err }()
		defer Recover("test work", &err)
		var m map[string]int
		m["x"] = 1 // nil map write panics
	}()
	err := <-done
	pe, ok := As(fmt.Errorf("wrapped: %w", err))
	if !ok {
		t.Fatalf("err = %v, want a PanicError", err)
	}
	if pe.Where != "test work" || !strings.Contains(pe.Error(), "assignment to entry in nil map") || len(pe.Stack) == 0 {
		t.Fatalf("PanicError = %+v", pe)
	}
}

func TestRecoverNoPanicKeepsError(t *testing.T) {
	want := errors.New("plain")
	f := func() (err error) {
		defer Recover("x", &err)
		return want
	}
	if err := f(); err != want {
		t.Fatalf("err = %v, want %v", err, want)
	}
	if _, ok := As(want); ok {
		t.Fatal("As matched a plain error")
	}
}
