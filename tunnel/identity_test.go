package tunnel

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/airlock-proxy/airlock/internal/keyfile"
)

func TestSaveLoadIdentity(t *testing.T) {
	id, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tunnel.key")
	if err := id.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("Save wrote mode %04o, want 0600", uint32(fi.Mode().Perm()))
	}
	got, err := LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Fingerprint() != id.Fingerprint() {
		t.Errorf("got fingerprint %s, want %s", got.Fingerprint(), id.Fingerprint())
	}
	if err := id.Save(path); err == nil {
		t.Error("Save over an existing file: got no error, want one")
	}
}

// TestLoadIdentityRefusesOpenKeyFile: like ssh, a tunnel key that group or
// others may read or write is refused with the chmod that fixes it (issue 8,
// section 4).
func TestLoadIdentityRefusesOpenKeyFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("mode bits are not checked on Windows")
	}
	id, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		perm     fs.FileMode
		wantMode string // "" = loads
	}{
		{"0600", 0o600, ""},
		{"0400", 0o400, ""},
		{"0644", 0o644, "0644"},
		{"0640", 0o640, "0640"},
		{"0604", 0o604, "0604"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tunnel.key")
			if err := id.Save(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.perm); err != nil {
				t.Fatal(err)
			}
			got, err := LoadIdentity(path)
			if tt.wantMode == "" {
				if err != nil {
					t.Fatalf("got %v, want the key loaded", err)
				}
				if got.Fingerprint() != id.Fingerprint() {
					t.Errorf("got fingerprint %s, want %s", got.Fingerprint(), id.Fingerprint())
				}
				return
			}
			if !errors.Is(err, keyfile.ErrTooOpen) {
				t.Fatalf("got %v, want keyfile.ErrTooOpen", err)
			}
			for _, want := range []string{path, "mode " + tt.wantMode, "chmod 600 " + path} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("got %q, want it to contain %q", err, want)
				}
			}
		})
	}
}
