package http1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fuzzTimeout bounds one fuzz input's exchange: an input that makes the
// client wait longer is a hang, and fails.
const fuzzTimeout = 2 * time.Second

// FuzzResponse feeds arbitrary bytes to the client as an upstream's whole
// answer to a GET (or a HEAD), over loopback TCP since the pool only dials:
// the server reads the request, writes the bytes, and closes its side. It
// proves that no answer makes the client panic or hang, and that an answer
// it accepts is consistent: a final status (no 1xx, no 101), HTTP/1.x, a
// body never longer than the bytes sent, as long as a Content-Length says,
// and none for HEAD.
func FuzzResponse(f *testing.F) {
	for _, seed := range []struct {
		head bool
		resp string
	}{
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		{false, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"},
		{false, "HTTP/1.1 200 OK\r\nTrailer: X-A\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n"},
		{false, "HTTP/1.0 200 OK\r\n\r\nuntil close"},
		{false, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{false, "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"},
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"},
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"},
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
		{false, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n"},
		{false, "HTTP/1.1 101 Switching Protocols\r\n\r\n"},
		{false, "HTTP/2.0 200 OK\r\n\r\n"},
		{false, "\x00\x00\x00\x04\x00\x00\x00\x00\x00"},
		{false, "garbage"},
		{false, ""},
		{true, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"},
		{true, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	} {
		f.Add(seed.head, []byte(seed.resp))
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	// MaxIdle 0: each input gets a connection of its own, so no input
	// can spill into the next.
	p := NewPool(Options{Addr: ln.Addr().String(), MaxHeaderBytes: 4 << 10})
	f.Cleanup(p.Close)

	f.Fuzz(func(t *testing.T, head bool, data []byte) {
		served := make(chan struct{})
		go func() {
			defer close(served)
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(fuzzTimeout))
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(fuzzTimeout))
			if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
				return
			}
			c.Write(data)
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c) // until the client closes
		}()
		defer func() { <-served }()

		ctx, cancel := context.WithTimeout(t.Context(), fuzzTimeout)
		defer cancel()
		req := &Request{Method: http.MethodGet, Target: "/fuzz", Host: testHost}
		if head {
			req.Method = http.MethodHead
		}
		resp, err := p.RoundTrip(ctx, req)
		if ctx.Err() != nil {
			t.Fatalf("the round trip hung: %v", err)
		}
		if err != nil {
			if Unsent(err) {
				t.Fatalf("Unsent(%v) is true for a request that was written", err)
			}
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 999 {
			t.Errorf("status %d returned", resp.StatusCode)
		}
		if resp.ProtoMajor != 1 {
			t.Errorf("protocol %q returned", resp.Proto)
		}
		if resp.TransferEncoding != nil && resp.ContentLength != -1 {
			t.Errorf("chunked with ContentLength %d", resp.ContentLength)
		}
		n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, int64(len(data))+1))
		if ctx.Err() != nil {
			t.Fatalf("reading the body hung: %v", err)
		}
		if n > int64(len(data)) {
			t.Fatalf("read a body of more than the %d bytes sent", len(data))
		}
		// Cut short or not, a body never goes past its length.
		if head && n != 0 {
			t.Errorf("HEAD response with a body of %d bytes", n)
		}
		if !head && resp.ContentLength >= 0 && n > resp.ContentLength {
			t.Errorf("body of %d bytes, ContentLength %d", n, resp.ContentLength)
		}
		// Ended cleanly (io.EOF), it has its whole length.
		if err == nil && !head && resp.ContentLength >= 0 && n != resp.ContentLength {
			t.Errorf("body of %d bytes, ContentLength %d", n, resp.ContentLength)
		}
	})
}

// FuzzServer feeds arbitrary bytes to the server as a client's whole side
// of a connection, over loopback TCP, then half-closes it. The handler
// reads the body and answers; for paths under /hijack it takes the
// connection over and closes it. It proves that no input makes the server
// panic, hang past fuzzTimeout or leave a goroutine behind (TestMain's
// goleak), and that what it writes back starts as an HTTP/1.1 status line
// (or nothing, for an input it drops: a silent or cut client).
func FuzzServer(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
		"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		"GET /hijack HTTP/1.1\r\nHost: a\r\n\r\nearly bytes",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00",
		"PRI * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
		"GET /" + strings.Repeat("a", 3000) + " HTTP/1.1\r\nHost: a\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		s := &Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/hijack") {
					if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
						c.Close()
					}
					return
				}
				io.Copy(io.Discard, r.Body)
				w.Header().Set(http.TrailerPrefix+"X-Done", "1")
				io.WriteString(w, "ok")
			}),
			ReadHeaderTimeout: fuzzTimeout / 2,
			MaxHeaderBytes:    2 << 10,
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln) }()
		defer func() {
			s.Close()
			if err := <-served; err != ErrServerClosed {
				t.Errorf("Serve: %v", err)
			}
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * fuzzTimeout))
		c.Write(input)
		c.(*net.TCPConn).CloseWrite()
		out, err := io.ReadAll(c)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reading the answer: %v (got %q)", err, out)
		}
		if len(out) > 0 && !bytes.HasPrefix(out, []byte("HTTP/1.1 ")) && !bytes.HasPrefix(out, []byte("HTTP/1.0 ")) {
			t.Errorf("answer does not start with a status line: %q", truncate(string(out)))
		}
	})
}
