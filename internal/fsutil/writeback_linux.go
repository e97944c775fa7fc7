package fsutil

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback starts writing back bytes [off, off+n) of f without
// waiting for them.
func startWriteback(f *os.File, off, n int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := rc.Control(func(fd uintptr) {
		werr = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	}); err != nil {
		return err
	}
	if werr == unix.ENOSYS || werr == unix.EINVAL || werr == unix.ESPIPE {
		return nil // not supported here (the fsync still commits)
	}
	return werr
}
