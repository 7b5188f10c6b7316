package edge

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/airlock-proxy/airlock/internal/clientheader"
)

// credentialHeaderNames are the credential headers the role must strip.
// Which names belong in the list is internal/clientheader's test; this
// one checks that the role applies all of them.
var credentialHeaderNames = clientheader.Credentials()

// TestRequestHeaderStripsCredentials sends each credential header, in its
// canonical spelling and in spellings a hand-built header map or a
// CGI-style upstream would treat as the same field, and checks that the
// request head keeps none of them and none of their values.
func TestRequestHeaderStripsCredentials(t *testing.T) {
	const secret = "sk-client-credential-must-not-cross"
	type variant struct {
		name  string
		spell func(string) string
	}
	variants := []variant{
		{"canonical", func(s string) string { return s }},
		{"lower case", strings.ToLower},
		{"upper case", strings.ToUpper},
		{"underscores", func(s string) string { return strings.ReplaceAll(s, "-", "_") }},
	}
	for _, name := range credentialHeaderNames {
		for _, v := range variants {
			t.Run(name+"/"+v.name, func(t *testing.T) {
				r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
				r.Header = http.Header{
					"Content-Type":        {"application/json"},
					"Openai-Organization": {"org-1"},
					"X-Stainless-Lang":    {"go"},
				}
				// Set directly: a hand-built map keeps its spelling.
				r.Header[v.spell(name)] = []string{secret}
				got := requestHeader(r, "")
				for k, vs := range got {
					for _, val := range vs {
						if strings.Contains(val, secret) {
							t.Errorf("head carries %s: %q, want the credential removed", k, val)
						}
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

// TestRequestHeaderStripsWebSocketKeyProtocol checks that a browser's
// Realtime key, carried as a WebSocket subprotocol, stays behind while the
// other subprotocols pass.
func TestRequestHeaderStripsWebSocketKeyProtocol(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string // nil: header removed
	}{
		{"key among others", []string{"realtime, openai-insecure-api-key.sk-client, openai-beta.realtime-v1"},
			[]string{"realtime, openai-beta.realtime-v1"}},
		{"key alone", []string{"openai-insecure-api-key.sk-client"}, nil},
		{"key in its own line, mixed case", []string{"realtime", "OpenAI-Insecure-API-Key.sk-client"}, []string{"realtime"}},
		{"no key", []string{"realtime"}, []string{"realtime"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v1/realtime", nil)
			r.Header = http.Header{
				"Connection":             {"Upgrade"},
				"Upgrade":                {"websocket"},
				"Sec-Websocket-Protocol": tt.in,
			}
			got := requestHeader(r, "websocket")["Sec-Websocket-Protocol"]
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || (got == nil) != (tt.want == nil) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCleanTrailerStripsCredentials checks that request trailers, which
// reach the relay in END, drop every credential header as the head does.
func TestCleanTrailerStripsCredentials(t *testing.T) {
	for _, name := range credentialHeaderNames {
		t.Run(name, func(t *testing.T) {
			got := cleanTrailer(http.Header{name: {"secret"}, "X-Checksum": {"abc"}})
			if _, ok := got[name]; ok {
				t.Errorf("trailer %s kept, want it removed", name)
			}
			if got.Get("X-Checksum") != "abc" {
				t.Errorf("X-Checksum: got %q, want abc", got.Get("X-Checksum"))
			}
		})
	}
}
