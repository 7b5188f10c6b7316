package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/airlock-proxy/airlock/proto"
)

// Flow-control windows.
//
// Each exchange may carry a large upload or a fast stream of tokens, so the
// stream windows are far larger than quic-go's defaults (512 KiB initial,
// 6 MiB maximum): a stream never waits for credit on a long, fat path. The
// stream window is also what one stream whose reader stalls (a client that
// stops reading its answer, an upstream that stops reading its upload) may
// hold unread on the receiving side, so it is bounded at 8 MiB: 430 Mbit/s
// per stream at 150 ms.
//
// The connection window is not a limit at all (issue 8): a connection-wide
// window is shared by every stream, so a few stalled streams with full
// stream windows would use it up and stop every other exchange and the
// control stream with it. Memory is bounded per stream instead (the stream
// window), and the number of streams by the relay's MaxStreams and the
// edge's per-client max_concurrent. Both peers are authenticated airlock
// processes, so a window they could abuse is not exposed to anyone else.
const (
	initialStreamWindow = 1 << 20 // 1 MiB
	maxStreamWindow     = 8 << 20 // 8 MiB
	connectionWindow    = quicvarint.Max
)

// DefaultMaxStreams is how many exchange streams a relay accepts at once on
// one session unless ServerOptions.MaxStreams says otherwise.
const DefaultMaxStreams = 10000

// quicConfig returns the QUIC settings for one side. maxIncoming is how many
// bidirectional streams the peer may open at once; negative allows none.
// With holdCredit, a stream's credit goes back to the peer only once
// releaseCredit was called on it (the relay's creditBatch).
func quicConfig(cfg *Config, maxIncoming int64, holdCredit bool) *quic.Config {
	return &quic.Config{
		RequireStreamCreditRelease:     holdCredit,
		HandshakeIdleTimeout:           cfg.HandshakeTimeout,
		MaxIdleTimeout:                 cfg.idleTimeout(),
		KeepAlivePeriod:                cfg.PingInterval,
		InitialStreamReceiveWindow:     initialStreamWindow,
		MaxStreamReceiveWindow:         maxStreamWindow,
		InitialConnectionReceiveWindow: connectionWindow,
		MaxConnectionReceiveWindow:     connectionWindow,
		MaxIncomingStreams:             maxIncoming,
		MaxIncomingUniStreams:          -1,
	}
}

// quicConn adapts a *quic.Conn to conn.
type quicConn struct {
	c *quic.Conn
	// tr and udp are the edge's own transport and socket for this
	// connection, closed with it; nil on the relay, whose listener owns
	// them.
	tr  *quic.Transport
	udp *net.UDPConn
	io  *ioCounters // counts its streams' bytes; nil counts nothing
}

// dialQUIC dials addr over QUIC from a fresh UDP socket, so that a
// reconnect never reuses a NAT binding that the old path left stale. The
// socket's buffers are sized for QUIC first.
func dialQUIC(ctx context.Context, addr string, tlsConf *tls.Config, conf *quic.Config, io *ioCounters, log *slog.Logger) (quicConn, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return quicConn{}, err
	}
	// A socket of the relay's address family ("udp" would give a
	// dual-stack IPv6 socket even for 0.0.0.0): an IPv4 relay is reached
	// over a plain IPv4 socket, not through v4-mapped IPv6 addresses.
	network := "udp4"
	if raddr.IP.To4() == nil {
		network = "udp6"
	}
	udp, err := net.ListenUDP(network, nil)
	if err != nil {
		return quicConn{}, err
	}
	tuneUDPBuffers(udp, log)
	tr := &quic.Transport{Conn: udp}
	c, err := tr.Dial(ctx, raddr, tlsConf, conf)
	if err != nil {
		tr.Close()
		udp.Close()
		return quicConn{}, err
	}
	return quicConn{c: c, tr: tr, udp: udp, io: io}, nil
}

// openStream opens a stream without blocking when the relay's stream credit
// allows, as it almost always does: no context is watched and no timer armed
// then. Only at the limit does it wait, in OpenStreamSync.
func (q quicConn) openStream(ctx context.Context, wait time.Duration) (stream, error) {
	st, err := q.c.OpenStream()
	if err != nil {
		if !streamLimitReached(err) {
			return nil, err
		}
		if st, err = q.waitStream(ctx, wait); err != nil {
			return nil, err
		}
	}
	return newQUICStream(st, q.io), nil
}

// waitStream waits for the peer to grant a stream, within ctx and for wait
// at most when wait > 0.
func (q quicConn) waitStream(ctx context.Context, wait time.Duration) (*quic.Stream, error) {
	if wait <= 0 {
		return q.c.OpenStreamSync(ctx)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	st, err := q.c.OpenStreamSync(wctx)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("the peer's stream limit is reached and no stream was granted within %s: %w", wait, err)
	}
	return st, err
}

// streamLimitReached reports whether err is quic-go's refusal to open a
// stream past the peer's limit (TestOpenStreamAtLimit checks the form).
func streamLimitReached(err error) bool {
	var sl *quic.StreamLimitReachedError
	return errors.As(err, &sl)
}

func (q quicConn) acceptStream(ctx context.Context) (stream, error) {
	st, err := q.c.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return newQUICStream(st, q.io), nil
}

func (q quicConn) closeWithError(code closeCode, msg string) {
	q.c.CloseWithError(quic.ApplicationErrorCode(code), msg)
	if q.tr != nil {
		q.tr.Close()
		q.udp.Close()
	}
}

func (q quicConn) context() context.Context { return q.c.Context() }

// heard counts the packets received from the peer, whatever they carry:
// ACKs and QUIC's own PINGs as well as stream data that flow control may be
// holding up.
func (q quicConn) heard() uint64        { return q.c.ConnectionStats().PacketsReceived }
func (q quicConn) remoteAddr() net.Addr { return q.c.RemoteAddr() }
func (q quicConn) transport() string    { return TransportQUIC }

// attachControl does nothing: QUIC resets streams and closes connections
// with codes of its own.
func (q quicConn) attachControl(*controlStream) {}

// peerReset reports false: a QUIC peer resets streams in QUIC itself.
func (q quicConn) peerReset(*proto.StreamReset) bool { return false }

func (q quicConn) peerKey() (string, error) {
	return certFingerprint(q.c.ConnectionState().TLS.PeerCertificates)
}

// quicStream adapts a *quic.Stream to Stream.
type quicStream struct {
	s  *quic.Stream
	io *ioCounters

	readDone  atomic.Bool // Read returned io.EOF: the peer's FIN arrived
	aborted   atomic.Bool
	abortOnce sync.Once
	closeOnce sync.Once

	doneHook
}

// newQUICStream wraps s, counting its bytes in io.
func newQUICStream(s *quic.Stream, io *ioCounters) *quicStream {
	return &quicStream{s: s, io: io}
}

// Read reads from the stream. After the peer's Abort (or STOP_SENDING), the
// error wraps a *proto.ResetError with the peer's code.
func (q *quicStream) Read(p []byte) (int, error) {
	n, err := q.s.Read(p)
	q.io.addReceived(n)
	if err != nil {
		if err == io.EOF {
			q.readDone.Store(true)
			return n, io.EOF
		}
		return n, streamError(err)
	}
	return n, nil
}

// Write writes to the stream. After the peer's Abort, the error wraps a
// *proto.ResetError with the peer's code.
func (q *quicStream) Write(p []byte) (int, error) {
	n, err := q.s.Write(p)
	q.io.addSent(n)
	if err != nil {
		return n, streamError(err)
	}
	return n, nil
}

// Context is quic-go's send-side context: cancelled by Close, CancelWrite or
// the peer's STOP_SENDING.
func (q *quicStream) Context() context.Context { return q.s.Context() }

// CloseWrite sends a FIN: the peer reads io.EOF once it has read everything.
func (q *quicStream) CloseWrite() error {
	if q.aborted.Load() {
		return nil
	}
	if err := q.s.Close(); err != nil {
		return fmt.Errorf("closing stream %d for writing: %w", q.ID(), err)
	}
	return nil
}

// Abort resets both directions with code (RESET_STREAM and STOP_SENDING).
func (q *quicStream) Abort(code proto.ResetCode) {
	q.abortOnce.Do(func() {
		q.aborted.Store(true)
		q.s.CancelRead(quic.StreamErrorCode(code))
		q.s.CancelWrite(quic.StreamErrorCode(code))
	})
	q.done()
}

// Close ends the send direction with a FIN if it is still open and, if the
// peer's FIN has not been read yet, stops reading with CodeCancel so that
// the peer stops sending and the stream's credit is freed.
func (q *quicStream) Close() error {
	q.closeOnce.Do(func() {
		if q.aborted.Load() {
			return
		}
		// An error here means the peer already stopped our direction
		// (STOP_SENDING) or the connection is gone: either way the
		// direction is over, which is all Close promises.
		_ = q.s.Close()
		if !q.readDone.Load() {
			q.s.CancelRead(quic.StreamErrorCode(proto.CodeCancel))
		}
	})
	q.done()
	return nil
}

// SetDeadline sets the deadline of both directions.
func (q *quicStream) SetDeadline(t time.Time) error { return q.s.SetDeadline(t) }

func (q *quicStream) releaseCredit() { q.s.ReleaseStreamCredit() }

// SetReadDeadline sets the deadline of Reads. quic-go arms a timer only
// inside a Read that has to wait; after Abort, Reads fail whatever the
// deadline (CancelRead).
func (q *quicStream) SetReadDeadline(t time.Time) error { return q.s.SetReadDeadline(t) }

// ID returns the QUIC stream ID.
func (q *quicStream) ID() int64 { return int64(q.s.StreamID()) }

// streamError makes a stream cancelled by the peer look like a RESET frame:
// the returned error wraps a *proto.ResetError with the peer's code, and
// still the *quic.StreamError.
func streamError(err error) error {
	var se *quic.StreamError
	if !errors.As(err, &se) || !se.Remote {
		return err
	}
	code := proto.CodeInternal
	if se.ErrorCode <= math.MaxUint32 {
		code = proto.ResetCode(se.ErrorCode)
	}
	return &peerResetError{rst: &proto.ResetError{Code: code}, err: err}
}

// peerResetError is a stream error caused by the peer's cancellation.
type peerResetError struct {
	rst *proto.ResetError
	err error
}

func (e *peerResetError) Error() string {
	return fmt.Sprintf("stream reset by peer: %s", e.rst.Code)
}

func (e *peerResetError) Unwrap() []error { return []error{e.rst, e.err} }

var (
	_ conn   = quicConn{}
	_ stream = (*quicStream)(nil)
)
