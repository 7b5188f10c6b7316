// Package http1 is HTTP/1.1 as airlock speaks it on the per-request path:
// the relay's client for upstream APIs (Pool), and the edge's server for its
// clients (Server, in server.go). Both run an exchange on one goroutine.
//
// The client is a pool of kept-alive TCP or TLS connections to one origin,
// each round trip run on its caller's goroutine.
//
// net/http's Transport gives every connection a reader and a writer
// goroutine, and hands each request and its response between them and the
// caller over channels: three goroutine hand-offs per request, which cost
// the relay about a third of its CPU on small requests (issue 9, profile in
// the README). Here the caller writes the request head, with a body of up to
// SmallBody bytes in the same write, then reads the response head and body
// itself. Only a longer body, or one of unknown length, is written by a
// goroutine of its own, so that an upstream may answer before it has read
// all of it.
//
// What the client leaves out on purpose, for the relay to do with
// net/http: HTTP/2, proxies, protocol upgrades (101), "Expect:
// 100-continue" and compression.
package http1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults and bounds.
const (
	// SmallBody is the longest request body sent in the same write as the
	// head. A body this short fits an upstream's socket buffer whether or
	// not the upstream reads it, so writing it before reading the answer
	// cannot wait on the upstream.
	SmallBody = 64 << 10
	// DefaultMaxHeaderBytes bounds a response head (status line, header
	// fields, or the trailer section), like net/http's default.
	DefaultMaxHeaderBytes = 1 << 20
	// probeAfter is how long a connection may rest in the pool before it
	// is checked, with one non-blocking peek, for an upstream that closed
	// it: servers close idle connections after seconds, not microseconds,
	// so a busy pool never pays for the check.
	probeAfter = time.Second
	// readBufferSize is each connection's read buffer, held for as long
	// as its response streams (thousands of SSE streams hold one each).
	// Longer head lines are read across fills; bodies are read straight
	// into the caller's buffer once it is this large.
	readBufferSize = 2 << 10
	// messageBufferSize is the pooled buffer a request message starts in.
	messageBufferSize = 4 << 10
	// max1xx is the most interim (1xx) responses skipped before one
	// request's final response, as in net/http.
	max1xx = 5
)

// Options configures a Pool. Zero durations mean no limit.
type Options struct {
	// Addr is the origin's host:port.
	Addr string
	// TLS, when set, makes every connection TLS with this configuration
	// (its ServerName must be set); the pool offers only "http/1.1" by
	// ALPN. Nil: plain TCP.
	TLS *tls.Config
	// DialTimeout bounds the TCP connect, HandshakeTimeout the TLS
	// handshake.
	DialTimeout      time.Duration
	HandshakeTimeout time.Duration
	// KeepAlive is the TCP keep-alive period (0: Go's default, negative:
	// off).
	KeepAlive time.Duration
	// ResponseHeaderTimeout bounds the wait for a response head, from when
	// the request starts to be written.
	ResponseHeaderTimeout time.Duration
	// IdleTimeout is how long a connection may rest in the pool unused.
	IdleTimeout time.Duration
	// MaxIdle is how many connections may rest in the pool (0: none kept).
	MaxIdle int
	// MaxHeaderBytes bounds a response head (0: DefaultMaxHeaderBytes).
	MaxHeaderBytes int
}

// Pool is a set of kept-alive connections to one origin, and the client
// that makes requests on them. It is safe for concurrent use.
type Pool struct {
	opt    Options
	dialer net.Dialer

	mu     sync.Mutex
	idle   []*conn // the most recently used last
	closed bool
}

// NewPool returns an empty pool for opt's origin.
func NewPool(opt Options) *Pool {
	if opt.MaxHeaderBytes <= 0 {
		opt.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if opt.TLS != nil {
		opt.TLS = opt.TLS.Clone()
		opt.TLS.NextProtos = []string{"http/1.1"}
	}
	return &Pool{
		opt:    opt,
		dialer: net.Dialer{Timeout: opt.DialTimeout, KeepAlive: opt.KeepAlive},
	}
}

// Close closes the pool's idle connections, and every connection that
// finishes its round trip from now on. Round trips in progress go on.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// RoundTrip sends req on a pooled connection, or a new one, and returns the
// response once its head has arrived; its Body streams from the connection
// and must be read to its end or closed. The response's Trailer is filled in
// when Body has returned io.EOF. Interim (1xx) responses are skipped; a 101
// is an error.
//
// ctx covers the whole exchange, body included: when it ends, the
// connection is cut and reads fail with ctx's error. A request whose bytes
// never reached a connection fails with an error for which Unsent reports
// true. Once, a request that met a connection the upstream had just closed
// is sent again on a new one, if that cannot repeat anything the upstream
// acted on: no byte of it was written, or it has no body and an idempotent
// method (as net/http decides).
//
// A body longer than SmallBody, or of unknown length, is written by a
// goroutine of its own, which may go on reading req.Body after RoundTrip
// and even Body.Close return, until req.Body ends or fails, or the
// connection does: the caller ends req.Body when it is done with the
// exchange (the relay's is the tunnel stream, which the exchange releases).
// The connection goes back to the pool only if that goroutine had finished
// when the response ended; waiting for it could wait on the client.
func (p *Pool) RoundTrip(ctx context.Context, req *Request) (*http.Response, error) {
	if err := req.check(); err != nil {
		return nil, &unsentError{err}
	}
	bp := getBuffer()
	defer putBuffer(bp)
	msg, err := req.appendMessage((*bp)[:0])
	*bp = msg[:0]
	if err != nil {
		return nil, &unsentError{err}
	}
	for retried := false; ; retried = true {
		c, err := p.get(ctx)
		if err != nil {
			return nil, &unsentError{err}
		}
		resp, err := c.roundTrip(ctx, req, msg)
		if err == nil {
			return resp, nil
		}
		if retried || !c.reused || !retryable(err, req) || ctx.Err() != nil {
			return nil, err
		}
	}
}

// get returns an idle connection that still looks open, or dials one.
func (p *Pool) get(ctx context.Context) (*conn, error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return p.dial(ctx)
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		rested := time.Since(c.idleSince)
		if p.opt.IdleTimeout > 0 && rested > p.opt.IdleTimeout || rested > probeAfter && !c.open() {
			c.close()
			continue
		}
		c.reused = true
		return c, nil
	}
}

// put returns c to the pool, or closes it when the pool is closed or full.
// It also closes the connection that rested longest, if it has rested too
// long: one check per put keeps a pool whose load fell from holding
// connections the upstream has long closed.
func (p *Pool) put(c *conn) {
	c.idleSince = time.Now()
	var stale *conn
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.opt.MaxIdle {
		p.mu.Unlock()
		c.close()
		return
	}
	if len(p.idle) > 0 && p.opt.IdleTimeout > 0 && c.idleSince.Sub(p.idle[0].idleSince) > p.opt.IdleTimeout {
		stale = p.idle[0]
		p.idle = append(p.idle[:0], p.idle[1:]...)
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
	if stale != nil {
		stale.close()
	}
}

// dial opens a new connection, with its TLS handshake when the pool has a
// TLS configuration.
func (p *Pool) dial(ctx context.Context) (*conn, error) {
	nc, err := p.dialer.DialContext(ctx, "tcp", p.opt.Addr)
	if err != nil {
		return nil, err
	}
	tcp, _ := nc.(*net.TCPConn)
	if p.opt.TLS != nil {
		tc := tls.Client(nc, p.opt.TLS)
		hctx, cancel := ctx, context.CancelFunc(func() {})
		if p.opt.HandshakeTimeout > 0 {
			hctx, cancel = context.WithTimeout(ctx, p.opt.HandshakeTimeout)
		}
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", p.opt.Addr, err)
		}
		nc = tc
	}
	c := &conn{pool: p, nc: nc, tcp: tcp}
	c.lim.r = nc
	c.br = bufio.NewReaderSize(&c.lim, readBufferSize)
	c.tp.R = c.br
	return c, nil
}

// unsentError wraps the failure of a request of which nothing was written.
type unsentError struct{ err error }

func (e *unsentError) Error() string { return "request not sent: " + e.err.Error() }
func (e *unsentError) Unwrap() error { return e.err }

// Unsent reports whether err, from RoundTrip, says that no byte of the
// request reached the upstream.
func Unsent(err error) bool {
	var ue *unsentError
	return errors.As(err, &ue)
}

// bufferPool holds the buffers request messages are built in.
var bufferPool = sync.Pool{New: func() any {
	b := make([]byte, 0, messageBufferSize)
	return &b
}}

func getBuffer() *[]byte { return bufferPool.Get().(*[]byte) }

func putBuffer(bp *[]byte) {
	if cap(*bp) <= 2*SmallBody {
		bufferPool.Put(bp)
	}
}

// Interface guard: the body is what net/http calls a response body.
var _ io.ReadCloser = (*body)(nil)

// retryable reports whether a round trip that failed on a connection from
// the pool may be made again on another: nothing of it was written, or it
// met a connection the upstream had closed and repeating it is harmless.
func retryable(err error, req *Request) bool {
	return Unsent(err) || errors.Is(err, errServerClosed) && req.replayable()
}
