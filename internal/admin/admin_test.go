package admin

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
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
		{"profiler index", "/debug/pprof/", "", 200, "goroutine"},
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
