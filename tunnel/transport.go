package tunnel

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

// Transport names, as in Peer.Transport and the edge's `transport` setting.
const (
	// TransportQUIC carries a session over QUIC (UDP).
	TransportQUIC = "quic"
	// TransportTCP carries a session over TLS over TCP, with yamux
	// multiplexing the streams.
	TransportTCP = "tcp"
	// TransportAuto tries QUIC first and falls back to TCP when no QUIC
	// handshake completes in time (UDP blocked), probing QUIC again in the
	// background while on TCP.
	TransportAuto = "auto"
)

// closeCode says why a side closed a session. On QUIC it is the application
// error code of CONNECTION_CLOSE (RFC 9000, section 19.19); on TCP it is only
// logged, and the reason goes to the peer in a GOAWAY when the control stream
// is up.
type closeCode uint64

// Close codes. The message that goes with each says the details.
const (
	// closeNormal: the sender is shutting down (Close, Shutdown, drained).
	closeNormal closeCode = 0
	// closeProtocol: a malformed or unexpected control-stream message.
	closeProtocol closeCode = 1
	// closeVersion: HELLO asked for a protocol version the relay does
	// not speak.
	closeVersion closeCode = 2
	// closeHandshakeTimeout: HELLO or WELCOME did not arrive in time.
	closeHandshakeTimeout closeCode = 3
	// closePingTimeout: a PING got no PONG in time.
	closePingTimeout closeCode = 4
	// closeControlEnded: the peer ended the control stream.
	closeControlEnded closeCode = 5
	// closeUnauthorized: the edge's key is no longer authorized.
	closeUnauthorized closeCode = 6
	// closeSilent: nothing at all arrived from the peer for the idle time.
	closeSilent closeCode = 7
)

// conn is one authenticated transport connection under a session: a QUIC
// connection, or a TLS connection over TCP with a yamux session on it. The
// session logic (control stream, pings, draining) is written once against
// this interface.
type conn interface {
	// openStream opens a bidirectional stream. While the peer's stream
	// limit is reached it waits for the peer to grant one, within ctx
	// and, when wait > 0, for wait at most (an error wrapping
	// context.DeadlineExceeded): only that wait costs a timer.
	openStream(ctx context.Context, wait time.Duration) (stream, error)
	// acceptStream waits for the peer's next stream.
	acceptStream(ctx context.Context) (stream, error)
	// closeWithError closes the connection at once; streams in flight fail.
	closeWithError(code closeCode, msg string)
	// context ends when the connection is closed, by either side;
	// context.Cause says why.
	context() context.Context
	// heard is a count that grows whenever anything arrives from the
	// peer, whichever stream it is for and whether or not flow control
	// lets a reader take it: the liveness evidence that does not depend on
	// the control stream getting credit.
	heard() uint64
	// remoteAddr is the peer's network address.
	remoteAddr() net.Addr
	// peerKey is the fingerprint of the peer's certificate.
	peerKey() (string, error)
	// transport names the transport: TransportQUIC or TransportTCP.
	transport() string
	// attachControl gives the connection the session's control stream,
	// once it is up, for transports that signal stream resets and close
	// reasons on it.
	attachControl(cs *controlStream)
	// peerReset applies a RESET_STREAM the peer sent on the control
	// stream. It reports false if the transport does not expect one.
	peerReset(m *proto.StreamReset) bool
}

// stream is a transport's stream: a Stream with a deadline for the control
// handshake.
type stream interface {
	Stream
	// SetDeadline bounds pending and future Reads and Writes; the zero
	// time removes the bound.
	SetDeadline(t time.Time) error
	// setOnDone registers f to be called once, at the stream's first Close
	// or Abort. It must be called before the stream is handed out.
	setOnDone(f func())
	// releaseCredit lets the peer open another stream in place of this
	// one, once it has completed (see creditBatch); a no-op where the
	// transport has no stream credit to hold.
	releaseCredit()
}

// doneHook calls a function once, when the stream that embeds it is first
// closed or aborted; a session counts its open streams with it.
type doneHook struct {
	onDone func()
	once   sync.Once
}

func (h *doneHook) setOnDone(f func()) { h.onDone = f }

// done calls the registered function the first time.
func (h *doneHook) done() {
	if h.onDone != nil {
		h.once.Do(h.onDone)
	}
}

// closeCause returns why c ended, or nil while it is up.
func closeCause(c conn) error {
	return context.Cause(c.context())
}
