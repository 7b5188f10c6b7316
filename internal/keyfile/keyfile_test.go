package keyfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// writeKey writes content to a file in a fresh directory with mode perm
// (chmod after writing, so that the umask does not interfere).
func writeKey(t *testing.T, content string, perm fs.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "k.key")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadAndCheck(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("mode bits are not checked on Windows")
	}
	tests := []struct {
		name     string
		perm     fs.FileMode
		wantMode string // "" = accepted
	}{
		{"0600 accepted", 0o600, ""},
		{"0400 accepted", 0o400, ""},
		{"0644 refused", 0o644, "mode 0644"},
		{"0640 refused", 0o640, "mode 0640"},
		{"0604 refused", 0o604, "mode 0604"},
		{"0620 refused", 0o620, "mode 0620"},
		{"0602 refused", 0o602, "mode 0602"},
		{"0666 refused", 0o666, "mode 0666"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeKey(t, "secret\n", tt.perm)
			b, readErr := Read(path)
			if readErr == nil && string(b) != "secret\n" {
				t.Errorf("Read: got %q, want the file's contents", b)
			}
			for _, got := range []struct {
				op  string
				err error
			}{{"Read", readErr}, {"Check", Check(path)}} {
				if tt.wantMode == "" {
					if got.err != nil {
						t.Errorf("%s: got %v, want no error", got.op, got.err)
					}
					continue
				}
				if !errors.Is(got.err, ErrTooOpen) {
					t.Fatalf("%s: got %v, want ErrTooOpen", got.op, got.err)
				}
				msg := got.err.Error()
				for _, want := range []string{path, tt.wantMode, "run: chmod 600 " + path} {
					if !strings.Contains(msg, want) {
						t.Errorf("%s: got %q, want it to contain %q", got.op, msg, want)
					}
				}
				if strings.Contains(msg, "secret") {
					t.Errorf("%s: got %q, which shows the file's contents", got.op, msg)
				}
			}
		})
	}
}

// TestCheckMode covers the owner cases a test process cannot create: a
// root-owned file read by a service user may be group-readable, as systemd
// (root:airlock 0640) and Kubernetes secret volumes (root:fsGroup 0440) hand
// keys over.
func TestCheckMode(t *testing.T) {
	const root, user, other = 0, 1000, 1001
	tests := []struct {
		name        string
		perm        fs.FileMode
		owner, euid int
		want        string // "" = accepted, else a substring of the error
	}{
		{"own 0600", 0o600, user, user, ""},
		{"own 0400", 0o400, user, user, ""},
		{"own 0640", 0o640, user, user, "mode 0640: readable or writable by group or others; run: chmod 600 k"},
		{"own 0604", 0o604, user, user, "mode 0604"},
		{"root reads its own 0640", 0o640, root, root, "run: chmod 600 k"},
		{"root-owned 0640 read by a service user", 0o640, root, user, ""},
		{"root-owned 0440 read by a service user", 0o440, root, user, ""},
		{"root-owned 0600", 0o600, root, user, ""},
		{"root-owned 0644", 0o644, root, user, "owned by root with mode 0644: writable by its group or accessible by others; run: chmod 640 k"},
		{"root-owned 0660", 0o660, root, user, "mode 0660"},
		{"root-owned 0650", 0o650, root, user, "mode 0650"},
		{"other owner 0640", 0o640, other, user, "run: chmod 600 k"},
		{"unknown owner 0640", 0o640, -1, user, "run: chmod 600 k"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkMode("k", tt.perm, tt.owner, tt.euid)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if !errors.Is(err, ErrTooOpen) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrTooOpen containing %q", err, tt.want)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.key")
	if _, err := Read(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of a missing file: got %v, want fs.ErrNotExist", err)
	}
	if err := Check(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Check of a missing file: got %v, want fs.ErrNotExist", err)
	}
	big := writeKey(t, strings.Repeat("k", MaxSize+1), 0o600)
	if _, err := Read(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Read of a %d-byte file: got %v, want an error about its size", MaxSize+1, err)
	}
}
