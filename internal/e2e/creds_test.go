package e2e

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/edge"
	"github.com/airlock-proxy/airlock/internal/testkit/testupstream"
	"github.com/airlock-proxy/airlock/relay"
)

// TestUpstreamSeesNoClientCredentials sends, from a real client through edge
// and relay, every client credential header and every client address header
// (issue 8, section 3) and checks that the upstream sees none of them: only
// the relay's own key, in the relay's Authorization.
func TestUpstreamSeesNoClientCredentials(t *testing.T) {
	st := startStack(t, testupstream.Options{})
	const secret = "sk-client-side-credential-0123456789"
	sent := map[string]string{
		// Credentials. Authorization carries the airlock client key the
		// edge checks; every other one a secret of the client's own.
		"Authorization":             "Bearer " + st.ClientKey,
		"Api-Key":                   secret,
		"X-Api-Key":                 secret,
		"X-Auth-Token":              secret,
		"X-Goog-Api-Key":            secret,
		"Ocp-Apim-Subscription-Key": secret,
		"Cookie":                    "session=" + secret,
		"Proxy-Authorization":       "Basic " + secret,
		"X-Amz-Security-Token":      secret,
		"Cf-Aig-Authorization":      "Bearer " + secret,
		"Helicone-Auth":             "Bearer " + secret,
		"X-Portkey-Api-Key":         secret,
		// Addresses and host names from inside the restricted network.
		"X-Forwarded-For":          "10.1.2.3",
		"Forwarded":                "for=10.1.2.3",
		"X-Real-Ip":                "10.1.2.3",
		"Via":                      "1.1 proxy.corp.internal",
		"True-Client-Ip":           "10.1.2.3",
		"X-Client-Ip":              "10.1.2.3",
		"Cf-Connecting-Ip":         "10.1.2.3",
		"X-Cluster-Client-Ip":      "10.1.2.3",
		"Fastly-Client-Ip":         "10.1.2.3",
		"X-Original-Forwarded-For": "10.1.2.3",
		"X-Forwarded-Host":         "airlock.corp.internal",
		"X-Forwarded-Server":       "proxy.corp.internal",
		"X-Envoy-External-Address": "10.1.2.3",
	}
	drainRequests(st.Upstream)
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, st.EdgeURL+"/models", nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range sent {
		req.Header.Set(name, v)
	}
	req.Header.Set("Openai-Organization", "org-test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got status %d, want 200 (the upstream checks the relay's key)", resp.StatusCode)
	}
	var got http.Header
	select {
	case info := <-st.Upstream.Requests():
		got = info.Header
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream saw no request")
	}
	for name := range sent {
		if name == "Authorization" {
			continue // the relay's own, checked below
		}
		if v, ok := got[name]; ok {
			t.Errorf("upstream saw %s: %q, want it removed", name, v)
		}
	}
	for name, vs := range got {
		for _, v := range vs {
			if strings.Contains(v, secret) || strings.Contains(v, st.ClientKey) || strings.Contains(v, "10.1.2.3") ||
				strings.Contains(v, "corp.internal") {
				t.Errorf("upstream saw %s: %q, a value from inside the restricted network", name, v)
			}
		}
	}
	if got.Get("Authorization") == "" {
		t.Error("upstream saw no Authorization, want the relay's key")
	}
	if got.Get("Openai-Organization") != "org-test" {
		t.Errorf("upstream saw OpenAI-Organization %q, want org-test", got.Get("Openai-Organization"))
	}
}

// TestUnknownUpstreamLooksForbidden runs a relay with two upstreams, of
// which its edge may use one, and checks that a client naming the other
// one and a client naming one that does not exist get byte-identical
// answers (issue 8, section 5): trying names lists nothing.
func TestUnknownUpstreamLooksForbidden(t *testing.T) {
	relayID, edgeID := mustID(t), mustID(t)
	rcfg := &relay.Config{
		Listen: "127.0.0.1:0", AdminListen: "off", Identity: relayID,
		Edges: []relay.EdgeConfig{{Name: "office", Key: edgeID.Fingerprint(), Upstreams: []string{"open"}}},
		Upstreams: []relay.UpstreamConfig{
			{Name: "open", BaseURL: "http://127.0.0.1:1/v1", Auth: "none"},
			{Name: "secret", BaseURL: "http://127.0.0.1:1/v1", Auth: "none"},
		},
	}
	rs := startRelayServer(t, rcfg)
	clientKey, clientHash, err := edge.NewClientKey()
	if err != nil {
		t.Fatal(err)
	}
	es := startEdgeServer(t, &edge.Config{
		Listen: "127.0.0.1:0", AdminListen: "off", Identity: edgeID,
		Clients: []edge.ClientConfig{{Name: "app", KeyHash: clientHash}},
		Relays:  []edge.RelayConfig{{Address: rs.Addr().String(), Key: relayID.Fingerprint()}},
	})
	ctx := testCtx(t)
	if err := es.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	type answer struct {
		status int
		header http.Header
		body   []byte
	}
	ask := func(name string) answer {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+es.Addr().String()+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+clientKey)
		req.Header.Set("Airlock-Upstream", name)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		h := resp.Header.Clone()
		// What differs per request, whatever the name.
		for _, k := range []string{"Date", "Airlock-Request-Id", "Airlock-Overhead-Ms", "X-Request-Id"} {
			h.Del(k)
		}
		return answer{resp.StatusCode, h, body}
	}
	forbidden, unknown := ask("secret"), ask("no-such-upstream")
	if forbidden.status != http.StatusForbidden {
		t.Errorf("forbidden upstream: got status %d, want 403", forbidden.status)
	}
	if unknown.status != forbidden.status {
		t.Errorf("unknown upstream: got status %d, want %d as for a forbidden one", unknown.status, forbidden.status)
	}
	if !bytes.Equal(unknown.body, forbidden.body) {
		t.Errorf("unknown upstream: got body %s, want %s as for a forbidden one", unknown.body, forbidden.body)
	}
	if len(unknown.header) != len(forbidden.header) {
		t.Errorf("unknown upstream: got headers %v, want %v as for a forbidden one", unknown.header, forbidden.header)
	}
	for k := range forbidden.header {
		if unknown.header.Get(k) != forbidden.header.Get(k) {
			t.Errorf("unknown upstream: %s = %q, want %q as for a forbidden one", k, unknown.header.Get(k), forbidden.header.Get(k))
		}
	}
	if bytes.Contains(forbidden.body, []byte("office")) {
		t.Errorf("answer %s names the edge as the relay knows it, want it not to", forbidden.body)
	}
}
