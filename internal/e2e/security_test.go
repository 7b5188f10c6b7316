package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/testkit/testupstream"
)

// TestPathCannotEscapeTheUpstream sends raw request lines that try to leave
// the upstream's base URL or reach another host, and checks that no request
// reaches another server and the upstream sees only paths under its base.
func TestPathCannotEscapeTheUpstream(t *testing.T) {
	st := startStack(t, testupstream.Options{})
	var evilHits atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { evilHits.Add(1) }))
	defer evil.Close()
	evilHost := strings.TrimPrefix(evil.URL, "http://")
	edgeHost := strings.TrimSuffix(strings.TrimPrefix(st.EdgeURL, "http://"), "/v1")

	tests := []struct {
		name   string
		target string
		wantOK bool // whether a 2xx answer is acceptable (the request stays on the upstream)
	}{
		{"dot dot", "/v1/../x", false},
		{"dot dot to another base", "/v1/../../v2/models", false},
		{"encoded dot dot", "/v1/%2e%2e/%2E%2E/x", false},
		{"encoded slash", "/v1/a%2F..%2F..%2Fx", false},
		{"encoded backslash", "/v1/a%5C..%5Cx", false},
		{"double slash host", "/v1//" + evilHost + "/x", false},
		{"scheme relative outside v1", "//" + evilHost + "/v1/models", false},
		{"absolute form", "http://" + evilHost + "/v1/models", true},
		{"userinfo trick", "/v1/@" + evilHost + "/models", false},
		{"dot segment", "/v1/./models", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drainRequests(st.Upstream)
			status := rawRequest(t, edgeHost, tt.target, st.ClientKey)
			if !tt.wantOK && status >= 200 && status < 300 {
				t.Errorf("GET %s: got status %d, want it refused", tt.target, status)
			}
			for {
				select {
				case info := <-st.Upstream.Requests():
					if !strings.HasPrefix(info.Path, "/v1/") || strings.Contains(info.Path, "..") {
						t.Errorf("GET %s: upstream saw path %q, outside its base /v1", tt.target, info.Path)
					}
					continue
				default:
				}
				break
			}
		})
	}
	if n := evilHits.Load(); n != 0 {
		t.Fatalf("another host got %d requests", n)
	}
}

// rawRequest writes a GET with exactly target as its request target and
// returns the status code.
func rawRequest(t *testing.T, host, target, key string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", target, host, key)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: reading the answer: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
