package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/airlock-proxy/airlock/internal/apierror"
)

// clientListener is the edge's client-facing listener. It caps the open
// client connections (issue 8: a few thousand silent connections must not
// use up the process's descriptors and memory) and gives every accepted
// connection a send timeout.
type clientListener struct {
	net.Listener
	max         int64
	sendTimeout time.Duration

	open    atomic.Int64
	refused atomic.Uint64 // connections turned away at the cap
}

// refusedAnswer is what a connection over the cap gets before it is closed:
// an HTTP/1.1 503 with OpenAI's error JSON, so that an SDK retries later.
var refusedAnswer = func() []byte {
	body := apierror.Body(apierror.TypeServer, codeTooManyConnections, "", "airlock edge: too many open client connections; retry shortly")
	return fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nRetry-After: %d\r\nConnection: close\r\n\r\n%s", len(body), retryAfterSeconds, body)
}()

// Accept returns the next connection under the cap, answering and closing
// those beyond it itself.
func (l *clientListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.refused.Add(1)
			// A fresh connection's send buffer is empty: this write does
			// not wait for the client, and the deadline makes sure of it.
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write(refusedAnswer)
			c.Close()
			continue
		}
		cc := &clientConn{Conn: c, l: l}
		cc.scanning.Store(true)
		return cc, nil
	}
}

// clientConn is one client connection. Its writes fail once the client has
// accepted no bytes for the listener's send timeout: a client that stops
// reading can hold its exchange (and the upstream call behind it) only that
// long. A write that makes any progress before the deadline gets a new
// one, however long the whole write takes, so only a connection that takes
// no bytes for the whole timeout is cut (nginx's send_timeout works the
// same way). Progress is what the kernel reports: a client whose TCP window
// stays shut, because it reads far slower than its receive buffer fills,
// looks stalled too.
type clientConn struct {
	net.Conn
	l *clientListener

	send   renewal // the write deadline
	closed atomic.Bool

	// The request-head watch (see Read). scanning and rearm are set by
	// the handler's goroutine; head is only touched by Read, which the
	// servers never call from two goroutines at once.
	scanning  atomic.Bool // the bytes read now are (or start) a request head
	rearm     atomic.Bool // the next Read starts a new head
	ambiguous atomic.Bool // the last head had Content-Length and Transfer-Encoding
	head      headScanner
}

// Read reads from the connection. While a request head is being read it
// also notes whether the head has both Content-Length and
// Transfer-Encoding (see headScanner): net/http's request parser, which
// both servers use, lets Transfer-Encoding win and deletes Content-Length,
// as RFC 9112 section 6.3 allows, and says nothing, but the RFC wants the
// connection closed after the answer: such a request is a classic
// smuggling attempt against whatever proxy stands in front of the edge.
func (c *clientConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.rearm.CompareAndSwap(true, false) {
		c.head = headScanner{}
		c.scanning.Store(true)
	}
	if n > 0 && c.scanning.Load() && c.head.scan(p[:n]) {
		c.ambiguous.Store(c.head.contentLength && c.head.transferEncoding)
		c.scanning.Store(false)
	}
	return n, err
}

// ambiguousLength reports whether the request being served had both
// Content-Length and Transfer-Encoding. The handler of each HTTP/1 request
// calls it once, at its start, and watchNextHead once, at its end.
func (c *clientConn) ambiguousLength() bool { return c.ambiguous.Swap(false) }

// watchNextHead makes the watch start again with the connection's next
// read: the next request's head. A head that the server read ahead
// together with this request's body (pipelining) is not watched.
func (c *clientConn) watchNextHead() { c.rearm.Store(true) }

// clientConnOf returns the client connection of an HTTP/1 request; nil
// for HTTP/2 (whose heads are frames) and for other listeners.
func clientConnOf(r *http.Request) *clientConn {
	if r.ProtoMajor != 1 {
		return nil
	}
	cc, _ := r.Context().Value(connKey{}).(*clientConn)
	return cc
}

// errSendTimeout is wrapped by the write error of a client that accepted no
// bytes for the send timeout.
var errSendTimeout = errors.New("the client accepted no bytes of its response")

// Write writes p, going on for as long as the client accepts bytes.
func (c *clientConn) Write(p []byte) (int, error) {
	timeout := c.l.sendTimeout
	sent := 0
	for {
		c.send.push(timeout, c.Conn.SetWriteDeadline)
		n, err := c.Conn.Write(p[sent:])
		sent += n
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return sent, err
		}
		if n == 0 {
			return sent, fmt.Errorf("%w for %s: %w", errSendTimeout, timeout, err)
		}
		// The client took some bytes before the deadline: it is slow,
		// not stalled. Give it a full timeout for the rest.
		c.send.expire()
	}
}

// renewal pushes a per-wait deadline (client_send_timeout,
// client_body_timeout) out lazily: only when it was last pushed out more than
// a sixteenth of the timeout ago, which spares a timer update on every read
// or write, at the price of a timeout that may end up to a sixteenth short.
// Its zero value has never pushed; it is safe for concurrent use.
type renewal struct {
	// at is when the deadline was last pushed out, in monotonic
	// nanoseconds since renewalEpoch; 0: never, or expired.
	at atomic.Int64
}

// renewalEpoch is the origin of renewal's monotonic clock.
var renewalEpoch = time.Now()

// push sets the deadline to now + timeout with set, unless it was pushed
// out recently enough.
func (r *renewal) push(timeout time.Duration, set func(time.Time) error) {
	now := time.Since(renewalEpoch) + 1 // never 0
	if at := r.at.Load(); at == 0 || now-time.Duration(at) > timeout/16 {
		r.at.Store(int64(now))
		set(renewalEpoch.Add(now + timeout))
	}
}

// passed reports whether the deadline that push set last (with this
// timeout) has passed: a deadline error now is that deadline's, not one
// somebody else set.
func (r *renewal) passed(timeout time.Duration) bool {
	at := r.at.Load()
	return at != 0 && time.Since(renewalEpoch)+1 >= time.Duration(at)+timeout
}

// expire makes the next push set the deadline whatever its age.
func (r *renewal) expire() { r.at.Store(0) }

// headScanner watches the bytes of one HTTP/1 request head go by, however
// they are split across reads, for the fields Content-Length and
// Transfer-Encoding. It looks only at the first bytes of each line, so it
// costs little more than finding the line ends.
type headScanner struct {
	start            [len("transfer-encoding:")]byte // the start of the current line
	n                int                             // bytes of the current line so far
	contentLength    bool
	transferEncoding bool
}

// scan consumes b and reports whether the head ended in it (an empty
// line); bytes after the end are not looked at.
func (s *headScanner) scan(b []byte) (ended bool) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		part := b
		if i >= 0 {
			part = b[:i]
		}
		if s.n < len(s.start) {
			copy(s.start[s.n:], part)
		}
		s.n += len(part)
		if i < 0 {
			return false
		}
		b = b[i+1:]
		line := s.start[:min(s.n, len(s.start))]
		if s.n == 0 || (s.n == 1 && line[0] == '\r') {
			return true
		}
		s.contentLength = s.contentLength || hasPrefixFold(line, "content-length:")
		s.transferEncoding = s.transferEncoding || hasPrefixFold(line, "transfer-encoding:")
		s.n = 0
	}
	return false
}

// hasPrefixFold reports whether b starts with the lower-case ASCII prefix,
// in any case.
func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := range len(prefix) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// Close closes the connection and frees its place under the cap, once.
func (c *clientConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.open.Add(-1)
	}
	return c.Conn.Close()
}

// CloseWrite half-closes the connection where the one below can (TCP): the
// client reads EOF and may still send. proto.Pipe half-closes an upgraded
// exchange's hijacked connection this way at the relay's END.
func (c *clientConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// NetConn returns the connection under c (as crypto/tls's Conn does): the
// HTTP/1 server watches its socket for a client that leaves.
func (c *clientConn) NetConn() net.Conn { return c.Conn }

// connKey is the context key under which a request finds its clientConn.
type connKey struct{}

// withConn is the http.Server's ConnContext: it makes the clientConn
// reachable from each request's context.
func withConn(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*clientConn); ok {
		return context.WithValue(ctx, connKey{}, cc)
	}
	return ctx
}

var (
	_ net.Listener = (*clientListener)(nil)
	_ net.Conn     = (*clientConn)(nil)

	_ interface{ CloseWrite() error } = (*clientConn)(nil)
)
