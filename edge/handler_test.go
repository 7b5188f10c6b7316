package edge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

// okRelay answers every request with 200 "ok".
func okRelay(t *testing.T, r *fakeRelay) {
	h := r.head(t)
	if _, err := r.body(); err != nil {
		t.Errorf("relay: reading body: %v", err)
	}
	r.respondLength(t, http.StatusOK, http.Header{"Content-Type": {"text/plain"}, "X-Client": {h.Client}}, "ok", 2)
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name       string
		auth       string // config auth; "" = keys
		header     map[string]string
		wantStatus int
		wantClient string
	}{
		{name: "no key", header: map[string]string{"Authorization": ""}, wantStatus: 401},
		{name: "wrong bearer key", header: map[string]string{"Authorization": "Bearer sk-airlock-wrong"}, wantStatus: 401},
		{name: "wrong api-key", header: map[string]string{"Authorization": "", "Api-Key": "sk-airlock-wrong"}, wantStatus: 401},
		{name: "basic scheme is no key", header: map[string]string{"Authorization": "Basic " + aliceKey}, wantStatus: 401},
		{name: "empty bearer", header: map[string]string{"Authorization": "Bearer "}, wantStatus: 401},
		{name: "bearer ok", wantStatus: 200, wantClient: "alice"},
		{name: "lower-case bearer ok", header: map[string]string{"Authorization": "bearer " + bobKey}, wantStatus: 200, wantClient: "bob"},
		{name: "api-key ok", header: map[string]string{"Authorization": "", "Api-Key": bobKey}, wantStatus: 200, wantClient: "bob"},
		{name: "auth none", auth: AuthNone, header: map[string]string{"Authorization": ""}, wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = tt.auth
			e := newTestEdge(t, cfg, okRelay)
			resp, body := e.do(t, "POST", "/v1/chat/completions", strings.NewReader(`{}`), tt.header)
			if tt.wantStatus == 401 {
				checkErrorJSON(t, resp, body, 401, "invalid_request_error", "invalid_api_key")
				if strings.Contains(string(body), "wrong") || strings.Contains(string(body), aliceKey) {
					t.Errorf("401 body echoes the key: %s", body)
				}
				if n := e.opener.Calls(); n != 0 {
					t.Errorf("opener called %d times for a rejected request, want 0", n)
				}
				return
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
			}
			if resp.ContentLength != 2 {
				t.Errorf("ContentLength = %d, want the head's 2", resp.ContentLength)
			}
			if got := resp.Header.Get("X-Client"); got != tt.wantClient {
				t.Errorf("client in head = %q, want %q", got, tt.wantClient)
			}
		})
	}
}

// TestAuthErrorBody pins the exact bytes of the 401 answer.
func TestAuthErrorBody(t *testing.T) {
	e := newTestEdge(t, nil, okRelay)
	resp, body := e.do(t, "GET", "/v1/models", nil, map[string]string{"Authorization": "Bearer nope"})
	want := `{"error":{"message":"airlock edge: Incorrect API key provided: this edge knows no client with this key ` +
		`(use the client key from airlock init or airlock keygen -client, not an upstream key)",` +
		`"type":"invalid_request_error","param":null,"code":"invalid_api_key"}}` + "\n"
	if string(body) != want {
		t.Errorf("body =\n%s\nwant\n%s", body, want)
	}
	if got := resp.Header.Get("Content-Length"); got != fmt.Sprint(len(want)) {
		t.Errorf("Content-Length = %s, want %d", got, len(want))
	}
	if id := resp.Header.Get("Airlock-Request-Id"); !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
		t.Errorf("Airlock-Request-Id = %q, want 16 hex digits", id)
	}
	if resp.Header.Get("X-Request-Id") != resp.Header.Get("Airlock-Request-Id") {
		t.Errorf("X-Request-Id = %q on an edge error, want the edge's id %q", resp.Header.Get("X-Request-Id"), resp.Header.Get("Airlock-Request-Id"))
	}
}

// TestRequestIDAndOverhead: X-Request-Id is the upstream's when it sent
// one, else the edge's; Airlock-Overhead-Ms is the time to the head less
// what the relay says the upstream took.
func TestRequestIDAndOverhead(t *testing.T) {
	const upstreamTime = 300 * time.Millisecond
	for _, tt := range []struct {
		name, upstreamID string
	}{{"upstream id", "req_upstream"}, {"no upstream id", ""}} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEdge(t, nil, func(t *testing.T, r *fakeRelay) {
				r.head(t)
				h := http.Header{}
				if tt.upstreamID != "" {
					h.Set("X-Request-Id", tt.upstreamID)
				}
				time.Sleep(upstreamTime) // the "upstream" thinking
				r.w.WriteResponseHead(&proto.ResponseHead{Status: 200, Header: h, ContentLength: 0, UpstreamTime: upstreamTime})
				r.w.End(nil)
			})
			resp, _ := e.do(t, "GET", "/v1/models", nil, nil)
			want := tt.upstreamID
			if want == "" {
				want = resp.Header.Get("Airlock-Request-Id")
			}
			if got := resp.Header.Get("X-Request-Id"); got != want || got == "" {
				t.Errorf("X-Request-Id = %q, want %q", got, want)
			}
			ms, err := strconv.ParseFloat(resp.Header.Get("Airlock-Overhead-Ms"), 64)
			if err != nil || ms < 0 || ms > 200 {
				t.Errorf("Airlock-Overhead-Ms = %q, want the edge's own share (well under the upstream's 300 ms)", resp.Header.Get("Airlock-Overhead-Ms"))
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	e := newTestEdge(t, nil, okRelay)
	for _, path := range []string{"/", "/v1", "/v2/chat/completions", "/healthz", "/v1x/models"} {
		resp, body := e.do(t, "GET", path, nil, nil)
		checkErrorJSON(t, resp, body, 404, "invalid_request_error", "not_found")
	}
	if n := e.opener.Calls(); n != 0 {
		t.Errorf("opener called %d times, want 0", n)
	}
}

func TestDotSegmentsRejected(t *testing.T) {
	e := newTestEdge(t, nil, okRelay)
	for _, path := range []string{"/v1/../admin", "/v1/files/%2e%2e/x", "/v1/./models"} {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(testTimeout))
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", path, aliceKey)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		conn.Close()
		checkErrorJSON(t, resp, body, 400, "invalid_request_error", "invalid_request")
	}
	if n := e.opener.Calls(); n != 0 {
		t.Errorf("opener called %d times, want 0", n)
	}
}

func TestPreflight(t *testing.T) {
	e := newTestEdge(t, nil, okRelay)
	tests := []struct {
		name, reqHeaders, wantAllow string
	}{
		{"named headers echoed", "authorization, content-type, x-stainless-os", "authorization, content-type, x-stainless-os"},
		{"none named", "", corsAllowHeaders},
		{"invalid list", "a b, c", corsAllowHeaders},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(t, t.Context(), "OPTIONS", e.URL+"/v1/chat/completions", nil)
			req.Header.Del("Authorization")
			req.Header.Set("Origin", "https://app.example")
			req.Header.Set("Access-Control-Request-Method", "POST")
			if tt.reqHeaders != "" {
				req.Header.Set("Access-Control-Request-Headers", tt.reqHeaders)
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("status = %d, want 204", resp.StatusCode)
			}
			for k, want := range map[string]string{
				"Access-Control-Allow-Origin":  "*",
				"Access-Control-Allow-Headers": tt.wantAllow,
				"Access-Control-Allow-Methods": corsAllowMethods,
			} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
	if n := e.opener.Calls(); n != 0 {
		t.Errorf("opener called %d times for preflights, want 0", n)
	}
	// A cross-origin request itself gets CORS headers too.
	resp, _ := e.do(t, "GET", "/v1/models", nil, map[string]string{"Origin": "https://app.example"})
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin on the response = %q, want *", got)
	}
}

func TestRequestHead(t *testing.T) {
	heads := make(chan *proto.RequestHead, 1)
	e := newTestEdge(t, nil, func(t *testing.T, r *fakeRelay) {
		h := r.head(t)
		b, err := r.body()
		if err != nil || string(b) != `{"a":1}` {
			t.Errorf("relay: body = %q, %v; want {\"a\":1}", b, err)
		}
		heads <- h
		r.respond(t, 200, nil, "")
	})
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(testTimeout))
	raw := "POST /v1/files/a%2Fb/content?x=1&y=%C3%A9&z=a+b HTTP/1.1\r\n" +
		"Host: edge.example\r\n" +
		"Authorization: Bearer " + aliceKey + "\r\n" +
		"Api-Key: " + aliceKey + "\r\n" +
		"Connection: keep-alive, X-Hop\r\n" +
		"X-Hop: secret-hop\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Proxy-Authorization: Basic xyz\r\n" +
		"Te: trailers, deflate\r\n" +
		"Alt-Svc: h3=\":443\"\r\n" +
		"Airlock-Upstream: azure\r\n" +
		"Airlock-Debug: 1\r\n" +
		"X-Request-Id: client-chosen\r\n" +
		"X-Forwarded-For: 10.0.0.1\r\n" +
		"OpenAI-Organization: org-1\r\n" +
		"Content-Type: application/json\r\n" +
		"Content-Length: 7\r\n" +
		"\r\n" +
		`{"a":1}`
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var h *proto.RequestHead
	select {
	case h = <-heads:
	case <-time.After(2 * time.Second):
		t.Fatal("relay got no head")
	}
	if h.Method != "POST" {
		t.Errorf("Method = %q, want POST", h.Method)
	}
	if want := "/files/a%2Fb/content?x=1&y=%C3%A9&z=a+b"; h.Path != want {
		t.Errorf("Path = %q, want %q", h.Path, want)
	}
	if h.Upstream != "azure" || h.Client != "alice" || h.ContentLength != 7 {
		t.Errorf("Upstream, Client, ContentLength = %q, %q, %d; want azure, alice, 7", h.Upstream, h.Client, h.ContentLength)
	}
	if h.RequestID != resp.Header.Get("Airlock-Request-Id") || len(h.RequestID) != 16 {
		t.Errorf("RequestID = %q, response Airlock-Request-Id = %q; want the same 16 hex digits", h.RequestID, resp.Header.Get("Airlock-Request-Id"))
	}
	for _, k := range []string{"Authorization", "Api-Key", "Connection", "X-Hop", "Keep-Alive", "Proxy-Authorization",
		"Alt-Svc", "Airlock-Upstream", "Airlock-Debug", "Content-Length", "Host"} {
		if v, ok := h.Header[k]; ok {
			t.Errorf("header %s = %q was forwarded", k, v)
		}
	}
	for k, want := range map[string]string{
		"Te":                  "trailers",
		"X-Request-Id":        "client-chosen",
		"X-Forwarded-For":     "10.0.0.1, 127.0.0.1",
		"Openai-Organization": "org-1",
		"Content-Type":        "application/json",
	} {
		if got := strings.Join(h.Header[k], ","); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}

func TestUpstreamPolicy(t *testing.T) {
	tests := []struct {
		name         string
		edgeDefault  string
		key          string
		header       string
		wantStatus   int
		wantUpstream string
	}{
		{name: "unrestricted client, no header", key: aliceKey, wantStatus: 200, wantUpstream: ""},
		{name: "unrestricted client, edge default", edgeDefault: "openai", key: aliceKey, wantStatus: 200, wantUpstream: "openai"},
		{name: "unrestricted client, header", key: aliceKey, header: "anything", wantStatus: 200, wantUpstream: "anything"},
		{name: "restricted client, no header: first allowed", key: bobKey, wantStatus: 200, wantUpstream: "azure"},
		{name: "restricted client, allowed edge default", edgeDefault: "openai", key: bobKey, wantStatus: 200, wantUpstream: "openai"},
		{name: "restricted client, other edge default", edgeDefault: "other", key: bobKey, wantStatus: 200, wantUpstream: "azure"},
		{name: "restricted client, allowed header", key: bobKey, header: "openai", wantStatus: 200, wantUpstream: "openai"},
		{name: "restricted client, forbidden header", key: bobKey, header: "other", wantStatus: 403},
		{name: "unprintable header", key: aliceKey, header: "a\tb", wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Upstream = tt.edgeDefault
			got := make(chan string, 1)
			e := newTestEdge(t, cfg, func(t *testing.T, r *fakeRelay) {
				got <- r.head(t).Upstream
				r.body()
				r.respond(t, 200, nil, "")
			})
			resp, body := e.do(t, "GET", "/v1/models", nil, map[string]string{
				"Authorization": "Bearer " + tt.key, "Airlock-Upstream": tt.header,
			})
			switch tt.wantStatus {
			case 403:
				checkErrorJSON(t, resp, body, 403, "permission_error", "upstream_not_allowed")
			case 400:
				checkErrorJSON(t, resp, body, 400, "invalid_request_error", "invalid_request")
			}
			if tt.wantStatus != 200 {
				if n := e.opener.Calls(); n != 0 {
					t.Errorf("opener called %d times, want 0", n)
				}
				return
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d, want 200 (body %s)", resp.StatusCode, body)
			}
			if u := <-got; u != tt.wantUpstream {
				t.Errorf("Upstream = %q, want %q", u, tt.wantUpstream)
			}
		})
	}
}

func TestAccessLog(t *testing.T) {
	e := newTestEdge(t, nil, okRelay)
	e.do(t, "POST", "/v1/chat/completions?secret=1", strings.NewReader(`{"x":1}`), nil)
	e.do(t, "GET", "/v1/models", nil, map[string]string{"Authorization": "Bearer wrong-key"})
	var lines []map[string]any
	deadline := time.Now().Add(2 * time.Second)
	for len(lines) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // the line is written after the response
		lines = e.logs.Lines(t)
	}
	if len(lines) != 2 {
		t.Fatalf("got %d log lines, want 2:\n%s", len(lines), e.logs.String())
	}
	ok := lines[0]
	for k, want := range map[string]any{
		"msg": "request", "client": "alice", "method": "POST", "path": "/v1/chat/completions",
		"upstream": "openai", "status": float64(200), "bytes_in": float64(7), "bytes_out": float64(2), "relay": "relay-1",
	} {
		if ok[k] != want {
			t.Errorf("log %s = %v, want %v", k, ok[k], want)
		}
	}
	for _, k := range []string{"request_id", "duration", "ttfb"} {
		if _, found := ok[k]; !found {
			t.Errorf("log line has no %s: %v", k, ok)
		}
	}
	if lines[1]["status"] != float64(401) {
		t.Errorf("second line status = %v, want 401", lines[1]["status"])
	}
	all := e.logs.String()
	for _, secret := range []string{aliceKey, "wrong-key", "secret=1", `{"x":1}`, "Authorization"} {
		if strings.Contains(all, secret) {
			t.Errorf("log contains %q:\n%s", secret, all)
		}
	}
}

// TestReloadAccess: a reload swaps the client keys for the requests that
// start after it; an invalid config changes nothing.
func TestReloadAccess(t *testing.T) {
	e := newTestEdge(t, nil, okRelay)
	h := e.h
	status := func(key string) int {
		resp, _ := e.do(t, "GET", "/v1/models", nil, map[string]string{"Authorization": "Bearer " + key})
		return resp.StatusCode
	}
	if status(aliceKey) != 200 {
		t.Fatal("alice refused before the reload")
	}
	const carolKey = "sk-airlock-carol-test-key-000000000000000000000000"
	if err := h.reload(&Config{Clients: []ClientConfig{{Name: "carol", KeyHash: HashClientKey(carolKey)}}}); err != nil {
		t.Fatal(err)
	}
	if got := status(aliceKey); got != 401 {
		t.Errorf("alice after her key was removed: %d, want 401", got)
	}
	if got := status(carolKey); got != 200 {
		t.Errorf("carol after her key was added: %d, want 200", got)
	}
	if err := h.reload(&Config{}); err == nil || !strings.Contains(err.Error(), "no [[client]]") {
		t.Errorf("reload of a config with no clients: %v, want the fail-closed error", err)
	}
	if got := status(carolKey); got != 200 {
		t.Errorf("carol after a failed reload: %d, want 200 (nothing changed)", got)
	}
}
