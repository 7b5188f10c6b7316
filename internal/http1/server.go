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
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Server serves HTTP/1.x on the connections of a listener, calling its
// Handler for each request on the connection's own goroutine.
//
// net/http's server also starts a goroutine per request that reads the
// connection in the background, to notice a client that leaves while its
// handler runs. Here that watch starts only for a request still running
// after WatchDelay (a clock scans the connections, so no timer is set per
// request): a small request is answered long before, and costs no goroutine,
// no extra read and no wake-up for it (issue 9). On Linux one goroutine
// watches all such connections with epoll (hangups), so that thousands of
// long streams hold no goroutine for it either; elsewhere each gets a
// goroutine that reads its connection.
//
// Buffers are held only while used: a connection takes a read buffer from
// a pool for a request's head and body, and a write buffer for the bytes of
// a response not yet written, so a stream waiting for its next event holds
// neither.
//
// A connection that opens with the HTTP/2 preface (h2c with prior
// knowledge) is handed to HTTP2, with the bytes read so far.
//
// What it leaves out: TLS, the "Upgrade: h2c" dance, and sniffing a
// Content-Type. A response without Content-Length is chunked (HTTP/1.1) or
// ends with the connection (HTTP/1.0).
type Server struct {
	// Handler serves every request. It may panic with
	// http.ErrAbortHandler to cut the connection without ending its
	// response.
	Handler http.Handler
	// ReadHeaderTimeout bounds the reading of a request head, from its
	// first byte (from accepting, for a connection's first request); 0:
	// no limit.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection; 0: ReadHeaderTimeout.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request head; 0: 1 MiB.
	MaxHeaderBytes int
	// ConnContext, if set, makes the base context of a connection's
	// requests.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// HTTP2 takes connections that open with the HTTP/2 client preface;
	// nil: they get a 505 and are closed. The net.Conn it gets replays
	// the bytes already read. It should return at once: until it does,
	// the connection counts as busy (Shutdown waits for it).
	HTTP2 func(net.Conn)
	// Logger logs handler panics and failed accepts; nil: discarded.
	Logger *slog.Logger

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*serverConn]struct{}
	closing  bool
	draining atomic.Bool

	// The watch clock: watchable counts requests that may need watching;
	// wake starts the clock when it rests. hangups is the shared watcher
	// (Linux; nil elsewhere), guarded by mu; it closes once Serve has
	// returned and the last connection is gone.
	watchable  atomic.Int64
	wake       chan struct{}
	stopClock  chan struct{}
	clockDone  chan struct{}
	hangups    *hangups
	serveEnded bool
}

// WatchDelay is how long a request runs, its body read, before its
// connection is watched for a client that leaves. The clock ticks at half
// of it, so a departure is noticed at most 1.5 × WatchDelay after the
// request started.
const WatchDelay = 50 * time.Millisecond

// ErrServerClosed is what Serve returns after Shutdown or Close.
var ErrServerClosed = errors.New("http1: server closed")

// Serve accepts connections on ln and serves them until Shutdown or Close,
// then returns ErrServerClosed (or the accept error that stopped it). It
// may be called once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.ln != nil || s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.ln, s.conns = ln, make(map[*serverConn]struct{})
	s.wake, s.stopClock, s.clockDone = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	s.hangups = newHangups()
	s.mu.Unlock()
	go s.clock()
	defer s.stopWatchClock()

	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				// Out of descriptors, for instance: back off as net/http
				// does, rather than spin.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger().Warn("http1: accept failed; retrying", "err", err, "in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("http1: accept: %w", err)
		}
		delay = 0
		c := &serverConn{srv: s, nc: nc, accepted: time.Now()}
		if !s.track(c) {
			nc.Close()
			return ErrServerClosed
		}
		go c.serve()
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// track registers c; false once the server is closing.
func (s *Server) track(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *serverConn) {
	s.mu.Lock()
	delete(s.conns, c)
	h := s.idleHangups()
	s.mu.Unlock()
	h.close()
}

// idleHangups takes the shared watcher for closing once nothing can use
// it any more: Serve has returned and no connection is left. s.mu is held.
func (s *Server) idleHangups() *hangups {
	h := s.hangups
	if !s.serveEnded || len(s.conns) > 0 || h == nil {
		return nil
	}
	s.hangups = nil
	return h
}

// Shutdown stops accepting, closes idle connections, and waits for the
// requests in flight to end (each connection closes after its current
// response), or for ctx: then it returns ctx's error and leaves the rest
// running (Close cuts them). Connections taken over (Hijack) are not
// waited for.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.closeListener()
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		if s.closeIdle() {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("http1: shutdown: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops accepting and closes every connection at once; the contexts
// of the requests in flight end with ErrServerClosed. Their handlers may
// still be returning when it returns.
func (s *Server) Close() error {
	s.draining.Store(true)
	err := s.closeListener()
	s.mu.Lock()
	for c := range s.conns {
		// The cause first: closing ends a watcher's read, which would
		// name the client.
		c.watchMu.Lock()
		if c.cancel != nil {
			c.cancel(ErrServerClosed)
		}
		c.watchMu.Unlock()
		c.nc.Close()
	}
	s.mu.Unlock()
	return err
}

func (s *Server) closeListener() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil
	}
	s.closing = true
	if s.ln == nil {
		return nil
	}
	return s.ln.Close()
}

// closeIdle closes the connections that wait for a request (their first
// one too) and reports whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.Load() != stateActive {
			c.nc.Close()
		}
	}
	return len(s.conns) == 0
}

func (s *Server) stopWatchClock() {
	close(s.stopClock)
	<-s.clockDone
	s.mu.Lock()
	s.serveEnded = true
	h := s.idleHangups()
	s.mu.Unlock()
	h.close()
}

// clock starts the watch of requests that have run for WatchDelay. It rests
// while no request is watchable.
func (s *Server) clock() {
	defer close(s.clockDone)
	tick := time.NewTicker(WatchDelay / 2)
	defer tick.Stop()
	for {
		if s.watchable.Load() == 0 {
			tick.Stop()
			select {
			case <-s.wake:
			case <-s.stopClock:
				return
			}
			tick.Reset(WatchDelay / 2)
		}
		select {
		case <-tick.C:
		case <-s.stopClock:
			return
		}
		since := nanotime() - int64(WatchDelay)
		s.mu.Lock()
		for c := range s.conns {
			if at := c.watchFrom.Load(); at != 0 && at <= since {
				c.startWatch(s.hangups)
			}
		}
		s.mu.Unlock()
	}
}

// Connection states, for Shutdown.
const (
	stateNew    = iota // accepted, no byte read yet
	stateActive        // reading or serving a request
	stateIdle          // waiting for the next request
)

// Watch states of a connection's current request.
const (
	watchNone    = iota // nothing to watch (no request, or its body is being read)
	watchReady          // the body was read; watchFrom says since when
	watchRunning        // the shared watcher or a goroutine watches the connection
)

// serverConn is one client connection, served by one goroutine.
type serverConn struct {
	srv      *Server
	nc       net.Conn
	accepted time.Time
	remote   string
	ctx      context.Context
	early    earlyReader
	cr       limitReader   // over early: what br reads
	br       *bufio.Reader // nil between requests
	state    atomic.Int32

	// The watch of the current request (see Server). watchMu guards the
	// fields below but watchFrom, which the clock, the shared watcher, the
	// request body's reader and the connection's goroutine use; watchFrom
	// lets the clock skip a connection without the lock.
	watchMu   sync.Mutex
	watch     int
	watchDone chan struct{} // of the watcher goroutine
	hang      *hangups      // or the shared watcher, with its token
	hangToken uint64
	watchFrom atomic.Int64            // nanotime when watchReady began; 0: not ready
	cancel    context.CancelCauseFunc // the current request's context
}

// ErrClientGone is the cause of a request's context when its client closed
// or reset the connection while the handler ran.
var ErrClientGone = errors.New("the client closed the connection")

// earlyReader is the connection as its read buffer sees it (through the
// head bound, limitReader): a byte the watcher read comes first.
type earlyReader struct {
	nc      net.Conn
	early   byte
	hasByte bool
}

func (r *earlyReader) Read(p []byte) (int, error) {
	if r.hasByte && len(p) > 0 {
		p[0], r.hasByte = r.early, false
		return 1, nil
	}
	return r.nc.Read(p)
}

// readBuffers holds the connections' read buffers: a connection holds one
// only while it reads a request head or body, not while its response
// streams or while it is idle between requests.
var readBuffers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}

const readBufSize = 4 << 10

// h2Preface is how an HTTP/2 client with prior knowledge opens.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var h2PrefaceBytes = []byte(h2Preface)

func (c *serverConn) serve() {
	s := c.srv
	defer s.untrack(c)
	c.early.nc = c.nc
	c.cr = limitReader{r: &c.early, n: -1}
	c.remote = c.nc.RemoteAddr().String()
	c.ctx = context.Background()
	if s.ConnContext != nil {
		c.ctx = s.ConnContext(c.ctx, c.nc)
	}
	handedOver := false
	defer func() {
		if !handedOver {
			c.nc.Close()
		}
		c.releaseReader(true)
	}()
	for first := true; ; first = false {
		c.takeReader()
		if !c.awaitRequest(first) {
			return
		}
		if first && c.opensHTTP2() {
			handedOver = c.handOver()
			return
		}
		keep, hijacked, unread := c.serveRequest()
		switch {
		case hijacked:
			handedOver = true
			return
		case unread:
			c.lingerClose()
			return
		case !keep || s.draining.Load():
			return
		}
	}
}

// opensHTTP2 reports whether the connection opens with the HTTP/2 preface.
// It reads more only while what came so far could be the preface's start:
// a short HTTP/1.0 request ("GET / HTTP/1.0" and two line ends) is not
// kept waiting for bytes that never come.
func (c *serverConn) opensHTTP2() bool {
	for n := 1; ; {
		p, err := c.br.Peek(n)
		if err != nil || !bytes.HasPrefix(h2PrefaceBytes, p) {
			return false
		}
		if n == len(h2Preface) {
			return true
		}
		n = min(max(n+1, c.br.Buffered()), len(h2Preface))
	}
}

// lingerClose closes a connection whose client may still be sending a
// request body the handler did not read: closed at once, with bytes
// unread, the socket would send a reset that can destroy the response on
// its way to the client (a client that reads its answer only once it has
// sent its body never sees it). It half-closes, then reads and drops what
// comes for lingerTime at most, as nginx's lingering close does; a client
// that closes its side ends it sooner.
func (c *serverConn) lingerClose() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(lingerTime))
	buf := make([]byte, 16<<10)
	for {
		if _, err := c.nc.Read(buf); err != nil {
			return
		}
	}
}

// lingerTime bounds lingerClose, like net/http's wait before it closes a
// connection with an unread body.
const lingerTime = 500 * time.Millisecond

// awaitRequest waits for the first byte of the next request (of the first
// one: from accept, within ReadHeaderTimeout) and sets the deadline of its
// head. It reports false when the connection is done.
func (c *serverConn) awaitRequest(first bool) bool {
	s := c.srv
	headTimeout := s.ReadHeaderTimeout
	idle := s.IdleTimeout
	if idle == 0 {
		idle = headTimeout
	}
	if first {
		if headTimeout > 0 {
			c.nc.SetReadDeadline(c.accepted.Add(headTimeout))
		}
		if _, err := c.br.Peek(1); err != nil {
			return false
		}
		c.state.Store(stateActive)
		return true
	}
	c.state.Store(stateIdle)
	if s.draining.Load() {
		return false
	}
	if c.br.Buffered() == 0 {
		if idle > 0 {
			c.nc.SetReadDeadline(time.Now().Add(idle))
		}
		if _, err := c.br.Peek(1); err != nil {
			return false
		}
	}
	if headTimeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(headTimeout))
	} else if idle > 0 {
		c.nc.SetReadDeadline(time.Time{})
	}
	c.state.Store(stateActive)
	return true
}

// handOver gives the connection, with what was read of it, to HTTP2.
func (c *serverConn) handOver() bool {
	h2 := c.srv.HTTP2
	if h2 == nil {
		c.nc.Write([]byte("HTTP/1.1 505 HTTP Version Not Supported\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
		return false
	}
	c.nc.SetReadDeadline(time.Time{})
	n := c.br.Buffered()
	early, _ := c.br.Peek(n)
	h2(&replayConn{Conn: c.nc, early: append([]byte(nil), early...)})
	return true
}

// replayConn is a connection whose first reads return bytes already read.
type replayConn struct {
	net.Conn
	early []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Unwrap returns the connection under c.
func (c *replayConn) Unwrap() net.Conn { return c.Conn }

func (c *serverConn) takeReader() {
	if c.br == nil {
		c.br = readBuffers.Get().(*bufio.Reader)
		c.br.Reset(&c.cr)
	}
}

// releaseReader gives the read buffer back when it holds no bytes (or, at
// the connection's end, always).
func (c *serverConn) releaseReader(always bool) {
	if c.br != nil && (always || c.br.Buffered() == 0) {
		c.br.Reset(nil)
		readBuffers.Put(c.br)
		c.br = nil
	}
}

// serveRequest reads one request and serves it. keep reports whether the
// connection may carry another request; hijacked that the handler took it;
// unread that the request's body was not read to its end.
func (c *serverConn) serveRequest() (keep, hijacked, unread bool) {
	s := c.srv
	max := s.MaxHeaderBytes
	if max <= 0 {
		max = DefaultMaxHeaderBytes
	}
	// The request line may take 4 KiB besides, as in net/http; what the
	// wait for the request read ahead counts.
	c.cr.n = int64(max) + 4096 - int64(c.br.Buffered())
	req, err := http.ReadRequest(c.br)
	c.cr.n = -1
	if err != nil {
		// Answered, the client may still be sending: linger.
		return false, false, c.rejectHead(err)
	}
	if status, msg := checkRequest(req); status != 0 {
		c.reject(status, msg)
		return false, false, true
	}
	continues := false
	if expect, ok := req.Header["Expect"]; ok {
		// As net/http: "100-continue" is honoured for an HTTP/1.1 body
		// and dropped, any other expectation fails.
		if !httpguts.HeaderValuesContainsToken(expect, "100-continue") {
			c.reject(http.StatusExpectationFailed, "unsupported Expect value")
			return false, false, true
		}
		continues = req.ProtoAtLeast(1, 1) && req.Body != http.NoBody
		delete(req.Header, "Expect")
	}
	if s.ReadHeaderTimeout > 0 || s.IdleTimeout > 0 {
		c.nc.SetReadDeadline(time.Time{})
	}
	ctx, cancel := context.WithCancelCause(c.ctx)
	defer cancel(nil)
	c.watchMu.Lock()
	c.cancel = cancel
	c.watchMu.Unlock()
	// In place, not a copy: the body's reader puts the trailer it reads
	// in this request.
	*req = *req.WithContext(ctx)
	req.RemoteAddr = c.remote
	w := &response{c: c, req: req, contentLength: -1}
	body := &requestBody{w: w, rc: req.Body, sendContinue: continues}
	if req.Body == http.NoBody {
		body.eof.Store(true)
	}
	w.body = body
	req.Body = body
	if body.eof.Load() {
		// No body: the read buffer is not needed until the next request.
		c.releaseReader(false)
		c.watchable()
	}

	hijacked = c.runHandler(w, req)
	c.unwatch()
	if hijacked {
		return false, true, false
	}
	keep = w.finish()
	if !body.eof.Load() {
		return false, false, !w.aborted && w.err == nil
	}
	if keep {
		c.releaseReader(false)
	}
	return keep, false, false
}

// checkRequest returns the status and the reason with which net/http's
// server would refuse req, or 0.
func checkRequest(req *http.Request) (int, string) {
	if req.ProtoMajor != 1 {
		return http.StatusHTTPVersionNotSupported, "unsupported protocol version"
	}
	// http.ReadRequest moved the Host field to req.Host (so a second Host
	// field is not seen; the edge does not route by Host).
	switch {
	case req.ProtoAtLeast(1, 1) && req.Host == "" && req.Method != http.MethodConnect:
		return http.StatusBadRequest, "missing required Host header"
	case !httpguts.ValidHostHeader(req.Host):
		return http.StatusBadRequest, "malformed Host header"
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return http.StatusBadRequest, "invalid header name"
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return http.StatusBadRequest, "invalid header value"
			}
		}
	}
	return 0, ""
}

// runHandler calls the handler, recovering its panic: http.ErrAbortHandler
// cuts the connection quietly, any other panic is logged first.
func (c *serverConn) runHandler(w *response, req *http.Request) (hijacked bool) {
	defer func() {
		if v := recover(); v != nil {
			w.aborted = true
			if v != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.logger().Error("http1: handler panicked", "remote", c.remote, "panic", v, "stack", string(buf))
			}
		}
		hijacked = w.hijacked
	}()
	c.srv.Handler.ServeHTTP(w, req)
	return
}

// rejectHead answers a request head that could not be read, if the client
// is still there to read the answer, and reports whether it did.
func (c *serverConn) rejectHead(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) && ne.Timeout():
		return false // gone, or silent: nobody to answer
	case errors.Is(err, errHeadTooLarge):
		c.reject(http.StatusRequestHeaderFieldsTooLarge, "request header too large")
	case strings.Contains(err.Error(), "unsupported transfer encoding"):
		c.reject(http.StatusNotImplemented, "unsupported transfer encoding")
	default:
		c.reject(http.StatusBadRequest, strings.TrimPrefix(err.Error(), "http: "))
	}
	return true
}

// reject answers the request being read with status and a plain-text
// message, and the connection is then closed.
func (c *serverConn) reject(status int, msg string) {
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c.nc, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n%d %s: %s",
		status, http.StatusText(status), status, http.StatusText(status), msg)
}

// watchable marks the current request's body as read: from now on the
// clock may start watching the connection.
func (c *serverConn) watchable() {
	c.watchMu.Lock()
	ready := c.watch == watchNone
	if ready {
		c.watch = watchReady
		c.watchFrom.Store(nanotime())
	}
	c.watchMu.Unlock()
	if ready && c.srv.watchable.Add(1) == 1 {
		select {
		case c.srv.wake <- struct{}{}:
		default:
		}
	}
}

// startWatch starts watching a request that has run for WatchDelay, with
// the shared watcher h where it can, else with a goroutine of its own;
// called by the clock, which holds the server's lock.
func (c *serverConn) startWatch(h *hangups) {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if c.watch != watchReady {
		return
	}
	c.watch = watchRunning
	c.watchFrom.Store(0)
	if h != nil {
		if t, ok := h.add(c); ok {
			c.hang, c.hangToken = h, t
			return
		}
	}
	c.watchDone = make(chan struct{})
	go c.watchClient(c.cancel, c.watchDone)
}

// watchClient reads the connection while the handler runs: a byte read is
// kept for the next request (a pipelined one); an error, unless unwatch
// caused it, means the client is gone and cancels the request.
func (c *serverConn) watchClient(cancel context.CancelCauseFunc, done chan struct{}) {
	defer close(done)
	var b [1]byte
	n, err := c.nc.Read(b[:])
	if n == 1 {
		c.early.early, c.early.hasByte = b[0], true
		return
	}
	c.watchMu.Lock()
	stopped := c.watch != watchRunning
	c.watchMu.Unlock()
	if !stopped {
		cancel(fmt.Errorf("%w: %w", ErrClientGone, err))
	}
}

// unwatch ends the watch of the request that ends: it stops a running
// watcher and waits for it.
func (c *serverConn) unwatch() {
	c.watchMu.Lock()
	was, done, h, t := c.watch, c.watchDone, c.hang, c.hangToken
	c.watch, c.watchDone, c.cancel, c.hang = watchNone, nil, nil, nil
	c.watchFrom.Store(0)
	c.watchMu.Unlock()
	switch {
	case was == watchReady:
		c.srv.watchable.Add(-1)
	case was == watchRunning && h != nil:
		c.srv.watchable.Add(-1)
		h.remove(t)
	case was == watchRunning:
		c.srv.watchable.Add(-1)
		c.nc.SetReadDeadline(aLongTimeAgo)
		<-done
		c.nc.SetReadDeadline(time.Time{})
	}
}

// nanotime is a monotonic clock in nanoseconds, never 0.
func nanotime() int64 { return int64(time.Since(clockEpoch)) + 1 }

var clockEpoch = time.Now()
