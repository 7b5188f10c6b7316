package clientheader

import (
	"net/http"
	"slices"
	"testing"
)

func TestIsCredential(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"Authorization", true},
		{"authorization", true},
		{"AUTHORIZATION", true},
		{"Api-Key", true},
		{"api-key", true},
		{"api_key", true},
		{"X-Api-Key", true},
		{"x-API-key", true},
		{"X_API_KEY", true},
		{"X-Auth-Token", true},
		{"X-Goog-Api-Key", true},
		{"Ocp-Apim-Subscription-Key", true},
		{"Cookie", true},
		{"Proxy-Authorization", true},
		{"X-Amz-Security-Token", true},
		{"Cf-Aig-Authorization", true},
		{"Helicone-Auth", true},
		{"X-Portkey-Api-Key", true},
		{"Content-Type", false},
		{"Openai-Organization", false},
		{"Openai-Project", false},
		{"X-Api-Key-Id", false},
		{"Set-Cookie", false},
		{"X-Forwarded-For", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := IsCredential(tt.name); got != tt.want {
			t.Errorf("IsCredential(%q): got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestIsAddress(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"X-Forwarded-For", true},
		{"x-forwarded-for", true},
		{"X_Forwarded_For", true},
		{"Forwarded", true},
		{"X-Real-Ip", true},
		{"X-Real-IP", true},
		{"Via", true},
		{"True-Client-IP", true},
		{"X-Client-Ip", true},
		{"CF-Connecting-IP", true},
		{"X-Cluster-Client-Ip", true},
		{"Fastly-Client-IP", true},
		{"X-Original-Forwarded-For", true},
		{"X-Forwarded-Host", true},
		{"X-Forwarded-Server", true},
		{"X-Envoy-External-Address", true},
		{"X-Forwarded-Proto", false},
		{"Authorization", false},
		{"X-Request-Id", false},
	}
	for _, tt := range tests {
		if got := IsAddress(tt.name); got != tt.want {
			t.Errorf("IsAddress(%q): got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRemoveCredentials(t *testing.T) {
	tests := []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{
			name: "every credential, any spelling",
			in: http.Header{
				"Authorization": {"Bearer a"}, "api-key": {"b"}, "X_Api_Key": {"c"}, "X-AUTH-TOKEN": {"d"},
				"X-Goog-Api-Key": {"e"}, "Ocp-Apim-Subscription-Key": {"f"}, "Cookie": {"g=1"},
				"Proxy-Authorization": {"Basic h"}, "X-Amz-Security-Token": {"i"},
				"Cf-Aig-Authorization": {"j"}, "Helicone-Auth": {"k"}, "X-Portkey-Api-Key": {"l"},
				"Content-Type": {"application/json"}, "X-Forwarded-For": {"10.0.0.1"},
			},
			want: http.Header{"Content-Type": {"application/json"}, "X-Forwarded-For": {"10.0.0.1"}},
		},
		{
			name: "websocket key subprotocol among others",
			in:   http.Header{"Sec-Websocket-Protocol": {"realtime, openai-insecure-api-key.sk-x, openai-beta.realtime-v1"}},
			want: http.Header{"Sec-Websocket-Protocol": {"realtime, openai-beta.realtime-v1"}},
		},
		{
			name: "websocket key subprotocol alone",
			in:   http.Header{"Sec-Websocket-Protocol": {"OpenAI-Insecure-API-Key.sk-x"}},
			want: http.Header{},
		},
		{
			name: "websocket key subprotocol in its own field line",
			in:   http.Header{"sec-websocket-protocol": {"realtime", " openai-insecure-api-key.sk-x "}},
			want: http.Header{"sec-websocket-protocol": {"realtime"}},
		},
		{
			name: "websocket subprotocols without a key",
			in:   http.Header{"Sec-Websocket-Protocol": {"realtime,  openai-beta.realtime-v1"}},
			want: http.Header{"Sec-Websocket-Protocol": {"realtime,  openai-beta.realtime-v1"}},
		},
		{name: "nil", in: nil, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			RemoveCredentials(tt.in)
			if !equal(tt.in, tt.want) {
				t.Errorf("got %v, want %v", tt.in, tt.want)
			}
		})
	}
}

func TestRemoveAddresses(t *testing.T) {
	h := http.Header{
		"X-Forwarded-For": {"10.0.0.1"}, "forwarded": {"for=10.0.0.1"}, "X-Real-IP": {"10.0.0.1"},
		"Via": {"1.1 proxy"}, "True-Client-Ip": {"10.0.0.1"}, "X-Client-Ip": {"10.0.0.1"},
		"Cf-Connecting-Ip": {"10.0.0.1"}, "X-Cluster-Client-Ip": {"10.0.0.1"},
		"Fastly-Client-Ip": {"10.0.0.1"}, "X-Original-Forwarded-For": {"10.0.0.1"},
		"X-Forwarded-Host": {"ai.corp"}, "X-Forwarded-Server": {"proxy.corp"},
		"X-Envoy-External-Address": {"10.0.0.1"},
		"Authorization":            {"Bearer a"}, "X-Forwarded-Proto": {"https"},
	}
	RemoveAddresses(h)
	want := http.Header{"Authorization": {"Bearer a"}, "X-Forwarded-Proto": {"https"}}
	if !equal(h, want) {
		t.Errorf("got %v, want %v", h, want)
	}
}

// TestLists checks that the exported lists match the sets,
// are canonical, do not overlap, and are copies.
func TestLists(t *testing.T) {
	creds, addrs := Credentials(), Addresses()
	for _, n := range creds {
		if !IsCredential(n) || IsAddress(n) || key(n) != n {
			t.Errorf("credential %q: want canonical, a credential and not an address", n)
		}
	}
	for _, n := range addrs {
		if !IsAddress(n) || IsCredential(n) || key(n) != n {
			t.Errorf("address %q: want canonical, an address and not a credential", n)
		}
	}
	creds[0] = "Content-Type"
	if IsCredential("Content-Type") || Credentials()[0] == "Content-Type" {
		t.Error("changing the returned slice changed the list")
	}
}

// TestRemoveDoesNotAllocate checks that the per-request path costs no
// allocation for the canonical names net/http and proto deliver.
func TestRemoveDoesNotAllocate(t *testing.T) {
	h := http.Header{
		"Content-Type": {"application/json"}, "User-Agent": {"OpenAI/Python 1.99"},
		"Openai-Organization": {"org"}, "X-Stainless-Lang": {"python"}, "Accept": {"*/*"},
		"Sec-Websocket-Protocol": {"realtime"},
	}
	if n := testing.AllocsPerRun(100, func() {
		RemoveCredentials(h)
		RemoveAddresses(h)
	}); n != 0 {
		t.Errorf("got %v allocations, want 0", n)
	}
}

func TestKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"X-Api-Key", "X-Api-Key"},
		{"x-api-key", "X-Api-Key"},
		{"X_API_KEY", "X-Api-Key"},
		{"cf-connecting-ip", "Cf-Connecting-Ip"},
		{"Te", "Te"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := key(tt.in); got != tt.want {
			t.Errorf("key(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func equal(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !slices.Equal(v, w) {
			return false
		}
	}
	return true
}
