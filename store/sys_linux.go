package store

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/arrowquant/arrowquant/internal/flock"
)

// errExchangeUnsupported marks a file system or kernel without
// RENAME_EXCHANGE.
var errExchangeUnsupported = errors.New("RENAME_EXCHANGE not supported")

// exchange atomically swaps the directories a and b.
func exchange(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%w: %w", errExchangeUnsupported, err)
	}
	return err
}

// lockDir takes an exclusive, non-blocking flock on the file p (created
// if needed). The kernel releases it when the process dies.
func lockDir(p string) (*os.File, error) {
	f, err := flock.Lock(p)
	if errors.Is(err, flock.ErrLocked) {
		return nil, errors.New("in use by another process (is another `arrowquant serve` using this --data directory?)")
	}
	return f, err
}

func unlockDir(f *os.File) error {
	if f == nil {
		return nil
	}
	return f.Close() // closing the last descriptor releases the flock
}
