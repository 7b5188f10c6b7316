//go:build unix

package edge

import "syscall"

// openFileLimit returns the process's limit on open files, and false when
// it cannot be read.
func openFileLimit() (uint64, bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, false
	}
	return uint64(l.Cur), true
}
