package http1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	// exchangeTimeout bounds each exchange of a test, so that a hang
	// fails the test instead of stalling the run.
	exchangeTimeout = 5 * time.Second
	// prompt is how soon an exchange must end once cancelled or timed out.
	prompt = time.Second
	// serverTimeout bounds every connection of a raw test server.
	serverTimeout = 10 * time.Second
	// testHost is the Host the tests' requests carry.
	testHost = "example.test"
)

// testCtx returns the test's context, bounded by exchangeTimeout.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), exchangeTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newTestPool returns a pool for addr, closed when the test ends.
func newTestPool(t testing.TB, addr string, opt Options) *Pool {
	opt.Addr = addr
	p := NewPool(opt)
	t.Cleanup(p.Close)
	return p
}

// get returns a GET request for target.
func get(target string) *Request {
	return &Request{Method: http.MethodGet, Target: target, Host: testHost}
}

// do makes req on p and reads the whole response body.
func do(t testing.TB, p *Pool, req *Request) (*http.Response, string) {
	t.Helper()
	resp, err := p.RoundTrip(testCtx(t), req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.Target, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.Target, err)
	}
	return resp, string(b)
}

// leakCheck fails t if, once t and its cleanups are done, goroutines run
// that did not run when leakCheck was called. Call it first in a test.
func leakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// waitFor waits for a value on ch, failing t after exchangeTimeout.
func waitFor[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(exchangeTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// httpServer is an httptest.Server that counts its connections.
type httpServer struct {
	*httptest.Server
	conns  atomic.Int32  // connections accepted
	closed chan struct{} // a value for each connection closed
}

// newHTTPServer starts an httptest server, with TLS if tlsOn; it is closed
// when the test ends.
func newHTTPServer(t testing.TB, h http.HandlerFunc, tlsOn bool) *httpServer {
	s := &httpServer{Server: httptest.NewUnstartedServer(h), closed: make(chan struct{}, 1024)}
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.closed <- struct{}{}
		}
	}
	if tlsOn {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// addr is the server's host:port.
func (s *httpServer) addr() string { return s.Listener.Addr().String() }

// rawServer is a loopback TCP server whose connections are handed to a
// function of the test, to write hand-made responses.
type rawServer struct {
	addr  string
	conns atomic.Int32 // connections accepted

	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	open   []net.Conn
	closed bool
}

// serveFunc serves the i-th connection (from 0) accepted by a rawServer;
// br reads c. The connection is closed when it returns.
type serveFunc func(c net.Conn, br *bufio.Reader, i int)

// newRawServer starts a raw server; when the test ends it is stopped, its
// connections are closed, and its goroutines have returned.
func newRawServer(t testing.TB, serve serveFunc) *rawServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: ln.Addr().String(), ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := int(s.conns.Add(1)) - 1
			c.SetDeadline(time.Now().Add(serverTimeout))
			s.mu.Lock()
			if s.closed {
				c.Close()
			}
			s.open = append(s.open, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c), i)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		s.closed = true
		for _, c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// readRequest reads one request, body included, from br.
func readRequest(br *bufio.Reader) (*http.Request, []byte, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

// okResponse is the answer of serveOK.
const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// serveOK answers every request on c with okResponse.
func serveOK(c net.Conn, br *bufio.Reader) {
	for {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		if _, err := io.WriteString(c, okResponse); err != nil {
			return
		}
	}
}

// drain reads c until the client closes it (or the server's deadline).
func drain(c net.Conn) { io.Copy(io.Discard, c) }

// firstThenOK serves the first request of the first connection with first
// (then closes it if closeAfter), and everything else with okResponse.
func firstThenOK(first string, closeAfter bool) serveFunc {
	return func(c net.Conn, br *bufio.Reader, i int) {
		if i == 0 {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, first); err != nil || closeAfter {
				return
			}
		}
		serveOK(c, br)
	}
}

// randomBytes returns n pseudo-random bytes, the same for the same n.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)}).Read(b)
	return b
}

// readerOnly hides every method of its reader but Read (io.WriterTo in
// particular), so that the pool copies it by reads.
type readerOnly struct{ io.Reader }

// bodyKinds are the two ways the pool copies a streamed request body: by
// reads of an io.Reader, or by the body's own io.WriterTo.
var bodyKinds = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"Reader", func(r io.Reader) io.Reader { return readerOnly{r} }},
	{"WriterTo", func(r io.Reader) io.Reader { return io.MultiReader(r) }}, // a multiReader is an io.WriterTo
}

// errorContains fails t unless err is an error whose text contains want.
func errorContains(t testing.TB, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

// seenRequest is what an httptest handler saw of a request.
type seenRequest struct {
	method, uri, host, proto string
	header                   http.Header
	contentLength            int64
	transferEncoding         []string
	body                     string
	close                    bool
}

// TestRoundTrip proves that requests reach an httptest server as they were
// made (method, target, Host, headers, body and its framing: Content-Length,
// chunked when the length is unknown, "Content-Length: 0" for a POST, PUT or
// PATCH without a body, none otherwise), that framing headers set in
// Request.Header are ignored, and that the response comes back whole.
func TestRoundTrip(t *testing.T) {
	seen := make(chan seenRequest, 100)
	srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("server reading body: %v", err)
		}
		seen <- seenRequest{
			method: r.Method, uri: r.RequestURI, host: r.Host, proto: r.Proto,
			header: r.Header.Clone(), contentLength: r.ContentLength,
			transferEncoding: r.TransferEncoding, body: string(body), close: r.Close,
		}
		w.Header().Set("X-Reply", "yes")
		w.Header()["X-Multi"] = []string{"a", "b"}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "reply:"+string(body))
	}, false)
	p := newTestPool(t, srv.addr(), Options{MaxIdle: 1})

	tests := []struct {
		name     string
		req      Request
		wantCL   int64    // the length the server parsed
		wantCLH  []string // the Content-Length header fields it saw
		wantTE   []string
		wantBody string
	}{
		{
			name: "GET with query and headers",
			req: Request{Method: "GET", Target: "/a/b%20c?x=1&y=%2F", Host: testHost,
				Header: http.Header{"X-Test": {"1", "2"}, "User-Agent": {"airlock-test"}}},
		},
		{
			name:    "POST with a small body",
			req:     Request{Method: "POST", Target: "/post", Host: testHost, Body: strings.NewReader("hello"), ContentLength: 5},
			wantCL:  5,
			wantCLH: []string{"5"}, wantBody: "hello",
		},
		{
			name:     "POST with a body of unknown length is chunked",
			req:      Request{Method: "POST", Target: "/chunked", Host: testHost, Body: strings.NewReader("streamed body"), ContentLength: -1},
			wantCL:   -1,
			wantTE:   []string{"chunked"},
			wantBody: "streamed body",
		},
		{
			name:    "POST without a body sends Content-Length 0",
			req:     Request{Method: "POST", Target: "/empty", Host: testHost},
			wantCLH: []string{"0"},
		},
		{
			name:    "PUT without a body sends Content-Length 0",
			req:     Request{Method: "PUT", Target: "/empty", Host: testHost},
			wantCLH: []string{"0"},
		},
		{
			name:    "PATCH without a body sends Content-Length 0",
			req:     Request{Method: "PATCH", Target: "/empty", Host: testHost},
			wantCLH: []string{"0"},
		},
		{
			name:    "POST with an empty body",
			req:     Request{Method: "POST", Target: "/empty", Host: testHost, Body: strings.NewReader(""), ContentLength: 0},
			wantCLH: []string{"0"},
		},
		{
			name: "DELETE without a body sends no Content-Length",
			req:  Request{Method: "DELETE", Target: "/x", Host: testHost},
		},
		{
			name: "ContentLength without Body is ignored",
			req:  Request{Method: "GET", Target: "/x", Host: testHost, ContentLength: 10},
		},
		{
			name: "framing headers in Header are ignored",
			req: Request{Method: "POST", Target: "/framing", Host: testHost,
				Header: http.Header{
					"Host":              {"evil.test"},
					"Content-Length":    {"99"},
					"Transfer-Encoding": {"chunked"},
					"Connection":        {"close"},
				},
				Body: strings.NewReader("abc"), ContentLength: 3},
			wantCL:   3,
			wantCLH:  []string{"3"},
			wantBody: "abc",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			resp, body := do(t, p, &req)
			s := waitFor(t, seen, "the request the server saw") // sent before the response

			if s.method != req.Method || s.uri != req.Target || s.host != testHost || s.proto != "HTTP/1.1" {
				t.Errorf("server saw %s %s %s, Host %q; want %s %s HTTP/1.1, Host %q",
					s.method, s.uri, s.proto, s.host, req.Method, req.Target, testHost)
			}
			for name, values := range req.Header {
				if framingHeader(name) {
					continue
				}
				if got := s.header[name]; !slices.Equal(got, values) {
					t.Errorf("server saw %s %q, want %q", name, got, values)
				}
			}
			if s.contentLength != tt.wantCL {
				t.Errorf("server parsed ContentLength %d, want %d", s.contentLength, tt.wantCL)
			}
			if got := s.header["Content-Length"]; !slices.Equal(got, tt.wantCLH) {
				t.Errorf("server saw Content-Length %q, want %q", got, tt.wantCLH)
			}
			if !slices.Equal(s.transferEncoding, tt.wantTE) {
				t.Errorf("server saw Transfer-Encoding %q, want %q", s.transferEncoding, tt.wantTE)
			}
			if got := s.header["Connection"]; got != nil || s.close {
				t.Errorf("server saw Connection %q (close %v), want none", got, s.close)
			}
			if s.body != tt.wantBody {
				t.Errorf("server read body %q, want %q", s.body, tt.wantBody)
			}

			if resp.StatusCode != http.StatusCreated || resp.Status != "201 Created" {
				t.Errorf("status %d %q, want 201 \"201 Created\"", resp.StatusCode, resp.Status)
			}
			if resp.Proto != "HTTP/1.1" || resp.ProtoMajor != 1 || resp.ProtoMinor != 1 {
				t.Errorf("proto %q %d.%d, want HTTP/1.1", resp.Proto, resp.ProtoMajor, resp.ProtoMinor)
			}
			if got := resp.Header.Get("X-Reply"); got != "yes" {
				t.Errorf("X-Reply %q, want yes", got)
			}
			if got := resp.Header["X-Multi"]; !slices.Equal(got, []string{"a", "b"}) {
				t.Errorf("X-Multi %q, want [a b]", got)
			}
			if want := "reply:" + tt.wantBody; body != want {
				t.Errorf("body %q, want %q", body, want)
			}
			if want := int64(len("reply:" + tt.wantBody)); resp.ContentLength != want {
				t.Errorf("ContentLength %d, want %d", resp.ContentLength, want)
			}
		})
	}
}

// TestKeepAlive proves that sequential requests share one connection when
// the pool keeps idle ones, that each gets its own when MaxIdle is 0 (and
// that those are closed), and that Pool.Close closes the idle one.
func TestKeepAlive(t *testing.T) {
	for _, tt := range []struct {
		maxIdle   int
		wantConns int32
	}{
		{maxIdle: 1, wantConns: 1},
		{maxIdle: 0, wantConns: 5},
	} {
		t.Run(fmt.Sprintf("MaxIdle=%d", tt.maxIdle), func(t *testing.T) {
			srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, r.URL.Path)
			}, false)
			p := newTestPool(t, srv.addr(), Options{MaxIdle: tt.maxIdle})
			for i := range 5 {
				target := fmt.Sprintf("/req/%d", i)
				if _, body := do(t, p, get(target)); body != target {
					t.Fatalf("body %q, want %q", body, target)
				}
			}
			if n := srv.conns.Load(); n != tt.wantConns {
				t.Errorf("%d connections, want %d", n, tt.wantConns)
			}
			// The client closed every connection it did not keep.
			for range int(tt.wantConns) - tt.maxIdle {
				waitFor(t, srv.closed, "a connection the pool did not keep to close")
			}
			select {
			case <-srv.closed:
				t.Fatal("the idle connection was closed before Pool.Close")
			default:
			}
			p.Close()
			for range tt.maxIdle {
				waitFor(t, srv.closed, "Pool.Close to close the idle connection")
			}
		})
	}
}

// TestNewConnectionAfter proves that after each kind of response that
// leaves a connection unusable the next request dials a new one, while the
// server keeps the old one open (so it is the client that gave it up), and
// that after an ordinary response it does not.
func TestNewConnectionAfter(t *testing.T) {
	tests := []struct {
		name      string
		first     string
		readBytes int // read this much of the body, then Close (-1: to EOF)
		wantConns int32
	}{
		{name: "a kept-alive response", first: okResponse, readBytes: -1, wantConns: 1},
		{name: "Connection: close", first: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", readBytes: -1, wantConns: 2},
		{name: "Connection: close among other tokens", first: "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok", readBytes: -1, wantConns: 2},
		{name: "an HTTP/1.0 response", first: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", readBytes: -1, wantConns: 2},
		{name: "an HTTP/1.0 response with keep-alive", first: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", readBytes: -1, wantConns: 2},
		{name: "a body closed before its end", first: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", readBytes: 3, wantConns: 2},
		{name: "a chunked body closed before its end", first: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", readBytes: 3, wantConns: 2},
		{name: "a chunked body closed after its last byte", first: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", readBytes: 5, wantConns: 1},
		{name: "a body read exactly, then closed", first: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", readBytes: 10, wantConns: 1},
		{name: "an empty body closed unread", first: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", readBytes: 0, wantConns: 1},
		{name: "bytes after the body", first: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", readBytes: -1, wantConns: 2},
		{name: "both Content-Length and chunked", first: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", readBytes: -1, wantConns: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, firstThenOK(tt.first, false))
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
			resp, err := p.RoundTrip(testCtx(t), get("/first"))
			if err != nil {
				t.Fatal(err)
			}
			if tt.readBytes < 0 {
				_, err = io.ReadAll(resp.Body)
			} else {
				_, err = io.ReadFull(resp.Body, make([]byte, tt.readBytes))
			}
			if err != nil {
				t.Fatalf("reading body: %v", err)
			}
			if err := resp.Body.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, body := do(t, p, get("/second")); body != "ok" {
				t.Fatalf("second body %q, want ok", body)
			}
			if n := srv.conns.Load(); n != tt.wantConns {
				t.Errorf("%d connections, want %d", n, tt.wantConns)
			}
		})
	}
}

// TestBodyAfterClose proves that reads of a closed body fail, and that
// Close may be called again.
func TestBodyAfterClose(t *testing.T) {
	srv := newRawServer(t, firstThenOK("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", false))
	p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
	resp, err := p.RoundTrip(testCtx(t), get("/"))
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Body.Close(); err != nil {
		t.Fatal(err)
	}
	n, err := resp.Body.Read(make([]byte, 10))
	if n != 0 || err == nil || err == io.EOF {
		t.Fatalf("Read after Close: %d, %v; want 0 and an error", n, err)
	}
	errorContains(t, err, "closed")
	if err := resp.Body.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestPoolClose proves that Pool.Close closes an idle connection, and one
// whose round trip finishes after it; and that the round trip in progress
// still completes.
func TestPoolClose(t *testing.T) {
	for _, finishAfterClose := range []bool{false, true} {
		t.Run(fmt.Sprintf("finishAfterClose=%v", finishAfterClose), func(t *testing.T) {
			eof := make(chan struct{}, 10)
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, i int) {
				if _, _, err := readRequest(br); err != nil {
					return
				}
				io.WriteString(c, okResponse)
				// Whatever ends this read is the client closing, as
				// no request comes after.
				br.ReadByte()
				eof <- struct{}{}
			})
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
			resp, err := p.RoundTrip(testCtx(t), get("/"))
			if err != nil {
				t.Fatal(err)
			}
			if finishAfterClose {
				p.Close()
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil || string(body) != "ok" {
				t.Fatalf("body %q, %v; want ok", body, err)
			}
			if !finishAfterClose {
				select {
				case <-eof:
					t.Fatal("the connection was closed before Pool.Close")
				default:
				}
				p.Close()
			}
			waitFor(t, eof, "the connection to be closed")
		})
	}
}

// TestIdleTimeout proves that a connection that rested longer than
// IdleTimeout is not used again, and one that rested less is.
func TestIdleTimeout(t *testing.T) {
	for _, tt := range []struct {
		idle      time.Duration
		wantConns int32
	}{
		{idle: 20 * time.Millisecond, wantConns: 2},
		{idle: time.Minute, wantConns: 1},
	} {
		t.Run(tt.idle.String(), func(t *testing.T) {
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) { serveOK(c, br) })
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1, IdleTimeout: tt.idle})
			do(t, p, get("/"))
			time.Sleep(50 * time.Millisecond) // rest: longer than 20ms
			do(t, p, get("/"))
			if n := srv.conns.Load(); n != tt.wantConns {
				t.Errorf("%d connections, want %d", n, tt.wantConns)
			}
		})
	}
}

// TestMaxIdle proves that no more than MaxIdle connections rest in the
// pool: of two finished at once, one is closed, and the other serves the
// next requests.
func TestMaxIdle(t *testing.T) {
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/held" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-release
		}
		io.WriteString(w, "done")
	}, false)
	t.Cleanup(releaseOnce) // before the server's Close, which waits for handlers
	p := newTestPool(t, srv.addr(), Options{MaxIdle: 1})
	ctx := testCtx(t)
	var resps []*http.Response
	for range 2 {
		resp, err := p.RoundTrip(ctx, get("/held"))
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	releaseOnce()
	for _, resp := range resps {
		if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "done" {
			t.Fatalf("body %q, %v", b, err)
		}
	}
	waitFor(t, srv.closed, "the second connection to be closed")
	for range 3 {
		do(t, p, get("/"))
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	select {
	case <-srv.closed:
		t.Error("the idle connection was closed too")
	default:
	}
}

// TestResponseFraming proves that bodies delimited every way a response can
// delimit them are read whole, no further, with ContentLength,
// TransferEncoding, Trailer and Close set as net/http would, and that the
// connection serves the next request when it can.
func TestResponseFraming(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		resp       string
		closeAfter bool // the server closes the connection after resp
		wantBody   string
		wantCL     int64
		wantTE     []string
		wantTrail  http.Header
		wantClose  bool
		wantConns  int32
		wantHeader http.Header // fields that must be in resp.Header, or absent if nil
	}{
		{
			name:     "Content-Length",
			resp:     "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
			wantBody: "hello", wantCL: 5, wantConns: 1,
		},
		{
			name:     "repeated equal Content-Length",
			resp:     "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
			wantBody: "hello", wantCL: 5, wantConns: 1,
		},
		{
			name:     "Content-Length 0",
			resp:     "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
			wantBody: "", wantCL: 0, wantConns: 1,
		},
		{
			name:     "chunked",
			resp:     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
			wantBody: "hello world", wantCL: -1, wantTE: []string{"chunked"}, wantConns: 1,
			wantHeader: http.Header{"Transfer-Encoding": nil},
		},
		{
			name:     "chunked, spelt in capitals",
			resp:     "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
			wantBody: "ok", wantCL: -1, wantTE: []string{"chunked"}, wantConns: 1,
		},
		{
			name:     "chunked with trailers",
			resp:     "HTTP/1.1 200 OK\r\nTrailer: X-A, X-B\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-A: 1\r\nx-b: 2\r\n\r\n",
			wantBody: "hello", wantCL: -1, wantTE: []string{"chunked"}, wantConns: 1,
			wantTrail: http.Header{"X-A": {"1"}, "X-B": {"2"}},
		},
		{
			name:     "chunked and Content-Length: chunked wins, connection not reused",
			resp:     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			wantBody: "hello", wantCL: -1, wantTE: []string{"chunked"}, wantClose: true, wantConns: 2,
			wantHeader: http.Header{"Content-Length": nil},
		},
		{
			name:       "read until close",
			resp:       "HTTP/1.1 200 OK\r\nX-Framing: none\r\n\r\nuntil the end",
			closeAfter: true,
			wantBody:   "until the end", wantCL: -1, wantClose: true, wantConns: 2,
		},
		{
			name:       "HTTP/1.0 read until close",
			resp:       "HTTP/1.0 200 OK\r\n\r\nold",
			closeAfter: true,
			wantBody:   "old", wantCL: -1, wantClose: true, wantConns: 2,
		},
		{
			name:     "204 has no body",
			resp:     "HTTP/1.1 204 No Content\r\n\r\n",
			wantBody: "", wantCL: 0, wantConns: 1,
		},
		{
			name:     "304 has no body despite Content-Length",
			resp:     "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
			wantBody: "", wantCL: 0, wantConns: 1,
		},
		{
			name:     "204 has no body despite chunked",
			resp:     "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
			wantBody: "", wantCL: 0, wantConns: 1,
		},
		{
			name:     "HEAD: ContentLength from the header, no body read",
			method:   http.MethodHead,
			resp:     "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
			wantBody: "", wantCL: 1234, wantConns: 1,
		},
		{
			name:     "HEAD with chunked",
			method:   http.MethodHead,
			resp:     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
			wantBody: "", wantCL: -1, wantConns: 1,
		},
		{
			name:     "HEAD with a malformed Content-Length",
			method:   http.MethodHead,
			resp:     "HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
			wantBody: "", wantCL: -1, wantConns: 1,
		},
		{
			name:     "status line without a reason",
			resp:     "HTTP/1.1 299\r\nContent-Length: 2\r\n\r\nok",
			wantBody: "ok", wantCL: 2, wantConns: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, firstThenOK(tt.resp, tt.closeAfter))
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
			req := get("/")
			if tt.method != "" {
				req.Method = tt.method
			}
			resp, err := p.RoundTrip(testCtx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.ContentLength != tt.wantCL {
				t.Errorf("ContentLength %d, want %d", resp.ContentLength, tt.wantCL)
			}
			if !slices.Equal(resp.TransferEncoding, tt.wantTE) {
				t.Errorf("TransferEncoding %q, want %q", resp.TransferEncoding, tt.wantTE)
			}
			if resp.Close != tt.wantClose {
				t.Errorf("Close %v, want %v", resp.Close, tt.wantClose)
			}
			for name, want := range tt.wantHeader {
				if got := resp.Header[name]; !slices.Equal(got, want) {
					t.Errorf("header %s %q, want %q", name, got, want)
				}
			}
			if len(resp.Trailer) != 0 {
				t.Errorf("Trailer %v before the body's end, want none", resp.Trailer)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("reading body: %v", err)
			}
			if string(body) != tt.wantBody {
				t.Errorf("body %q, want %q", body, tt.wantBody)
			}
			if !equalHeader(resp.Trailer, tt.wantTrail) {
				t.Errorf("Trailer %v, want %v", resp.Trailer, tt.wantTrail)
			}
			// Reads at the end keep returning io.EOF.
			if n, err := resp.Body.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("Read at the end: %d, %v; want 0, EOF", n, err)
			}
			resp.Body.Close()
			if _, body := do(t, p, get("/next")); body != "ok" {
				t.Fatalf("next body %q, want ok", body)
			}
			if n := srv.conns.Load(); n != tt.wantConns {
				t.Errorf("%d connections, want %d", n, tt.wantConns)
			}
		})
	}
}

// equalHeader reports whether a and b hold the same fields, nil and empty
// being equal.
func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestTrailerFromNetHTTP proves that trailers a net/http server sends after
// a chunked body arrive in resp.Trailer, only once the body has returned
// io.EOF, and that the connection is reused after them.
func TestTrailerFromNetHTTP(t *testing.T) {
	srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "part one, ")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part two")
		w.Header().Set("X-Sum", "42")
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	}, false)
	p := newTestPool(t, srv.addr(), Options{MaxIdle: 1})
	for range 2 {
		resp, err := p.RoundTrip(testCtx(t), get("/"))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Trailer != nil {
			t.Errorf("Trailer %v before the body was read", resp.Trailer)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || string(body) != "part one, part two" {
			t.Fatalf("body %q, %v", body, err)
		}
		want := http.Header{"X-Sum": {"42"}, "X-Late": {"yes"}}
		if !equalHeader(resp.Trailer, want) {
			t.Errorf("Trailer %v, want %v", resp.Trailer, want)
		}
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// TestLargeBodies proves that bodies of sizes around SmallBody and of
// megabytes, of known and unknown length, copied by reads or by their own
// WriteTo, go up and come back byte for byte, framed as they should be.
func TestLargeBodies(t *testing.T) {
	type upload struct {
		cl  int64
		te  []string
		err error
	}
	seen := make(chan upload, 100)
	srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		seen <- upload{cl: r.ContentLength, te: r.TransferEncoding, err: err}
		if err != nil {
			return
		}
		if r.URL.Query().Get("length") == "known" {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		w.Write(body)
	}, false)
	p := newTestPool(t, srv.addr(), Options{MaxIdle: 1})
	for _, size := range []int{1, SmallBody - 1, SmallBody, SmallBody + 1, 3 << 20} {
		data := randomBytes(size)
		for _, known := range []bool{true, false} {
			for _, kind := range bodyKinds {
				t.Run(fmt.Sprintf("%d bytes, known length %v, %s", size, known, kind.name), func(t *testing.T) {
					req := &Request{Method: "POST", Target: "/echo", Host: testHost,
						Body: kind.wrap(bytes.NewReader(data)), ContentLength: int64(size)}
					wantCL, wantTE := int64(size), []string(nil)
					if known {
						req.Target += "?length=known"
					} else {
						req.ContentLength, wantCL, wantTE = -1, -1, []string{"chunked"}
					}
					resp, body := do(t, p, req)
					u := waitFor(t, seen, "the upload the server saw")
					if u.err != nil {
						t.Errorf("server reading body: %v", u.err)
					}
					if u.cl != wantCL || !slices.Equal(u.te, wantTE) {
						t.Errorf("server saw ContentLength %d, Transfer-Encoding %q; want %d, %q", u.cl, u.te, wantCL, wantTE)
					}
					if !bytes.Equal([]byte(body), data) {
						t.Errorf("echoed body differs: %d bytes, want %d", len(body), size)
					}
					if known && resp.ContentLength != int64(size) {
						t.Errorf("response ContentLength %d, want %d", resp.ContentLength, size)
					}
				})
			}
		}
	}
}

// TestStreamedBodyIsConcurrent proves that a body longer than SmallBody, or
// of unknown length, is written by a goroutine of its own (whether copied
// by reads or by its WriteTo): the server sends the response head and part
// of its body before it reads any of the request's 8 MiB (more than socket
// buffers hold), and reads it only once the client has read that part.
// Written inline, the client would still be blocked writing.
func TestStreamedBodyIsConcurrent(t *testing.T) {
	const size = 8 << 20
	data := randomBytes(size)
	for _, known := range []bool{true, false} {
		for _, kind := range bodyKinds {
			t.Run(fmt.Sprintf("known length %v, %s", known, kind.name), func(t *testing.T) {
				clientRead := make(chan struct{})
				received := make(chan []byte, 1)
				srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
					req, err := http.ReadRequest(br)
					if err != nil {
						t.Errorf("server: %v", err)
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
					select {
					case <-clientRead:
					case <-time.After(exchangeTimeout):
						t.Error("server: the client did not read the first part")
						return
					}
					body, err := io.ReadAll(req.Body)
					if err != nil {
						t.Errorf("server reading body: %v", err)
					}
					received <- body
					io.WriteString(c, "4\r\nrest\r\n0\r\n\r\n")
					drain(c)
				})
				p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
				req := &Request{Method: "PUT", Target: "/", Host: testHost, Body: kind.wrap(bytes.NewReader(data)), ContentLength: size}
				if !known {
					req.ContentLength = -1
				}
				resp, err := p.RoundTrip(testCtx(t), req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				first := make([]byte, 5)
				if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first" {
					t.Fatalf("first part %q, %v", first, err)
				}
				close(clientRead)
				rest, err := io.ReadAll(resp.Body)
				if err != nil || string(rest) != "rest" {
					t.Fatalf("rest %q, %v", rest, err)
				}
				if body := waitFor(t, received, "the server to read the body"); !bytes.Equal(body, data) {
					t.Errorf("server read %d bytes, not the %d sent", len(body), size)
				}
			})
		}
	}
}

// TestEarlyAnswer proves that when a server answers (413) before reading a
// long request body, the client returns that answer, or an error saying
// what happened, promptly: it never waits for the body to be written, and
// no goroutine is left behind.
func TestEarlyAnswer(t *testing.T) {
	const size = 8 << 20
	data := randomBytes(size)

	t.Run("net/http server", func(t *testing.T) {
		srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		}, false)
		p := newTestPool(t, srv.addr(), Options{MaxIdle: 1})
		for _, cl := range []int64{size, -1} {
			start := time.Now()
			req := &Request{Method: "POST", Target: "/", Host: testHost, Body: bytes.NewReader(data), ContentLength: cl}
			resp, body := do(t, p, req)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || body != "too large\n" {
				t.Errorf("ContentLength %d: got %d %q, want 413", cl, resp.StatusCode, body)
			}
			if d := time.Since(start); d > prompt {
				t.Errorf("ContentLength %d: took %v", cl, d)
			}
		}
	})

	for _, cl := range []int64{size, -1} {
		t.Run(fmt.Sprintf("raw server closing, ContentLength %d", cl), func(t *testing.T) {
			leakCheck(t)
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\nContent-Length: 9\r\n\r\ntoo large")
				// Closed with the body unread: the client may see a reset.
			})
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
			start := time.Now()
			req := &Request{Method: "POST", Target: "/", Host: testHost, Body: bytes.NewReader(data), ContentLength: cl}
			resp, err := p.RoundTrip(testCtx(t), req)
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("the round trip hung: %v", err)
				}
				t.Logf("error (allowed, the server reset the connection): %v", err)
			} else {
				if resp.StatusCode != http.StatusRequestEntityTooLarge {
					t.Errorf("status %d, want 413", resp.StatusCode)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Logf("body error (allowed, the server reset the connection): %v", err)
				} else if string(body) != "too large" {
					t.Errorf("body %q, want \"too large\"", body)
				}
			}
			if d := time.Since(start); d > prompt {
				t.Errorf("took %v", d)
			}
		})
	}
}

// TestMalformedResponses proves that every kind of malformed or refused
// response head gives an error that names the problem, on a request that
// was sent (Unsent false) and is not sent again.
func TestMalformedResponses(t *testing.T) {
	long := strings.Repeat("x", 1000)
	tests := []struct {
		name      string
		resp      string
		maxHeader int
		want      string
	}{
		{name: "garbage status line", resp: "garbage\r\n\r\n", want: `malformed response status line "garbage"`},
		{name: "version only", resp: "HTTP/1.1\r\n\r\n", want: "malformed response status line"},
		{name: "HTTP/2.0", resp: "HTTP/2.0 200 OK\r\n\r\n", want: `malformed response status line "HTTP/2.0 200 OK"`},
		{name: "HTTP/0.9 style", resp: "HTTP/0.9 200 OK\r\n\r\n", want: "malformed response status line"},
		{name: "not HTTP", resp: "ICY 200 OK\r\n\r\n", want: "malformed response status line"},
		{name: "letters in the code", resp: "HTTP/1.1 2x0 OK\r\n\r\n", want: `malformed response status code "2x0"`},
		{name: "code too short", resp: "HTTP/1.1 99 Low\r\n\r\n", want: `malformed response status code "99"`},
		{name: "code below 100", resp: "HTTP/1.1 099 Low\r\n\r\n", want: `malformed response status code "099"`},
		{name: "code too long", resp: "HTTP/1.1 2000 OK\r\n\r\n", want: `malformed response status code "2000"`},
		{name: "no code", resp: "HTTP/1.1  OK\r\n\r\n", want: "malformed response status code"},
		{name: "conflicting Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", want: "conflicting response Content-Length"},
		{name: "negative Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", want: `malformed response Content-Length "-1"`},
		{name: "garbage Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", want: `malformed response Content-Length "abc"`},
		{name: "signed Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", want: `malformed response Content-Length "+5"`},
		{name: "empty Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", want: "malformed response Content-Length"},
		{name: "list Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", want: "malformed response Content-Length"},
		{name: "overflowing Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n", want: "malformed response Content-Length"},
		{name: "gzip Transfer-Encoding", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", want: `unsupported response Transfer-Encoding "gzip"`},
		{name: "gzip, chunked Transfer-Encoding", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", want: "unsupported response Transfer-Encoding"},
		{name: "chunked twice", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", want: "unsupported response Transfer-Encoding"},
		{name: "header field too large", maxHeader: 512, resp: "HTTP/1.1 200 OK\r\nX-Long: " + long + "\r\n\r\n", want: "reading response header: the head is larger than 512 bytes"},
		{name: "status line too large", maxHeader: 512, resp: "HTTP/1.1 200 " + long + "\r\n\r\n", want: "the head is larger than 512 bytes"},
		{name: "too many fields", maxHeader: 512, resp: "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Abc: d\r\n", 100) + "\r\n", want: "the head is larger than 512 bytes"},
		// 17 bytes of status line and 61 fields of 8 bytes leave 7 of
		// the 512: the limit falls between a field's CR and its LF.
		{name: "head too large, the limit inside a CRLF", maxHeader: 512, resp: "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: b\r\n", 100) + "\r\n", want: "the head is larger than 512 bytes"},
		{name: "101", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", want: "switched protocols (101)"},
		{name: "six 1xx", resp: strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 6) + okResponse, want: "more than 5 interim (1xx) responses"},
		{name: "malformed header line", resp: "HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n", want: `reading response header: malformed MIME header: missing colon: "NoColonHere"`},
		{name: "head cut short", resp: "HTTP/1.1 200 OK\r\nContent-Length: 5", want: "reading response header: unexpected EOF"},
		{name: "head cut short in a field name", resp: "HTTP/1.1 200 OK\r\nContent-Le", want: "reading response header: malformed MIME header"},
		{name: "status line only", resp: "HTTP/1.1 200 OK\r\n", want: "reading response header: unexpected EOF"},
		{name: "status line cut short", resp: "HTTP/1.1 20", want: `malformed response status code "20"`},
		{name: "no answer at all", resp: "", want: "the upstream closed the connection before answering"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
				if _, _, err := readRequest(br); err != nil {
					return
				}
				io.WriteString(c, tt.resp)
				c.(*net.TCPConn).CloseWrite()
				drain(c)
			})
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1, MaxHeaderBytes: tt.maxHeader})
			resp, err := p.RoundTrip(testCtx(t), get("/"))
			if err == nil {
				resp.Body.Close()
			}
			errorContains(t, err, tt.want)
			if Unsent(err) {
				t.Errorf("Unsent(%v) is true for a request that was written", err)
			}
			if n := srv.conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1 (no retry)", n)
			}
		})
	}
}

// TestInterimResponses proves that up to five interim (1xx) responses,
// with or without header fields, are skipped and the final response's head
// (and only its head) is returned.
func TestInterimResponses(t *testing.T) {
	for _, interim := range []string{
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
		"HTTP/1.1 199 Whatever\r\nX-Interim: 1\r\n\r\n",
	} {
		for n := 1; n <= max1xx; n++ {
			t.Run(fmt.Sprintf("%s x%d", strings.Fields(interim)[1], n), func(t *testing.T) {
				final := "HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 5\r\n\r\nfinal"
				srv := newRawServer(t, firstThenOK(strings.Repeat(interim, n)+final, false))
				p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
				resp, body := do(t, p, get("/"))
				if resp.StatusCode != 200 || body != "final" || resp.Header.Get("X-Final") != "yes" {
					t.Errorf("got %d %q %v, want the final response", resp.StatusCode, body, resp.Header)
				}
				if resp.Header.Get("Link") != "" || resp.Header.Get("X-Interim") != "" {
					t.Errorf("interim fields in the final header: %v", resp.Header)
				}
				do(t, p, get("/next"))
				if n := srv.conns.Load(); n != 1 {
					t.Errorf("%d connections, want 1", n)
				}
			})
		}
	}
}

// TestBodyErrors proves that a body cut short or malformed fails with an
// error saying so (never a clean io.EOF), and that later reads fail too.
func TestBodyErrors(t *testing.T) {
	tests := []struct {
		name      string
		resp      string
		maxHeader int
		wantIs    error
		want      string
	}{
		{name: "Content-Length 100, 10 bytes", resp: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", wantIs: io.ErrUnexpectedEOF, want: "reading response body"},
		{name: "chunk cut short", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n01234", wantIs: io.ErrUnexpectedEOF, want: "reading response body"},
		{name: "no last chunk", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", wantIs: io.ErrUnexpectedEOF, want: "reading response body"},
		{name: "bad chunk size", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", want: "reading response body"},
		{name: "chunk without CRLF after its data", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", want: "reading response body"},
		{name: "trailer cut short", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: 1\r\n", wantIs: io.ErrUnexpectedEOF, want: "reading response trailer"},
		{name: "malformed trailer", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nNoColon\r\n\r\n", want: "reading response trailer"},
		{name: "trailer too large", maxHeader: 256, resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: " + strings.Repeat("a", 1000) + "\r\n\r\n", want: "reading response trailer: the head is larger than 256 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
				if _, _, err := readRequest(br); err != nil {
					return
				}
				io.WriteString(c, tt.resp)
				c.(*net.TCPConn).CloseWrite()
				drain(c)
			})
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1, MaxHeaderBytes: tt.maxHeader})
			resp, err := p.RoundTrip(testCtx(t), get("/"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			_, err = io.ReadAll(resp.Body)
			errorContains(t, err, tt.want)
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if n, again := resp.Body.Read(make([]byte, 10)); n != 0 || again == nil || again == io.EOF {
				t.Errorf("read after the error: %d, %v; want 0 and an error", n, again)
			}
		})
	}
}

// errSource is what a failing request body returns.
var errSource = errors.New("the source broke")

// failingReader returns errSource on its first read.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errSource }

// TestRequestValidation proves that a request that cannot be written as it
// is (a field that would add a line, an invalid token, a small body not of
// its announced length) fails with an error for which Unsent is true, and
// that nothing of it reaches the server.
func TestRequestValidation(t *testing.T) {
	requests := make(chan string, 100)
	srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
		for {
			req, _, err := readRequest(br)
			if err != nil {
				return
			}
			requests <- req.Method + " " + req.RequestURI
			io.WriteString(c, okResponse)
		}
	})
	p := newTestPool(t, srv.addr, Options{MaxIdle: 0})
	valid := func() Request { return *get("/ok") }
	tests := []struct {
		name   string
		modify func(*Request)
		want   string
	}{
		{"empty method", func(r *Request) { r.Method = "" }, "invalid method"},
		{"method with a space", func(r *Request) { r.Method = "GE T" }, "invalid method"},
		{"method with CRLF", func(r *Request) { r.Method = "GET\r\nX: y" }, "invalid method"},
		{"empty target", func(r *Request) { r.Target = "" }, "invalid request target"},
		{"target not in origin form", func(r *Request) { r.Target = "http://example.test/" }, "invalid request target"},
		{"target with a space", func(r *Request) { r.Target = "/a b" }, "invalid request target"},
		{"target with CRLF", func(r *Request) { r.Target = "/a\r\nX-Injected: 1" }, "invalid request target"},
		{"target with LF", func(r *Request) { r.Target = "/a\nb" }, "invalid request target"},
		{"target with DEL", func(r *Request) { r.Target = "/a\x7f" }, "invalid request target"},
		{"target with non-ASCII", func(r *Request) { r.Target = "/é" }, "invalid request target"},
		{"header value with CRLF", func(r *Request) { r.Header = http.Header{"X-A": {"1\r\nX-Injected: 1"}} }, `invalid value for header "X-A"`},
		{"header value with LF", func(r *Request) { r.Header = http.Header{"X-A": {"1\nb"}} }, "invalid value for header"},
		{"header value with CR", func(r *Request) { r.Header = http.Header{"X-A": {"1\rb"}} }, "invalid value for header"},
		{"header value with NUL", func(r *Request) { r.Header = http.Header{"X-A": {"a\x00b"}} }, "invalid value for header"},
		{"framing header value with CRLF", func(r *Request) { r.Header = http.Header{"Connection": {"close\r\nX: y"}} }, "invalid value for header"},
		{"header name with a space", func(r *Request) { r.Header = http.Header{"X A": {"1"}} }, "invalid header name"},
		{"header name with a colon", func(r *Request) { r.Header = http.Header{"X:A": {"1"}} }, "invalid header name"},
		{"header name with CRLF", func(r *Request) { r.Header = http.Header{"X\r\nA": {"1"}} }, "invalid header name"},
		{"empty header name", func(r *Request) { r.Header = http.Header{"": {"1"}} }, "invalid header name"},
		{"empty host", func(r *Request) { r.Host = "" }, "invalid host"},
		{"host with a space", func(r *Request) { r.Host = "a b" }, "invalid host"},
		{"host with CRLF", func(r *Request) { r.Host = "a\r\nX-Injected: 1" }, "invalid host"},
		{"host with a slash", func(r *Request) { r.Host = "a/b" }, "invalid host"},
		{"small body shorter than its length", func(r *Request) {
			r.Method, r.Body, r.ContentLength = "POST", strings.NewReader("abc"), 5
		}, "shorter than its Content-Length of 5"},
		{"small body longer than its length", func(r *Request) {
			r.Method, r.Body, r.ContentLength = "POST", strings.NewReader("abcdef"), 5
		}, "longer than its Content-Length of 5"},
		{"empty body announced non-empty", func(r *Request) {
			r.Method, r.Body, r.ContentLength = "POST", strings.NewReader(""), 1
		}, "shorter than its Content-Length of 1"},
		{"small body failing", func(r *Request) {
			r.Method, r.Body, r.ContentLength = "POST", failingReader{}, 5
		}, "reading request body: the source broke"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := valid()
			tt.modify(&req)
			resp, err := p.RoundTrip(testCtx(t), &req)
			if err == nil {
				resp.Body.Close()
			}
			errorContains(t, err, tt.want)
			if !Unsent(err) {
				t.Errorf("Unsent(%v) is false", err)
			}
			if tt.name == "small body failing" && !errors.Is(err, errSource) {
				t.Errorf("error %v does not wrap the source's", err)
			}
		})
	}
	// A valid request goes through. Connections are accepted in the order
	// they were made, so by the time it is answered any connection an
	// invalid request had made would have been counted.
	req := valid()
	if _, body := do(t, p, &req); body != "ok" {
		t.Fatalf("valid request: body %q", body)
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1: invalid requests reached the server", n)
	}
	if got := waitFor(t, requests, "the valid request"); got != "GET /ok" {
		t.Errorf("server saw %q", got)
	}
	select {
	case got := <-requests:
		t.Errorf("server saw another request: %q", got)
	default:
	}
}

// closeAfterFirst serves a connection that answers its first request and
// then closes, as a server does with a connection that rested too long;
// closed gets a value then. The connections after it serve every request,
// reporting each on requests.
func closeAfterFirst(closed chan<- struct{}, requests chan<- string, reset bool) serveFunc {
	return func(c net.Conn, br *bufio.Reader, i int) {
		if i == 0 {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			io.WriteString(c, okResponse)
			if reset {
				c.(*net.TCPConn).SetLinger(0)
			}
			c.Close()
			closed <- struct{}{}
			return
		}
		for {
			req, body, err := readRequest(br)
			if err != nil {
				return
			}
			requests <- fmt.Sprintf("%d %s %s", i, req.Method, body)
			io.WriteString(c, okResponse)
		}
	}
}

// TestRetryOnClosedConnection proves that a request that meets a pooled
// connection the upstream has just closed is sent again on a new one when
// repeating it is harmless (no body, and an idempotent method or an
// idempotency key), and otherwise fails with an error saying the upstream
// closed the connection, for which Unsent is false, without a second try.
func TestRetryOnClosedConnection(t *testing.T) {
	tests := []struct {
		name        string
		req         Request
		wantRetried bool
	}{
		{"GET", Request{Method: "GET"}, true},
		{"HEAD", Request{Method: "HEAD"}, true},
		{"OPTIONS", Request{Method: "OPTIONS"}, true},
		{"TRACE", Request{Method: "TRACE"}, true},
		{"DELETE", Request{Method: "DELETE"}, false},
		{"POST without body", Request{Method: "POST"}, false},
		{"POST with Idempotency-Key", Request{Method: "POST", Header: http.Header{"Idempotency-Key": {"k1"}}}, true},
		{"PUT with X-Idempotency-Key", Request{Method: "PUT", Header: http.Header{"X-Idempotency-Key": {"k2"}}}, true},
		{"POST with a small body", Request{Method: "POST", Body: strings.NewReader("payload"), ContentLength: 7}, false},
		{"POST with a small body and Idempotency-Key", Request{Method: "POST", Header: http.Header{"Idempotency-Key": {"k3"}}, Body: strings.NewReader("payload"), ContentLength: 7}, false},
		{"GET with a body", Request{Method: "GET", Body: strings.NewReader("payload"), ContentLength: 7}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			closed := make(chan struct{}, 1)
			requests := make(chan string, 10)
			srv := newRawServer(t, closeAfterFirst(closed, requests, false))
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
			do(t, p, get("/first"))
			waitFor(t, closed, "the server to close the first connection")

			req := tt.req
			req.Target, req.Host = "/second", testHost
			resp, err := p.RoundTrip(testCtx(t), &req)
			if tt.wantRetried {
				if err != nil {
					t.Fatalf("not retried: %v", err)
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil || string(b) != "ok" && req.Method != "HEAD" {
					t.Fatalf("body %q, %v", b, err)
				}
				if got, want := waitFor(t, requests, "the retried request"), "1 "+req.Method+" "; got != want {
					t.Errorf("server saw %q, want %q", got, want)
				}
				if n := srv.conns.Load(); n != 2 {
					t.Errorf("%d connections, want 2", n)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatal("a request that may have been acted on was sent again")
			}
			errorContains(t, err, "closed the connection before answering")
			if Unsent(err) {
				t.Errorf("Unsent(%v) is true for a request that was written", err)
			}
			if n := srv.conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

// TestRetryAfterReset proves that a GET that meets a pooled connection the
// upstream reset goes again on a new one, whether the reset fails its write
// or its read.
func TestRetryAfterReset(t *testing.T) {
	closed := make(chan struct{}, 1)
	requests := make(chan string, 10)
	srv := newRawServer(t, closeAfterFirst(closed, requests, true))
	p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
	do(t, p, get("/first"))
	waitFor(t, closed, "the server to reset the first connection")
	if _, body := do(t, p, get("/second")); body != "ok" {
		t.Fatalf("body %q", body)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestNoSecondRetry proves that a request is sent again once at most: when
// the new connection is closed without an answer too, the error is
// returned.
func TestNoSecondRetry(t *testing.T) {
	closed := make(chan struct{}, 1)
	srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, i int) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		if i == 0 {
			io.WriteString(c, okResponse)
			c.Close()
			closed <- struct{}{}
		}
	})
	p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
	do(t, p, get("/first"))
	waitFor(t, closed, "the server to close the first connection")
	_, err := p.RoundTrip(testCtx(t), get("/second"))
	errorContains(t, err, "closed the connection before answering")
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestStaleConnectionProbe proves that a connection that rested more than a
// second in the pool, and that the upstream closed meanwhile, is found
// closed before anything is written on it: even requests with a body, which
// are never sent twice, go on a new connection.
func TestStaleConnectionProbe(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a connection to rest more than probeAfter")
	}
	tests := []struct {
		name string
		req  Request
	}{
		{"small body", Request{Method: "POST", Body: strings.NewReader("payload"), ContentLength: 7}},
		{"streamed body", Request{Method: "POST", Body: strings.NewReader("payload"), ContentLength: -1}},
		{"no body", Request{Method: "DELETE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			closed := make(chan struct{}, 1)
			requests := make(chan string, 10)
			srv := newRawServer(t, closeAfterFirst(closed, requests, false))
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
			do(t, p, get("/first"))
			waitFor(t, closed, "the server to close the first connection")
			time.Sleep(probeAfter + 100*time.Millisecond) // the rest after which the pool probes

			req := tt.req
			req.Target, req.Host = "/second", testHost
			if _, body := do(t, p, &req); body != "ok" {
				t.Fatalf("body %q", body)
			}
			want := "1 " + req.Method + " "
			if req.Body != nil {
				want += "payload"
			}
			if got := waitFor(t, requests, "the second request"); got != want {
				t.Errorf("server saw %q, want %q", got, want)
			}
			if n := srv.conns.Load(); n != 2 {
				t.Errorf("%d connections, want 2", n)
			}
		})
	}
}

// hangServer reads a request head (not its body) on each connection,
// reports it on got, sends head (if any), and then holds the connection
// until the client closes it, reported on closed.
func hangServer(t testing.TB, head string) (srv *rawServer, got, closed chan struct{}) {
	got, closed = make(chan struct{}, 10), make(chan struct{}, 10)
	srv = newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		got <- struct{}{}
		io.WriteString(c, head)
		// Until the client closes, or the test ends.
		if _, err := io.Copy(io.Discard, c); err == nil {
			closed <- struct{}{}
		}
	})
	return srv, got, closed
}

// TestCancelWaitingForHead proves that ending the context of a round trip
// waiting for a response head that never comes returns at once an error
// wrapping the context's error or cause, and closes the connection; also
// with a pooled connection, and with a body still being written.
func TestCancelWaitingForHead(t *testing.T) {
	errCause := errors.New("the client went away")
	tests := []struct {
		name    string
		pooled  bool
		body    bool
		end     func(context.Context) (context.Context, func())
		wantErr error
	}{
		{name: "cancel", end: func(ctx context.Context) (context.Context, func()) {
			ctx, cancel := context.WithCancel(ctx)
			return ctx, cancel
		}, wantErr: context.Canceled},
		{name: "cancel with cause", end: func(ctx context.Context) (context.Context, func()) {
			ctx, cancel := context.WithCancelCause(ctx)
			return ctx, func() { cancel(errCause) }
		}, wantErr: errCause},
		{name: "cancel on a pooled connection", pooled: true, end: func(ctx context.Context) (context.Context, func()) {
			ctx, cancel := context.WithCancelCause(ctx)
			return ctx, func() { cancel(errCause) }
		}, wantErr: errCause},
		{name: "cancel while a body is written", body: true, end: func(ctx context.Context) (context.Context, func()) {
			ctx, cancel := context.WithCancelCause(ctx)
			return ctx, func() { cancel(errCause) }
		}, wantErr: errCause},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			var srv *rawServer
			var got, closed chan struct{}
			if tt.pooled {
				got, closed = make(chan struct{}, 10), make(chan struct{}, 10)
				srv = newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
					if _, _, err := readRequest(br); err != nil {
						return
					}
					io.WriteString(c, okResponse)
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					got <- struct{}{}
					if _, err := io.Copy(io.Discard, c); err == nil {
						closed <- struct{}{}
					}
				})
			} else {
				srv, got, closed = hangServer(t, "")
			}
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
			if tt.pooled {
				do(t, p, get("/first"))
			}
			ctx, end := tt.end(testCtx(t))
			var ended atomic.Int64
			go func() {
				select {
				case <-got:
				case <-ctx.Done():
				}
				ended.Store(time.Now().UnixNano())
				end()
			}()
			req := get("/hang")
			if tt.body {
				req.Method, req.Body, req.ContentLength = "POST", bytes.NewReader(make([]byte, 8<<20)), -1
			}
			resp, err := p.RoundTrip(ctx, req)
			if err == nil {
				resp.Body.Close()
				t.Fatal("no error")
			}
			if d := time.Since(time.Unix(0, ended.Load())); d > prompt {
				t.Errorf("returned %v after the context ended", d)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v does not wrap %v", err, tt.wantErr)
			}
			waitFor(t, closed, "the connection to be closed")
			if n := srv.conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

// TestCancelMidBody proves that ending the context while a body is being
// read makes the next Read fail at once with the cause, whatever the
// body's framing, and closes the connection.
func TestCancelMidBody(t *testing.T) {
	errCause := errors.New("the client went away")
	for _, tt := range []struct{ name, head string }{
		{"Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"},
		{"until close", "HTTP/1.1 200 OK\r\n\r\n0123456789"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, _, closed := hangServer(t, tt.head)
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
			ctx, cancel := context.WithCancelCause(testCtx(t))
			resp, err := p.RoundTrip(ctx, get("/"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			part := make([]byte, 10)
			if _, err := io.ReadFull(resp.Body, part); err != nil || string(part) != "0123456789" {
				t.Fatalf("first part %q, %v", part, err)
			}
			// A read blocked on the server, cut by the cancellation.
			type result struct {
				n   int
				err error
			}
			done := make(chan result, 1)
			go func() {
				n, err := resp.Body.Read(part)
				done <- result{n, err}
			}()
			cancelled := time.Now()
			cancel(errCause)
			r := waitFor(t, done, "the blocked Read to return")
			if d := time.Since(cancelled); d > prompt {
				t.Errorf("Read returned %v after the cancellation", d)
			}
			if r.n != 0 || !errors.Is(r.err, errCause) {
				t.Errorf("Read: %d, %v; want 0 and the cause", r.n, r.err)
			}
			errorContains(t, r.err, "reading response body")
			if _, err := resp.Body.Read(part); !errors.Is(err, errCause) {
				t.Errorf("next Read: %v, want the cause again", err)
			}
			waitFor(t, closed, "the connection to be closed")
		})
	}
}

// TestResponseHeaderTimeout proves that ResponseHeaderTimeout ends a wait
// for a head with an error whose Timeout is true, and that it does not
// bound the reading of the body after the head.
func TestResponseHeaderTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	t.Run("no head", func(t *testing.T) {
		srv, _, closed := hangServer(t, "")
		p := newTestPool(t, srv.addr, Options{MaxIdle: 1, ResponseHeaderTimeout: timeout})
		start := time.Now()
		_, err := p.RoundTrip(testCtx(t), get("/"))
		if d := time.Since(start); d > prompt {
			t.Errorf("took %v", d)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("error %v is not a net.Error timeout", err)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("error %v is not os.ErrDeadlineExceeded", err)
		}
		waitFor(t, closed, "the connection to be closed")
	})
	t.Run("slow body", func(t *testing.T) {
		more := make(chan struct{})
		srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, i int) {
			if i > 0 {
				serveOK(c, br)
				return
			}
			if _, _, err := readRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no")
			select {
			case <-more:
			case <-time.After(exchangeTimeout):
				return
			}
			io.WriteString(c, "k")
			serveOK(c, br)
		})
		p := newTestPool(t, srv.addr, Options{MaxIdle: 1, ResponseHeaderTimeout: timeout})
		resp, err := p.RoundTrip(testCtx(t), get("/"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := make([]byte, 1)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * timeout) // longer than the head's timeout
		close(more)
		rest, err := io.ReadAll(resp.Body)
		if err != nil || string(rest) != "k" {
			t.Fatalf("rest %q, %v", rest, err)
		}
		// The deadline is gone from the pooled connection too.
		do(t, p, get("/next"))
		if n := srv.conns.Load(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
}

// TestDialErrors proves that failing to connect gives an error for which
// Unsent is true: a *net.OpError "dial" for a closed port, the context's
// error for a context already ended, a timeout for a TLS handshake that
// never ends.
func TestDialErrors(t *testing.T) {
	t.Run("closed port", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		p := newTestPool(t, addr, Options{MaxIdle: 1})
		_, err = p.RoundTrip(testCtx(t), get("/"))
		if !Unsent(err) {
			t.Errorf("Unsent(%v) is false", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "dial" {
			t.Errorf("error %v is not a dial *net.OpError", err)
		}
	})
	t.Run("context ended", func(t *testing.T) {
		srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) { serveOK(c, br) })
		p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := p.RoundTrip(ctx, get("/"))
		if !Unsent(err) || !errors.Is(err, context.Canceled) {
			t.Errorf("error %v: want Unsent and context.Canceled", err)
		}
	})
	t.Run("TLS handshake timeout", func(t *testing.T) {
		// A server that never answers the ClientHello.
		srv := newRawServer(t, func(c net.Conn, _ *bufio.Reader, _ int) { drain(c) })
		p := newTestPool(t, srv.addr, Options{MaxIdle: 1, HandshakeTimeout: 50 * time.Millisecond,
			TLS: &tls.Config{ServerName: "example.com"}})
		start := time.Now()
		_, err := p.RoundTrip(testCtx(t), get("/"))
		if d := time.Since(start); d > prompt {
			t.Errorf("took %v", d)
		}
		errorContains(t, err, "TLS handshake with "+srv.addr)
		if !Unsent(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v: want Unsent and context.DeadlineExceeded", err)
		}
	})
}

// tlsConfigFor returns a client configuration trusting srv's certificate.
func tlsConfigFor(srv *httptest.Server) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return &tls.Config{RootCAs: roots, ServerName: "example.com"}
}

// TestTLS proves that the pool speaks HTTP/1.1 over TLS and keeps TLS
// connections alive; that it offers only http/1.1 by ALPN, even when the
// configuration it was given asks for h2 (which is left unchanged); and
// that a certificate not matching ServerName fails the request as unsent.
func TestTLS(t *testing.T) {
	type seen struct {
		proto, alpn string
		tls         bool
	}
	handler := func(ch chan seen) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			s := seen{proto: r.Proto, tls: r.TLS != nil}
			if r.TLS != nil {
				s.alpn = r.TLS.NegotiatedProtocol
			}
			ch <- s
			io.WriteString(w, "secure")
		}
	}
	t.Run("HTTP/1.1 server", func(t *testing.T) {
		ch := make(chan seen, 10)
		srv := newHTTPServer(t, handler(ch), true)
		p := newTestPool(t, srv.addr(), Options{MaxIdle: 1, TLS: tlsConfigFor(srv.Server)})
		for range 3 {
			if _, body := do(t, p, get("/")); body != "secure" {
				t.Fatalf("body %q", body)
			}
			if s := waitFor(t, ch, "the request"); !s.tls || s.proto != "HTTP/1.1" {
				t.Errorf("server saw %+v", s)
			}
		}
		if n := srv.conns.Load(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
	t.Run("server offering h2", func(t *testing.T) {
		ch := make(chan seen, 10)
		srv := &httpServer{Server: httptest.NewUnstartedServer(handler(ch)), closed: make(chan struct{}, 10)}
		srv.EnableHTTP2 = true
		srv.TLS = &tls.Config{NextProtos: []string{"h2", "http/1.1"}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		cfg := tlsConfigFor(srv.Server)
		cfg.NextProtos = []string{"h2", "http/1.1"}
		p := newTestPool(t, srv.addr(), Options{MaxIdle: 1, TLS: cfg})
		if _, body := do(t, p, get("/")); body != "secure" {
			t.Fatalf("body %q", body)
		}
		if s := waitFor(t, ch, "the request"); s.proto != "HTTP/1.1" || s.alpn != "http/1.1" {
			t.Errorf("server saw %+v, want HTTP/1.1 by ALPN http/1.1", s)
		}
		if !slices.Equal(cfg.NextProtos, []string{"h2", "http/1.1"}) {
			t.Errorf("the caller's NextProtos became %q", cfg.NextProtos)
		}
	})
	t.Run("wrong ServerName", func(t *testing.T) {
		srv := newHTTPServer(t, handler(make(chan seen, 10)), true)
		cfg := tlsConfigFor(srv.Server)
		cfg.ServerName = "wrong.test"
		p := newTestPool(t, srv.addr(), Options{MaxIdle: 1, TLS: cfg})
		_, err := p.RoundTrip(testCtx(t), get("/"))
		errorContains(t, err, "TLS handshake with")
		var he x509.HostnameError
		if !Unsent(err) || !errors.As(err, &he) {
			t.Errorf("error %v: want Unsent and an x509.HostnameError", err)
		}
	})
}

// TestTLSH2OnlyServer proves that the pool never talks to an h2-only
// upstream as if it spoke HTTP/1.1: it offers only http/1.1 by ALPN; an
// upstream that insists on h2 fails the handshake, and one that (like Go's
// crypto/tls) lets an http/1.1-only client in without ALPN and then speaks
// HTTP/2 fails the request with an error naming the unparseable answer.
func TestTLSH2OnlyServer(t *testing.T) {
	srvCert := func() tls.Certificate {
		s := httptest.NewTLSServer(http.NotFoundHandler())
		defer s.Close()
		return s.TLS.Certificates[0]
	}()
	roots := x509.NewCertPool()
	leaf, err := x509.ParseCertificate(srvCert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots.AddCert(leaf)
	clientTLS := &tls.Config{RootCAs: roots, ServerName: "example.com"}

	tests := []struct {
		name   string
		strict bool // refuse, in the handshake, clients that do not offer h2
		want   string
	}{
		{name: "refusing http/1.1 clients", strict: true, want: "TLS handshake with"},
		{name: "falling back to no ALPN", want: "malformed response status line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			offered := make(chan []string, 10)
			negotiated := make(chan string, 10)
			base := &tls.Config{Certificates: []tls.Certificate{srvCert}, NextProtos: []string{"h2"}}
			cfg := base.Clone()
			cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				offered <- hello.SupportedProtos
				if tt.strict && !slices.Contains(hello.SupportedProtos, "h2") {
					return nil, errors.New("h2 required")
				}
				return base, nil
			}
			ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			t.Cleanup(func() { ln.Close(); wg.Wait() })
			wg.Go(func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(serverTimeout))
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					return
				}
				negotiated <- tc.ConnectionState().NegotiatedProtocol
				// An HTTP/2 server's first bytes: an empty SETTINGS
				// frame, then GOAWAY once the client's preface is wrong.
				tc.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
				tc.Write([]byte{0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
				tc.CloseWrite()
				io.Copy(io.Discard, tc)
			})
			p := newTestPool(t, ln.Addr().String(), Options{MaxIdle: 1, TLS: clientTLS})
			resp, err := p.RoundTrip(testCtx(t), get("/"))
			if err == nil {
				resp.Body.Close()
			}
			errorContains(t, err, tt.want)
			if got := waitFor(t, offered, "the ClientHello"); !slices.Equal(got, []string{"http/1.1"}) {
				t.Errorf("the client offered %q, want [http/1.1]", got)
			}
			if !tt.strict {
				if proto := waitFor(t, negotiated, "the handshake"); proto == "h2" {
					t.Errorf("negotiated %q", proto)
				}
			}
		})
	}
}

// TestStreamingIsUnbuffered proves that each Read returns the data that has
// arrived without waiting for more, whatever the framing, as server-sent
// events need: the server sends the next event only once the test has read
// the previous one, so a client that waited for more would block (and fail
// at the test's deadline).
func TestStreamingIsUnbuffered(t *testing.T) {
	events := []string{"data: one\n\n", "data: two\n\n", strings.Repeat("x", 5000) + "\n\n", "data: four\n\n"}
	total := 0
	for _, e := range events {
		total += len(e)
	}
	tests := []struct {
		name       string
		head       string
		frame      func(string) string
		end        string
		closeAfter bool
	}{
		{
			name:  "chunked",
			head:  "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
			frame: func(e string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(e), e) },
			end:   "0\r\n\r\n",
		},
		{
			name:  "Content-Length",
			head:  fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n", total),
			frame: func(e string) string { return e },
		},
		{
			name:       "until close",
			head:       "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n",
			frame:      func(e string) string { return e },
			closeAfter: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := make(chan struct{})
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
				if _, _, err := readRequest(br); err != nil {
					return
				}
				io.WriteString(c, tt.head)
				for _, e := range events {
					if _, err := io.WriteString(c, tt.frame(e)); err != nil {
						return
					}
					select {
					case <-next:
					case <-time.After(exchangeTimeout):
						return
					}
				}
				io.WriteString(c, tt.end)
				if !tt.closeAfter {
					drain(c)
				}
			})
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
			resp, err := p.RoundTrip(testCtx(t), get("/events"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			buf := make([]byte, 64<<10)
			for _, e := range events {
				var got []byte
				for len(got) < len(e) {
					n, err := resp.Body.Read(buf)
					got = append(got, buf[:n]...)
					if err != nil && !(err == io.EOF && len(got) == len(e)) {
						t.Fatalf("reading event %q: got %q, %v", e, got, err)
					}
				}
				if string(got) != e {
					t.Fatalf("read %q, want the event %q", got, e)
				}
				select {
				case next <- struct{}{}:
				case <-time.After(exchangeTimeout):
					t.Fatal("the server stopped waiting for the client")
				}
			}
			if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
				t.Errorf("after the events: %q, %v", rest, err)
			}
		})
	}
}

// TestConcurrentRoundTrips proves that the pool is safe for concurrent use
// (run with -race): every goroutine gets the answer to its own request.
func TestConcurrentRoundTrips(t *testing.T) {
	srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.URL.Path, body)
	}, false)
	p := newTestPool(t, srv.addr(), Options{MaxIdle: 4})
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 25 {
				target := fmt.Sprintf("/%d/%d", g, i)
				req := get(target)
				if i%2 == 1 {
					req.Method, req.Body, req.ContentLength = "POST", strings.NewReader(target), int64(len(target))
				}
				resp, err := p.RoundTrip(testCtx(t), req)
				if err != nil {
					t.Errorf("%s: %v", target, err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := target + " "
				if req.Body != nil {
					want += target
				}
				if err != nil || string(b) != want {
					t.Errorf("%s: body %q, %v; want %q", target, b, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// gatedReader returns its data, then waits for gate to close (or
// exchangeTimeout), then fails with errSource.
type gatedReader struct {
	data io.Reader
	gate chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if n, err := g.data.Read(p); err != io.EOF {
		return n, err
	}
	select {
	case <-g.gate:
	case <-time.After(exchangeTimeout):
	}
	return 0, errSource
}

// TestStreamedBodySourceError proves that when a streamed request body
// cannot be read (its source fails, or is shorter or longer than its
// ContentLength), the round trip, or the response body's Read if the head
// came first, fails promptly with an error that says so, wrapping the
// source's error: not with the deadline error the interruption of the
// connection causes, which would pass for an upstream timeout.
func TestStreamedBodySourceError(t *testing.T) {
	const part = 70 << 10 // more than SmallBody: streamed
	tests := []struct {
		name      string
		body      func(gate chan struct{}) io.Reader
		cl        int64
		headFirst bool // the server answers before reading the body
		wantIs    error
		want      string
	}{
		{name: "chunked, source fails", cl: -1, wantIs: errSource, want: "reading request body",
			body: func(chan struct{}) io.Reader {
				return io.MultiReader(bytes.NewReader(make([]byte, part)), failingReader{})
			}},
		{name: "known length, source fails", cl: part + 10, wantIs: errSource, want: "reading request body",
			body: func(chan struct{}) io.Reader {
				return io.MultiReader(bytes.NewReader(make([]byte, part)), failingReader{})
			}},
		{name: "known length, source short", cl: part + 10, want: "shorter than its Content-Length",
			body: func(chan struct{}) io.Reader { return bytes.NewReader(make([]byte, part)) }},
		{name: "known length, source long", cl: part - 10, want: "longer than its Content-Length",
			body: func(chan struct{}) io.Reader { return bytes.NewReader(make([]byte, part)) }},
		{name: "source fails after the response head", cl: -1, headFirst: true, wantIs: errSource, want: "reading request body",
			body: func(gate chan struct{}) io.Reader { return &gatedReader{bytes.NewReader(make([]byte, part)), gate} }},
	}
	for _, tt := range tests {
		for _, kind := range bodyKinds {
			t.Run(tt.name+", "+kind.name, func(t *testing.T) {
				leakCheck(t)
				srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if tt.headFirst {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
					}
					// Read what comes of the body, and wait for the rest.
					io.Copy(io.Discard, req.Body)
					drain(c)
				})
				p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
				gate := make(chan struct{})
				req := &Request{Method: "POST", Target: "/", Host: testHost, Body: kind.wrap(tt.body(gate)), ContentLength: tt.cl}
				start := time.Now()
				resp, err := p.RoundTrip(testCtx(t), req)
				if tt.headFirst {
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					close(gate)
					_, err = io.ReadAll(resp.Body)
				} else if err == nil {
					resp.Body.Close()
					t.Fatal("no error")
				}
				if d := time.Since(start); d > prompt {
					t.Errorf("took %v", d)
				}
				if errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("hung: %v", err)
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Errorf("error %q is a timeout", err)
				}
				errorContains(t, err, tt.want)
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("error %q does not wrap %q", err, tt.wantIs)
				}
			})
		}
	}
}

// TestEndedContextSendsNothing proves that a request whose context has
// already ended is not sent, not even on a pooled connection, and fails
// with an error wrapping the context's cause for which Unsent is true (as
// it does on an empty pool, where the dial fails).
func TestEndedContextSendsNothing(t *testing.T) {
	var requests atomic.Int32
	done := make(chan struct{}, 10)
	srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
		defer func() { done <- struct{}{} }()
		for {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			requests.Add(1)
			io.WriteString(c, okResponse)
		}
	})
	p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
	do(t, p, get("/first"))

	errCause := errors.New("the client went away")
	ctx, cancel := context.WithCancelCause(t.Context())
	cancel(errCause)
	req := &Request{Method: "POST", Target: "/charge", Host: testHost, Body: strings.NewReader("once"), ContentLength: 4}
	resp, err := p.RoundTrip(ctx, req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("no error")
	}
	if !errors.Is(err, errCause) {
		t.Errorf("error %v does not wrap the cause", err)
	}
	if !Unsent(err) {
		t.Errorf("Unsent(%v) is false", err)
	}
	// Once the connection is closed, the server has read all it got.
	p.Close()
	waitFor(t, done, "the server connection to end")
	if n := requests.Load(); n != 1 {
		t.Errorf("the server got %d requests, want 1: the one with an ended context was sent", n)
	}
}

// pieces is a request body that writes itself, by WriteTo, in the given
// pieces, then fails with err if set. Read (used for small bodies) reads
// the pieces in turn.
type pieces struct {
	parts []string
	err   error
}

func (b *pieces) Read(p []byte) (int, error) {
	for len(b.parts) > 0 && b.parts[0] == "" {
		b.parts = b.parts[1:]
	}
	if len(b.parts) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	n := copy(p, b.parts[0])
	b.parts[0] = b.parts[0][n:]
	return n, nil
}

func (b *pieces) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for _, part := range b.parts {
		n, err := io.WriteString(w, part)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	b.parts = nil
	return total, b.err
}

// readChunks reads a chunked body from br: its chunks' data, and its
// trailer section (discarded).
func readChunks(br *bufio.Reader) ([]string, error) {
	var chunks []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return chunks, err
		}
		sizeHex, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		size, err := strconv.ParseUint(sizeHex, 16, 32)
		if err != nil {
			return chunks, fmt.Errorf("chunk size line %q", line)
		}
		if size == 0 {
			for {
				line, err := br.ReadString('\n')
				if err != nil || line == "\r\n" {
					return chunks, err
				}
			}
		}
		data := make([]byte, size+2)
		if _, err := io.ReadFull(br, data); err != nil {
			return chunks, err
		}
		if string(data[size:]) != "\r\n" {
			return chunks, fmt.Errorf("chunk not ended by CRLF: %q", data[size:])
		}
		chunks = append(chunks, string(data[:size]))
	}
}

// TestWriterToBody proves that a streamed body that is an io.WriterTo is
// written by its own WriteTo: chunked, each non-empty Write as one chunk
// and an empty Write as nothing (a zero-length chunk is the last chunk: it
// would end the body early, and the rest would follow it on the connection
// as garbage, or as a request of its own); of known length, checked against
// its ContentLength; a failure of WriteTo named as the cause.
func TestWriterToBody(t *testing.T) {
	big := strings.Repeat("b", SmallBody)
	tests := []struct {
		name       string
		body       *pieces
		cl         int64
		wantChunks []string // chunked: the chunks the server must see
		wantBody   string   // known length: the body the server must see
		wantErr    string
		wantIs     error
	}{
		{name: "chunked, one Write per chunk", body: &pieces{parts: []string{"abc", "defg", "h"}}, cl: -1,
			wantChunks: []string{"abc", "defg", "h"}},
		{name: "chunked, an empty Write sends nothing", body: &pieces{parts: []string{"abc", "", "def"}}, cl: -1,
			wantChunks: []string{"abc", "def"}},
		{name: "chunked, only an empty Write", body: &pieces{parts: []string{""}}, cl: -1},
		{name: "known length", body: &pieces{parts: []string{"a", big, "", "z"}}, cl: int64(len(big)) + 2,
			wantBody: "a" + big + "z"},
		{name: "known length, longer", body: &pieces{parts: []string{big, "xy"}}, cl: int64(len(big)) + 1,
			wantErr: "longer than its Content-Length"},
		{name: "known length, shorter", body: &pieces{parts: []string{big}}, cl: int64(len(big)) + 1,
			wantErr: "shorter than its Content-Length"},
		{name: "chunked, WriteTo fails", body: &pieces{parts: []string{"abc"}, err: errSource}, cl: -1,
			wantErr: "reading request body", wantIs: errSource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			type seen struct {
				te     []string
				chunks []string
				body   string
				extra  string // what came after the body
				err    error
			}
			got := make(chan seen, 10)
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				s := seen{te: req.TransferEncoding}
				defer func() { got <- s }()
				if tt.cl < 0 {
					s.chunks, s.err = readChunks(br)
				} else {
					b := make([]byte, tt.cl)
					_, s.err = io.ReadFull(br, b)
					s.body = string(b)
				}
				if s.err != nil {
					return
				}
				io.WriteString(c, okResponse)
				extra, _ := io.ReadAll(br) // until the client closes
				s.extra = string(extra)
			})
			p := newTestPool(t, srv.addr, Options{MaxIdle: 1})
			req := &Request{Method: "POST", Target: "/", Host: testHost, Body: tt.body, ContentLength: tt.cl}
			resp, err := p.RoundTrip(testCtx(t), req)
			if tt.wantErr != "" {
				if err == nil {
					resp.Body.Close()
				}
				errorContains(t, err, tt.wantErr)
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("error %q does not wrap %q", err, tt.wantIs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok" {
				t.Errorf("response body %q, %v", b, err)
			}
			p.Close() // the server reads until then
			s := waitFor(t, got, "the server to read the request")
			if s.err != nil {
				t.Fatalf("server reading the body: %v (chunks %q)", s.err, s.chunks)
			}
			if tt.cl < 0 {
				if !slices.Equal(s.te, []string{"chunked"}) {
					t.Errorf("Transfer-Encoding %q", s.te)
				}
				if !slices.Equal(s.chunks, tt.wantChunks) {
					t.Errorf("server read chunks %q, want %q", s.chunks, tt.wantChunks)
				}
			} else if s.body != tt.wantBody {
				t.Errorf("server read %d bytes, want %d", len(s.body), len(tt.wantBody))
			}
			if s.extra != "" {
				t.Errorf("after the body came %q", s.extra)
			}
		})
	}
}

// TestWaitReadable checks that a body's WaitReadable blocks until the
// upstream sends the body's next bytes, in every framing, then that Read
// returns them; that at the end of a read-until-close body it returns nil
// and Read io.EOF; and that a connection cut mid-body is an error there.
func TestWaitReadable(t *testing.T) {
	for _, tt := range []struct {
		name, head, part string
		cut              bool // the server closes instead of sending the rest
		wantErr          string
	}{
		{name: "Content-Length", head: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", part: "data"},
		{name: "chunked", head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", part: "4\r\ndata\r\n0\r\n\r\n"},
		{name: "until close", head: "HTTP/1.1 200 OK\r\n\r\n", part: "data", cut: true},
		{name: "cut mid-body", head: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", cut: true, wantErr: "unexpected EOF"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			send := make(chan struct{})
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader, _ int) {
				if _, _, err := readRequest(br); err != nil {
					return
				}
				io.WriteString(c, tt.head)
				<-send
				io.WriteString(c, tt.part)
				if !tt.cut {
					drain(c)
				}
			})
			p := newTestPool(t, srv.addr, Options{})
			resp, err := p.RoundTrip(testCtx(t), get("/"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			w := resp.Body.(interface{ WaitReadable() error })
			waited := make(chan error, 1)
			go func() { waited <- w.WaitReadable() }()
			select {
			case err := <-waited:
				t.Fatalf("WaitReadable returned %v before the body was sent", err)
			case <-time.After(50 * time.Millisecond):
			}
			close(send)
			err = waitFor(t, waited, "WaitReadable")
			if tt.wantErr != "" {
				errorContains(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("WaitReadable: %v", err)
			}
			if tt.part != "" {
				if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "data" {
					t.Fatalf("body after the wait: %q, %v; want %q", b, err, "data")
				}
			}
			if err := w.WaitReadable(); err != nil {
				t.Errorf("WaitReadable at the end of the body: %v, want nil", err)
			}
		})
	}
}
