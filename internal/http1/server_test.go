package http1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Tests of Server, over loopback TCP: raw clients write requests by hand
// where the bytes on the wire matter, and read what comes back with
// http.ReadResponse.

// promptly bounds what must happen "at once" or "within about a timeout"
// (a connection closed, a context ended): wide, for a busy machine.
const promptly = 2 * time.Second

// svListener counts the connections it accepts, and wraps them if wrap.
type svListener struct {
	net.Listener
	accepted atomic.Int32
	wrap     bool
}

func (l *svListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
		if l.wrap {
			c = wrappedConn{c}
		}
	}
	return c, err
}

// wrappedConn hides all but the net.Conn methods of a connection (its
// socket, in particular), as a listener that wraps its connections does:
// the server watches such a connection for a client that leaves with a
// goroutine that reads it, not with the shared watcher of sockets.
type wrappedConn struct{ net.Conn }

// watchModes are the two ways a connection may be watched for a client
// that leaves (the same one, outside Linux).
var watchModes = []struct {
	name string
	wrap bool
}{{"Socket", false}, {"Wrapped", true}}

// svServer is a Server serving a loopback listener.
type svServer struct {
	*Server
	addr string
	ln   *svListener
	done chan struct{} // closed when Serve has returned
	err  error         // what Serve returned
}

// startServer serves s on a loopback listener. When the test ends s is
// closed and Serve must have returned ErrServerClosed.
func startServer(t *testing.T, s *Server) *svServer {
	t.Helper()
	return startServerWrapped(t, s, false)
}

// startServerWrapped is startServer, with the accepted connections wrapped
// (see wrappedConn) if wrap.
func startServerWrapped(t *testing.T, s *Server, wrap bool) *svServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &svServer{Server: s, addr: ln.Addr().String(), ln: &svListener{Listener: ln, wrap: wrap}, done: make(chan struct{})}
	go func() {
		ts.err = s.Serve(ts.ln)
		close(ts.done)
	}()
	t.Cleanup(func() {
		s.Close()
		ts.expectClosed(t)
	})
	return ts
}

// expectClosed checks that Serve returned ErrServerClosed, within promptly.
func (ts *svServer) expectClosed(t *testing.T) {
	t.Helper()
	if err := ts.served(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v, want ErrServerClosed", err)
	}
}

// served waits for Serve to return, for up to promptly, and returns its
// error, or errStillServing.
func (ts *svServer) served() error {
	select {
	case <-ts.done:
		return ts.err
	case <-time.After(promptly):
		return errStillServing
	}
}

var errStillServing = errors.New("still serving")

// svLog is a buffer for a slog handler, safe for concurrent use.
type svLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *svLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *svLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// svConn is a raw client connection to a test server. Its reads and
// writes are bounded by exchangeTimeout from the dial.
type svConn struct {
	t   *testing.T
	nc  net.Conn
	br  *bufio.Reader // reads nc, through raw
	raw bytes.Buffer  // the bytes read from nc since the last send
}

// dialServer connects to addr; the connection is closed when the test
// ends.
func dialServer(t *testing.T, addr string) *svConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, exchangeTimeout)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(exchangeTimeout))
	c := &svConn{t: t, nc: nc}
	c.br = bufio.NewReader(io.TeeReader(nc, &c.raw))
	t.Cleanup(func() { nc.Close() })
	return c
}

// send writes s, and forgets the bytes read so far.
func (c *svConn) send(s string) {
	c.t.Helper()
	c.raw.Reset()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("writing %q: %v", s, err)
	}
}

// expectNext checks that the connection still serves: a GET /next gets
// 200 "next" (the test's handler answers it so).
func (c *svConn) expectNext() {
	c.t.Helper()
	c.send(getReq("/next"))
	if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "next" {
		c.t.Errorf("next response: %d %q, want 200 %q", resp.StatusCode, body, "next")
	}
}

// response reads the response to a request of method, and its whole
// body (trailers included).
func (c *svConn) response(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading a response: %v (read %q)", err, c.raw.String())
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading a response body: %v (read %q)", err, c.raw.String())
	}
	return resp, string(b)
}

// expectClosed fails the test unless the server closes the connection
// within d, sending no byte more; it returns the read error that tells,
// io.EOF or a reset.
func (c *svConn) expectClosed(d time.Duration) error {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(d))
	defer c.nc.SetReadDeadline(time.Now().Add(exchangeTimeout))
	b, err := c.br.ReadByte()
	if err == nil {
		rest, _ := io.ReadAll(c.br)
		c.t.Fatalf("read %q, want the connection closed", append([]byte{b}, rest...))
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatalf("the connection is still open after %v", d)
	}
	if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("read error %v, want io.EOF or a reset", err)
	}
	return err
}

// expectSilence fails the test if a byte arrives within d.
func (c *svConn) expectSilence(d time.Duration) {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(d))
	defer c.nc.SetReadDeadline(time.Now().Add(exchangeTimeout))
	_, err := c.br.Peek(1)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		c.t.Fatalf("read %q (error %v), want nothing yet", c.raw.String(), err)
	}
}

// connectionField returns the Connection field of the response head last
// read (http.ReadResponse drops "close" from the parsed header).
func (c *svConn) connectionField() string {
	c.t.Helper()
	return headFields(c.t, c.raw.String()).Get("Connection")
}

// headFields returns the header fields of the response head at the start
// of raw, as they were on the wire (Transfer-Encoding included).
func headFields(t *testing.T, raw string) http.Header {
	t.Helper()
	tp := textproto.NewReader(bufio.NewReader(strings.NewReader(raw)))
	if _, err := tp.ReadLine(); err != nil {
		t.Fatalf("no status line in %q", raw)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("reading the head of %q: %v", raw, err)
	}
	return http.Header(h)
}

// getReq is a GET of path by HTTP/1.1, plus the extra header lines.
func getReq(path string, extra ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + testHost + "\r\n" + strings.Join(extra, "") + "\r\n"
}

// TestServerKeepAlive proves that a response of declared length goes out
// with its Content-Length, not chunked, and that its connection carries the
// next request: two requests, made by net/http's client or by hand, are
// answered on one connection.
func TestServerKeepAlive(t *testing.T) {
	leakCheck(t)
	ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := "hello " + r.URL.Path
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		io.WriteString(w, body)
	})})

	t.Run("Client", func(t *testing.T) {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: exchangeTimeout}
		before := ts.ln.accepted.Load()
		for _, path := range []string{"/a", "/b"} {
			resp, err := client.Get("http://" + ts.addr + path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			want := "hello " + path
			if resp.StatusCode != 200 || string(b) != want || resp.ContentLength != int64(len(want)) || resp.TransferEncoding != nil {
				t.Errorf("GET %s: %d %q, length %d, %v; want 200 %q of declared length", path, resp.StatusCode, b, resp.ContentLength, resp.TransferEncoding, want)
			}
		}
		if n := ts.ln.accepted.Load() - before; n != 1 {
			t.Errorf("2 requests took %d connections, want 1", n)
		}
	})

	t.Run("Raw", func(t *testing.T) {
		before := ts.ln.accepted.Load()
		c := dialServer(t, ts.addr)
		for _, path := range []string{"/a", "/b"} {
			c.send(getReq(path))
			resp, body := c.response("GET")
			h := headFields(t, c.raw.String())
			want := "hello " + path
			if resp.StatusCode != 200 || body != want {
				t.Errorf("GET %s: %d %q, want 200 %q", path, resp.StatusCode, body, want)
			}
			if h.Get("Content-Length") != strconv.Itoa(len(want)) || h.Get("Transfer-Encoding") != "" || h.Get("Connection") != "" {
				t.Errorf("GET %s: head %q, want only Content-Length for framing", path, c.raw.String())
			}
		}
		if n := ts.ln.accepted.Load() - before; n != 1 {
			t.Errorf("%d connections accepted, want 1", n)
		}
	})
}

// TestServerChunkedResponse proves that an HTTP/1.1 response of unknown
// length is chunked and ends with the last chunk ("0\r\n\r\n" without
// trailers), that header fields named with http.TrailerPrefix go in the
// trailer section and not in the head, and that the connection carries a
// next request after it.
func TestServerChunkedResponse(t *testing.T) {
	leakCheck(t)
	large := strings.Repeat("0123456789abcdef", 100<<10/16) // more than a write buffer
	tests := []struct {
		name    string
		handler http.HandlerFunc
		body    string
		trailer http.Header
		end     string // how the raw response ends
	}{{
		name: "Flushed",
		handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
			w.(http.Flusher).Flush()
			io.WriteString(w, " world")
		},
		body: "hello world",
		end:  "\r\n0\r\n\r\n",
	}, {
		name: "Trailers",
		handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
			w.(http.Flusher).Flush()
			io.WriteString(w, " world")
			w.Header().Set(http.TrailerPrefix+"X-Checksum", "abc")
		},
		body:    "hello world",
		trailer: http.Header{"X-Checksum": {"abc"}},
		end:     "\r\n0\r\nX-Checksum: abc\r\n\r\n",
	}, {
		name: "Large",
		handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "x")
			io.WriteString(w, large)
		},
		body: "x" + large,
		end:  "\r\n0\r\n\r\n",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/next" {
					io.WriteString(w, "next")
					return
				}
				tt.handler(w, r)
			})})
			c := dialServer(t, ts.addr)
			c.send(getReq("/"))
			resp, body := c.response("GET")
			raw := c.raw.String()
			h := headFields(t, raw)
			if resp.StatusCode != 200 || body != tt.body {
				t.Errorf("got %d %.40q, want 200 %.40q", resp.StatusCode, body, tt.body)
			}
			if h.Get("Transfer-Encoding") != "chunked" || h.Get("Content-Length") != "" {
				t.Errorf("head fields %v, want chunked without Content-Length", h)
			}
			if !strings.HasSuffix(raw, tt.end) {
				t.Errorf("the response ends with %q, want %q", raw[max(0, len(raw)-40):], tt.end)
			}
			if len(tt.trailer) > 0 || len(resp.Trailer) > 0 {
				if fmt.Sprint(resp.Trailer) != fmt.Sprint(tt.trailer) {
					t.Errorf("trailer %v, want %v", resp.Trailer, tt.trailer)
				}
			}
			for k := range tt.trailer {
				if _, ok := h[k]; ok {
					t.Errorf("trailer field %s is in the head", k)
				}
			}
			c.expectNext()
		})
	}
}

// TestServerResponsesWithoutBody proves that a handler that writes nothing
// answers "200" with Content-Length: 0, that a HEAD response and a 304
// carry no body bytes whatever the handler writes, and that a 204 has
// neither Content-Length nor Transfer-Encoding, nor body: in each case the
// next response on the connection follows at once.
func TestServerResponsesWithoutBody(t *testing.T) {
	leakCheck(t)
	tests := []struct {
		name, method string
		handler      http.HandlerFunc
		status       int
		fields       map[string]string // head fields: value, "" for absent
	}{{
		name:    "Empty",
		method:  "GET",
		handler: func(w http.ResponseWriter, r *http.Request) {},
		status:  200,
		fields:  map[string]string{"Content-Length": "0", "Transfer-Encoding": ""},
	}, {
		name:   "HEAD",
		method: "HEAD",
		handler: func(w http.ResponseWriter, r *http.Request) {
			if n, err := io.WriteString(w, "hello"); n != 5 || err != nil {
				w.Header().Set("X-Write", fmt.Sprint(n, err))
			}
		},
		status: 200,
		fields: map[string]string{"Transfer-Encoding": "", "X-Write": ""},
	}, {
		name:   "HEADWithLength",
		method: "HEAD",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		},
		status: 200,
		fields: map[string]string{"Content-Length": "5", "Transfer-Encoding": ""},
	}, {
		name:   "204",
		method: "GET",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(http.StatusNoContent)
			if _, err := io.WriteString(w, "hello"); !errors.Is(err, http.ErrBodyNotAllowed) {
				w.Header().Set("X-Write", fmt.Sprint(err))
			}
		},
		status: 204,
		fields: map[string]string{"Content-Length": "", "Transfer-Encoding": "", "X-Write": ""},
	}, {
		name:   "304",
		method: "GET",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotModified)
			io.WriteString(w, "hello")
		},
		status: 304,
		fields: map[string]string{"Transfer-Encoding": ""},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/next" {
					io.WriteString(w, "next")
					return
				}
				tt.handler(w, r)
			})})
			c := dialServer(t, ts.addr)
			c.send(tt.method + " / HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n")
			resp, body := c.response(tt.method)
			if resp.StatusCode != tt.status || body != "" {
				t.Errorf("got %d %q, want %d and no body", resp.StatusCode, body, tt.status)
			}
			raw := c.raw.String()
			h := headFields(t, raw)
			for k, v := range tt.fields {
				if got := strings.Join(h[k], ","); got != v {
					t.Errorf("%s: %q, want %q (head %q)", k, got, v, raw)
				}
			}
			if head, _, _ := strings.Cut(raw, "\r\n\r\n"); len(head)+4 != len(raw) {
				t.Errorf("bytes after the head: %q", raw[min(len(raw), len(head)+4):])
			}
			c.expectNext()
		})
	}
}

// TestServerHTTP10 proves that HTTP/1.0 requests get responses they can
// frame: of unknown length, the body ends with the connection (never
// chunked) and "Connection: close" says so; of known length, the
// connection closes unless the client asked "Connection: keep-alive", and
// then the answer says "Connection: keep-alive" and the next request is
// served on it.
func TestServerHTTP10(t *testing.T) {
	leakCheck(t)
	tests := []struct {
		name      string
		keepAlive bool // the request asks it
		length    bool // the handler declares the length
		keep      bool // the connection may stay
	}{
		{name: "UnknownLength", keepAlive: false, length: false, keep: false},
		{name: "KeepAliveUnknownLength", keepAlive: true, length: false, keep: false},
		{name: "KnownLength", keepAlive: false, length: true, keep: false},
		{name: "KeepAliveKnownLength", keepAlive: true, length: true, keep: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.length {
					w.Header().Set("Content-Length", "5")
				}
				io.WriteString(w, "hello")
			})})
			c := dialServer(t, ts.addr)
			req := "GET / HTTP/1.0\r\n\r\n"
			if tt.keepAlive {
				req = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
			}
			for i := range 2 {
				c.send(req)
				resp, body := c.response("GET")
				h := headFields(t, c.raw.String())
				if resp.StatusCode != 200 || body != "hello" {
					t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "hello")
				}
				if te := h.Get("Transfer-Encoding"); te != "" {
					t.Errorf("Transfer-Encoding: %s in a response to HTTP/1.0", te)
				}
				wantConn := "close"
				if tt.keep {
					wantConn = "keep-alive"
				}
				if got := h.Get("Connection"); got != wantConn {
					t.Errorf("Connection: %q, want %q", got, wantConn)
				}
				if !tt.keep {
					c.expectClosed(promptly)
					break
				}
				if i == 1 && ts.ln.accepted.Load() != 1 {
					t.Errorf("%d connections accepted, want 1", ts.ln.accepted.Load())
				}
			}
		})
	}
}

// TestServerConnectionClose proves that "Connection: close", asked by the
// client or set by the handler, is in the response, and that the server
// then closes the connection.
func TestServerConnectionClose(t *testing.T) {
	leakCheck(t)
	ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/handler" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "bye")
	})})
	for _, tt := range []struct{ name, req string }{
		{"Client", getReq("/", "Connection: close\r\n")},
		{"Handler", getReq("/handler")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialServer(t, ts.addr)
			c.send(tt.req)
			resp, body := c.response("GET")
			if resp.StatusCode != 200 || body != "bye" || c.connectionField() != "close" {
				t.Errorf("got %d %q, Connection: %q; want 200 %q, close", resp.StatusCode, body, c.connectionField(), "bye")
			}
			c.expectClosed(promptly)
		})
	}
}

// TestServerRequestBody proves that the handler reads request bodies whole,
// of Content-Length or chunked, that the trailer section of a chunked body
// reaches r.Trailer once the body is read (declared by a Trailer field or
// not, as net/http's server has it), and that the connection then carries
// the next request.
func TestServerRequestBody(t *testing.T) {
	leakCheck(t)
	large := strings.Repeat("abcdefghij", 20<<10)
	post := "POST / HTTP/1.1\r\nHost: " + testHost + "\r\n"
	tests := []struct {
		name, req     string
		body, trailer string
	}{
		{"ContentLength", post + "Content-Length: 11\r\n\r\nhello world", "hello world", ""},
		{"LargeContentLength", post + "Content-Length: " + strconv.Itoa(len(large)) + "\r\n\r\n" + large, large, ""},
		{"Chunked", post + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n", "hello world", ""},
		{"DeclaredTrailer", post + "Trailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: v\r\n\r\n", "hello", "v"},
		{"UndeclaredTrailer", post + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: v\r\n\r\n", "hello", "v"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					w.WriteHeader(http.StatusInternalServerError)
					fmt.Fprint(w, err)
					return
				}
				w.Header().Set("X-Trailer", r.Trailer.Get("X-T"))
				w.Write(b)
			})})
			c := dialServer(t, ts.addr)
			c.send(tt.req)
			resp, body := c.response("POST")
			if resp.StatusCode != 200 || body != tt.body {
				t.Errorf("echo: %d %.40q, want 200 %.40q", resp.StatusCode, body, tt.body)
			}
			if got := resp.Header.Get("X-Trailer"); got != tt.trailer {
				t.Errorf("the handler saw trailer X-T %q, want %q", got, tt.trailer)
			}
			c.send(getReq("/"))
			if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "" {
				t.Errorf("next request: %d %q, want 200 and an empty echo", resp.StatusCode, body)
			}
		})
	}
}

// TestServerPipelined proves that requests written at once, before any
// answer, are all served, in order, bodies included.
func TestServerPipelined(t *testing.T) {
	leakCheck(t)
	ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	})})
	c := dialServer(t, ts.addr)
	c.send(getReq("/1") +
		"POST /2 HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 3\r\n\r\ntwo" +
		"POST /3 HTTP/1.1\r\nHost: " + testHost + "\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthree\r\n0\r\n\r\n" +
		getReq("/4"))
	for _, want := range []string{"GET /1 ", "POST /2 two", "POST /3 three", "GET /4 "} {
		if resp, body := c.response("GET"); resp.StatusCode != 200 || body != want {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
	if n := ts.ln.accepted.Load(); n != 1 {
		t.Errorf("%d connections accepted, want 1", n)
	}
}

// TestServerExpectContinue proves that "Expect: 100-continue" gets
// "100 Continue" when the handler reads the body and not before, none when
// the handler answers without reading it (the connection then closes),
// and that any other expectation gets 417 without reaching the handler.
func TestServerExpectContinue(t *testing.T) {
	leakCheck(t)
	post := "POST / HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 5\r\n"

	t.Run("Read", func(t *testing.T) {
		proceed := make(chan struct{})
		ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-proceed:
			case <-r.Context().Done():
			}
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "got %s", b)
		})})
		c := dialServer(t, ts.addr)
		c.send(post + "Expect: 100-continue\r\n\r\n")
		c.expectSilence(200 * time.Millisecond) // the handler has not read yet
		close(proceed)
		resp, _ := c.response("POST")
		if resp.StatusCode != http.StatusContinue {
			t.Fatalf("got %d, want 100 Continue first (read %q)", resp.StatusCode, c.raw.String())
		}
		c.send("hello")
		if resp, body := c.response("POST"); resp.StatusCode != 200 || body != "got hello" {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "got hello")
		}
	})

	t.Run("NotRead", func(t *testing.T) {
		ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, "no")
		})})
		c := dialServer(t, ts.addr)
		c.send(post + "Expect: 100-continue\r\n\r\n")
		if resp, body := c.response("POST"); resp.StatusCode != http.StatusForbidden || body != "no" {
			t.Errorf("got %d %q, want 403 %q and no 100 Continue (read %q)", resp.StatusCode, body, "no", c.raw.String())
		}
		c.expectClosed(promptly)
	})

	for _, tt := range []struct{ name, req string }{
		{"OtherWithBody", post + "Expect: x-magic\r\n\r\nhello"},
		{"OtherWithoutBody", getReq("/", "Expect: x-magic\r\n")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
			})})
			c := dialServer(t, ts.addr)
			c.send(tt.req)
			if resp, _ := c.response("POST"); resp.StatusCode != http.StatusExpectationFailed {
				t.Fatalf("got %d, want 417", resp.StatusCode)
			}
			c.expectClosed(promptly)
			if n := calls.Load(); n != 0 {
				t.Errorf("the handler was called %d times, want none", n)
			}
		})
	}
}

// TestServerRejectsBadRequests proves that a request the server cannot or
// must not serve gets the right status, never reaches the handler, and
// that the connection is then closed.
func TestServerRejectsBadRequests(t *testing.T) {
	leakCheck(t)
	tests := []struct {
		name      string
		req       string
		maxHeader int
		status    int
	}{
		{name: "MalformedRequestLine", req: "GARBAGE\r\n\r\n", status: 400},
		{name: "BadMethod", req: "GE(T / HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n", status: 400},
		{name: "SpaceBeforeColon", req: getReq("/", "X-Foo : bar\r\n"), status: 400},
		{name: "BadNameByte", req: getReq("/", "X-F\x01o: bar\r\n"), status: 400},
		{name: "BadValueByte", req: getReq("/", "X-Foo: b\x00r\r\n"), status: 400},
		{name: "NoHost", req: "GET / HTTP/1.1\r\n\r\n", status: 400},
		{name: "BadHost", req: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", status: 400},
		{name: "TwoLengths", req: "POST / HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", status: 400},
		// The server, as net/http, allows 4 KiB above MaxHeaderBytes (for
		// the request line): a head of 8 KiB is past 1 KiB + 4 KiB.
		{name: "HeadTooLarge", req: getReq("/", "X-Big: "+strings.Repeat("b", 8<<10)+"\r\n"), maxHeader: 1 << 10, status: 431},
		{name: "HeadFarTooLarge", req: getReq("/", "X-Big: "+strings.Repeat("b", 32<<10)+"\r\n"), maxHeader: 1 << 10, status: 431},
		{name: "HTTP2RequestLine", req: "GET / HTTP/2.0\r\nHost: " + testHost + "\r\n\r\n", status: 505},
		{name: "HTTP3RequestLine", req: "GET / HTTP/3.0\r\nHost: " + testHost + "\r\n\r\n", status: 505},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			ts := startServer(t, &Server{MaxHeaderBytes: tt.maxHeader, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
			})})
			c := dialServer(t, ts.addr)
			c.send(tt.req)
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				t.Fatalf("reading the response: %v (read %q)", err, c.raw.String())
			}
			io.ReadAll(resp.Body) // to the end of the connection, or a reset
			if resp.StatusCode != tt.status {
				t.Fatalf("got %d, want %d (read %q)", resp.StatusCode, tt.status, c.raw.String())
			}
			c.expectClosed(promptly)
			if n := calls.Load(); n != 0 {
				t.Errorf("the handler was called %d times, want none", n)
			}
		})
	}
}

// TestServerHeaderInjection proves that CR or LF in a header or trailer
// value set by the handler, or in a field name, cannot start a field of
// its own on the wire (response splitting), and that the response is
// still framed right.
func TestServerHeaderInjection(t *testing.T) {
	leakCheck(t)
	ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/next" {
			io.WriteString(w, "next")
			return
		}
		h := w.Header()
		h.Set("X-Split", "a\r\nX-Injected-Crlf: 1")
		h["X-Lf"] = []string{"b\nX-Injected-Lf: 2"}
		h["X-Cr"] = []string{"c\rX-Injected-Cr: 3"}
		h["X-Name\r\nX-Injected-Name"] = []string{"4"}
		io.WriteString(w, "body")
		h.Set(http.TrailerPrefix+"X-T", "d\r\nX-Injected-Trailer: 5")
	})})
	c := dialServer(t, ts.addr)
	c.send(getReq("/"))
	resp, body := c.response("GET")
	raw := c.raw.String()
	if resp.StatusCode != 200 || body != "body" {
		t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "body")
	}
	for _, line := range strings.FieldsFunc(raw, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if strings.HasPrefix(line, "X-Injected") {
			t.Errorf("a field of its own on the wire: %q (response %q)", line, raw)
		}
	}
	for _, h := range []http.Header{resp.Header, resp.Trailer} {
		for k := range h {
			if strings.HasPrefix(k, "X-Injected") {
				t.Errorf("the client parsed field %s", k)
			}
		}
	}
	c.expectNext()
}

// TestServerHandlerPanic proves that a handler's panic cuts the response:
// what the handler wrote goes out, the end of its chunked body does not
// (the client's chunked reader meets an unexpected EOF), and the
// connection closes; http.ErrAbortHandler is not logged, any other panic
// is, to Server.Logger.
func TestServerHandlerPanic(t *testing.T) {
	leakCheck(t)
	tests := []struct {
		name    string
		write   string // the handler writes it first, if not empty
		flush   bool
		panicV  any
		logged  string // in the log, if not empty
		headOut bool   // a response head goes out
	}{
		{name: "AbortAfterFlush", write: "partial", flush: true, panicV: http.ErrAbortHandler, headOut: true},
		{name: "AbortAfterWrite", write: "partial", panicV: http.ErrAbortHandler, headOut: true},
		{name: "AbortBeforeHead", panicV: http.ErrAbortHandler},
		{name: "PanicAfterWrite", write: "partial", flush: true, panicV: "boom-after", logged: "boom-after", headOut: true},
		{name: "PanicBeforeHead", panicV: "boom-before", logged: "boom-before"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log svLog
			ts := startServer(t, &Server{
				Logger: slog.New(slog.NewTextHandler(&log, nil)),
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if tt.write != "" {
						io.WriteString(w, tt.write)
					}
					if tt.flush {
						w.(http.Flusher).Flush()
					}
					panic(tt.panicV)
				}),
			})
			c := dialServer(t, ts.addr)
			c.send(getReq("/"))
			if tt.headOut {
				resp, err := http.ReadResponse(c.br, nil)
				if err != nil {
					t.Fatalf("reading the response: %v (read %q)", err, c.raw.String())
				}
				b, err := io.ReadAll(resp.Body)
				if string(b) != tt.write || !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("body %q, error %v; want %q, then an unexpected EOF", b, err, tt.write)
				}
				if resp.StatusCode != 200 || resp.TransferEncoding == nil {
					t.Errorf("got %d %v, want 200 chunked", resp.StatusCode, resp.TransferEncoding)
				}
				if strings.Contains(c.raw.String(), "\r\n0\r\n") {
					t.Errorf("the cut response has a last chunk: %q", c.raw.String())
				}
			}
			c.expectClosed(promptly)
			got := log.String()
			switch {
			case tt.logged == "" && got != "":
				t.Errorf("logged %q, want nothing", got)
			case tt.logged != "" && (!strings.Contains(got, tt.logged) || !strings.Contains(got, "level=ERROR")):
				t.Errorf("logged %q, want an error with %q", got, tt.logged)
			}
		})
	}
}

// TestServerWatchClientGone proves that a client that closes its
// connection while its handler runs ends the request's context within
// promptly (WatchDelay is far shorter), with a cause wrapping
// ErrClientGone, whether the request had no body or one the handler read,
// and whichever way the connection is watched (see watchModes).
func TestServerWatchClientGone(t *testing.T) {
	leakCheck(t)
	for _, mode := range watchModes {
		for _, tt := range []struct{ name, req string }{
			{"NoBody", getReq("/")},
			{"BodyRead", "POST / HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 5\r\n\r\nhello"},
		} {
			t.Run(mode.name+tt.name, func(t *testing.T) {
				started := make(chan struct{}, 1)
				causes := make(chan error, 1)
				ts := startServerWrapped(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.ReadAll(r.Body)
					started <- struct{}{}
					select {
					case <-r.Context().Done():
						causes <- context.Cause(r.Context())
					case <-time.After(exchangeTimeout):
						causes <- errors.New("the context did not end")
					}
				})}, mode.wrap)
				c := dialServer(t, ts.addr)
				c.send(tt.req)
				waitFor(t, started, "the handler")
				c.nc.Close()
				select {
				case cause := <-causes:
					if !errors.Is(cause, ErrClientGone) {
						t.Errorf("cause %v, want ErrClientGone", cause)
					}
				case <-time.After(promptly):
					t.Fatalf("the context did not end within %v of the client leaving", promptly)
				}
			})
		}
	}
}

// TestServerWatchKeepsNextRequest proves that watching a long request for a
// client that leaves neither cancels it while the client stays, nor loses
// a byte of the next request the client pipelined meanwhile: the handler
// runs well past WatchDelay, the next request arrives while it runs, and
// both are answered right, the first with its context intact, whichever
// way the connection is watched (see watchModes).
func TestServerWatchKeepsNextRequest(t *testing.T) {
	leakCheck(t)
	for _, mode := range watchModes {
		for _, pipelined := range []bool{false, true} {
			t.Run(fmt.Sprintf("%sPipelined=%v", mode.name, pipelined), func(t *testing.T) {
				started := make(chan struct{}, 1)
				proceed := make(chan struct{})
				ctxErrs := make(chan error, 1)
				ts := startServerWrapped(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/slow" {
						started <- struct{}{}
						select {
						case <-proceed:
						case <-r.Context().Done():
						}
						ctxErrs <- context.Cause(r.Context())
					}
					io.WriteString(w, r.Method+" "+r.URL.Path)
				})}, mode.wrap)
				c := dialServer(t, ts.addr)
				c.send(getReq("/slow"))
				waitFor(t, started, "the handler")
				time.Sleep(3 * WatchDelay) // the watch has started
				if pipelined {
					c.send(getReq("/fast"))
					time.Sleep(2 * WatchDelay) // and has seen those bytes
				}
				close(proceed)
				if err := waitFor(t, ctxErrs, "the handler"); err != nil {
					t.Errorf("the request's context ended: %v", err)
				}
				if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "GET /slow" {
					t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "GET /slow")
				}
				if !pipelined {
					c.send(getReq("/fast"))
				}
				if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "GET /fast" {
					t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "GET /fast")
				}
			})
		}
	}
}

// TestServerReadHeaderTimeout proves that a client that sends part of a
// request head and stalls is disconnected, without an answer, about
// ReadHeaderTimeout after the head began (after accepting, for the first
// request), and not by IdleTimeout.
func TestServerReadHeaderTimeout(t *testing.T) {
	leakCheck(t)
	const timeout = 200 * time.Millisecond
	for _, first := range []bool{true, false} {
		t.Run(fmt.Sprintf("First=%v", first), func(t *testing.T) {
			var calls atomic.Int32
			ts := startServer(t, &Server{
				ReadHeaderTimeout: timeout,
				IdleTimeout:       time.Minute,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					calls.Add(1)
				}),
			})
			start := time.Now()
			c := dialServer(t, ts.addr)
			if !first {
				c.send(getReq("/"))
				c.response("GET")
				start = time.Now()
			}
			c.send("GET /stalled HTTP/1.1\r\nHost: ")
			c.expectClosed(timeout + promptly)
			if elapsed := time.Since(start); elapsed < timeout*3/4 {
				t.Errorf("closed after %v, before ReadHeaderTimeout (%v)", elapsed, timeout)
			}
			want := int32(1) // the complete request before
			if first {
				want = 0
			}
			if n := calls.Load(); n != want {
				t.Errorf("the handler was called %d times, want %d", n, want)
			}
		})
	}
}

// TestServerIdleTimeout proves that a kept-alive connection left idle is
// closed about IdleTimeout after its last response (ReadHeaderTimeout when
// IdleTimeout is 0).
func TestServerIdleTimeout(t *testing.T) {
	leakCheck(t)
	const timeout = 200 * time.Millisecond
	for _, tt := range []struct {
		name             string
		idle, readHeader time.Duration
	}{
		{"IdleTimeout", timeout, time.Minute},
		{"ReadHeaderTimeout", 0, timeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, &Server{
				ReadHeaderTimeout: tt.readHeader,
				IdleTimeout:       tt.idle,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, "hello")
				}),
			})
			c := dialServer(t, ts.addr)
			c.send(getReq("/"))
			c.response("GET")
			start := time.Now()
			if err := c.expectClosed(timeout + promptly); err != io.EOF {
				t.Errorf("closed with %v, want io.EOF", err)
			}
			if elapsed := time.Since(start); elapsed < timeout/2 {
				t.Errorf("closed after %v, want about %v", elapsed, timeout)
			}
		})
	}
}

// TestServerShutdown proves that Shutdown stops accepting, closes idle
// connections (a kept-alive one, and one that sent nothing yet) at once,
// waits for the request in flight, whose response says "Connection:
// close" and whose connection then closes, and returns nil; and that
// Serve returns ErrServerClosed.
func TestServerShutdown(t *testing.T) {
	leakCheck(t)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			started <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "done "+r.URL.Path)
	})})
	idle := dialServer(t, ts.addr)
	idle.send(getReq("/idle"))
	if resp, body := idle.response("GET"); resp.StatusCode != 200 || body != "done /idle" || resp.Close {
		t.Fatalf("got %d %q (close %v), want 200 %q, kept alive", resp.StatusCode, body, resp.Close, "done /idle")
	}
	silent := dialServer(t, ts.addr)
	busy := dialServer(t, ts.addr)
	busy.send(getReq("/block"))
	waitFor(t, started, "the handler")

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), exchangeTimeout)
		defer cancel()
		shut <- ts.Shutdown(ctx)
	}()
	idle.expectClosed(promptly)
	silent.expectClosed(promptly)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a request was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	if nc, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		nc.Close()
		t.Errorf("a connection was accepted after Shutdown")
	}

	close(release)
	resp, body := busy.response("GET")
	if resp.StatusCode != 200 || body != "done /block" || busy.connectionField() != "close" {
		t.Errorf("got %d %q, Connection: %q; want 200 %q, close", resp.StatusCode, body, busy.connectionField(), "done /block")
	}
	busy.expectClosed(promptly)
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(promptly):
		t.Fatalf("Shutdown did not return after the last request")
	}
	ts.expectClosed(t)
}

// TestServerShutdownTimeout proves that Shutdown returns, with an error
// wrapping context.DeadlineExceeded, when its context ends (already
// expired, or while it waits) before a blocked handler returns, and that it
// leaves that request running: its response still goes out, with
// "Connection: close".
func TestServerShutdownTimeout(t *testing.T) {
	leakCheck(t)
	for _, tt := range []struct {
		name    string
		timeout time.Duration
	}{
		{"Expired", -time.Second},
		{"ExpiresWhileWaiting", 100 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			started := make(chan struct{}, 1)
			release := make(chan struct{})
			ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
				}
				io.WriteString(w, "done")
			})})
			c := dialServer(t, ts.addr)
			c.send(getReq("/"))
			waitFor(t, started, "the handler")
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			start := time.Now()
			err := ts.Shutdown(ctx)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Shutdown: %v, want context.DeadlineExceeded", err)
			}
			if elapsed := time.Since(start); elapsed > tt.timeout+promptly {
				t.Errorf("Shutdown returned after %v", elapsed)
			}
			close(release)
			resp, body := c.response("GET")
			if resp.StatusCode != 200 || body != "done" || c.connectionField() != "close" {
				t.Errorf("got %d %q, Connection: %q; want 200 %q, close", resp.StatusCode, body, c.connectionField(), "done")
			}
			c.expectClosed(promptly)
		})
	}
}

// TestServerClose proves that Close cuts every connection at once, ends
// the contexts of the requests in flight with the cause ErrServerClosed,
// not ErrClientGone, also while the client watch runs on them (either way,
// see watchModes), and makes Serve return ErrServerClosed.
func TestServerClose(t *testing.T) {
	leakCheck(t)
	for _, mode := range watchModes {
		t.Run(mode.name, func(t *testing.T) {
			const n = 3
			started := make(chan struct{}, n)
			causes := make(chan error, n)
			ts := startServerWrapped(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				<-r.Context().Done()
				causes <- context.Cause(r.Context())
			})}, mode.wrap)
			conns := make([]*svConn, n)
			for i := range conns {
				conns[i] = dialServer(t, ts.addr)
				conns[i].send(getReq("/"))
			}
			for range n {
				waitFor(t, started, "the handlers")
			}
			time.Sleep(3 * WatchDelay) // the client watch runs
			if err := ts.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			for _, c := range conns {
				c.expectClosed(promptly)
			}
			for range n {
				select {
				case cause := <-causes:
					if cause != ErrServerClosed {
						t.Errorf("cause %v, want ErrServerClosed", cause)
					}
				case <-time.After(promptly):
					t.Fatalf("a request's context did not end")
				}
			}
			ts.expectClosed(t)
		})
	}
}

// TestServerHijack proves that a handler that hijacks the connection gets,
// in the returned reader, every byte the client sent after its request:
// in the same write as the head, after a body, or while the handler ran
// (under watch, either way: see watchModes); that what it writes reaches
// the client as is; and that
// the server leaves the connection alone after the handler returns: it
// neither writes, reads nor closes it, and Shutdown does not wait for it.
func TestServerHijack(t *testing.T) {
	leakCheck(t)
	tests := []struct {
		name, req, early, late string
	}{
		{name: "WithHead", req: getReq("/"), early: "early-bytes"},
		{name: "AfterBody", req: "POST / HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 4\r\n\r\nbody", early: "early-bytes"},
		{name: "WhileRunning", req: getReq("/"), late: "late-bytes"},
		{name: "BothWays", req: getReq("/"), early: "early-", late: "late-bytes"},
	}
	type hijacked struct {
		conn net.Conn
		brw  *bufio.ReadWriter
		got  string
		err  error
	}
	for _, mode := range watchModes {
		for _, tt := range tests {
			t.Run(mode.name+tt.name, func(t *testing.T) {
				started := make(chan struct{}, 1)
				proceed := make(chan struct{})
				results := make(chan hijacked, 1)
				ts := startServerWrapped(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.ReadAll(r.Body)
					started <- struct{}{}
					select {
					case <-proceed:
					case <-r.Context().Done():
						results <- hijacked{err: context.Cause(r.Context())}
						return
					}
					conn, brw, err := w.(http.Hijacker).Hijack()
					if err != nil {
						results <- hijacked{err: err}
						return
					}
					conn.SetDeadline(time.Now().Add(promptly))
					buf := make([]byte, len(tt.early+tt.late))
					_, err = io.ReadFull(brw, buf)
					brw.WriteString("raw:" + string(buf))
					if ferr := brw.Flush(); err == nil {
						err = ferr
					}
					results <- hijacked{conn, brw, string(buf), err}
				})}, mode.wrap)
				c := dialServer(t, ts.addr)
				c.send(tt.req + tt.early)
				waitFor(t, started, "the handler")
				if tt.late != "" {
					time.Sleep(3 * WatchDelay) // the watch has started
					c.send(tt.late)
					time.Sleep(2 * WatchDelay) // and has seen those bytes
				}
				close(proceed)
				h := waitFor(t, results, "the handler")
				if h.conn != nil {
					defer h.conn.Close()
				}
				if h.err != nil {
					t.Fatalf("the handler: %v", h.err)
				}
				if want := tt.early + tt.late; h.got != want {
					t.Errorf("the hijacker read %q, want %q", h.got, want)
				}
				want := "raw:" + tt.early + tt.late
				buf := make([]byte, len(want))
				if _, err := io.ReadFull(c.br, buf); err != nil || string(buf) != want {
					t.Fatalf("the client read %q (%v), want %q", buf, err, want)
				}

				ctx, cancel := context.WithTimeout(context.Background(), promptly)
				defer cancel()
				if err := ts.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown: %v, want nil at once with only a hijacked connection", err)
				}
				c.send("ping")
				ping := make([]byte, 4)
				if _, err := io.ReadFull(h.brw, ping); err != nil || string(ping) != "ping" {
					t.Errorf("the hijacker read %q (%v), want %q", ping, err, "ping")
				}
				if _, err := io.WriteString(h.conn, "pong"); err != nil {
					t.Errorf("the hijacker's write: %v", err)
				}
				h.conn.Close()
				if rest, err := io.ReadAll(c.br); err != nil || string(rest) != "pong" {
					t.Errorf("the client read %q (%v), want only %q", rest, err, "pong")
				}
			})
		}
	}
}

// TestServerH2Handoff proves that a connection that opens with the HTTP/2
// preface goes to Server.HTTP2 with every byte the client sent, preface
// included, in order, however they were split; that without HTTP2 it
// gets a 505 and is closed; and that a short HTTP/1.0 request, even one
// that starts like the preface, is answered at once rather than kept
// waiting for a preface's worth of bytes.
func TestServerH2Handoff(t *testing.T) {
	leakCheck(t)
	for _, tt := range []struct {
		name  string
		parts []string
	}{
		{"OneWrite", []string{h2Preface + "frames"}},
		{"Split", []string{"PRI * HTTP/2.0\r\n", "\r\nSM\r\n\r\nfra", "mes"}},
		{"ByteByByte", strings.Split(h2Preface, "")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			got := make(chan net.Conn, 1)
			ts := startServer(t, &Server{
				HTTP2: func(c net.Conn) { got <- c },
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					calls.Add(1)
				}),
			})
			c := dialServer(t, ts.addr)
			for _, p := range tt.parts {
				c.send(p)
				time.Sleep(time.Millisecond) // in segments of their own, likely
			}
			hc := waitFor(t, got, "the HTTP2 hand-off")
			defer hc.Close()
			hc.SetDeadline(time.Now().Add(exchangeTimeout))
			want := strings.Join(tt.parts, "")
			buf := make([]byte, len(want))
			if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != want {
				t.Errorf("HTTP2 read %q (%v), want %q", buf, err, want)
			}
			if _, err := io.WriteString(hc, "settings"); err != nil {
				t.Errorf("writing to the handed-over connection: %v", err)
			}
			reply := make([]byte, len("settings"))
			if _, err := io.ReadFull(c.br, reply); err != nil || string(reply) != "settings" {
				t.Errorf("the client read %q (%v), want %q", reply, err, "settings")
			}
			if n := calls.Load(); n != 0 {
				t.Errorf("the handler was called %d times", n)
			}
		})
	}

	t.Run("NoHTTP2", func(t *testing.T) {
		ts := startServer(t, &Server{Handler: http.NotFoundHandler()})
		c := dialServer(t, ts.addr)
		c.send(h2Preface)
		if resp, _ := c.response("GET"); resp.StatusCode != http.StatusHTTPVersionNotSupported {
			t.Errorf("got %d, want 505", resp.StatusCode)
		}
		c.expectClosed(promptly)
	})

	for _, req := range []string{"GET / HTTP/1.0\r\n\r\n", "PRI / HTTP/1.0\r\n\r\n"} {
		t.Run("Short"+req[:3], func(t *testing.T) {
			got := make(chan net.Conn, 1)
			ts := startServer(t, &Server{
				HTTP2: func(c net.Conn) { got <- c; c.Close() },
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, r.Method)
				}),
			})
			c := dialServer(t, ts.addr)
			c.send(req)
			c.nc.SetReadDeadline(time.Now().Add(promptly))
			if resp, body := c.response("GET"); resp.StatusCode != 200 || body != req[:3] {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, req[:3])
			}
			select {
			case <-got:
				t.Errorf("an HTTP/1.0 request went to HTTP2")
			default:
			}
		})
	}
}

// TestServerLingerClose proves that a response sent without reading a
// request body the client is still sending reaches the client whole, and
// that the connection then ends cleanly (the client reads io.EOF, not a
// reset that unread bytes would cause, and that can destroy the response
// on its way).
func TestServerLingerClose(t *testing.T) {
	leakCheck(t)
	ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		io.WriteString(w, "too large")
	})})
	c := dialServer(t, ts.addr)
	c.send("POST /upload HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 1048576\r\n\r\n" + strings.Repeat("x", 64<<10))
	if resp, body := c.response("POST"); resp.StatusCode != http.StatusRequestEntityTooLarge || body != "too large" {
		t.Errorf("got %d %q, want 413 %q", resp.StatusCode, body, "too large")
	}
	if err := c.expectClosed(promptly); err != io.EOF {
		t.Errorf("the connection ended with %v, want io.EOF", err)
	}
}

// TestServerFullDuplex proves that a handler can write and flush the head
// and part of the body before it reads the request body, which the client
// sends only once it has them.
func TestServerFullDuplex(t *testing.T) {
	leakCheck(t)
	post := "POST / HTTP/1.1\r\nHost: " + testHost + "\r\n"
	for _, tt := range []struct{ name, head, body string }{
		{"ContentLength", post + "Content-Length: 5\r\n\r\n", "hello"},
		{"Chunked", post + "Transfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rc := http.NewResponseController(w)
				if err := rc.EnableFullDuplex(); err != nil {
					panic(err)
				}
				io.WriteString(w, "first;")
				if err := rc.Flush(); err != nil {
					panic(err)
				}
				b, err := io.ReadAll(r.Body)
				fmt.Fprintf(w, "echo:%s:%v", b, err)
			})})
			c := dialServer(t, ts.addr)
			c.send(tt.head)
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				t.Fatalf("reading the response head: %v", err)
			}
			first := make([]byte, len("first;"))
			if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first;" {
				t.Fatalf("read %q (%v), want %q", first, err, "first;")
			}
			c.send(tt.body)
			rest, err := io.ReadAll(resp.Body)
			if want := "echo:hello:<nil>"; err != nil || string(rest) != want {
				t.Errorf("read %q (%v), want %q", rest, err, want)
			}
			c.send(getReq("/"))
			if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "first;echo::<nil>" {
				t.Errorf("next request: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// TestServerContentLength proves that a handler that declares a
// Content-Length cannot write more (http.ErrContentLength, and the
// response and connection stay sound), and that writing less closes the
// connection after the response, so that the client sees the body cut.
func TestServerContentLength(t *testing.T) {
	leakCheck(t)
	t.Run("Longer", func(t *testing.T) {
		errs := make(chan []error, 1)
		ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/next" {
				io.WriteString(w, "next")
				return
			}
			w.Header().Set("Content-Length", "5")
			_, err1 := io.WriteString(w, "hello world")
			_, err2 := io.WriteString(w, "hello")
			_, err3 := io.WriteString(w, "!")
			errs <- []error{err1, err2, err3}
		})})
		c := dialServer(t, ts.addr)
		c.send(getReq("/"))
		resp, body := c.response("GET")
		if resp.StatusCode != 200 || body != "hello" || resp.ContentLength != 5 {
			t.Errorf("got %d %q (length %d), want 200 %q", resp.StatusCode, body, resp.ContentLength, "hello")
		}
		got := waitFor(t, errs, "the handler")
		for i, want := range []error{http.ErrContentLength, nil, http.ErrContentLength} {
			if !errors.Is(got[i], want) {
				t.Errorf("write %d: %v, want %v", i+1, got[i], want)
			}
		}
		c.expectNext()
	})

	t.Run("Shorter", func(t *testing.T) {
		ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "hello")
		})})
		c := dialServer(t, ts.addr)
		c.send(getReq("/"))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("reading the response: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		if string(b) != "hello" || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("body %q (%v), want %q cut by the connection's end", b, err, "hello")
		}
		c.expectClosed(promptly)
	})
}

// TestServerServeAfterClose proves that Serve, called after Close or
// Shutdown, or a second time, returns ErrServerClosed at once and closes
// the listener it was given.
func TestServerServeAfterClose(t *testing.T) {
	leakCheck(t)
	for _, tt := range []struct {
		name string
		stop func(t *testing.T, s *Server)
	}{
		{"Close", func(t *testing.T, s *Server) { s.Close() }},
		{"Shutdown", func(t *testing.T, s *Server) { s.Shutdown(context.Background()) }},
		{"SecondServe", func(t *testing.T, s *Server) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- s.Serve(ln) }()
			t.Cleanup(func() {
				s.Close()
				if err := waitFor(t, done, "the first Serve"); !errors.Is(err, ErrServerClosed) {
					t.Errorf("the first Serve: %v, want ErrServerClosed", err)
				}
			})
			c := dialServer(t, ln.Addr().String()) // the first Serve serves
			c.send(getReq("/"))
			if resp, _ := c.response("GET"); resp.StatusCode != http.StatusNotFound {
				t.Fatalf("the first Serve answered %d, want 404", resp.StatusCode)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Handler: http.NotFoundHandler()}
			tt.stop(t, s)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			done := make(chan error, 1)
			go func() { done <- s.Serve(ln) }()
			select {
			case err := <-done:
				if !errors.Is(err, ErrServerClosed) {
					t.Errorf("Serve: %v, want ErrServerClosed", err)
				}
			case <-time.After(promptly):
				t.Fatal("Serve did not return")
			}
			if nc, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
				nc.Close()
				t.Errorf("the listener still accepts")
			}
		})
	}
}

// TestServerConnContext proves that the context ConnContext makes for a
// connection is the base of its requests' contexts, and that a request
// carries the client's address as RemoteAddr.
func TestServerConnContext(t *testing.T) {
	leakCheck(t)
	type key struct{}
	ts := startServer(t, &Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, key{}, "conn "+c.RemoteAddr().String())
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%v|%s", r.Context().Value(key{}), r.RemoteAddr)
		}),
	})
	c := dialServer(t, ts.addr)
	c.send(getReq("/"))
	addr := c.nc.LocalAddr().String()
	if _, body := c.response("GET"); body != "conn "+addr+"|"+addr {
		t.Errorf("the handler saw %q, want %q", body, "conn "+addr+"|"+addr)
	}
}
