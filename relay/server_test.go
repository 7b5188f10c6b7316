package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/testkit/testlog"

	"github.com/airlock-proxy/airlock/internal/metrics/metricstest"
	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
)

// TestServerOverQUIC runs a whole Server on loopback and one exchange
// through a real tunnel client, as an edge would.
func TestServerOverQUIC(t *testing.T) {
	up := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testKey {
			http.Error(w, "bad key", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "hi from "+r.URL.Path)
	})
	relayID, edgeID := mustIdentity(t), mustIdentity(t)
	logs := &testlog.Buffer{}
	s, err := NewServer(&Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		Identity:    relayID,
		Edges:       []EdgeConfig{{Name: "office", Key: edgeID.Fingerprint()}},
		Upstreams:   []UpstreamConfig{upstreamConfig("openai", up.URL)},
	}, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	startCtx, startCancel := context.WithCancel(context.Background())
	if err := s.Start(startCtx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	startCancel() // bounds the start only: the relay keeps serving
	ctx, cancel := context.WithTimeout(context.Background(), defaultWait)
	defer cancel()
	if s.Fingerprint() != relayID.Fingerprint() {
		t.Errorf("Fingerprint = %s, want the identity's", s.Fingerprint())
	}

	resp, err := http.Get("http://" + s.AdminAddr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz = %d, want 200", resp.StatusCode)
	}

	client, err := tunnel.NewClient(tunnel.ClientOptions{
		Identity: edgeID, RelayAddr: s.Addr().String(), RelayKey: s.Fingerprint(), EdgeName: "office",
	})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan struct{})
	go func() { defer close(runDone); client.Run(ctx) }()
	defer func() { client.Close(); <-runDone }()
	if err := client.WaitReady(ctx); err != nil {
		t.Fatalf("tunnel not up: %v", err)
	}
	st, peer, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(peer.Upstreams, []string{"openai"}) {
		t.Errorf("peer upstreams = %v, want [openai]", peer.Upstreams)
	}
	w, r := proto.NewWriter(st, proto.Limits{}), proto.NewReader(st, proto.Limits{})
	if err := w.WriteRequestHead(getHead("/models")); err != nil {
		t.Fatal(err)
	}
	if err := w.End(nil); err != nil {
		t.Fatal(err)
	}
	head, err := r.ReadResponseHead()
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r)
	if err != nil || head.Status != http.StatusOK || string(body) != "hi from /v1/models" {
		t.Errorf("got %d %q %v, want 200 \"hi from /v1/models\"", head.Status, body, err)
	}
	st.Close()
	for deadline := time.Now().Add(defaultWait); s.tun.Stats().Streams > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the exchange did not end")
		}
	}
	metricstest.Check(t, "http://"+s.AdminAddr().String()+"/metrics",
		`airlock_relay_sessions{edge="office",transport="quic"} 1`,
		`airlock_relay_upstream_requests_total{code="2xx",upstream="openai"} 1`,
		`airlock_relay_exchanges_total{result="ok",upstream="openai"} 1`,
		`airlock_relay_upstream_latency_seconds_count{upstream="openai"} 1`,
		`airlock_relay_streams_accepted_total 1`,
		`airlock_relay_handshake_failures_total{reason="unauthorized"} 0`,
		"process_cpu_seconds_total")

	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after Shutdown: %v", err)
	}
	if strings.Contains(logs.String(), testKey) {
		t.Errorf("logs contain the upstream key")
	}
}

func TestNewServerErrors(t *testing.T) {
	if _, err := NewServer(nil, nil); err == nil {
		t.Errorf("NewServer(nil) succeeded")
	}
	cfg := testConfig(upstreamConfig("openai", "http://127.0.0.1:1"))
	cfg.KeyFile = t.TempDir() + "/missing.key"
	_, err := NewServer(cfg, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "key_file: ") {
		t.Errorf("got %v, want an error about key_file", err)
	}
}

// TestServerConfigFilledOnce: NewServer works on a filled-in copy of the
// caller's config, which it leaves alone, and Reload validates the new config
// before it applies anything.
func TestServerConfigFilledOnce(t *testing.T) {
	cfg := testConfig(upstreamConfig("openai", "http://127.0.0.1:1"))
	cfg.Identity = mustIdentity(t)
	s, err := NewServer(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if cfg.ShutdownGrace.Duration != 0 || cfg.Upstreams[0].Auth != "" {
		t.Errorf("NewServer changed the caller's config: %+v", cfg)
	}
	if got := s.ShutdownGrace(); got != DefaultShutdownGrace {
		t.Errorf("ShutdownGrace() = %v, want the default %v", got, DefaultShutdownGrace)
	}
	bad := cfg.Clone()
	bad.ShutdownGrace.Duration = -time.Second
	if err := s.Reload(bad); err == nil || !strings.Contains(err.Error(), "shutdown_grace") {
		t.Errorf("Reload of an invalid config: %v, want the error naming shutdown_grace", err)
	}
	if err := s.Reload(nil); err == nil {
		t.Error("Reload(nil) succeeded")
	}
}

// TestReload: a reload uses new upstream keys for the exchanges that follow,
// closes the session of an edge it no longer lists, and refuses its
// reconnects; an invalid config changes nothing.
func TestReload(t *testing.T) {
	seen := make(chan string, 10)
	up := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Authorization")
	})
	relayID, edgeID := mustIdentity(t), mustIdentity(t)
	cfg := &Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "off",
		Identity:    relayID,
		Edges:       []EdgeConfig{{Name: "office", Key: edgeID.Fingerprint()}},
		Upstreams:   []UpstreamConfig{upstreamConfig("openai", up.URL)},
	}
	s, err := NewServer(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), defaultWait)
	defer cancel()
	client, err := tunnel.NewClient(tunnel.ClientOptions{Identity: edgeID, RelayAddr: s.Addr().String(), RelayKey: s.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan struct{})
	go func() { defer close(runDone); client.Run(ctx) }()
	defer func() { client.Close(); <-runDone }()
	if err := client.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	exchange := func() {
		t.Helper()
		st, _, err := client.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		proto.NewWriter(st, proto.Limits{}).WriteWholeRequest(getHead("/models"), nil)
		if _, err := proto.NewReader(st, proto.Limits{}).ReadResponseHead(); err != nil {
			t.Fatal(err)
		}
	}
	exchange()
	if got := <-seen; got != "Bearer "+testKey {
		t.Fatalf("upstream got %q before the reload", got)
	}

	next := cfg.Clone()
	next.Upstreams[0].Key = "sk-rotated"
	if err := s.Reload(next); err != nil {
		t.Fatal(err)
	}
	exchange()
	if got := <-seen; got != "Bearer sk-rotated" {
		t.Errorf("upstream got %q after the reload, want the new key", got)
	}

	bad := next.Clone()
	bad.Upstreams = nil
	if err := s.Reload(bad); err == nil {
		t.Error("Reload of a config without upstreams succeeded")
	}

	gone := next.Clone()
	gone.Edges = []EdgeConfig{{Name: "other", Key: mustIdentity(t).Fingerprint()}}
	if err := s.Reload(gone); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(defaultWait); client.Ready() || s.Sessions() > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the removed edge's session is still up")
		}
	}
	for deadline := time.Now().Add(defaultWait); !errors.Is(client.LastError(), tunnel.ErrUnknownPeer); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the removed edge's reconnect: %v, want ErrUnknownPeer", client.LastError())
		}
	}
}
