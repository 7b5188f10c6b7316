//go:build unix

package keyfile

import (
	"io/fs"
	"syscall"
)

// checked is whether the platform's mode bits say who may read a file.
const checked = true

// owner returns the uid that owns the file, or -1.
func owner(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}
