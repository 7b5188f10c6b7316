package admin

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/airlock-proxy/airlock/internal/testkit/testlog"
)

func TestEndpoints(t *testing.T) {
	var notReady atomic.Value
	notReady.Store("")
	s := New("127.0.0.1:0", func() (string, error) {
		if why := notReady.Load().(string); why != "" {
			return "", errors.New(why)
		}
		return "tunnel over quic", nil
	}, nil)
	s.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "m 1\n") }))
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "http://" + s.Addr().String()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, path, notReady string
		wantCode             int
		wantBody             string
	}{
		{"healthz", "/healthz", "", 200, "ok"},
		{"ready", "/readyz", "", 200, "ready: tunnel over quic"},
		{"not ready says why", "/readyz", "no tunnel session", 503, "not ready: no tunnel session"},
		{"healthz while not ready", "/healthz", "no tunnel session", 200, "ok"},
		{"registered handler", "/metrics", "", 200, "m 1"},
		{"no profiler unless enabled", "/debug/pprof/", "", 404, ""},
		{"unknown path", "/nope", "", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			notReady.Store(tt.notReady)
			code, body := get(tt.path)
			if code != tt.wantCode {
				t.Errorf("got status %d, want %d", code, tt.wantCode)
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Errorf("got body %q, want it to contain %q", body, tt.wantBody)
			}
		})
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	s := New("127.0.0.1:0", func() (string, error) { return "", nil }, nil)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := http.Get("http://" + s.Addr().String() + "/healthz"); err == nil {
		t.Fatal("got an answer after Close, want a refused connection")
	}
}

func TestCloseWithoutStart(t *testing.T) {
	s := New("127.0.0.1:0", func() (string, error) { return "", nil }, nil)
	if err := s.Close(); err != nil {
		t.Fatalf("Close before Start: %v", err)
	}
}

// TestPprof: the profiler is served only after EnablePprof (issue 8,
// section 4: an admin listener exposed /debug/pprof/ unasked).
func TestPprof(t *testing.T) {
	paths := []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/symbol", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap"}
	tests := []struct {
		name     string
		enable   bool
		wantCode int
	}{
		{"off by default", false, http.StatusNotFound},
		{"enabled", true, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New("127.0.0.1:0", func() (string, error) { return "", nil }, nil)
			if tt.enable {
				s.EnablePprof()
				s.EnablePprof() // a second call does nothing (no duplicate-pattern panic)
			}
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, path := range paths {
				resp, err := http.Get("http://" + s.Addr().String() + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.wantCode {
					t.Errorf("GET %s: got status %d, want %d", path, resp.StatusCode, tt.wantCode)
				}
			}
		})
	}
}

// TestNonLoopbackWarning: an admin listener that others can reach is logged
// as a warning naming its address; one on loopback is not (issue 8,
// section 4).
func TestNonLoopbackWarning(t *testing.T) {
	const warning = "admin listener is not on loopback"
	tests := []struct {
		name     string
		addr     string
		pprof    bool
		needIPv6 bool
		want     string // substring of the "exposes" attribute; "" = no warning
	}{
		{"127.0.0.1", "127.0.0.1:0", true, false, ""},
		{"[::1]", "[::1]:0", true, true, ""},
		{"localhost", "localhost:0", true, false, ""},
		{"0.0.0.0", "0.0.0.0:0", false, false, "/metrics"},
		{"empty host", ":0", false, false, "/metrics"},
		{"[::]", "[::]:0", false, true, "/metrics"},
		{"0.0.0.0 with pprof", "0.0.0.0:0", true, false, "/metrics and /debug/pprof/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needIPv6 {
				ln, err := net.Listen("tcp", "[::1]:0")
				if err != nil {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				ln.Close()
			}
			var logs testlog.Buffer
			s := New(tt.addr, func() (string, error) { return "", nil }, slog.New(slog.NewJSONHandler(&logs, nil)))
			if tt.pprof {
				s.EnablePprof()
			}
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			s.Close()
			var warned []map[string]any
			for _, line := range logs.Lines(t) {
				if msg, _ := line["msg"].(string); strings.HasPrefix(msg, warning) {
					warned = append(warned, line)
				}
			}
			if tt.want == "" {
				if len(warned) != 0 {
					t.Fatalf("got warning %v, want none on loopback", warned)
				}
				return
			}
			if len(warned) != 1 {
				t.Fatalf("got %d warnings, want 1; log:\n%s", len(warned), logs.String())
			}
			w := warned[0]
			if w["level"] != "WARN" {
				t.Errorf("got level %v, want WARN", w["level"])
			}
			if addr, _ := w["addr"].(string); addr != s.Addr().String() {
				t.Errorf("got addr %q, want the bound address %q", addr, s.Addr())
			}
			if exposes, _ := w["exposes"].(string); exposes != tt.want {
				t.Errorf("got exposes %q, want %q", exposes, tt.want)
			}
		})
	}
}
