//go:build !unix

package edge

// openFileLimit reports false: only Unix systems have RLIMIT_NOFILE.
func openFileLimit() (uint64, bool) { return 0, false }
