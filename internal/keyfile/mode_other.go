//go:build !unix

package keyfile

import "io/fs"

// checked is false: outside Unix, mode bits do not say who may read a file
// (on Windows ACLs do), so there is nothing reliable to check.
const checked = false

func owner(fs.FileInfo) int { return -1 }
