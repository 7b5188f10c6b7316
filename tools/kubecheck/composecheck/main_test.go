package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRepoCompose validates the compose file this tool exists for.
func TestRepoCompose(t *testing.T) {
	t.Setenv("UPSTREAM_API_KEY", "test")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-q", "../../../deploy/compose/compose.yaml"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, stderr.String())
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "services:\n  a:\n    image: x\n    cap_dorp: [ALL]\n", "cap_dorp"},
		{"wrong type", "services:\n  a:\n    image: x\n    read_only: maybe\n", "invalid boolean"},
		{"missing variable", "services:\n  a:\n    image: x\n    environment:\n      K: ${COMPOSECHECK_UNSET_VAR:?set it}\n", "COMPOSECHECK_UNSET_VAR"},
		{"undefined dependency", "services:\n  a:\n    image: x\n    depends_on: [b]\n", `undefined service "b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "compose.yaml")
			if err := os.WriteFile(path, []byte("name: test\n"+tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if code := run([]string{"-q", path}, &stdout, &stderr); code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr does not contain %q:\n%s", tt.want, stderr.String())
			}
		})
	}
}
