package edge

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/metrics/metricstest"
	"github.com/airlock-proxy/airlock/tunnel"
)

// TestServerWithoutRelay runs a whole Server whose relay never answers: it
// must listen, answer 503 with Retry-After, report not ready, and shut down
// promptly and idempotently.
func TestServerWithoutRelay(t *testing.T) {
	id, err := tunnel.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	// A UDP port nobody answers on.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfg := testConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminListen = "127.0.0.1:0"
	cfg.Identity = id
	cfg.Relays = []RelayConfig{{Address: pc.LocalAddr().String(), Key: testRelayKey}}

	s, err := NewServer(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Error("Addr before Start is not nil")
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err == nil {
		t.Error("second Start succeeded")
	}
	if s.Ready() {
		t.Error("Ready with no relay")
	}

	req, _ := http.NewRequest("GET", "http://"+s.Addr().String()+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+aliceKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	checkErrorJSON(t, resp, body, 503, "server_error", "tunnel_unavailable")
	if resp.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After = %q, want 1", resp.Header.Get("Retry-After"))
	}

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503} {
		resp, err := http.Get("http://" + s.AdminAddr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s = %d %q, want %d", path, resp.StatusCode, b, want)
		}
		if path == "/readyz" && !strings.Contains(string(b), "no tunnel session") {
			t.Errorf("/readyz reason %q does not say why", b)
		}
	}
	metricstest.Check(t, "http://"+s.AdminAddr().String()+"/metrics",
		`airlock_tunnel_sessions{relay="`+pc.LocalAddr().String()+`",transport="quic"} 0`,
		`airlock_edge_rejections_total{reason="no_tunnel"} 1`,
		`airlock_edge_requests_total{code="5xx",route="models",upstream="none"} 1`,
		`airlock_tunnel_handshake_failures_total{reason="timeout",relay="`+pc.LocalAddr().String()+`"}`,
		"go_goroutines", "process_resident_memory_bytes")
	http.DefaultClient.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after Shutdown: %v", err)
	}
	if err := s.Start(t.Context()); err == nil {
		t.Error("Start after Close succeeded")
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}

// keyConfig is validConfig with an in-memory tunnel key.
func keyConfig(t *testing.T) *Config {
	t.Helper()
	cfg := validConfig()
	cfg.KeyFile = ""
	var err error
	if cfg.Identity, err = tunnel.GenerateIdentity(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestServerCloseBeforeStart(t *testing.T) {
	s, err := NewServer(keyConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestNewServerBadConfig(t *testing.T) {
	cfg := validConfig()
	cfg.KeyFile = t.TempDir() + "/missing.key"
	if _, err := NewServer(cfg, nil); err == nil || !strings.Contains(err.Error(), "key_file") {
		t.Errorf("NewServer with a missing key file = %v, want a key_file error", err)
	}
	cfg = validConfig()
	cfg.Clients = nil
	if _, err := NewServer(cfg, nil); err == nil || !strings.Contains(err.Error(), "no [[client]]") {
		t.Errorf("NewServer without clients = %v, want the fail-closed error", err)
	}
	cfg = validConfig()
	cfg.Tunnel.Connections = -1
	if _, err := NewServer(cfg, nil); err == nil || !strings.Contains(err.Error(), "edge config: tunnel.connections = -1") {
		t.Errorf("NewServer with tunnel.connections = -1: %v, want the error naming the key", err)
	}
	if _, err := NewServer(nil, nil); err == nil {
		t.Error("NewServer(nil) succeeded")
	}
}

// TestServerConfigFilledOnce: NewServer works on a filled-in copy of the
// caller's config, which it leaves alone, and Reload validates the new config
// before it applies anything.
func TestServerConfigFilledOnce(t *testing.T) {
	cfg := keyConfig(t)
	s, err := NewServer(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if cfg.ShutdownGrace.Duration != 0 || cfg.Tunnel.PingInterval.Duration != 0 {
		t.Errorf("NewServer changed the caller's config: %+v", cfg)
	}
	if got := s.ShutdownGrace(); got != DefaultShutdownGrace {
		t.Errorf("ShutdownGrace() = %v, want the default %v", got, DefaultShutdownGrace)
	}
	bad := cfg.Clone()
	bad.Tunnel.PingTimeout.Duration = -time.Second
	if err := s.Reload(bad); err == nil || !strings.Contains(err.Error(), "tunnel.ping_timeout") {
		t.Errorf("Reload of an invalid config: %v, want the error naming tunnel.ping_timeout", err)
	}
	if err := s.Reload(nil); err == nil {
		t.Error("Reload(nil) succeeded")
	}
}
