// Package tunnel carries airlock's streams between an edge and a relay: one
// persistent, mutually authenticated session per relay, over QUIC, with many
// concurrent bidirectional streams on it.
//
// The package knows sessions, streams, identities and liveness; it knows
// nothing of HTTP or OpenAI. The edge side is a [Client], which dials a relay,
// keeps the session up (control stream handshake, pings, reconnects) and opens
// one stream per request. The relay side is a [Server], which accepts sessions
// from edges whose keys it knows and hands each stream to a [Handler].
//
// The first stream of every session is the control stream (see package proto):
// HELLO and WELCOME, then PING/PONG for liveness and round-trip time, and
// GOAWAY when the relay drains.
package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

// Stream is one bidirectional, ordered stream of a session.
//
// Read and Write may be called from different goroutines at once; each of
// them from one goroutine at a time.
type Stream interface {
	io.Reader
	io.Writer
	// CloseWrite ends the send direction cleanly (a QUIC FIN). Reads go on.
	CloseWrite() error
	// Abort ends both directions at once with a code: a blocked Read or
	// Write returns, the peer's Read and Write fail, and flow-control credit
	// is freed at once (QUIC CancelRead and CancelWrite). Abort after
	// CloseWrite is allowed; Abort is idempotent.
	Abort(code proto.ResetCode)
	// Close releases the stream after a clean exchange: it ends the send
	// direction if still open and stops reading. Close after Abort does
	// nothing.
	Close() error
	// SetReadDeadline makes a Read that waits for data past t fail with
	// an error wrapping os.ErrDeadlineExceeded, the pending one and later
	// ones; the zero time removes the deadline. A timer runs only while a
	// Read actually waits with a deadline set, so bounding a read whose
	// bytes have usually arrived already (a request HEAD) costs no timer.
	// A deadline never revives a stream after Abort: its Reads keep
	// failing.
	SetReadDeadline(t time.Time) error
	// ID identifies the stream within its session, for logs.
	ID() int64
	// Context is cancelled when the send direction has ended: by
	// CloseWrite, Close or Abort here, or because the peer aborted the
	// stream (on QUIC: its STOP_SENDING). It lets the owner of a stream
	// notice a peer's abort while it is not reading, without a goroutine
	// blocked in Read.
	Context() context.Context
}

// Peer describes the other side of a session, as authenticated by TLS.
type Peer struct {
	// Name is the peer's configured name (the relay's name for an edge, as
	// listed in the relay config; the relay's self-reported name for an
	// edge's view).
	Name string
	// Key is the peer's public key fingerprint, "sha256:<base64url>".
	Key string
	// SessionID identifies the session in both sides' logs.
	SessionID string
	// Transport is "quic" (or "tcp" once the fallback exists).
	Transport string
	// RemoteAddr is the peer's network address.
	RemoteAddr net.Addr
	// Upstreams lists the upstream names the edge may use on this session,
	// the first being the default.
	Upstreams []string
}

// Handler serves the exchange streams a [Server] accepts.
type Handler interface {
	// ServeStream serves one exchange. ctx ends when the session dies or
	// the server begins to close. A handler whose ctx ends before it has
	// started work with side effects should refuse the stream (a RESET
	// with proto.CodeRefused) so that the edge can retry it on another
	// relay; once started, it aborts. ServeStream owns s and must Close or
	// Abort it before it returns.
	ServeStream(ctx context.Context, peer *Peer, s Stream)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, peer *Peer, s Stream)

// ServeStream calls f.
func (f HandlerFunc) ServeStream(ctx context.Context, peer *Peer, s Stream) { f(ctx, peer, s) }

// Opener opens exchange streams; a [Client] and a [Pool] are ones.
type Opener interface {
	// OpenStream opens a stream on a live session whose ID is not in
	// avoid (the sessions that already refused the request). It returns
	// an error wrapping ErrNoSession at once when no such session is up.
	// It opens the stream at once unless the session's stream limit is
	// reached; then it waits for the relay to grant a stream while ctx
	// allows and for StreamOpenTimeout at most, after which it fails
	// with an error wrapping context.DeadlineExceeded. So the caller
	// need not bound the call itself: passing a request's context costs
	// no timer, and the wait ends when the request does.
	OpenStream(ctx context.Context, avoid ...string) (Stream, *Peer, error)
}

// StreamOpenTimeout bounds how long OpenStream waits for a session at its
// stream limit to grant a stream. Only that wait arms a timer; opening a
// stream within the limit, the usual case, does not.
const StreamOpenTimeout = 5 * time.Second

// Sentinel errors callers branch on.
var (
	// ErrNoSession: no tunnel session is up right now; retry later.
	ErrNoSession = errors.New("tunnel: no session to a relay is up")
	// ErrClosed: the Client or Server was closed.
	ErrClosed = errors.New("tunnel: closed")
	// ErrUnknownPeer: the peer's key is not among the accepted ones.
	ErrUnknownPeer = errors.New("tunnel: peer key not authorized")
	// ErrPinMismatch: the relay's key does not match the pinned key.
	ErrPinMismatch = errors.New("tunnel: relay key does not match the pinned key")
)
