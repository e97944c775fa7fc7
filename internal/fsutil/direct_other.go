//go:build !linux

package fsutil

import (
	"errors"
	"os"
)

var errInvalid = errors.ErrUnsupported

// setDirect: the page cache is not bypassed here.
func setDirect(*os.File, bool) error { return errors.ErrUnsupported }
