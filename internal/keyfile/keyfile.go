// Package keyfile reads private key files and refuses those that others can
// read or change, as ssh does: a tunnel key or an upstream API key in a file
// readable by group or others is a leaked key waiting to happen, and an
// operator learns it at start, with the chmod that fixes it, rather than
// never.
//
// The rule is PostgreSQL's for ssl_key_file (ssh checks only files the user
// owns):
//   - a file owned by the user the process runs as must have no group or
//     other permission bits: mode 0600 or 0400;
//   - a file owned by root, read by a non-root process, may also be readable
//     (not writable) by its group: mode 0640 or 0440 at most. That is how
//     root hands a key to a service user (systemd's root:airlock 0640, a
//     Kubernetes secret volume's root:fsGroup 0440);
//   - a file owned by anyone else must have no group or other bits either.
//
// On Windows and other systems that are not Unix, mode bits do not say who
// may read a file (ACLs do), so no check is made there.
package keyfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// MaxSize is the largest key file Read accepts. Keys are a few hundred bytes;
// the bound keeps a key_file pointing at a device or a log file from filling
// memory.
const MaxSize = 64 << 10

// ErrTooOpen is wrapped by the error for a key file whose permissions let
// group or others read or change it.
var ErrTooOpen = errors.New("key file is accessible by group or others")

// PermissionError is the error for a key file whose permissions are too
// open. Its message names the file and its mode, and gives the chmod that
// fixes it.
type PermissionError struct {
	Path string
	Mode fs.FileMode // permission bits only
	// RootOwned is set when the file is owned by root and the process is
	// not root: its group may then read it.
	RootOwned bool
}

func (e *PermissionError) Error() string {
	if e.RootOwned {
		return fmt.Sprintf("key file %s is owned by root with mode %04o: writable by its group or accessible by others; run: chmod 640 %s", e.Path, uint32(e.Mode), e.Path)
	}
	return fmt.Sprintf("key file %s has mode %04o: readable or writable by group or others; run: chmod 600 %s", e.Path, uint32(e.Mode), e.Path)
}

// Is reports whether target is ErrTooOpen.
func (e *PermissionError) Is(target error) bool { return target == ErrTooOpen }

// Read returns the contents of the key file at path after checking its
// permissions on the opened file (so that a file swapped between the check
// and the read cannot slip through). The error for a file that is too open
// is a *PermissionError; every error names path, never the contents.
func Read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := checkFile(path, f); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("key file %s: larger than %d bytes, not a key", path, MaxSize)
	}
	return b, nil
}

// Check opens the key file at path and checks its permissions without
// reading it, for a configuration check ahead of the read. A file that
// cannot be opened gives the *fs.PathError of the open.
func Check(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return checkFile(path, f)
}

// checkFile applies the rule to the opened file f.
func checkFile(path string, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !checked {
		return nil
	}
	return checkMode(path, fi.Mode().Perm(), owner(fi), os.Geteuid())
}

// checkMode applies the package's rule to a key file's permission bits and
// owner (-1: unknown) for a process running as euid.
func checkMode(path string, perm fs.FileMode, owner, euid int) error {
	if owner == 0 && euid != 0 {
		// Root handing a key to a service user through the file's group.
		if perm&0o037 != 0 {
			return &PermissionError{Path: path, Mode: perm, RootOwned: true}
		}
		return nil
	}
	if perm&0o077 != 0 {
		return &PermissionError{Path: path, Mode: perm}
	}
	return nil
}
