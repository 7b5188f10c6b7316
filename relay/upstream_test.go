package relay

import (
	"errors"
	"net/url"
	"testing"
)

// goodPaths are joined under "https://api.example.com/v1"; want is the
// request URI the upstream sees.
var goodPaths = []struct {
	name string
	path string
	want string
}{
	{"simple", "/chat/completions", "/v1/chat/completions"},
	{"query", "/chat/completions?x=1&y=two", "/v1/chat/completions?x=1&y=two"},
	{"encoded slash in query", "/files?after=a%2Fb", "/v1/files?after=a%2Fb"},
	{"empty query", "/models?", "/v1/models"},
	{"root", "/", "/v1/"},
	{"trailing slash", "/models/", "/v1/models/"},
	{"colons", "/models/ft:gpt-4o:org:x", "/v1/models/ft:gpt-4o:org:x"},
	{"escaped space kept", "/files/a%20b", "/v1/files/a%20b"},
	{"escaped comma kept", "/files/a%2Cb", "/v1/files/a%2Cb"},
	{"dots inside a segment", "/files/a..b/.x/x.", "/v1/files/a..b/.x/x."},
	{"three dots", "/files/...", "/v1/files/..."},
}

// badPaths must never reach an upstream.
var badPaths = []struct {
	name string
	path string
	want error
}{
	{"dot dot", "/../x", errPathDot},
	{"dot dot at the end", "/a/..", errPathDot},
	{"encoded dot dot", "/%2e%2e/x", errPathDot},
	{"encoded dot dot upper", "/%2E%2E/x", errPathDot},
	{"half encoded dot dot", "/.%2e/x", errPathDot},
	{"dot", "/a/./b", errPathDot},
	{"encoded dot", "/a/%2e/b", errPathDot},
	{"encoded slash", "/a/%2Fb", errPathEncSlash},
	{"encoded slash lower", "/a/%2fb", errPathEncSlash},
	{"encoded backslash", "/a%5cb", errPathEncSlash},
	{"encoded backslash upper", "/a%5Cb", errPathEncSlash},
	{"backslash", `/a\b`, errPathBackslash},
	{"backslash dot dot", `/a\..\b`, errPathBackslash},
	{"scheme-relative", "//evil.com/x", errPathEmpty},
	{"empty segment", "/a//b", errPathEmpty},
	{"fragment", "/a#b", errPathFragment},
	{"fragment in query", "/a?x=1#b", errPathFragment},
	{"bad escape", "/a%zz", errPathEscape},
	{"truncated escape", "/a%2", errPathEscape},
	{"encoded NUL", "/a%00b", errPathControl},
	{"encoded newline", "/a%0d%0aHost:x", errPathControl},
	{"bad query escape", "/x?a=%zz", errPathQuery},
	{"semicolon query", "/x?a=1;b=2", errPathQuery},
	{"no leading slash", "x", errPathStart},
}

func TestJoinPath(t *testing.T) {
	for _, baseURL := range []string{"https://api.example.com/v1", "https://api.example.com/v1/"} {
		base, err := url.Parse(baseURL)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range goodPaths {
			t.Run(baseURL+" "+tt.name, func(t *testing.T) {
				u, err := joinPath(base, tt.path)
				if err != nil {
					t.Fatalf("got error %v, want %q", err, tt.want)
				}
				if u.Scheme != "https" || u.Host != "api.example.com" || u.User != nil {
					t.Errorf("scheme/host = %q %q, want https api.example.com", u.Scheme, u.Host)
				}
				if got := u.RequestURI(); got != tt.want {
					t.Errorf("got %q, want %q", got, tt.want)
				}
				// Re-parsing what goes on the wire lands on the same host.
				back, err := url.Parse(u.String())
				if err != nil || back.Host != "api.example.com" {
					t.Errorf("re-parsed %q: host %q, err %v", u.String(), back.Host, err)
				}
			})
		}
		for _, tt := range badPaths {
			t.Run(baseURL+" "+tt.name, func(t *testing.T) {
				u, err := joinPath(base, tt.path)
				if !errors.Is(err, tt.want) {
					t.Fatalf("got %v, %v; want error %v", u, err, tt.want)
				}
			})
		}
	}
}

func TestJoinPathBaseWithoutPath(t *testing.T) {
	base, _ := url.Parse("http://127.0.0.1:8000")
	u, err := joinPath(base, "/models?a=1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.String(), "http://127.0.0.1:8000/models?a=1"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestUpstreamClient checks which client an upstream's requests take: the
// HTTP/1.1 pool unless http2 = true (proxies from the environment are not
// set in tests).
func TestUpstreamClient(t *testing.T) {
	for _, tt := range []struct {
		base     string
		http2    bool
		wantPool bool
	}{
		{"http://127.0.0.1:9/v1", false, true},
		{"https://api.example.com/v1", false, true},
		{"https://[::1]:8443/v1", false, true},
		{"https://api.example.com/v1", true, false},
		{"http://127.0.0.1:9/v1", true, false},
	} {
		c := UpstreamConfig{Name: "u", BaseURL: tt.base, Auth: AuthNone, HTTP2: tt.http2}
		up, err := newUpstream(&c)
		if err != nil {
			t.Fatalf("%s: %v", tt.base, err)
		}
		if got := up.pool != nil; got != tt.wantPool {
			t.Errorf("%s, http2 = %v: pool %v, want %v", tt.base, tt.http2, got, tt.wantPool)
		}
		up.close()
	}
}
