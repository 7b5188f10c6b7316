package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/airlock-proxy/airlock/proto"
)

// Application error codes a side closes a QUIC connection with
// (CONNECTION_CLOSE of type 0x1d, RFC 9000 section 19.19). The message that
// goes with each says the details.
const (
	// closeNormal: the sender is shutting down (Close, Shutdown).
	closeNormal quic.ApplicationErrorCode = 0
	// closeProtocol: a malformed or unexpected control-stream message.
	closeProtocol quic.ApplicationErrorCode = 1
	// closeVersion: HELLO asked for a protocol version the relay does
	// not speak.
	closeVersion quic.ApplicationErrorCode = 2
	// closeHandshakeTimeout: HELLO or WELCOME did not arrive in time.
	closeHandshakeTimeout quic.ApplicationErrorCode = 3
	// closePingTimeout: a PING got no PONG in time.
	closePingTimeout quic.ApplicationErrorCode = 4
	// closeControlEnded: the peer ended the control stream.
	closeControlEnded quic.ApplicationErrorCode = 5
	// closeUnauthorized: the edge's key is no longer authorized.
	closeUnauthorized quic.ApplicationErrorCode = 6
)

// controlStream is the first stream of a session, with its message reader
// and writer. The writer is safe for concurrent use; the reader is used by
// one goroutine.
type controlStream struct {
	st *quic.Stream
	r  *proto.ControlReader
	w  *proto.ControlWriter
}

func newControlStream(st *quic.Stream) *controlStream {
	return &controlStream{st: st, r: proto.NewControlReader(st), w: proto.NewControlWriter(st)}
}

// errHandshakeTimeout is wrapped by control handshake errors caused by the
// handshake deadline.
var errHandshakeTimeout = errors.New("handshake timed out")

// withDeadline runs f with the stream's deadline set to ctx's deadline, and
// makes f's blocked reads and writes return when ctx ends early. A deadline
// error comes back wrapping errHandshakeTimeout.
func withDeadline(ctx context.Context, st *quic.Stream, f func() error) error {
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		st.SetDeadline(time.Now())
	})
	err := f()
	if !stop() {
		<-done
	}
	st.SetDeadline(time.Time{})
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %w", errHandshakeTimeout, err)
	}
	return err
}

// openControl opens the control stream of a new session from the edge side:
// it sends hello and waits for WELCOME, all within ctx.
func openControl(ctx context.Context, conn *quic.Conn, hello *proto.Hello) (*controlStream, *proto.Welcome, error) {
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("opening control stream: %w", err)
	}
	cs := newControlStream(st)
	var welcome *proto.Welcome
	err = withDeadline(ctx, st, func() error {
		if err := cs.w.WriteMessage(hello); err != nil {
			return err
		}
		m, err := cs.r.ReadMessage()
		if err != nil {
			return fmt.Errorf("reading WELCOME: %w", err)
		}
		w, ok := m.(*proto.Welcome)
		if !ok {
			return fmt.Errorf("reading WELCOME: %w: got %T", proto.ErrProtocol, m)
		}
		welcome = w
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if welcome.Version != proto.ProtocolVersion {
		return nil, nil, fmt.Errorf("relay speaks protocol version %d, this edge speaks %d",
			welcome.Version, proto.ProtocolVersion)
	}
	return cs, welcome, nil
}

// acceptControl accepts the control stream of a new session on the relay
// side and reads HELLO, all within timeout.
func acceptControl(conn *quic.Conn, timeout time.Duration) (*controlStream, *proto.Hello, error) {
	ctx, cancel := context.WithTimeout(conn.Context(), timeout)
	defer cancel()
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: no control stream: %w", errHandshakeTimeout, err)
		}
		return nil, nil, fmt.Errorf("accepting control stream: %w", err)
	}
	cs := newControlStream(st)
	var hello *proto.Hello
	err = withDeadline(ctx, st, func() error {
		m, err := cs.r.ReadMessage()
		if err != nil {
			return fmt.Errorf("reading HELLO: %w", err)
		}
		h, ok := m.(*proto.Hello)
		if !ok {
			return fmt.Errorf("reading HELLO: %w: got %T", proto.ErrProtocol, m)
		}
		hello = h
		return nil
	})
	if err != nil {
		st.CancelRead(quic.StreamErrorCode(proto.CodeProtocol))
		st.CancelWrite(quic.StreamErrorCode(proto.CodeProtocol))
		return nil, nil, err
	}
	return cs, hello, nil
}

// handshakeCloseCode picks the code to close a connection with after a
// failed control handshake.
func handshakeCloseCode(err error) quic.ApplicationErrorCode {
	if errors.Is(err, errHandshakeTimeout) {
		return closeHandshakeTimeout
	}
	return closeProtocol
}

// newSessionID returns 16 random hex digits that name a session in both
// sides' logs.
func newSessionID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// peerKey returns the fingerprint of the certificate the peer presented on
// conn.
func peerKey(conn *quic.Conn) (string, error) {
	certs := conn.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		return "", errors.New("peer presented no certificate")
	}
	return Fingerprint(certs[0].PublicKey)
}

// closeCause returns why conn ended, or nil while it is up.
func closeCause(conn *quic.Conn) error {
	return context.Cause(conn.Context())
}
