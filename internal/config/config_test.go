package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name    string   `toml:"name"`
	Timeout Duration `toml:"timeout"`
	Items   []struct {
		N int `toml:"n"`
	} `toml:"item"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr []string // substrings, all required; none means success
		want    time.Duration
	}{
		{"valid", "name = \"x\"\ntimeout = \"1m30s\"\n", nil, 90 * time.Second},
		{"unknown top-level key names key and line", "name = \"x\"\nnmae = 1\n", []string{`f.toml:2: unknown key "nmae"`}, 0},
		{"unknown key in array table", "[[item]]\nn = 1\nm = 2\n", []string{`f.toml:3: unknown key "item.m"`}, 0},
		{"every unknown key is listed", "a = 1\nb = 2\n", []string{`unknown key "a"`, `unknown key "b"`}, 0},
		{"wrong type names key", "name = 1\n", []string{`f.toml:1:`, `key "name"`}, 0},
		{"bad duration", "timeout = \"3 parsecs\"\n", []string{`key "timeout"`, `invalid duration "3 parsecs"`}, 0},
		{"syntax error has a position", "name = \n", []string{"f.toml:1:"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sample
			err := Decode("f.toml", []byte(tt.in), &s)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				if s.Timeout.Duration != tt.want {
					t.Errorf("got timeout %v, want %v", s.Timeout.Duration, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(path, []byte("name = \"n\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var s sample
	if err := Load(path, &s); err != nil || s.Name != "n" {
		t.Fatalf("got %+v, %v; want name n", s, err)
	}
	if err := Load(filepath.Join(t.TempDir(), "missing.toml"), &s); err == nil || !strings.Contains(err.Error(), "reading config") {
		t.Fatalf("got %v, want a reading config error", err)
	}
}

func TestDurationMarshalRoundTrip(t *testing.T) {
	b, err := Duration{90 * time.Second}.MarshalText()
	if err != nil || string(b) != "1m30s" {
		t.Fatalf("got %q, %v; want 1m30s", b, err)
	}
}
