package relay

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/airlock-proxy/airlock/tunnel"
)

// TestUpstreamSeriesPrecreated: an upstream's call, latency and key series
// exist at 0 once it is configured, before its first call, so that rate()
// sees the first calls and the first 429s.
func TestUpstreamSeriesPrecreated(t *testing.T) {
	m := newRelayMetrics(prometheus.NewRegistry())
	m.addKeys(&upstream{name: "openai", keys: []*apiKey{{name: "a"}, {name: "b"}}})
	m.addKeys(&upstream{name: "local"}) // auth = "none": no keys
	for _, tt := range []struct {
		name string
		c    prometheus.Collector
		want int
	}{
		{"upstream_requests_total", m.upstream, 2 * len(upstreamCodes)},
		{"upstream_latency_seconds", m.latency, 2},
		{"upstream_key_errors_total", m.keyErrors, 2 * 3},
		{"upstream_key_cooldowns_total", m.keyCooldowns, 2},
	} {
		if got := testutil.CollectAndCount(tt.c); got != tt.want {
			t.Errorf("%s: %d series before any call, want %d", tt.name, got, tt.want)
		}
	}
	if got := testutil.ToFloat64(m.upstream.WithLabelValues("openai", "4xx")); got != 0 {
		t.Errorf(`upstream_requests_total{openai,4xx} = %v, want 0`, got)
	}
}

// TestHandshakeFailureSeries (issue 8): each reason the relay counts failed
// session attempts by shows from the start, at 0, and no reason the relay
// cannot see (proxy_auth is the edge's).
func TestHandshakeFailureSeries(t *testing.T) {
	srv, err := tunnel.NewServer(tunnel.ServerOptions{
		Identity:  mustIdentity(t),
		Authorize: func(string) (string, []string, error) { return "", nil, errors.New("no edge") },
	}, tunnel.HandlerFunc(func(_ context.Context, _ *tunnel.Peer, s tunnel.Stream) { s.Close() }))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const name = "airlock_relay_handshake_failures_total"
	want := "# HELP " + name + " " + handshakeFailuresHelp + "\n# TYPE " + name + " counter\n"
	for _, reason := range []string{"network", "pin_mismatch", "protocol", "timeout", "unauthorized"} {
		want += name + `{reason="` + reason + `"} 0` + "\n"
	}
	if err := testutil.CollectAndCompare(newTunnelCollector(srv), strings.NewReader(want), name); err != nil {
		t.Error(err)
	}
}
