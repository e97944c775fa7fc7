//go:build !unix

package flock

import (
	"errors"
	"os"
)

// ErrLocked is returned when another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// Lock only creates the file outside Unix: there is no lock.
func Lock(p string) (*os.File, error) {
	return os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
}
