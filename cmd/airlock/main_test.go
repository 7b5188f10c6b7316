package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/edge"
	"github.com/airlock-proxy/airlock/internal/config"
	"github.com/airlock-proxy/airlock/internal/testkit/testlog"
	"github.com/airlock-proxy/airlock/relay"
	"github.com/airlock-proxy/airlock/tunnel"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"no arguments", nil, exitUsage, "Commands:"},
		{"help", []string{"-h"}, exitOK, "Commands:"},
		{"unknown command", []string{"fly"}, exitUsage, `unknown command "fly"`},
		{"command help", []string{"edge", "-h"}, exitOK, "-config"},
		{"missing config", []string{"relay"}, exitUsage, "-config is required"},
		{"bad flag", []string{"dev", "-nope"}, exitUsage, "flag provided but not defined"},
		{"stray argument", []string{"version", "extra"}, exitUsage, `unexpected argument "extra"`},
		{"missing config file", []string{"edge", "-config", "/nonexistent/edge.toml"}, exitError, "no such file"},
		{"keygen needs a mode", []string{"keygen"}, exitUsage, "exactly one of"},
		{"init needs the relay address", []string{"init", "-dir", "x"}, exitUsage, "-relay-address is required"},
		{"dev key env without upstream", []string{"dev", "-upstream-key-env", "X"}, exitError, "needs -upstream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(tt.args...)
			if code != tt.wantCode {
				t.Errorf("got exit code %d, want %d (stderr: %s)", code, tt.wantCode, stderr)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("got stderr %q, want it to contain %q", stderr, tt.wantStderr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI("version")
	if code != exitOK || !strings.HasPrefix(out, "airlock ") || !strings.Contains(out, "protocol 1") {
		t.Fatalf("got %d %q, want 0 and a version line with the protocol", code, out)
	}
}

// TestInitWritesMatchingConfigs checks that init's files decode strictly,
// validate, and pin each other's keys.
func TestInitWritesMatchingConfigs(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-test")
	dir := t.TempDir()
	code, out, stderr := runCLI("init", "-dir", dir, "-relay-address", "relay.example.com:7443")
	if code != exitOK {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	for _, name := range []string{"edge.key", "relay.key"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	edgeID, err := tunnel.LoadIdentity(filepath.Join(dir, "edge.key"))
	if err != nil {
		t.Fatal(err)
	}
	relayID, err := tunnel.LoadIdentity(filepath.Join(dir, "relay.key"))
	if err != nil {
		t.Fatal(err)
	}

	var ecfg edge.Config
	if err := config.Load(filepath.Join(dir, "edge.toml"), &ecfg); err != nil {
		t.Fatal(err)
	}
	ecfg.SetDefaults()
	if err := ecfg.Validate(); err != nil {
		t.Fatalf("edge.toml does not validate: %v", err)
	}
	var rcfg relay.Config
	if err := config.Load(filepath.Join(dir, "relay.toml"), &rcfg); err != nil {
		t.Fatal(err)
	}
	rcfg.SetDefaults()
	if err := rcfg.Validate(); err != nil {
		t.Fatalf("relay.toml does not validate: %v", err)
	}
	if got := ecfg.Relays[0].Key; got != relayID.Fingerprint() {
		t.Errorf("edge pins %s, want the relay's key %s", got, relayID.Fingerprint())
	}
	if got := rcfg.Edges[0].Key; got != edgeID.Fingerprint() {
		t.Errorf("relay accepts %s, want the edge's key %s", got, edgeID.Fingerprint())
	}
	// The printed client key must be the one whose hash edge.toml holds.
	var clientKey string
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "sk-airlock-") {
			clientKey = f
			break
		}
	}
	if clientKey == "" || edge.HashClientKey(clientKey) != ecfg.Clients[0].KeyHash {
		t.Errorf("printed client key %q does not match key_hash %s", clientKey, ecfg.Clients[0].KeyHash)
	}

	if code, _, stderr := runCLI("init", "-dir", dir, "-relay-address", "relay.example.com:7443"); code != exitError || !strings.Contains(stderr, "exists") {
		t.Errorf("second init: got exit %d %q, want 1 and a refusal to overwrite", code, stderr)
	}
}

// TestExampleConfigsDecode keeps deploy/examples in step with the config
// structs: every key in them must exist, and they must validate.
func TestExampleConfigsDecode(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-test")
	t.Setenv("OPENAI_KEY_TEAM_A", "sk-test-a")
	var ecfg edge.Config
	if err := config.Load("../../deploy/examples/edge.toml", &ecfg); err != nil {
		t.Fatal(err)
	}
	ecfg.SetDefaults()
	if err := ecfg.Validate(); err != nil {
		t.Errorf("edge example: %v", err)
	}
	var rcfg relay.Config
	if err := config.Load("../../deploy/examples/relay.toml", &rcfg); err != nil {
		t.Fatal(err)
	}
	rcfg.SetDefaults()
	if err := rcfg.Validate(); err != nil {
		t.Errorf("relay example: %v", err)
	}
}

func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.key")
	code, out, stderr := runCLI("keygen", "-out", path)
	if code != exitOK {
		t.Fatalf("keygen -out: exit %d: %s", code, stderr)
	}
	fp := strings.TrimSpace(out)
	if _, err := tunnel.ParseFingerprint(fp); err != nil {
		t.Fatalf("keygen printed %q: %v", fp, err)
	}
	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("keygen -out wrote mode %04o, want 0600", uint32(fi.Mode().Perm()))
	}
	if code, out, _ := runCLI("keygen", "-show", path); code != exitOK || strings.TrimSpace(out) != fp {
		t.Errorf("keygen -show: got %d %q, want 0 %q", code, out, fp)
	}
	code, out, _ = runCLI("keygen", "-client")
	if code != exitOK || !strings.Contains(out, "client key: sk-airlock-") || !strings.Contains(out, `key_hash = "sha256:`) {
		t.Errorf("keygen -client: got %d %q", code, out)
	}
}

// TestLogSettings: the config's [log] table applies unless a flag says
// otherwise, and a bad value names where it came from.
func TestLogSettings(t *testing.T) {
	for _, tt := range []struct {
		name       string
		args       []string
		cfg        config.Log
		wantLevel  string
		wantFormat string
		wantErr    string
	}{
		{"defaults", nil, config.Log{}, "info", "text", ""},
		{"from the config", nil, config.Log{Level: "debug", Format: "json"}, "debug", "json", ""},
		{"flags win", []string{"-log-level", "warn", "-log-format", "text"}, config.Log{Level: "debug", Format: "json"}, "warn", "text", ""},
		{"bad config level", nil, config.Log{Level: "loud"}, "", "", `log.level "loud"`},
		{"bad flag format", []string{"-log-format", "xml"}, config.Log{}, "", "", `-log-format "xml"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			var lf logFlags
			lf.register(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			lf.fromConfig(fs, tt.cfg)
			_, flush, err := lf.logger(io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("logger: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			flush()
			if lf.level != tt.wantLevel || lf.format != tt.wantFormat {
				t.Errorf("level %q format %q, want %q %q", lf.level, lf.format, tt.wantLevel, tt.wantFormat)
			}
		})
	}
}

// fakeRole records what serveUntilSignal does to it.
type fakeRole struct{ started, shutdown, closed atomic.Int32 }

func (f *fakeRole) Start(context.Context) error    { f.started.Add(1); return nil }
func (f *fakeRole) Shutdown(context.Context) error { f.shutdown.Add(1); return nil }
func (f *fakeRole) Close() error                   { f.closed.Add(1); return nil }

// TestSignals: SIGHUP reloads (a failed reload keeps serving), SIGTERM
// drains and closes.
func TestSignals(t *testing.T) {
	r := &fakeRole{}
	reloads := make(chan struct{}, 2)
	fail := true
	reload := func() error {
		defer func() { reloads <- struct{}{} }()
		if fail {
			fail = false
			return errors.New("bad config")
		}
		return nil
	}
	logs := &strings.Builder{}
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	done := make(chan error, 1)
	go func() { done <- serveUntilSignal(r, time.Second, reload, logger) }()
	for r.started.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	for range 2 {
		syscall.Kill(os.Getpid(), syscall.SIGHUP)
		select {
		case <-reloads:
		case <-time.After(5 * time.Second):
			t.Fatal("SIGHUP did not reload")
		}
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveUntilSignal: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SIGTERM did not stop the role")
	}
	if r.shutdown.Load() != 1 || r.closed.Load() != 1 {
		t.Errorf("shutdown %d, close %d; want 1 and 1", r.shutdown.Load(), r.closed.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "reload failed; the running configuration stays") {
		t.Errorf("logs lack the failed reload: %s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestOpenKeyFilesRefused: every command that reads a key file refuses one
// that group or others may read or write, and says which chmod fixes it
// (issue 8, section 4). The roles are built as their commands build them, but
// not started, so that a regression fails instead of serving.
func TestOpenKeyFilesRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("mode bits are not checked on Windows")
	}
	t.Setenv("OPENAI_API_KEY", "sk-test")
	keygenShow := func(dir string) error {
		if code, _, stderr := runCLI("keygen", "-show", filepath.Join(dir, "edge.key")); code != exitOK {
			return errors.New(stderr)
		}
		return nil
	}
	buildEdge := func(dir string) error {
		path := filepath.Join(dir, "edge.toml")
		var cfg edge.Config
		if err := config.Load(path, &cfg); err != nil {
			return err
		}
		srv, err := newEdge(path, &cfg, nil)
		if err != nil {
			return err
		}
		return srv.Close()
	}
	buildRelay := func(dir string) error {
		path := filepath.Join(dir, "relay.toml")
		var cfg relay.Config
		if err := config.Load(path, &cfg); err != nil {
			return err
		}
		srv, err := newRelay(path, &cfg, nil)
		if err != nil {
			return err
		}
		return srv.Close()
	}
	tests := []struct {
		name    string
		key     string // the file made too open, in the init directory
		perm    os.FileMode
		run     func(dir string) error
		wantErr string // besides "chmod 600 <key>"
	}{
		{"keygen -show", "edge.key", 0o644, keygenShow, "mode 0644"},
		{"edge tunnel key", "edge.key", 0o640, buildEdge, "mode 0640"},
		{"relay tunnel key", "relay.key", 0o604, buildRelay, "key_file: loading key: key file"},
		{"relay upstream key_file", "openai.key", 0o644, buildRelay, `upstream "openai": key_file: key file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if code, _, stderr := runCLI("init", "-dir", dir, "-relay-address", "127.0.0.1:1"); code != exitOK {
				t.Fatalf("init: exit %d: %s", code, stderr)
			}
			// An upstream key in a file instead of the environment.
			relayToml := filepath.Join(dir, "relay.toml")
			b, err := os.ReadFile(relayToml)
			if err != nil {
				t.Fatal(err)
			}
			b = []byte(strings.Replace(string(b), `key_env = "OPENAI_API_KEY"`, `key_file = "openai.key"`, 1))
			if err := os.WriteFile(relayToml, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "openai.key"), []byte("sk-test\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := tt.run(dir); err != nil {
				t.Fatalf("with every key file 0600: %v", err)
			}

			path := filepath.Join(dir, tt.key)
			if err := os.Chmod(path, tt.perm); err != nil {
				t.Fatal(err)
			}
			err = tt.run(dir)
			if err == nil {
				t.Fatalf("got no error with %s mode %04o, want a refusal", tt.key, uint32(tt.perm))
			}
			for _, want := range []string{tt.wantErr, "run: chmod 600 " + path} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("got %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

// TestDevAdmin: `airlock dev -admin` prints both admin listeners, on
// loopback, and they answer.
func TestDevAdmin(t *testing.T) {
	var stdout, stderr testlog.Buffer
	done := make(chan error, 1)
	go func() { done <- runDev([]string{"-admin", "-listen", "127.0.0.1:0"}, &stdout, &stderr) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "Admin listeners") {
		select {
		case err := <-done:
			t.Fatalf("dev ended: %v; stderr: %s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev printed no admin listeners within 30s; stdout: %s", stdout.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// runDev has registered for SIGTERM before it printed anything.
	defer func() {
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dev: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("SIGTERM did not stop dev")
		}
	}()
	var urls []string
	for _, f := range strings.Fields(stdout.String()) {
		if strings.HasPrefix(f, "http://127.0.0.1:") && !strings.HasSuffix(f, "/v1") && !strings.Contains(f, "/v1/") {
			urls = append(urls, f)
		}
	}
	if len(urls) != 2 {
		t.Fatalf("got admin URLs %q, want the edge's and the relay's on 127.0.0.1; stdout: %s", urls, stdout.String())
	}
	for _, u := range urls {
		for _, path := range []string{"/healthz", "/metrics"} {
			resp, err := http.Get(u + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s%s: got status %d, want 200", u, path, resp.StatusCode)
			}
		}
	}
}

// TestInvalidConfigNamesFile: the roles' servers validate their
// configurations; the command's error names the file and the key.
func TestInvalidConfigNamesFile(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		role, doc, want string
	}{
		{"edge", "[tunnel]\nping_interval = \"2s\"\n", "key_file: required"},
		{"relay", "name = \"r\"\n", "key_file: required"},
	} {
		path := filepath.Join(dir, tt.role+".toml")
		if err := os.WriteFile(path, []byte(tt.doc), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := runCLI(tt.role, "-config", path)
		if code != exitError || !strings.Contains(stderr, path+": ") || !strings.Contains(stderr, tt.want) {
			t.Errorf("%s: got exit %d, stderr %q; want %d naming %s and %q", tt.role, code, stderr, exitError, path, tt.want)
		}
	}
}
