//go:build unix

package s3store

import (
	"errors"
	"syscall"
)

// processAlive says whether process pid exists (signal 0 probes it).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
