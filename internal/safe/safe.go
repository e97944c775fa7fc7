// Package safe turns panics in goroutines into errors, so that one bad
// request can fail its own call without taking the process down.
package safe

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// PanicError is a recovered panic carried as an error.
type PanicError struct {
	Where string // what was running, e.g. "quantize tensor \"x\""
	Value any    // the value passed to panic
	Stack []byte // the panicking goroutine's stack
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("internal error in %s: %v", e.Where, e.Value)
}

// Recover, deferred directly (defer safe.Recover("what", &err)), turns a
// panic of the calling goroutine into a *PanicError stored in *err. It
// leaves *err alone when there was no panic.
func Recover(where string, err *error) {
	if p := recover(); p != nil {
		*err = &PanicError{Where: where, Value: p, Stack: debug.Stack()}
	}
}

// As returns the PanicError in err's chain, if any.
func As(err error) (*PanicError, bool) {
	var pe *PanicError
	ok := errors.As(err, &pe)
	return pe, ok
}
