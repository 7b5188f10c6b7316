package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
)

// clientsFor returns the HTTP clients to run a test with: HTTP/1.1 and h2c.
func clientsFor(t *testing.T, e *testEdge) map[string]*http.Client {
	return map[string]*http.Client{"http1": e.client, "h2c": h2cClient(t)}
}

// testTimeout bounds every exchange of a test, so that a regression fails
// instead of hanging.
const testTimeout = 5 * time.Second

func newRequest(t *testing.T, ctx context.Context, method, url string, body io.Reader) *http.Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, testTimeout)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+aliceKey)
	return req
}

// TestSSEStreaming checks that each DATA frame reaches the client before the
// relay sends the next one: nothing is buffered or merged.
func TestSSEStreaming(t *testing.T) {
	const events = 5
	for _, name := range []string{"http1", "h2c"} {
		t.Run(name, func(t *testing.T) {
			acks := make(chan int)
			e := newTestEdge(t, nil, func(t *testing.T, r *fakeRelay) {
				r.head(t)
				r.body()
				sendSSEHead(t, r)
				for i := range events {
					sent := time.Now()
					fmt.Fprintf(r.w, "data: {\"i\":%d}\n\n", i)
					select {
					case got := <-acks:
						if d := time.Since(sent); d > 50*time.Millisecond {
							t.Errorf("event %d took %v to reach the client, want < 50ms", got, d)
						}
					case <-time.After(2 * time.Second):
						t.Errorf("event %d did not reach the client before the next one was due", i)
						return
					}
				}
				fmt.Fprint(r.w, "data: [DONE]\n\n")
				r.w.End(nil)
			})
			client := clientsFor(t, e)[name]
			resp, err := client.Do(newRequest(t, t.Context(), "POST", e.URL+"/v1/chat/completions", strings.NewReader(`{"stream":true}`)))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			for k, want := range map[string]string{
				"Content-Type":      "text/event-stream; charset=utf-8",
				"Cache-Control":     "no-cache",
				"X-Accel-Buffering": "no",
				"Content-Encoding":  "",
			} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			br := bufio.NewReader(resp.Body)
			for i := range events {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if want := fmt.Sprintf("data: {\"i\":%d}\n", i); line != want {
					t.Fatalf("event %d = %q, want %q", i, line, want)
				}
				if blank, _ := br.ReadString('\n'); blank != "\n" {
					t.Fatalf("event %d: no blank line after it, got %q", i, blank)
				}
				if br.Buffered() != 0 {
					t.Fatalf("event %d arrived merged with later bytes", i)
				}
				select {
				case acks <- i:
				case <-time.After(2 * time.Second):
					t.Fatal("relay stopped waiting for acks")
				}
			}
			rest, err := io.ReadAll(br)
			if err != nil || string(rest) != "data: [DONE]\n\n" {
				t.Errorf("rest = %q, %v; want [DONE] and a clean end", rest, err)
			}
		})
	}
}

func sendSSEHead(t *testing.T, r *fakeRelay) {
	t.Helper()
	err := r.w.WriteResponseHead(&proto.ResponseHead{
		Status:        200,
		Header:        http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}, "X-Request-Id": {"req_up"}},
		ContentLength: -1,
	})
	if err != nil {
		t.Errorf("relay: writing head: %v", err)
	}
}

// hashRelay hashes the request body and answers with the hash and the
// head's ContentLength.
func hashRelay(t *testing.T, r *fakeRelay) {
	h := r.head(t)
	sum := sha256.New()
	if _, err := io.Copy(sum, r.r); err != nil {
		t.Errorf("relay: reading body: %v", err)
		r.w.Reset(proto.CodeInternal, "body failed")
		return
	}
	r.respond(t, 200, http.Header{"X-Content-Length": {strconv.FormatInt(h.ContentLength, 10)}}, hex.EncodeToString(sum.Sum(nil)))
}

func TestRequestBodyStreaming(t *testing.T) {
	data := make([]byte, 3<<20+12345)
	rnd := rand.NewChaCha8([32]byte{1})
	rnd.Read(data)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])

	e := newTestEdge(t, nil, hashRelay)
	for name, client := range clientsFor(t, e) {
		for _, tt := range []struct {
			name   string
			body   func() io.Reader
			wantCL string
		}{
			{"known length", func() io.Reader { return bytes.NewReader(data) }, strconv.Itoa(len(data))},
			{"chunked", func() io.Reader { return struct{ io.Reader }{bytes.NewReader(data)} }, "-1"},
		} {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				resp, err := client.Do(newRequest(t, t.Context(), "POST", e.URL+"/v1/files", tt.body()))
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				if string(b) != want {
					t.Errorf("relay got body with sha256 %s, want %s", b, want)
				}
				if got := resp.Header.Get("X-Content-Length"); got != tt.wantCL {
					t.Errorf("head ContentLength = %s, want %s", got, tt.wantCL)
				}
			})
		}
	}
}

// TestFullDuplex checks that the response streams while the request body is
// still being sent: each body chunk is echoed before the next is written.
func TestFullDuplex(t *testing.T) {
	const rounds = 3
	e := newTestEdge(t, nil, func(t *testing.T, r *fakeRelay) {
		r.head(t)
		sendSSEHead(t, r)
		buf := make([]byte, 64)
		for range rounds {
			n, err := r.r.Read(buf)
			if err != nil {
				t.Errorf("relay: reading body: %v", err)
				return
			}
			fmt.Fprintf(r.w, "echo:%s\n", buf[:n])
		}
		if rest, err := r.body(); err != nil || len(rest) != 0 {
			t.Errorf("relay: rest of body = %q, %v; want END", rest, err)
		}
		r.w.End(nil)
	})
	for name, client := range clientsFor(t, e) {
		t.Run(name, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			// The HTTP/2 client watches the request's context only once the
			// body is done: end the body when the test times out.
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
			pw1 := make(chan error, 1)
			go func() {
				_, err := io.WriteString(pw, "chunk0")
				pw1 <- err
			}()
			resp, err := client.Do(newRequest(t, ctx, "POST", e.URL+"/v1/realtime/x", pr))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if err := <-pw1; err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(resp.Body)
			for i := range rounds {
				line, err := br.ReadString('\n')
				if want := fmt.Sprintf("echo:chunk%d\n", i); line != want || err != nil {
					t.Fatalf("round %d: got %q, %v; want %q", i, line, err, want)
				}
				if i+1 < rounds {
					fmt.Fprintf(pw, "chunk%d", i+1)
				}
			}
			pw.Close()
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Errorf("rest = %q, %v; want a clean end", rest, err)
			}
		})
	}
}

func TestRequestTooLarge(t *testing.T) {
	const limit = 1 << 20
	cfg := testConfig()
	cfg.MaxRequestBodyBytes = limit
	relayErr := make(chan error, 1)
	e := newTestEdge(t, cfg, func(t *testing.T, r *fakeRelay) {
		r.head(t)
		_, err := io.Copy(io.Discard, r.r)
		if err == nil {
			r.respond(t, 200, nil, "whole")
		}
		relayErr <- err
	})

	t.Run("known length", func(t *testing.T) {
		resp, body := e.do(t, "POST", "/v1/files", bytes.NewReader(make([]byte, limit+1)), nil)
		checkErrorJSON(t, resp, body, 413, "invalid_request_error", "request_too_large")
		if n := e.opener.Calls(); n != 0 {
			t.Errorf("opener called %d times, want 0", n)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		resp, body := rawChunkedPost(t, e, 2*limit)
		checkErrorJSON(t, resp, body, 413, "invalid_request_error", "request_too_large")
		select {
		case err := <-relayErr:
			if !isReset(err, proto.CodeCancel) {
				t.Errorf("relay read error = %v, want a RESET with code cancel", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("relay did not see the request end")
		}
	})
	t.Run("chunked at the limit", func(t *testing.T) {
		resp, body := rawChunkedPost(t, e, limit)
		if resp.StatusCode != 200 || string(body) != "whole" {
			t.Errorf("got %d %q, want 200 whole", resp.StatusCode, body)
		}
		if err := <-relayErr; err != nil {
			t.Errorf("relay read error = %v, want none", err)
		}
	})
}

// rawChunkedPost sends n bytes as a chunked body over a raw connection, so
// that an early answer is read however the body's writing ends.
func rawChunkedPost(t *testing.T, e *testEdge, n int) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(testTimeout))
	written := make(chan struct{})
	go func() {
		defer close(written)
		fmt.Fprintf(conn, "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n", aliceKey)
		chunk := make([]byte, 64<<10)
		for n > 0 {
			c := min(n, len(chunk))
			if _, err := fmt.Fprintf(conn, "%x\r\n%s\r\n", c, chunk[:c]); err != nil {
				return
			}
			n -= c
		}
		io.WriteString(conn, "0\r\n\r\n")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	<-written
	return resp, body
}

func TestTunnelErrors(t *testing.T) {
	tests := []struct {
		name       string
		openErr    error
		relay      relayFunc
		wantStatus int
		wantCode   string
		wantRetry  bool
		wantMsg    string
	}{
		{
			name: "no session", openErr: fmt.Errorf("opening stream: %w", tunnel.ErrNoSession),
			wantStatus: 503, wantCode: "tunnel_unavailable", wantRetry: true, wantMsg: "no tunnel to a relay is up",
		},
		{
			name: "open timeout", openErr: fmt.Errorf("opening stream: %w", context.DeadlineExceeded),
			wantStatus: 503, wantCode: "tunnel_unavailable", wantRetry: true,
		},
		{
			name: "refused with RESET",
			relay: func(t *testing.T, r *fakeRelay) {
				r.head(t)
				r.body()
				r.w.Reset(proto.CodeRefused, "draining")
			},
			wantStatus: 503, wantCode: "tunnel_unavailable", wantRetry: true,
		},
		{
			name: "refused with abort",
			relay: func(t *testing.T, r *fakeRelay) {
				r.head(t)
				r.body()
				r.s.Abort(proto.CodeRefused)
			},
			wantStatus: 503, wantCode: "tunnel_unavailable", wantRetry: true,
		},
		{
			name: "upstream timeout",
			relay: func(t *testing.T, r *fakeRelay) {
				r.head(t)
				r.body()
				r.w.Reset(proto.CodeUpstreamTimeout, "")
			},
			wantStatus: 504, wantCode: "upstream_timeout",
		},
		{
			name: "upstream error before head",
			relay: func(t *testing.T, r *fakeRelay) {
				r.head(t)
				r.body()
				r.w.Reset(proto.CodeUpstreamError, "dial tcp: connection refused")
			},
			wantStatus: 502, wantCode: "upstream_error", wantMsg: "connection refused",
		},
		{
			name: "stream closed before head",
			relay: func(t *testing.T, r *fakeRelay) {
				r.head(t)
				r.body()
			},
			wantStatus: 502, wantCode: "upstream_error", wantMsg: "broke before the response head",
		},
		{
			name: "interim status",
			relay: func(t *testing.T, r *fakeRelay) {
				r.head(t)
				r.body()
				r.w.WriteResponseHead(&proto.ResponseHead{Status: 103, ContentLength: -1})
			},
			wantStatus: 502, wantCode: "upstream_error",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEdge(t, nil, tt.relay)
			e.opener.err = tt.openErr
			resp, body := e.do(t, "POST", "/v1/chat/completions", strings.NewReader("{}"), nil)
			msg := checkErrorJSON(t, resp, body, tt.wantStatus, "server_error", tt.wantCode)
			if got := resp.Header.Get("Retry-After"); (got == "1") != tt.wantRetry {
				t.Errorf("Retry-After = %q, want it set: %v", got, tt.wantRetry)
			}
			if !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message %q does not contain %q", msg, tt.wantMsg)
			}
		})
	}
}

// TestStreamCutAfterHead checks that a stream that breaks after the response
// head never looks complete to the client.
func TestStreamCutAfterHead(t *testing.T) {
	cuts := []struct {
		name string
		cut  func(r *fakeRelay)
	}{
		{"reset frame", func(r *fakeRelay) { r.w.Reset(proto.CodeUpstreamError, "upstream went away") }},
		{"stream abort", func(r *fakeRelay) { r.s.Abort(proto.CodeUpstreamError) }},
		{"stream closed without END", func(r *fakeRelay) { r.s.Close() }},
	}
	for _, cut := range cuts {
		for _, length := range []int64{-1, 1000} {
			relay := func(t *testing.T, r *fakeRelay) {
				r.head(t)
				r.body()
				r.w.WriteResponseHead(&proto.ResponseHead{Status: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, ContentLength: length})
				io.WriteString(r.w, "data: partial\n\n")
				cut.cut(r)
			}
			t.Run(fmt.Sprintf("%s/length %d/http client", cut.name, length), func(t *testing.T) {
				e := newTestEdge(t, nil, relay)
				for name, client := range clientsFor(t, e) {
					resp, err := client.Do(newRequest(t, t.Context(), "POST", e.URL+"/v1/chat/completions", nil))
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil {
						t.Errorf("%s: body %q ended cleanly, want an error", name, b)
					}
				}
			})
			t.Run(fmt.Sprintf("%s/length %d/raw", cut.name, length), func(t *testing.T) {
				e := newTestEdge(t, nil, relay)
				conn, err := net.Dial("tcp", e.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				fmt.Fprintf(conn, "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", aliceKey)
				conn.SetDeadline(time.Now().Add(testTimeout))
				all, err := io.ReadAll(conn)
				if err != nil {
					t.Fatalf("reading until the edge closes: %v (got %q)", err, all)
				}
				if !bytes.Contains(all, []byte("data: partial")) {
					t.Errorf("response %q lacks the partial body", all)
				}
				if length < 0 && bytes.HasSuffix(all, []byte("0\r\n\r\n")) {
					t.Errorf("response %q ends with the final chunk: a cut stream looks complete", all)
				}
				if length >= 0 {
					resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
					if err == nil {
						_, err = io.ReadAll(resp.Body)
					}
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Errorf("reading the response: %v, want unexpected EOF", err)
					}
				}
			})
		}
	}
}

// TestClientCancel checks that a client going away mid-response reaches the
// relay as a RESET with CodeCancel within 200 ms.
func TestClientCancel(t *testing.T) {
	for _, name := range []string{"http1", "h2c"} {
		t.Run(name, func(t *testing.T) {
			relayErr := make(chan error, 1)
			e := newTestEdge(t, nil, func(t *testing.T, r *fakeRelay) {
				r.head(t)
				r.body()
				sendSSEHead(t, r)
				io.WriteString(r.w, "data: 1\n\n")
				// Like the relay: the request ended with END and the
				// stream's FIN, so the edge's abort shows as the end of
				// the relay's send side (QUIC's STOP_SENDING), at once,
				// and as the reset its next write fails with.
				<-r.s.Context().Done()
				_, err := io.WriteString(r.w, "data: 2\n\n")
				relayErr <- err
			})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			resp, err := clientsFor(t, e)[name].Do(newRequest(t, ctx, "POST", e.URL+"/v1/chat/completions", strings.NewReader("{}")))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "data: 1\n" {
				t.Fatalf("first event = %q, %v", line, err)
			}
			cancel()
			start := time.Now()
			select {
			case err := <-relayErr:
				if !isReset(err, proto.CodeCancel) {
					t.Errorf("relay read error = %v, want a reset with code cancel", err)
				}
				if d := time.Since(start); d > 200*time.Millisecond {
					t.Errorf("relay learned of the cancel after %v, want < 200ms", d)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("relay never learned that the client went away")
			}
		})
	}
}

func TestResponseHeadersAndTrailers(t *testing.T) {
	e := newTestEdge(t, nil, func(t *testing.T, r *fakeRelay) {
		r.head(t)
		r.body()
		r.w.WriteResponseHead(&proto.ResponseHead{
			Status: 201,
			Header: http.Header{
				"Content-Type":          {"application/json"},
				"X-Request-Id":          {"req_123"},
				"Openai-Processing-Ms":  {"42"},
				"X-Ratelimit-Remaining": {"99"},
				"Retry-After":           {"3"},
				"Connection":            {"X-Hop"},
				"X-Hop":                 {"1"},
				"Keep-Alive":            {"timeout=1"},
				"Alt-Svc":               {"h3=\":443\""},
				"Content-Length":        {"999"},
			},
			ContentLength: -1,
		})
		io.WriteString(r.w, `{"ok":true}`)
		r.w.End(http.Header{"X-Usage-Tokens": {"17"}})
	})
	for name, client := range clientsFor(t, e) {
		t.Run(name, func(t *testing.T) {
			resp, err := client.Do(newRequest(t, t.Context(), "POST", e.URL+"/v1/batches", nil))
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != `{"ok":true}` || resp.StatusCode != 201 {
				t.Fatalf("got %d %q %v, want 201 {\"ok\":true}", resp.StatusCode, b, err)
			}
			for k, want := range map[string]string{
				"X-Request-Id": "req_123", "Openai-Processing-Ms": "42", "X-Ratelimit-Remaining": "99",
				"Retry-After": "3", "X-Hop": "", "Keep-Alive": "", "Alt-Svc": "", "Cache-Control": "",
			} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if resp.ContentLength != -1 {
				t.Errorf("ContentLength = %d, want -1 (the head's, not the header's)", resp.ContentLength)
			}
			if got := resp.Trailer.Get("X-Usage-Tokens"); got != "17" {
				t.Errorf("trailer X-Usage-Tokens = %q, want 17", got)
			}
		})
	}
}

// TestNoContentTypeAdded checks that a response without Content-Type stays
// without one: net/http must not sniff and add its own.
func TestNoContentTypeAdded(t *testing.T) {
	e := newTestEdge(t, nil, func(t *testing.T, r *fakeRelay) {
		r.head(t)
		r.body()
		r.respond(t, 200, nil, "<html>not sniffed</html>")
	})
	for name, client := range clientsFor(t, e) {
		resp, err := client.Do(newRequest(t, t.Context(), "GET", e.URL+"/v1/files/x/content", nil))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if ct, ok := resp.Header["Content-Type"]; ok {
			t.Errorf("%s: Content-Type = %q, want none", name, ct)
		}
	}
}

// The request direction ends with END and then the stream's FIN at once,
// with or without a body, so that the relay reads the end of the stream
// with the END and need not stop the edge's direction when it closes the
// stream (issue 9: a STOP_SENDING per exchange before).
func TestRequestEndsWithFIN(t *testing.T) {
	for _, tt := range []struct {
		name string
		body io.Reader
	}{
		{"no body", nil},
		{"body", strings.NewReader(`{"model":"m"}`)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			afterEnd := make(chan error, 1)
			e := newTestEdge(t, nil, func(t *testing.T, r *fakeRelay) {
				r.head(t)
				r.body()
				_, err := r.s.Read(make([]byte, 1))
				afterEnd <- err
				r.respond(t, 200, nil, "ok")
			})
			method := "GET"
			if tt.body != nil {
				method = "POST"
			}
			if resp, _ := e.do(t, method, "/v1/models", tt.body, nil); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if err := <-afterEnd; err != io.EOF {
				t.Errorf("relay read after END: %v, want io.EOF (the FIN)", err)
			}
		})
	}
}
