package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

// controlStream is the first stream of a session, with its message reader
// and writer. The writer is safe for concurrent use; the reader is used by
// one goroutine.
type controlStream struct {
	st stream
	r  *proto.ControlReader
	w  *proto.ControlWriter
}

func newControlStream(st stream) *controlStream {
	return &controlStream{st: st, r: proto.NewControlReader(st), w: proto.NewControlWriter(st)}
}

// errVersion is wrapped by the errors of a handshake between sides that
// speak different protocol versions.
var errVersion = errors.New("protocol version mismatch")

// errHandshakeTimeout is wrapped by control handshake errors caused by the
// handshake deadline.
var errHandshakeTimeout = errors.New("handshake timed out")

// withDeadline runs f with the stream's deadline set to ctx's deadline, and
// makes f's blocked reads and writes return when ctx ends early. A deadline
// error comes back wrapping errHandshakeTimeout.
func withDeadline(ctx context.Context, st stream, f func() error) error {
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
func openControl(ctx context.Context, c conn, hello *proto.Hello) (*controlStream, *proto.Welcome, error) {
	st, err := c.openStream(ctx, 0)
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
		switch m := m.(type) {
		case *proto.Welcome:
			welcome = m
			return nil
		case *proto.GoAway:
			// A relay that refuses the session says why before it
			// closes; on QUIC the close carries the reason as well.
			return fmt.Errorf("relay refused the session: %s", m.Reason)
		}
		return fmt.Errorf("reading WELCOME: %w: got %T", proto.ErrProtocol, m)
	})
	if err != nil {
		return nil, nil, err
	}
	if welcome.Version != proto.ProtocolVersion {
		return nil, nil, fmt.Errorf("%w: relay speaks protocol version %d, this edge speaks %d",
			errVersion, welcome.Version, proto.ProtocolVersion)
	}
	return cs, welcome, nil
}

// acceptControl accepts the control stream of a new session on the relay
// side and reads HELLO, all within timeout.
func acceptControl(c conn, timeout time.Duration) (*controlStream, *proto.Hello, error) {
	ctx, cancel := context.WithTimeout(c.context(), timeout)
	defer cancel()
	st, err := c.acceptStream(ctx)
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
		st.Abort(proto.CodeProtocol)
		return nil, nil, err
	}
	return cs, hello, nil
}

// handshakeCloseCode picks the code to close a connection with after a
// failed control handshake.
func handshakeCloseCode(err error) closeCode {
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
