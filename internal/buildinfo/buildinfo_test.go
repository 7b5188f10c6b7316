package buildinfo

import "testing"

func TestVersion(t *testing.T) {
	old := version
	defer func() { version = old }()
	version = "v9.9.9"
	if got := Version(); got != "v9.9.9" {
		t.Errorf("Version() = %q, want the link-time v9.9.9", got)
	}
	if got := Software(); got != "airlock/v9.9.9" {
		t.Errorf("Software() = %q, want airlock/v9.9.9", got)
	}
	version = ""
	if got := Version(); got == "" || got == "(devel)" {
		t.Errorf("Version() = %q without a link-time version, want a module version or dev", got)
	}
}
