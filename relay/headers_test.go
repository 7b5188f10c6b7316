package relay

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/airlock-proxy/airlock/internal/clientheader"
)

// credentialHeaderNames are the credential headers the role must strip.
// Which names belong in the list is internal/clientheader's test; this
// one checks that the role applies all of them.
var credentialHeaderNames = clientheader.Credentials()

// clientAddressHeaderNames are the client address headers, which go
// upstream only with forward_client_address.
var clientAddressHeaderNames = clientheader.Addresses()

// testUpstream is an upstream as requestHeader sees it.
func testUpstream(auth string) (*upstream, *apiKey) {
	up := &upstream{name: "openai", auth: auth}
	if auth == AuthNone {
		return up, nil
	}
	return up, &apiKey{name: "k1", secret: newSecret(testKey)}
}

// TestRequestHeaderStripsCredentials sends each client credential header,
// in the canonical spelling proto decodes and in spellings a hand-built head
// or a CGI-style upstream (which reads "_" as "-") would treat as the same
// field, under every auth style and with and without
// forward_client_address, and checks that the upstream request carries none
// of them, only the relay's own key.
func TestRequestHeaderStripsCredentials(t *testing.T) {
	spellings := []struct {
		name  string
		spell func(string) string
	}{
		{"canonical", func(s string) string { return s }},
		{"lower case", strings.ToLower},
		{"upper case", strings.ToUpper},
		{"underscores", func(s string) string { return strings.ReplaceAll(s, "-", "_") }},
	}
	for _, auth := range []string{AuthBearer, AuthAPIKey, AuthNone} {
		for _, name := range credentialHeaderNames {
			for _, sp := range spellings {
				for _, fwd := range []bool{false, true} {
					t.Run(auth+"/"+name+"/"+sp.name+"/fwd="+map[bool]string{false: "off", true: "on"}[fwd], func(t *testing.T) {
						in := http.Header{
							"Content-Type":        {"application/json"},
							"Openai-Organization": {"org-1"},
							"X-Stainless-Lang":    {"go"},
						}
						in[sp.spell(name)] = []string{clientKey}
						up, key := testUpstream(auth)
						got := requestHeader(in, up, key, fwd, "")
						for k, vs := range got {
							for _, v := range vs {
								if strings.Contains(v, clientKey) {
									t.Errorf("upstream gets %s: %q, want the client's credential removed", k, v)
								}
							}
						}
						switch auth {
						case AuthBearer:
							if g := got.Get("Authorization"); g != "Bearer "+testKey {
								t.Errorf("Authorization: got %q, want the relay's key", g)
							}
						case AuthAPIKey:
							if g := got.Get("Api-Key"); g != testKey {
								t.Errorf("Api-Key: got %q, want the relay's key", g)
							}
						}
						for _, keep := range []string{"Content-Type", "Openai-Organization", "X-Stainless-Lang"} {
							if got.Get(keep) == "" {
								t.Errorf("%s: got none, want it kept", keep)
							}
						}
					})
				}
			}
		}
	}
}

// TestRequestHeaderConfiguredCredentialKept checks that an upstream's own
// configured header with a credential name (x-api-key for an upstream that
// takes it) is sent, while the client's one is not.
func TestRequestHeaderConfiguredCredentialKept(t *testing.T) {
	up, _ := testUpstream(AuthNone)
	up.headers = http.Header{"X-Api-Key": {testKey}}
	got := requestHeader(http.Header{"X-Api-Key": {clientKey}}, up, nil, false, "")
	if g := got["X-Api-Key"]; !slices.Equal(g, []string{testKey}) {
		t.Errorf("X-Api-Key: got %q, want only the upstream's configured key", g)
	}
}

// TestRequestHeaderClientAddresses checks that each client address header
// is dropped without forward_client_address and kept, unchanged, with it.
func TestRequestHeaderClientAddresses(t *testing.T) {
	for _, name := range clientAddressHeaderNames {
		for _, fwd := range []bool{false, true} {
			t.Run(name+"/fwd="+map[bool]string{false: "off", true: "on"}[fwd], func(t *testing.T) {
				const addr = "10.1.2.3"
				in := http.Header{name: {addr}, "Content-Type": {"application/json"}}
				// A hand-built head in lower case is matched as well.
				lower := http.Header{strings.ToLower(name): {addr}}
				up, key := testUpstream(AuthBearer)
				got := requestHeader(in, up, key, fwd, "")
				gotLower := requestHeader(lower, up, key, fwd, "")
				if fwd {
					if g := got[name]; !slices.Equal(g, []string{addr}) {
						t.Errorf("with forward_client_address: got %q, want %q", g, addr)
					}
					return
				}
				if g, ok := got[name]; ok {
					t.Errorf("got %q, want it dropped", g)
				}
				for k, vs := range gotLower {
					if slices.Contains(vs, addr) {
						t.Errorf("lower-case spelling kept as %s: %q, want it dropped", k, vs)
					}
				}
				if got.Get("Content-Type") == "" {
					t.Error("Content-Type dropped, want it kept")
				}
			})
		}
	}
}
