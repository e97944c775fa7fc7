//go:build !linux

package store

import (
	"errors"
	"os"
)

// errExchangeUnsupported marks a platform without RENAME_EXCHANGE: there
// overwrites rename the old version aside (not crash-atomic).
var errExchangeUnsupported = errors.New("RENAME_EXCHANGE not supported")

func exchange(a, b string) error { return errExchangeUnsupported }

// lockDir does not lock outside Linux; it only creates the lock file.
func lockDir(p string) (*os.File, error) {
	return os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
}

func unlockDir(f *os.File) error {
	if f == nil {
		return nil
	}
	return f.Close()
}
