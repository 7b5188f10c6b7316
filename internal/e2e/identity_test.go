package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/edge"
	"github.com/airlock-proxy/airlock/relay"
	"github.com/airlock-proxy/airlock/tunnel"
)

// TestMismatchedKeysAreRefused runs a real relay and edge whose keys do not
// match, either way round, and checks that no session comes up, that the
// error says why, and that clients get a fast 503 rather than a hang.
func TestMismatchedKeysAreRefused(t *testing.T) {
	tests := []struct {
		name      string
		wrongPin  bool // the edge pins another relay key
		wrongEdge bool // the relay knows another edge key
		wantErr   error
	}{
		{"edge pins another relay key", true, false, tunnel.ErrPinMismatch},
		{"relay does not know the edge's key", false, true, tunnel.ErrUnknownPeer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			relayID, edgeID, otherID := mustID(t), mustID(t), mustID(t)
			edgeKeyAtRelay, pin := edgeID.Fingerprint(), relayID.Fingerprint()
			if tt.wrongEdge {
				edgeKeyAtRelay = otherID.Fingerprint()
			}
			if tt.wrongPin {
				pin = otherID.Fingerprint()
			}
			rcfg := &relay.Config{
				Listen: "127.0.0.1:0", AdminListen: "off", Identity: relayID,
				Edges:     []relay.EdgeConfig{{Name: "office", Key: edgeKeyAtRelay}},
				Upstreams: []relay.UpstreamConfig{{Name: "up", BaseURL: "http://127.0.0.1:1/v1", Auth: "none"}},
			}
			rs := startRelayServer(t, rcfg)
			es := startEdgeServer(t, &edge.Config{
				Listen: "127.0.0.1:0", AdminListen: "off", Identity: edgeID, Auth: "none",
				Relays: []edge.RelayConfig{{Address: rs.Addr().String(), Key: pin}},
			})

			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			err := es.WaitReady(ctx)
			if err == nil {
				t.Fatal("a session came up with mismatched keys")
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("WaitReady: %v", err)
			}
			// The last dial error names the cause.
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want it to say %v", err, tt.wantErr)
			}

			start := time.Now()
			resp, err := http.Get("http://" + es.Addr().String() + "/v1/models")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error struct{ Code string } `json:"error"`
			}
			json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || body.Error.Code != "tunnel_unavailable" {
				t.Errorf("got %d Retry-After=%q code %q, want 503 with Retry-After and tunnel_unavailable", resp.StatusCode, resp.Header.Get("Retry-After"), body.Error.Code)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("the 503 took %v, want it fast", d)
			}
		})
	}
}

// startRelayServer completes and validates rcfg, starts a relay with it and
// closes the relay at the end of the test.
func startRelayServer(t *testing.T, rcfg *relay.Config) *relay.Server {
	t.Helper()
	rcfg.SetDefaults()
	if err := rcfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rs, err := relay.NewServer(rcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	return rs
}

// startEdgeServer completes and validates ecfg, starts an edge with it and
// closes the edge at the end of the test.
func startEdgeServer(t *testing.T, ecfg *edge.Config) *edge.Server {
	t.Helper()
	ecfg.SetDefaults()
	if err := ecfg.Validate(); err != nil {
		t.Fatal(err)
	}
	es, err := edge.NewServer(ecfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := es.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { es.Close() })
	return es
}

func mustID(t *testing.T) *tunnel.Identity {
	t.Helper()
	id, err := tunnel.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
