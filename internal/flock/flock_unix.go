//go:build unix

// Package flock takes exclusive advisory locks on files. The kernel
// releases a lock when its process dies, however it dies, so a lock tells
// a live owner from a crashed one.
package flock

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned when another open file description holds the lock.
var ErrLocked = errors.New("locked by another process")

// Lock takes an exclusive, non-blocking lock on the file at p (created if
// needed). Closing the returned file releases it.
func Lock(p string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("flock %s: %w", p, err)
	}
	return f, nil
}
