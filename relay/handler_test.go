package relay

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/testkit/testlog"

	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel/tunneltest"
)

// transports runs a test against an upstream in clear and over TLS, both
// through the relay's HTTP/1.1 pool, and over TLS with http2 = true (Go's
// HTTP/2 client).
var transports = []struct {
	name string
	tls  bool
	h2   bool
}{{"h1", false, false}, {"tls", true, false}, {"h2", true, true}}

func TestPathEscapesNeverReachUpstream(t *testing.T) {
	var hits atomic.Int64
	var lastURI atomic.Value
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		lastURI.Store(r.RequestURI)
		io.WriteString(w, "ok")
	})
	h, _ := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
	for _, tt := range badPaths {
		if !strings.HasPrefix(tt.path, "/") {
			continue // the proto decoder already refuses these
		}
		t.Run(tt.name, func(t *testing.T) {
			e := serve(t, h, testPeer())
			e.send(getHead(tt.path), nil)
			head, body, err := e.response()
			if err != nil {
				t.Fatalf("response: %v", err)
			}
			if head.Status != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400", head.Status)
			}
			if got := apiErrorOf(t, head, body); got.Type != "invalid_request_error" || got.Code != "invalid_path" {
				t.Errorf("got type %q code %q, want invalid_request_error invalid_path", got.Type, got.Code)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("upstream got %d requests (last %v), want 0", n, lastURI.Load())
	}
	for _, tt := range goodPaths {
		t.Run(tt.name, func(t *testing.T) {
			e := serve(t, h, testPeer())
			e.send(getHead(tt.path), nil)
			head, _, err := e.response()
			if err != nil || head.Status != http.StatusOK {
				t.Fatalf("got %v %v, want 200", head, err)
			}
			if got := lastURI.Load(); got != tt.want {
				t.Errorf("upstream saw %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHeaders(t *testing.T) {
	tests := []struct {
		name     string
		auth     string
		fwdAddr  bool
		noUA     bool
		wantSent http.Header // exact values the upstream must see
		wantGone []string    // headers the upstream must not see
	}{
		{
			name: "bearer",
			wantSent: http.Header{
				"Authorization":       {"Bearer " + testKey},
				"User-Agent":          {"OpenAI/Python 1.99"},
				"Accept-Encoding":     {"identity"},
				"Openai-Organization": {"org-relay"},
				"X-Request-Id":        {"abc"},
				"Content-Type":        {"application/json"},
				"Te":                  {"trailers"},
			},
			wantGone: []string{"Api-Key", "Cookie", "X-Forwarded-For", "Forwarded", "X-Real-Ip",
				"Airlock-Upstream", "Airlock-Whatever", "X-Hop", "Keep-Alive", "Proxy-Authorization",
				"Proxy-Connection", "Alt-Svc", "Upgrade", "Expect"},
		},
		{
			name: "api-key",
			auth: AuthAPIKey,
			wantSent: http.Header{
				"Api-Key": {testKey},
			},
			wantGone: []string{"Authorization"},
		},
		{
			name:     "auth none",
			auth:     AuthNone,
			wantGone: []string{"Authorization", "Api-Key"},
		},
		{
			name:    "forward client address",
			fwdAddr: true,
			wantSent: http.Header{
				"X-Forwarded-For": {"10.1.2.3"},
				"Forwarded":       {"for=10.1.2.3"},
				"X-Real-Ip":       {"10.1.2.3"},
			},
		},
		{
			name:     "no user agent",
			noUA:     true,
			wantGone: []string{"User-Agent"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan http.Header, 1)
			srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
				got <- r.Header.Clone()
				io.WriteString(w, "{}")
			})
			up := upstreamConfig("openai", srv.URL)
			up.Headers = map[string]string{"OpenAI-Organization": "org-relay"}
			up.Auth = tt.auth
			if tt.auth == AuthNone {
				up.Key = ""
			}
			cfg := testConfig(up)
			cfg.ForwardClientAddress = tt.fwdAddr
			h, logs := newTestHandler(t, cfg)
			head := &proto.RequestHead{
				Method: http.MethodPost,
				Path:   "/chat/completions",
				Header: http.Header{
					"Authorization":       {"Bearer " + clientKey},
					"Api-Key":             {clientKey},
					"Cookie":              {"session=inside"},
					"X-Forwarded-For":     {"10.1.2.3"},
					"Forwarded":           {"for=10.1.2.3"},
					"X-Real-Ip":           {"10.1.2.3"},
					"Airlock-Upstream":    {"other"},
					"Airlock-Whatever":    {"x"},
					"Connection":          {"X-Hop"},
					"X-Hop":               {"1"},
					"Keep-Alive":          {"timeout=5"},
					"Proxy-Authorization": {"Basic eA=="},
					"Proxy-Connection":    {"keep-alive"},
					"Alt-Svc":             {"clear"},
					"Upgrade":             {"h2c"},
					"Te":                  {"trailers"},
					"User-Agent":          {"OpenAI/Python 1.99"},
					"Openai-Organization": {"org-client"},
					"X-Request-Id":        {"abc"},
					"Content-Type":        {"application/json"},
					"Expect":              {"100-continue"},
				},
				RequestID:     "req-hdr",
				ContentLength: 2,
			}
			if tt.noUA {
				head.Header.Del("User-Agent")
			}
			e := serve(t, h, testPeer())
			e.send(head, strings.NewReader("{}"))
			rh, _, err := e.response()
			if err != nil || rh.Status != http.StatusOK {
				t.Fatalf("got %v %v, want 200", rh, err)
			}
			sent := <-got
			for name, want := range tt.wantSent {
				if g := sent.Values(name); fmt.Sprint(g) != fmt.Sprint(want) {
					t.Errorf("%s: got %q, want %q", name, g, want)
				}
			}
			for _, name := range tt.wantGone {
				if g, ok := sent[name]; ok {
					t.Errorf("%s: got %q, want it removed", name, g)
				}
			}
			for name, vs := range sent {
				for _, v := range vs {
					if strings.Contains(v, clientKey) {
						t.Errorf("%s carries the client's key upstream", name)
					}
				}
			}
			if strings.Contains(logs.String(), clientKey) {
				t.Errorf("logs contain the client's key")
			}
		})
	}
}

func TestResponseHeadersAndTrailers(t *testing.T) {
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Usage")
		w.Header().Set("Connection", "X-Secret-Hop")
		w.Header().Set("X-Secret-Hop", "1")
		w.Header().Set("Alt-Svc", `h3=":443"`)
		w.Header().Set("Openai-Processing-Ms", "42")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "body")
		w.Header().Set("X-Usage", "7")
	})
	h, _ := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
	e := serve(t, h, testPeer())
	e.send(getHead("/x"), nil)
	head, body, err := e.response()
	if err != nil {
		t.Fatal(err)
	}
	if head.Status != http.StatusCreated || string(body) != "body" {
		t.Errorf("got %d %q, want 201 \"body\"", head.Status, body)
	}
	if head.ContentLength != -1 {
		t.Errorf("ContentLength = %d, want -1 (chunked upstream)", head.ContentLength)
	}
	for _, name := range []string{"Connection", "X-Secret-Hop", "Alt-Svc", "Trailer", "Transfer-Encoding"} {
		if v, ok := head.Header[name]; ok {
			t.Errorf("response head has %s: %q", name, v)
		}
	}
	if got := head.Header.Get("Openai-Processing-Ms"); got != "42" {
		t.Errorf("Openai-Processing-Ms = %q, want 42", got)
	}
	if got := e.r.Trailer().Get("X-Usage"); got != "7" {
		t.Errorf("trailer X-Usage = %q, want 7", got)
	}
}

// TestSmallResponseTravelsWhole checks that a response whose whole body
// arrived with its head reaches the edge as HEAD, DATA and END in one write
// (issue 9), and that the upstream connection then serves the next request.
func TestSmallResponseTravelsWhole(t *testing.T) {
	for _, tr := range transports {
		if tr.h2 {
			continue // net/http's client: its body cannot tell
		}
		t.Run(tr.name, func(t *testing.T) {
			var conns sync.Map
			srv := startUpstream(t, tr.tls, func(w http.ResponseWriter, r *http.Request) {
				conns.Store(r.RemoteAddr, true)
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", "11")
				io.WriteString(w, `{"ok":true}`)
			})
			h, _ := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
			trustUpstream(h, "openai", srv, false)
			for i := range 2 {
				e := serve(t, h, testPeer())
				e.send(getHead("/x"), nil)
				buf := make([]byte, 64<<10)
				var n int
				if err := within(t, 5*time.Second, func() (err error) {
					n, err = e.s.Read(buf)
					return err
				}); err != nil {
					t.Fatalf("request %d: reading the stream: %v", i, err)
				}
				// Whatever else comes is read, so that a relay that
				// wrote in several pieces is not left blocked.
				go io.Copy(io.Discard, e.s)
				// The bytes of that one read hold the whole response.
				r := proto.NewReader(bytes.NewReader(buf[:n]), proto.Limits{})
				head, err := r.ReadResponseHead()
				if err != nil {
					t.Fatalf("request %d: head: %v", i, err)
				}
				body, err := io.ReadAll(r)
				if head.Status != 200 || string(body) != `{"ok":true}` || err != nil {
					t.Errorf("request %d: one read gave %d %q, %v; want 200, the body and END", i, head.Status, body, err)
				}
			}
			count := 0
			conns.Range(func(any, any) bool { count++; return true })
			if count != 1 {
				t.Errorf("the upstream saw %d connections, want 1 kept alive", count)
			}
		})
	}
}

func TestCompressedBodyPassesThrough(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	io.WriteString(zw, strings.Repeat("hello ", 100))
	zw.Close()
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Accept-Encoding"); got != "gzip, br" {
			t.Errorf("upstream Accept-Encoding = %q, want the client's", got)
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(gz.Bytes())
	})
	h, _ := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
	e := serve(t, h, testPeer())
	head := getHead("/x")
	head.Header.Set("Accept-Encoding", "gzip, br")
	e.send(head, nil)
	rh, body, err := e.response()
	if err != nil {
		t.Fatal(err)
	}
	if rh.Header.Get("Content-Encoding") != "gzip" || !bytes.Equal(body, gz.Bytes()) {
		t.Errorf("got Content-Encoding %q and %d bytes, want the upstream's gzip bytes unchanged",
			rh.Header.Get("Content-Encoding"), len(body))
	}
	if rh.ContentLength != int64(gz.Len()) {
		t.Errorf("ContentLength = %d, want %d", rh.ContentLength, gz.Len())
	}
}

func TestStreamingEventsEachInOwnFrame(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			const events = 5
			next := make(chan struct{})
			var upProto atomic.Value
			srv := startUpstream(t, tr.tls, func(w http.ResponseWriter, r *http.Request) {
				upProto.Store(r.Proto)
				// Read the body first: Go's HTTP/1 server notices a
				// closed connection only after that.
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				rc := http.NewResponseController(w)
				rc.Flush()
				for i := range events {
					select {
					case <-next:
					case <-r.Context().Done():
						return
					}
					fmt.Fprintf(w, "data: {\"i\":%d}\n\n", i)
					rc.Flush()
				}
				select {
				case <-next:
				case <-r.Context().Done():
					return
				}
				io.WriteString(w, "data: [DONE]\n\n")
			})
			h, _ := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
			trustUpstream(h, "openai", srv, tr.h2)
			e := serve(t, h, testPeer())
			head := &proto.RequestHead{
				Method: http.MethodPost, Path: "/chat/completions", Header: http.Header{},
				RequestID: "req-sse", ContentLength: 15,
			}
			e.send(head, strings.NewReader(`{"stream":true}`))
			rh := e.readHead()
			if rh.Status != http.StatusOK {
				t.Fatalf("status = %d, want 200", rh.Status)
			}
			if want := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[tr.h2]; upProto.Load() != want {
				t.Errorf("upstream saw %v, want %s", upProto.Load(), want)
			}
			for i := range events {
				start := time.Now()
				next <- struct{}{} // the upstream sends event i now
				got, err := e.readOnce()
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				// The upstream is blocked until the next signal, so event
				// i arrived alone, as its own frame, without waiting for
				// anything after it.
				if want := fmt.Sprintf("data: {\"i\":%d}\n\n", i); string(got) != want {
					t.Fatalf("frame %d = %q, want %q", i, got, want)
				}
				if d := time.Since(start); d > time.Second {
					t.Errorf("event %d took %v, want well under 1s", i, d)
				}
			}
			next <- struct{}{}
			rest, err := io.ReadAll(e.r)
			if err != nil || string(rest) != "data: [DONE]\n\n" {
				t.Errorf("rest = %q, %v; want the [DONE] event and END", rest, err)
			}
		})
	}
}

func TestLargeBodiesIntact(t *testing.T) {
	for _, tr := range transports {
		for _, known := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/known_length=%v", tr.name, known), func(t *testing.T) {
				reqBody := make([]byte, 300<<10+17)
				respBody := make([]byte, 1<<20+3)
				rng := rand.NewChaCha8([32]byte{1})
				rng.Read(reqBody)
				rng.Read(respBody)
				got := make(chan string, 1)
				srv := startUpstream(t, tr.tls, func(w http.ResponseWriter, r *http.Request) {
					sum := sha256.New()
					n, err := io.Copy(sum, r.Body)
					if err != nil {
						t.Errorf("upstream reading body: %v", err)
					}
					got <- fmt.Sprintf("%d:%x", n, sum.Sum(nil))
					w.Write(respBody)
				})
				h, logs := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
				trustUpstream(h, "openai", srv, tr.h2)
				e := serve(t, h, testPeer())
				head := &proto.RequestHead{
					Method: http.MethodPost, Path: "/files", Header: http.Header{"Content-Type": {"application/octet-stream"}},
					RequestID: "req-big", ContentLength: int64(len(reqBody)),
				}
				if !known {
					head.ContentLength = -1
				}
				e.send(head, bytes.NewReader(reqBody))
				rh, body, err := e.response()
				if err != nil || rh.Status != http.StatusOK {
					t.Fatalf("got %v %v, want 200", rh, err)
				}
				want := sha256.Sum256(reqBody)
				if g := <-got; g != fmt.Sprintf("%d:%x", len(reqBody), want) {
					t.Errorf("upstream got %s, want %d:%x", g, len(reqBody), want)
				}
				if sha256.Sum256(body) != sha256.Sum256(respBody) {
					t.Errorf("response body: %d bytes with another hash, want %d bytes intact", len(body), len(respBody))
				}
				<-e.done
				line := lastLogLine(t, logs)
				if line["bytes_in"] != float64(len(reqBody)) || line["bytes_out"] != float64(len(respBody)) {
					t.Errorf("log bytes_in/out = %v/%v, want %d/%d", line["bytes_in"], line["bytes_out"], len(reqBody), len(respBody))
				}
			})
		}
	}
}

func TestEdgeAbortCancelsUpstream(t *testing.T) {
	for _, tr := range transports {
		for _, when := range []string{"mid-response", "before-head", "mid-upload"} {
			t.Run(tr.name+"/"+when, func(t *testing.T) {
				arrived := make(chan struct{})
				canceled := make(chan time.Time, 1)
				srv := startUpstream(t, tr.tls, func(w http.ResponseWriter, r *http.Request) {
					if when == "mid-upload" {
						buf := make([]byte, 10)
						io.ReadFull(r.Body, buf)
						close(arrived)
						io.Copy(io.Discard, r.Body) // fails when the relay gives up
					} else {
						io.Copy(io.Discard, r.Body)
					}
					if when == "mid-response" {
						w.Header().Set("Content-Type", "text/event-stream")
						io.WriteString(w, "data: 1\n\n")
						http.NewResponseController(w).Flush()
					}
					if when == "before-head" {
						close(arrived)
					}
					<-r.Context().Done()
					canceled <- time.Now()
				})
				h, logs := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
				trustUpstream(h, "openai", srv, tr.h2)
				e := serve(t, h, testPeer())
				head := &proto.RequestHead{
					Method: http.MethodPost, Path: "/chat/completions", Header: http.Header{},
					RequestID: "req-abort", ContentLength: 2,
				}
				if when == "mid-upload" {
					head.ContentLength = -1
					pr, pw := io.Pipe()
					defer pw.Close()
					e.send(head, pr)
					pw.Write([]byte("0123456789"))
					<-arrived
				} else {
					e.send(head, strings.NewReader("{}"))
				}
				switch when {
				case "mid-response":
					e.readHead()
					if b, err := e.readOnce(); err != nil || string(b) != "data: 1\n\n" {
						t.Fatalf("first event: %q %v", b, err)
					}
				case "before-head":
					<-arrived
				}
				aborted := time.Now()
				e.s.Abort(proto.CodeCancel)
				select {
				case at := <-canceled:
					if d := at.Sub(aborted); d > 200*time.Millisecond {
						t.Errorf("upstream saw the cancellation after %v, want within 200ms", d)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("upstream request never cancelled")
				}
				<-e.done
				line := lastLogLine(t, logs)
				if line["result"] != "edge_canceled" {
					t.Errorf("log result = %v, want edge_canceled", line["result"])
				}
			})
		}
	}
}

func TestUpstreamDiesMidBody(t *testing.T) {
	for _, tt := range []struct {
		name string
		resp string
	}{
		{"chunked", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n"},
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ndata: 1\n\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
				conn, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				brw.WriteString(tt.resp)
				brw.Flush()
				conn.Close()
			})
			h, logs := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
			e := serve(t, h, testPeer())
			e.send(getHead("/chat/completions"), nil)
			head, body, err := e.response()
			if head == nil || head.Status != http.StatusOK {
				t.Fatalf("head = %v, want 200", head)
			}
			if string(body) != "data: 1\n\n" {
				t.Errorf("body = %q, want the part that was sent", body)
			}
			if !isReset(err, proto.CodeUpstreamError) {
				t.Fatalf("got %v, want a RESET with code upstream_error (never a clean end)", err)
			}
			if !strings.Contains(err.Error(), `"openai"`) {
				t.Errorf("reset message %q does not name the upstream", err)
			}
			<-e.done
			if line := lastLogLine(t, logs); line["result"] != "upstream_error" {
				t.Errorf("log result = %v, want upstream_error", line["result"])
			}
		})
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h, _ := newTestHandler(t, testConfig(upstreamConfig("openai", "http://"+addr)))
	e := serve(t, h, testPeer())
	e.send(getHead("/models?secret_query=1"), nil)
	head, body, err := e.response()
	if err != nil {
		t.Fatal(err)
	}
	if head.Status != http.StatusBadGateway {
		t.Fatalf("status = %d, want 502", head.Status)
	}
	got := apiErrorOf(t, head, body)
	if got.Type != "server_error" || got.Code != "upstream_error" {
		t.Errorf("got %q %q, want server_error upstream_error", got.Type, got.Code)
	}
	if !strings.Contains(got.Message, `"openai"`) || !strings.Contains(got.Message, "airlock") {
		t.Errorf("message %q should name airlock and the upstream", got.Message)
	}
	if strings.Contains(got.Message, "secret_query") || strings.Contains(got.Message, addr) {
		t.Errorf("message %q shows the URL", got.Message)
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	up := upstreamConfig("openai", srv.URL)
	up.ResponseHeaderTimeout.Duration = 100 * time.Millisecond
	h, _ := newTestHandler(t, testConfig(up))
	e := serve(t, h, testPeer())
	e.send(getHead("/models"), nil)
	head, body, err := e.response()
	if err != nil {
		t.Fatal(err)
	}
	if head.Status != http.StatusGatewayTimeout {
		t.Fatalf("status = %d, want 504", head.Status)
	}
	if got := apiErrorOf(t, head, body); got.Type != "server_error" || got.Code != "upstream_timeout" {
		t.Errorf("got %q %q, want server_error upstream_timeout", got.Type, got.Code)
	}
}

func TestUpstreamChoice(t *testing.T) {
	var hitA, hitB atomic.Int64
	srvA := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) { hitA.Add(1); io.WriteString(w, "a") })
	srvB := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) { hitB.Add(1); io.WriteString(w, "b") })
	cfg := testConfig(upstreamConfig("a", srvA.URL), upstreamConfig("b", srvB.URL), upstreamConfig("c", srvB.URL))
	cfg.Edges[0].Upstreams = []string{"b", "a"} // b is this edge's default
	h, _ := newTestHandler(t, cfg)
	tests := []struct {
		name       string
		upstream   string
		peerKey    string
		wantStatus int
		wantBody   string
		wantType   string
	}{
		{"default is the edge's first", "", testEdgeKey, 200, "b", ""},
		{"named", "a", testEdgeKey, 200, "a", ""},
		{"forbidden", "c", testEdgeKey, 403, "", "permission_error"},
		{"unknown", "zzz", testEdgeKey, 403, "", "permission_error"},
		{"peer not in config", "a", fakeFingerprint("stranger"), 403, "", "permission_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := hitA.Load() + hitB.Load()
			peer := testPeer()
			peer.Key = tt.peerKey
			e := serve(t, h, peer)
			head := getHead("/models")
			head.Upstream = tt.upstream
			e.send(head, nil)
			rh, body, err := e.response()
			if err != nil {
				t.Fatal(err)
			}
			if rh.Status != tt.wantStatus {
				t.Fatalf("status = %d, want %d", rh.Status, tt.wantStatus)
			}
			if tt.wantType == "" {
				if string(body) != tt.wantBody {
					t.Errorf("body = %q, want %q", body, tt.wantBody)
				}
				return
			}
			if got := apiErrorOf(t, rh, body); got.Type != tt.wantType {
				t.Errorf("type = %q, want %q", got.Type, tt.wantType)
			}
			if after := hitA.Load() + hitB.Load(); after != before {
				t.Errorf("a refused request reached an upstream")
			}
		})
	}
}

func TestMethodsNotForwarded(t *testing.T) {
	var hits atomic.Int64
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	h, _ := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
	for _, m := range []string{"TRACE", "CONNECT", "TRACK"} {
		t.Run(m, func(t *testing.T) {
			e := serve(t, h, testPeer())
			head := getHead("/models")
			head.Method = m
			e.send(head, nil)
			rh, _, err := e.response()
			if err != nil || rh.Status != http.StatusMethodNotAllowed {
				t.Fatalf("got %v %v, want 405", rh, err)
			}
		})
	}
	if hits.Load() != 0 {
		t.Errorf("upstream got %d requests, want 0", hits.Load())
	}
}

// TestHeadTimeout: an edge that sends no head, or stops halfway through its
// frame header, has its stream aborted once the head timeout passes.
func TestHeadTimeout(t *testing.T) {
	for _, tt := range []struct {
		name string
		sent []byte
	}{
		{"nothing", nil},
		// A HEAD frame whose two-byte length stops after one byte.
		{"half a frame header", []byte{byte(proto.FrameHead), 0x80}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, logs := newTestHandler(t, testConfig(upstreamConfig("openai", "http://127.0.0.1:1")))
			h.headTimeout = 50 * time.Millisecond
			e := serve(t, h, testPeer())
			if tt.sent != nil {
				if _, err := e.s.Write(tt.sent); err != nil {
					t.Fatal(err)
				}
			}
			_, err := e.r.ReadResponseHead()
			if !isReset(err, proto.CodeProtocol) {
				t.Fatalf("got %v, want the stream aborted with code protocol_error", err)
			}
			<-e.done
			if line := lastLogLine(t, logs); line["result"] != "head_timeout" {
				t.Errorf("log result = %v, want head_timeout", line["result"])
			}
		})
	}
}

func TestBadHeadIsReset(t *testing.T) {
	h, _ := newTestHandler(t, testConfig(upstreamConfig("openai", "http://127.0.0.1:1")))
	e := serve(t, h, testPeer())
	go func() {
		// A DATA frame where the HEAD must be.
		e.s.Write([]byte{byte(proto.FrameData), 1, 'x'})
	}()
	_, err := e.r.ReadResponseHead()
	if !isReset(err, proto.CodeProtocol) {
		t.Fatalf("got %v, want a RESET with code protocol_error", err)
	}
}

func TestExchangeLogLine(t *testing.T) {
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	})
	h, logs := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
	e := serve(t, h, testPeer())
	head := &proto.RequestHead{
		Method: http.MethodPost, Path: "/chat/completions?api-version=secretish", Header: http.Header{},
		RequestID: "req-log", Client: "notebook", ContentLength: 13,
	}
	e.send(head, strings.NewReader(`{"prompt":1}`+"\n"))
	if _, _, err := e.response(); err != nil {
		t.Fatal(err)
	}
	<-e.done
	out := logs.String()
	for _, bad := range []string{"secretish", `"prompt"`, `{\"ok\":true}`, testKey} {
		if strings.Contains(out, bad) {
			t.Errorf("log contains %q:\n%s", bad, out)
		}
	}
	line := lastLogLine(t, logs)
	want := map[string]any{
		"msg": "exchange", "level": "DEBUG", "request_id": "req-log", "edge": "office", "client": "notebook",
		"upstream": "openai", "method": "POST", "path": "/chat/completions", "status": float64(200),
		"result": "ok", "bytes_in": float64(13), "bytes_out": float64(11), "session": "sess-1",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v, want %v", k, line[k], v)
		}
	}
	for _, k := range []string{"duration", "ttfb"} {
		if _, ok := line[k]; !ok {
			t.Errorf("log line has no %s", k)
		}
	}
}

// lastLogLine decodes the last JSON log line.
func lastLogLine(t *testing.T, logs *testlog.Buffer) map[string]any {
	t.Helper()
	lines := logs.Lines(t)
	if len(lines) == 0 {
		t.Fatal("no log line")
	}
	return lines[len(lines)-1]
}

// TestSuccessfulExchangeLogsAtDebug: the edge writes the access line, so a
// relay at info level logs only exchanges that failed.
func TestSuccessfulExchangeLogsAtDebug(t *testing.T) {
	var out strings.Builder
	logger := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	for _, tt := range []struct {
		result string
		want   bool
	}{{"ok", false}, {"upstream_error", true}} {
		out.Reset()
		s, _ := tunneltest.Pipe()
		ex := &exchange{h: &Handler{logger: logger}, s: s, result: tt.result, start: time.Now()}
		ex.log(context.Background())
		if got := out.Len() > 0; got != tt.want {
			t.Errorf("result %q: logged %v, want %v (%q)", tt.result, got, tt.want, out.String())
		}
	}
}
