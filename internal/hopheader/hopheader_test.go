package hopheader

import (
	"net/http"
	"testing"
)

func TestRemove(t *testing.T) {
	h := http.Header{
		"Connection":          {"keep-alive, X-Private", " x-other "},
		"X-Private":           {"1"},
		"X-Other":             {"2"},
		"Keep-Alive":          {"timeout=5"},
		"Te":                  {"trailers"},
		"Transfer-Encoding":   {"chunked"},
		"Upgrade":             {"websocket"},
		"Alt-Svc":             {`h3=":443"`},
		"Proxy-Connection":    {"keep-alive"},
		"Proxy-Authenticate":  {"Basic"},
		"Proxy-Authorization": {"Basic x"},
		"Trailer":             {"X-T"},
		"Content-Type":        {"application/json"},
		"Openai-Project":      {"p"},
	}
	Remove(h)
	want := http.Header{"Content-Type": {"application/json"}, "Openai-Project": {"p"}}
	if len(h) != len(want) {
		t.Fatalf("got %v, want %v", h, want)
	}
	for k, v := range want {
		if h.Get(k) != v[0] {
			t.Errorf("%s: got %q, want %q", k, h.Get(k), v[0])
		}
	}
}

func TestUpgradeType(t *testing.T) {
	tests := []struct {
		name       string
		connection string
		upgrade    string
		want       string
		wantOK     bool
	}{
		{"no upgrade", "keep-alive", "", "", true},
		{"upgrade header without the connection token", "keep-alive", "websocket", "", true},
		{"websocket", "Upgrade", "websocket", "websocket", true},
		{"token among others", "keep-alive, upgrade", "websocket", "websocket", true},
		{"connection token without a type", "upgrade", "", "", true},
		{"space in type", "upgrade", "web socket", "web socket", false},
		{"control byte", "upgrade", "ws\x01", "ws\x01", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Connection": {tt.connection}}
			if tt.upgrade != "" {
				h.Set("Upgrade", tt.upgrade)
			}
			got, ok := UpgradeType(h)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got %q, %v; want %q, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestIsFixed(t *testing.T) {
	if !IsFixed("Transfer-Encoding") || IsFixed("Content-Type") {
		t.Error("IsFixed: want Transfer-Encoding fixed and Content-Type not")
	}
}
