package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/airlock-proxy/airlock/proto"
)

// yamuxMaxStreamWindow is the most a yamux stream may have in flight. yamux's
// default of 256 KiB caps each stream at 256 KiB per round trip (20 Mbit/s on
// a 100 ms link); 1 MiB allows 80 Mbit/s per stream at that distance. yamux
// has no connection-wide window (so, unlike a shared QUIC connection window,
// a stalled stream never holds up another) and buffers a stream's unread
// bytes in a growing bytes.Buffer, so this is also what one stream whose
// reader stalls may hold: 4 MiB doubled the heap of a 64 MiB transfer for no
// speed gained on loopback (TestBulkTransfersUseBoundedMemory), and 200
// stalled readers cost about 1.6 MiB each (TestStalledReadersHurtNobody).
const yamuxMaxStreamWindow = 1 << 20

// resetQueueLen bounds the STREAM_RESET messages waiting for the control
// stream; beyond it a reset is dropped and the peer sees the stream end
// instead, which is still an error for an exchange cut short.
const resetQueueLen = 256

// abortFINDelay is how long an aborted stream waits, after its STREAM_RESET
// went out, before it sends its FIN: the reset and the FIN reach the peer in
// order, but the peer's control reader must have applied the reset before the
// stream's reader sees the FIN, or that reader would take the abort for a
// stream that merely ended.
const abortFINDelay = 200 * time.Millisecond

// yamuxWriteTimeout bounds how long a stream's frame may wait for room in
// yamux's send queue (64 frames, sent in order over one TCP connection). It
// is an error for that stream only, so it must not fire on a link that is
// merely slow and busy; a dead peer is found by the liveness checks instead.
const yamuxWriteTimeout = 30 * time.Second

// yamuxConfig returns the yamux settings for one side.
//
// yamux's keepalive is off: it declares a session dead when its ping's
// answer takes longer than ConnectionWriteTimeout, and both the ping and the
// answer queue behind whatever stream data is waiting to be sent, so a busy
// connection on a slow link would be dropped while the peer answers
// (issue 8). Liveness counts every byte heard instead: the edge's control
// stream pings (Client.keepAlive) and the relay's silence watch
// (watchSilence).
func yamuxConfig(cfg *Config, log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 1024
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = yamuxWriteTimeout
	c.MaxStreamWindowSize = yamuxMaxStreamWindow
	// No per-stream open timer: it costs a goroutine and a timer for
	// every stream, and what it guards against is covered. A relay that
	// stops answering is found by the liveness checks, and its session's
	// end returns a waiting OpenStream; a relay whose stream acceptor
	// ends has its session closed by the errgroup of Server.run.
	c.StreamOpenTimeout = 0
	c.StreamCloseTimeout = time.Minute
	c.LogOutput = nil
	c.Logger = yamuxLogger{log}
	return c
}

// yamuxLogger sends yamux's log lines to slog at debug level: the session
// errors they describe reach the logs through the session's close cause.
type yamuxLogger struct{ log *slog.Logger }

func (l yamuxLogger) Print(v ...any) { l.log.Debug("yamux: " + fmt.Sprint(v...)) }
func (l yamuxLogger) Printf(format string, v ...any) {
	l.log.Debug("yamux: " + fmt.Sprintf(format, v...))
}
func (l yamuxLogger) Println(v ...any) { l.log.Debug("yamux: " + fmt.Sprint(v...)) }

// dialTCP dials the relay over TCP (through dialer, which may go through a
// CONNECT proxy), does the TLS handshake with tlsConf and starts a yamux
// client session on it, all within ctx.
func dialTCP(ctx context.Context, addr string, dialer *ProxyDialer, tlsConf *tls.Config, cfg *Config, io *ioCounters, log *slog.Logger) (conn, error) {
	raw, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, tlsConfigFor(tlsConf, addr))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return newYamuxConn(tc, false, cfg, io, log)
}

// tlsConfigFor sets the server name (SNI) to addr's host when it is a name:
// a TLS-inspecting or SNI-routing middlebox sees a normal TLS client. The
// relay's key is still checked against the pin, never the name.
func tlsConfigFor(base *tls.Config, addr string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) != nil {
		return base
	}
	c := base.Clone()
	c.ServerName = host
	return c
}

// newYamuxConn starts a yamux session on a TLS connection whose handshake is
// done: the client side on the edge, the server side on the relay.
func newYamuxConn(tc *tls.Conn, server bool, cfg *Config, io *ioCounters, log *slog.Logger) (*yamuxConn, error) {
	if p := tc.ConnectionState().NegotiatedProtocol; p != proto.ALPN {
		tc.Close()
		return nil, fmt.Errorf("TLS: peer negotiated application protocol %q, want %q", p, proto.ALPN)
	}
	c := &yamuxConn{
		tc:      tc,
		io:      io,
		streams: make(map[uint32]*yamuxStream),
		resets:  make(chan pendingReset, resetQueueLen),
	}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	// yamux writes through frameWriter, which sends each DATA frame's
	// header and body in one TLS record, to causeConn.
	rw := newFrameWriter(&causeConn{Conn: tc, c: c})
	var err error
	if server {
		c.sess, err = yamux.Server(rw, yamuxConfig(cfg, log))
	} else {
		c.sess, err = yamux.Client(rw, yamuxConfig(cfg, log))
	}
	if err != nil {
		tc.Close()
		return nil, fmt.Errorf("starting yamux: %w", err)
	}
	c.wg.Go(func() {
		select {
		case <-c.sess.CloseChan():
			c.cancel(errors.New("yamux session ended"))
		case <-c.ctx.Done():
			c.sess.Close()
		}
	})
	return c, nil
}

// yamuxConn is a session's connection over TLS/TCP, multiplexed by yamux.
type yamuxConn struct {
	tc   *tls.Conn
	sess *yamux.Session
	io   *ioCounters // counts its streams' bytes; nil counts nothing

	// ctx ends when the connection does; its cause is the first reason
	// seen: a local close, the TCP connection's first read or write error,
	// or the yamux session ending.
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // the session watcher and the reset sender
	reads  atomic.Uint64  // reads of the TLS connection that returned bytes

	mu      sync.Mutex
	streams map[uint32]*yamuxStream // open streams, for the peer's STREAM_RESETs
	ctrl    *controlStream          // nil until the control stream is up
	resets  chan pendingReset
}

// pendingReset is a STREAM_RESET waiting for the control stream, with the
// stream to close once it has gone out (nil when the stream closes itself).
type pendingReset struct {
	msg proto.StreamReset
	fin *yamux.Stream
}

// causeConn records the TLS connection's first read or write error as the
// session's close cause before yamux sees it, so that a refusal by the peer
// (a TLS alert) or a reset TCP connection is what the session reports, not
// yamux's generic "session shutdown".
type causeConn struct {
	net.Conn
	c *yamuxConn
}

func (r *causeConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if n > 0 {
		r.c.reads.Add(1)
	}
	if err != nil {
		r.c.fail(err)
	}
	return n, err
}

func (r *causeConn) Write(p []byte) (int, error) {
	n, err := r.Conn.Write(p)
	if err != nil {
		r.c.fail(err)
	}
	return n, err
}

// fail ends the connection with err as the cause, unless it already ended.
func (c *yamuxConn) fail(err error) {
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("peer closed the TCP connection: %w", err)
	}
	c.cancel(err)
}

// openStream opens a stream. yamux has no stream credit (the relay refuses a
// stream over its limit in-band): its OpenStream waits only while 1024
// streams await the peer's acknowledgement, which a live relay's acceptor
// gives at once, and a dead relay's session ends within the liveness
// bounds (see yamuxConfig). So ctx and wait are not watched.
func (c *yamuxConn) openStream(_ context.Context, _ time.Duration) (stream, error) {
	if err := closeCause(c); err != nil {
		return nil, err
	}
	st, err := c.sess.OpenStream()
	if err != nil {
		return nil, c.sessionError(err)
	}
	return c.track(st), nil
}

func (c *yamuxConn) acceptStream(ctx context.Context) (stream, error) {
	st, err := c.sess.AcceptStreamWithContext(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, c.sessionError(err)
	}
	return c.track(st), nil
}

// sessionError prefers the connection's close cause to yamux's error.
func (c *yamuxConn) sessionError(err error) error {
	if cause := closeCause(c); cause != nil {
		return cause
	}
	return err
}

// track wraps st and registers it for STREAM_RESETs.
func (c *yamuxConn) track(st *yamux.Stream) *yamuxStream {
	ys := &yamuxStream{s: st, c: c}
	ys.ctx, ys.cancel = context.WithCancel(c.ctx)
	c.mu.Lock()
	c.streams[st.StreamID()] = ys
	c.mu.Unlock()
	return ys
}

func (c *yamuxConn) forget(id uint32) {
	c.mu.Lock()
	delete(c.streams, id)
	c.mu.Unlock()
}

// closeError is why a yamux connection was closed, as a QUIC application
// close says it on QUIC.
type closeError struct {
	code closeCode
	msg  string
}

func (e *closeError) Error() string {
	return fmt.Sprintf("closed (code %d): %s", e.code, e.msg)
}

// closeWithError closes the connection. When the control stream is up and the
// reason is one the peer must learn (a refusal or a protocol error), it goes
// to the peer first in a GOAWAY, within a second.
func (c *yamuxConn) closeWithError(code closeCode, msg string) {
	c.mu.Lock()
	ctrl := c.ctrl
	c.mu.Unlock()
	if ctrl != nil && closeCause(c) == nil {
		switch code {
		case closeVersion, closeUnauthorized, closeProtocol:
			ctrl.st.SetDeadline(time.Now().Add(time.Second))
			_ = ctrl.w.WriteMessage(&proto.GoAway{Reason: msg})
		}
	}
	c.cancel(&closeError{code: code, msg: msg})
	c.sess.Close()
	c.wg.Wait()
}

func (c *yamuxConn) context() context.Context { return c.ctx }

// heard counts the reads that brought bytes from the peer: frames of any
// stream, window updates and yamux's own pings alike.
func (c *yamuxConn) heard() uint64        { return c.reads.Load() }
func (c *yamuxConn) remoteAddr() net.Addr { return c.tc.RemoteAddr() }
func (c *yamuxConn) transport() string    { return TransportTCP }

func (c *yamuxConn) peerKey() (string, error) {
	return certFingerprint(c.tc.ConnectionState().PeerCertificates)
}

// attachControl starts the goroutine that sends this side's STREAM_RESETs
// on the control stream.
func (c *yamuxConn) attachControl(cs *controlStream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctrl != nil {
		return
	}
	c.ctrl = cs
	w := cs.w
	c.wg.Go(func() {
		for {
			select {
			case r := <-c.resets:
				err := w.WriteMessage(&r.msg)
				if r.fin != nil {
					time.AfterFunc(abortFINDelay, func() { r.fin.Close() })
				}
				if err != nil {
					return
				}
			case <-c.ctx.Done():
				return
			}
		}
	})
}

// sendReset queues a STREAM_RESET for the peer without blocking. fin, if not
// nil, is closed once the message has gone out (at once if it cannot be
// queued).
func (c *yamuxConn) sendReset(m proto.StreamReset, fin *yamux.Stream) {
	select {
	case c.resets <- pendingReset{m, fin}:
	default:
		if fin != nil {
			fin.Close()
		}
	}
}

// peerReset aborts the stream the peer reset, if it is still open.
func (c *yamuxConn) peerReset(m *proto.StreamReset) bool {
	if m.StreamID > 1<<32-1 {
		return true // not a yamux stream ID: nothing to reset
	}
	c.mu.Lock()
	ys := c.streams[uint32(m.StreamID)]
	c.mu.Unlock()
	if ys != nil {
		ys.resetByPeer(m)
	}
	return true
}

// yamuxStream adapts a *yamux.Stream to Stream. yamux streams end with a FIN
// only; an abort with a code travels as a STREAM_RESET on the control stream.
type yamuxStream struct {
	s *yamux.Stream
	c *yamuxConn

	ctx    context.Context // see Stream.Context
	cancel context.CancelFunc

	readDone  atomic.Bool  // Read returned io.EOF: the peer's FIN arrived
	aborted   atomic.Bool  // Abort was called here
	readRst   atomic.Int64 // the peer's code + 1 once it aborted: Reads fail
	writeRst  atomic.Int64 // the peer's code + 1 once it stopped reading: Writes fail
	abortOnce sync.Once
	closeOnce sync.Once
	doneHook
}

// resetErr returns the error for a direction the peer reset (its code + 1
// in rst), or nil.
func (y *yamuxStream) resetErr(rst *atomic.Int64) error {
	c := rst.Load()
	if c == 0 {
		return nil
	}
	code := proto.ResetCode(c - 1)
	return &peerResetError{rst: &proto.ResetError{Code: code}, err: fmt.Errorf("stream %d reset by peer", y.ID())}
}

// Read reads from the stream. After the peer's abort the error wraps a
// *proto.ResetError with its code; a stream cut by the end of the session is
// an error, never io.EOF.
func (y *yamuxStream) Read(p []byte) (int, error) {
	if err := y.resetErr(&y.readRst); err != nil {
		return 0, err
	}
	n, err := y.s.Read(p)
	y.c.io.addReceived(n)
	if err != nil {
		return n, y.ioError("reading", &y.readRst, err)
	}
	return n, nil
}

// Write writes to the stream. After the peer's abort or stop-sending the
// error wraps a *proto.ResetError with its code.
func (y *yamuxStream) Write(p []byte) (int, error) {
	if err := y.resetErr(&y.writeRst); err != nil {
		return 0, err
	}
	n, err := y.s.Write(p)
	y.c.io.addSent(n)
	if err != nil {
		return n, y.ioError("writing", &y.writeRst, err)
	}
	return n, nil
}

// ioError turns a yamux error on one direction into this package's terms.
func (y *yamuxStream) ioError(op string, rst *atomic.Int64, err error) error {
	if perr := y.resetErr(rst); perr != nil {
		return perr
	}
	if y.aborted.Load() {
		return fmt.Errorf("%s stream %d: aborted", op, y.ID())
	}
	if cause := closeCause(y.c); cause != nil {
		// yamux ends every stream with io.EOF when the session dies.
		return fmt.Errorf("%s stream %d: session ended: %w", op, y.ID(), cause)
	}
	switch {
	case err == io.EOF:
		y.readDone.Store(true)
		return io.EOF
	case errors.Is(err, yamux.ErrTimeout):
		return fmt.Errorf("%s stream %d: %w", op, y.ID(), os.ErrDeadlineExceeded)
	}
	return fmt.Errorf("%s stream %d: %w", op, y.ID(), err)
}

// Context ends when this side's send direction has ended or the peer reset
// it.
func (y *yamuxStream) Context() context.Context { return y.ctx }

// releaseCredit does nothing: yamux has no stream credit.
func (y *yamuxStream) releaseCredit() {}

// CloseWrite sends a FIN; reads go on.
func (y *yamuxStream) CloseWrite() error {
	if y.aborted.Load() {
		return nil
	}
	defer y.cancel()
	if err := y.s.Close(); err != nil {
		return fmt.Errorf("closing stream %d for writing: %w", y.ID(), err)
	}
	return nil
}

// Abort ends both directions: local Reads and Writes return at once, and the
// peer gets a STREAM_RESET with code, then the FIN that frees the stream.
func (y *yamuxStream) Abort(code proto.ResetCode) {
	y.abortOnce.Do(func() {
		y.aborted.Store(true)
		y.cancel()
		y.s.SetDeadline(time.Now())
		y.c.forget(y.s.StreamID())
		if y.readRst.Load() != 0 {
			y.s.Close() // the peer aborted first: no reset to send
			return
		}
		y.c.sendReset(proto.StreamReset{StreamID: uint64(y.s.StreamID()), Code: code}, y.s)
	})
	y.done()
}

// resetByPeer applies the peer's STREAM_RESET: Writes fail, and unless the
// peer only stopped sending, Reads fail too.
func (y *yamuxStream) resetByPeer(m *proto.StreamReset) {
	code := int64(m.Code) + 1
	y.writeRst.CompareAndSwap(0, code)
	y.cancel()
	if m.StopSending {
		y.s.SetWriteDeadline(time.Now())
		return
	}
	y.readRst.CompareAndSwap(0, code)
	y.s.SetDeadline(time.Now())
}

// Close ends the send direction with a FIN if it is still open. If the
// peer's FIN has not arrived, it also tells the peer to stop sending (a
// STREAM_RESET with StopSending and CodeCancel, as QUIC's STOP_SENDING).
func (y *yamuxStream) Close() error {
	y.closeOnce.Do(func() {
		if y.aborted.Load() {
			return
		}
		y.cancel()
		y.c.forget(y.s.StreamID())
		_ = y.s.Close()
		if !y.readDone.Load() && y.readRst.Load() == 0 && !y.peerFinished() {
			y.c.sendReset(proto.StreamReset{StreamID: uint64(y.s.StreamID()), Code: proto.CodeCancel, StopSending: true}, nil)
		}
	})
	y.done()
	return nil
}

// peerFinished reports, without blocking, whether the peer's FIN has arrived
// with nothing unread before it.
func (y *yamuxStream) peerFinished() bool {
	y.s.SetReadDeadline(time.Now())
	var b [1]byte
	_, err := y.s.Read(b[:])
	return err == io.EOF
}

// SetDeadline sets the deadline of both directions.
func (y *yamuxStream) SetDeadline(t time.Time) error { return y.s.SetDeadline(t) }

// SetReadDeadline sets the deadline of Reads; yamux arms a timer only inside
// a Read that has to wait. Abort and the peer's reset end Reads with a
// deadline in the past, which a later deadline must not lift: the check
// after the store sees an abort that raced with it (either flag is set
// before that deadline).
func (y *yamuxStream) SetReadDeadline(t time.Time) error {
	err := y.s.SetReadDeadline(t)
	if y.aborted.Load() || y.readRst.Load() != 0 {
		return y.s.SetReadDeadline(time.Now())
	}
	return err
}

// ID returns the yamux stream ID.
func (y *yamuxStream) ID() int64 { return int64(y.s.StreamID()) }

var (
	_ conn   = (*yamuxConn)(nil)
	_ stream = (*yamuxStream)(nil)
)
