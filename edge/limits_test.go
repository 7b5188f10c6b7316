package edge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/config"
	"github.com/airlock-proxy/airlock/proto"
)

// rawRequest dials the test edge, writes req and returns the connection and
// a reader on it.
func rawRequest(t *testing.T, url, req string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	return c, bufio.NewReader(c)
}

// readClosed reads the rest of the connection and fails unless the edge
// closes it.
func readClosed(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("the edge kept the connection open: %v (read %q)", err, rest)
	}
	return string(rest)
}

// Issue 8, item 2: a head without a key that announces a body, then
// silence, must get its 401 at once and lose its connection; on 328ef46
// net/http first tried to read the body nobody sent, forever.
func TestSilentKeylessHeadGets401AndClose(t *testing.T) {
	for _, framing := range []string{"Content-Length: 1000", "Transfer-Encoding: chunked"} {
		t.Run(framing, func(t *testing.T) {
			e := newTestEdge(t, nil, nil)
			_, br := rawRequest(t, e.URL, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"+framing+"\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			checkErrorJSON(t, resp, body, http.StatusUnauthorized, "invalid_request_error", codeInvalidAPIKey)
			if resp.Header.Get(headerOverhead) == "" {
				t.Errorf("the 401 has no %s header", headerOverhead)
			}
			readClosed(t, br)
			if e.opener.Calls() != 0 {
				t.Errorf("%d tunnel streams opened for an unauthenticated request", e.opener.Calls())
			}
		})
	}
}

// Even a keyless request without a body loses its connection after the 401:
// an anonymous client gets no kept-alive connection to hold.
func TestKeylessKeepAliveIsClosed(t *testing.T) {
	e := newTestEdge(t, nil, nil)
	_, br := rawRequest(t, e.URL, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
		t.Errorf("status %d, close %v: want 401 and the connection closed", resp.StatusCode, resp.Close)
	}
	readClosed(t, br)
	var line map[string]any
	for _, l := range e.logs.Lines(t) {
		if l["msg"] == "request" {
			line = l
		}
	}
	if n, _ := line["bytes_out"].(float64); n == 0 {
		t.Errorf("access line %v: bytes_out = 0 for a 401 with a body", line)
	}
}

// A client that announces a body and stops sending it gets 408 after
// client_body_timeout, and the relay sees the request reset rather than
// complete.
func TestStalledBodyIs408(t *testing.T) {
	for _, tc := range []struct {
		name   string
		length int
		// streamed: the body is longer than wholeBodyMax, so the stream
		// opens with the head and the relay sees the reset; a smaller one
		// is read before any stream opens.
		streamed bool
	}{
		{"small body, read before the stream", 1000, false},
		{"large body, streamed", wholeBodyMax + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.ClientBodyTimeout = config.Duration{Duration: 200 * time.Millisecond}
			relayErr := make(chan error, 1)
			e := newTestEdge(t, cfg, func(t *testing.T, r *fakeRelay) {
				r.head(t)
				_, err := r.body()
				relayErr <- err
			})
			start := time.Now()
			_, br := rawRequest(t, e.URL, fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s"+
				"\r\nContent-Length: %d\r\n\r\n{\"model\":", aliceKey, tc.length))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			checkErrorJSON(t, resp, body, http.StatusRequestTimeout, "invalid_request_error", codeRequestTimeout)
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("408 after %v, want about 200ms", took)
			}
			if tc.streamed {
				if err := <-relayErr; !isReset(err, proto.CodeCancel) {
					t.Errorf("relay read the body with %v, want a reset", err)
				}
			} else if n := e.opener.Calls(); n != 0 {
				t.Errorf("opener called %d times, want 0: no stream for a body that never came", n)
			}
			readClosed(t, br)
		})
	}
}

// Issue 8, item 1: max_concurrent exchanges per client, then 429.
func TestMaxConcurrentPerClient(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConcurrent = 2
	release := make(chan struct{})
	var held sync.WaitGroup
	held.Add(2)
	e := newTestEdge(t, cfg, func(t *testing.T, r *fakeRelay) {
		h := r.head(t)
		if h.Path == "/hold" {
			held.Done()
			<-release
		}
		r.respond(t, 200, nil, "ok")
	})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { e.do(t, "GET", "/v1/hold", nil, nil) })
	}
	held.Wait()
	resp, body := e.do(t, "GET", "/v1/models", nil, nil)
	checkErrorJSON(t, resp, body, http.StatusTooManyRequests, "rate_limit_error", codeTooManyRequests)
	if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// Another client has slots of its own.
	resp, _ = e.do(t, "GET", "/v1/models", nil, map[string]string{"Authorization": "Bearer " + bobKey})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("bob got %d while alice was at her cap, want 200", resp.StatusCode)
	}
	close(release)
	wg.Wait()
	if resp, _ := e.do(t, "GET", "/v1/models", nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("after the held requests ended: %d, want 200", resp.StatusCode)
	}
}

// A per-client max_concurrent overrides the edge's, and a reload keeps
// counting the exchanges that started before it.
func TestMaxConcurrentSurvivesReload(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConcurrent = 5
	cfg.Clients[0].MaxConcurrent = 1
	release := make(chan struct{})
	held := make(chan struct{})
	e := newTestEdge(t, cfg, func(t *testing.T, r *fakeRelay) {
		if r.head(t).Path == "/hold" {
			close(held)
			<-release
		}
		r.respond(t, 200, nil, "ok")
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.do(t, "GET", "/v1/hold", nil, nil)
	}()
	<-held
	h := e.h
	if err := h.reload(cfg); err != nil {
		t.Fatal(err)
	}
	resp, body := e.do(t, "GET", "/v1/models", nil, nil)
	checkErrorJSON(t, resp, body, http.StatusTooManyRequests, "rate_limit_error", codeTooManyRequests)
	close(release)
	<-done
}

// A client that half-closes its side after a whole request never gets an
// empty 200 in the handler's name (328ef46 sent "200 OK" and
// "Content-Length: 0" without asking the relay).
func TestHalfCloseNeverGetsEmpty200(t *testing.T) {
	e := newTestEdge(t, nil, func(t *testing.T, r *fakeRelay) {
		// The edge may give up on the client at any point: no error
		// here is the test's concern.
		r.r.ReadRequestHead()
		time.Sleep(100 * time.Millisecond)
		r.w.WriteResponseHead(&proto.ResponseHead{Status: 200, Header: http.Header{}, ContentLength: -1})
		r.w.Write([]byte(`{"real":"answer"}`))
		r.w.End(nil)
	})
	c, br := rawRequest(t, e.URL, "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+aliceKey+"\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	got := readClosed(t, br)
	if got != "" && !strings.Contains(got, `{"real":"answer"}`) {
		t.Errorf("after a half-close the client got %q: want the real answer or no answer", got)
	}
	// The handler may still be on its way out: wait for its access line.
	deadline := time.Now().Add(testTimeout)
	for !strings.Contains(e.logs.String(), `"msg":"request"`) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// newLimitedEdge is a test edge whose listener caps the connections at
// maxConns and gives each the send timeout.
func newLimitedEdge(t *testing.T, maxConns int, sendTimeout time.Duration, relay relayFunc) (*testEdge, *clientListener) {
	t.Helper()
	return newEdgeWithListener(t, nil, maxConns, sendTimeout, relay)
}

// Issue 8, item 2: connections beyond max_client_connections get a 503 and
// are closed; they are counted.
func TestClientConnectionCap(t *testing.T) {
	e, cl := newLimitedEdge(t, 2, time.Minute, nil)
	var open []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		open = append(open, c)
	}
	// The two are accepted once the server has taken them.
	deadline := time.Now().Add(testTimeout)
	for cl.open.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	_, br := rawRequest(t, e.URL, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("over the cap: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	checkErrorJSON(t, resp, body, http.StatusServiceUnavailable, "server_error", "too_many_connections")
	if got := cl.refused.Load(); got != 1 {
		t.Errorf("refused = %d, want 1", got)
	}
	open[0].Close()
	for cl.open.Load() > 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	_, br = rawRequest(t, e.URL, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after one closed: %v, %v; want the edge's own 401", resp, err)
	}
}

// streamForever answers with a body that never ends, until stop is closed
// (then it aborts the stream) or a write fails; either way it reports on
// done what ended it (nil for stop).
func streamForever(stop <-chan struct{}, done chan<- error) relayFunc {
	return func(t *testing.T, r *fakeRelay) {
		r.head(t)
		if err := r.w.WriteResponseHead(&proto.ResponseHead{Status: 200, Header: http.Header{}, ContentLength: -1}); err != nil {
			done <- err
			return
		}
		chunk := make([]byte, 32<<10)
		for {
			select {
			case <-stop:
				r.s.Abort(proto.CodeCancel)
				done <- nil
				return
			default:
			}
			if _, err := r.w.Write(chunk); err != nil {
				done <- err
				return
			}
		}
	}
}

// Issue 8, item 1: a client that accepts no bytes for client_send_timeout
// has its exchange aborted, and the relay sees the reset, so the upstream
// call is cancelled.
func TestClientSendTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	relayErr := make(chan error, 1)
	e, _ := newLimitedEdge(t, 10, timeout, streamForever(nil, relayErr))
	rawRequest(t, e.URL, "GET /v1/download HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+aliceKey+"\r\n\r\n")
	select {
	case err := <-relayErr:
		if !isReset(err, proto.CodeCancel) {
			t.Errorf("relay write failed with %v, want a reset", err)
		}
	case <-time.After(testTimeout):
		t.Fatalf("a stalled client was not cut after %v (client_send_timeout %v)", testTimeout, timeout)
	}
}

// A write that makes progress gets a fresh timeout each time, however long
// the whole write takes; a write that makes none fails after the timeout.
// (Over TCP, progress is what the kernel reports; a pipe makes it exact.)
func TestClientConnWriteProgress(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name     string
		readEach time.Duration // the client takes one byte this often; 0: never
		wantErr  bool
	}{
		{"slow but steady", timeout / 5, false},
		{"stalled", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := net.Pipe()
			defer client.Close()
			cc := &clientConn{Conn: server, l: &clientListener{sendTimeout: timeout}}
			cc.l.open.Add(1)
			defer cc.Close()
			if tt.readEach > 0 {
				go func() {
					b := make([]byte, 1)
					for {
						time.Sleep(tt.readEach)
						if _, err := client.Read(b); err != nil {
							return
						}
					}
				}()
			}
			// Twelve bytes at one per 60 ms take about 0.7 s, more than
			// twice the timeout.
			start := time.Now()
			n, err := cc.Write([]byte("twelve bytes"))
			took := time.Since(start)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("Write: %d bytes, %v after %v; want an error: %v", n, err, took, tt.wantErr)
			}
			if tt.wantErr && !errors.Is(err, errSendTimeout) {
				t.Errorf("Write error %v, want it to wrap errSendTimeout", err)
			}
			if !tt.wantErr && took < timeout {
				t.Errorf("the write took %v, less than the timeout %v: the test proves nothing", took, timeout)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:8080", true},
		{"[::1]:8080", true},
		{"localhost:8080", true},
		{"127.0.0.2:8080", true},
		{":8080", false},
		{"0.0.0.0:8080", false},
		{"[::]:8080", false},
		{"10.0.0.1:8080", false},
		{"edge.example.com:8080", false},
	}
	for _, tt := range tests {
		if got := isLoopback(tt.addr); got != tt.want {
			t.Errorf("isLoopback(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

// Issue 8, item 4: auth = "none" on a network address needs
// allow_anonymous_network = true.
func TestAnonymousOnNetworkIsRefused(t *testing.T) {
	base := func(listen string, allow bool) *Config {
		c := &Config{Listen: listen, Auth: AuthNone, AllowAnonymousNetwork: allow, KeyFile: "k",
			Relays: []RelayConfig{{Address: "relay:7443", Key: testRelayKey}}}
		c.SetDefaults()
		return c
	}
	for _, tt := range []struct {
		listen  string
		allow   bool
		wantErr bool
	}{
		{"127.0.0.1:8080", false, false},
		{"0.0.0.0:8080", false, true},
		{":8080", false, true},
		{"0.0.0.0:8080", true, false},
	} {
		err := base(tt.listen, tt.allow).Validate()
		if (err != nil) != tt.wantErr {
			t.Errorf("listen %s, allow %v: %v, want error %v", tt.listen, tt.allow, err, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "allow_anonymous_network") {
			t.Errorf("error %q does not name allow_anonymous_network", err)
		}
	}
}

func TestHeadScanner(t *testing.T) {
	tests := []struct {
		name   string
		head   string
		cl, te bool
		ended  bool
	}{
		{"neither", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, false, true},
		{"length", "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", true, false, true},
		{"chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", false, true, true},
		{"both", "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", true, true, true},
		{"both, any case, bare LF", "POST / HTTP/1.1\nTRANSFER-encoding: chunked\ncontent-LENGTH: 3\n\n", true, true, true},
		{"not at a line start", "POST / HTTP/1.1\r\nX-Note: content-length: 3\r\nX-Transfer-Encoding: x\r\n\r\n", false, false, true},
		{"body after the head is not looked at", "POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\nTransfer-Encoding: chunked\r\n", true, false, true},
		{"unfinished", "POST / HTTP/1.1\r\nContent-Length: 3\r\n", true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every split of the head into two reads gives the same answer.
			for cut := range len(tt.head) + 1 {
				var s headScanner
				ended := s.scan([]byte(tt.head[:cut])) || s.scan([]byte(tt.head[cut:]))
				if ended != tt.ended || s.contentLength != tt.cl || s.transferEncoding != tt.te {
					t.Fatalf("cut at %d: ended %v, length %v, chunked %v; want %v, %v, %v",
						cut, ended, s.contentLength, s.transferEncoding, tt.ended, tt.cl, tt.te)
				}
			}
		})
	}
}

// FuzzHeadScanner: reading a head byte by byte finds what reading it at
// once finds.
func FuzzHeadScanner(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\nHost: x\n\n"))
	f.Add([]byte("\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var whole, bytewise headScanner
		endedWhole := whole.scan(b)
		endedBytewise := false
		for i := range b {
			if bytewise.scan(b[i : i+1]) {
				endedBytewise = true
				break
			}
		}
		if endedWhole != endedBytewise || whole.contentLength != bytewise.contentLength ||
			whole.transferEncoding != bytewise.transferEncoding {
			t.Fatalf("whole: %v %+v; byte by byte: %v %+v", endedWhole, whole, endedBytewise, bytewise)
		}
	})
}

// Issue 8, item 5: a request with both Content-Length and
// Transfer-Encoding is answered and its connection closed (RFC 9112,
// section 6.3); a plain chunked request keeps its connection.
func TestContentLengthAndChunkedCloses(t *testing.T) {
	e, _ := newLimitedEdge(t, 10, time.Minute, func(t *testing.T, r *fakeRelay) {
		r.head(t)
		r.body()
		r.respond(t, 200, nil, "ok")
	})
	chunked := func(extra string) string {
		return "POST /v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + aliceKey + "\r\n" +
			"Transfer-Encoding: chunked\r\n" + extra + "\r\n3\r\nabc\r\n0\r\n\r\n"
	}
	for _, tt := range []struct {
		name      string
		extra     string
		wantClose bool
	}{
		{"chunked", "", false},
		{"chunked with Content-Length", "Content-Length: 3\r\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, br := rawRequest(t, e.URL, chunked(tt.extra))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 200 || resp.Close != tt.wantClose {
				t.Fatalf("status %d, close %v; want 200, close %v", resp.StatusCode, resp.Close, tt.wantClose)
			}
			if tt.wantClose {
				readClosed(t, br)
				return
			}
			// The kept connection serves the next request, and the watch
			// saw its head afresh.
			io.WriteString(c, chunked("Content-Length: 3\r\n"))
			resp, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			if !resp.Close {
				t.Error("the second, ambiguous request on a kept connection did not close it")
			}
		})
	}
}

// The same over HTTP/2, where one stream can stall on its own window while
// its connection flows: the stream's write deadline cuts it.
func TestClientSendTimeoutHTTP2(t *testing.T) {
	cfg := testConfig()
	cfg.ClientSendTimeout = config.Duration{Duration: 300 * time.Millisecond}
	relayErr := make(chan error, 1)
	e := newTestEdge(t, cfg, streamForever(nil, relayErr))
	req := newRequest(t, t.Context(), "GET", e.URL+"/v1/download", nil)
	resp, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("got HTTP/%d, want HTTP/2", resp.ProtoMajor)
	}
	select {
	case err := <-relayErr:
		if !isReset(err, proto.CodeCancel) {
			t.Errorf("relay write failed with %v, want a reset", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("an HTTP/2 client that stopped reading was not cut")
	}
}
