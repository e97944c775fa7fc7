//go:build !linux

package fsutil

import "os"

func startWriteback(*os.File, int64, int64) error { return nil }
