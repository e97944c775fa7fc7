package s3test

import "syscall"

// sysProcAttr: the server dies with the test binary (a test that panics or
// times out leaves no SeaweedFS behind).
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
