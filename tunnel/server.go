package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sync/errgroup"

	"github.com/airlock-proxy/airlock/proto"
)

// ServerOptions configure a [Server].
type ServerOptions struct {
	// Identity is the relay's key pair, presented to edges. Required.
	Identity *Identity
	// Listen is the UDP address to listen on for QUIC, "host:port"; port
	// 0 picks a free port (see [Server.Addr]).
	Listen string
	// ListenTCP is the TCP address for the TLS/TCP transport. Empty means
	// the same host and port as the UDP listener (the port it got, when
	// Listen asks for port 0); ListenTCPOff turns the TCP transport off.
	ListenTCP string
	// RelayName names this relay in WELCOME, for the edges' logs.
	RelayName string
	// Authorize maps an edge's key fingerprint to its configured name and
	// the upstream names it may use (the first being its default). An error
	// refuses the edge during the TLS handshake. Required.
	Authorize func(edgeKey string) (edgeName string, upstreams []string, err error)
	// MaxStreams is how many exchange streams one session may have open at
	// once; a stream over it is refused in-band (CodeRefused), and over
	// QUIC the edge's stream credit stops it close to the limit. Default:
	// 10000. Zero means the default.
	MaxStreams int
	// Logger receives session events; nil discards them. A failed session
	// attempt (TLS or control handshake) is a WARN line with its reason,
	// remote address and transport, at most 5 at once and then one every
	// 10s; the next line says how many were left out, and so does a last
	// line when the server closes. ServerStats.Failures counts them all.
	Logger *slog.Logger
	// Software is the relay's software version, for logs.
	Software string
	// Config tunes the relay's side of sessions; zero fields mean their
	// defaults. HandshakeTimeout bounds the QUIC and TLS handshakes and the
	// wait for HELLO; PingInterval + PingTimeout (at least 5s) is the idle
	// time after which a silent edge's session is dropped. The reconnect,
	// fallback and probe fields are not used.
	Config Config
}

// ListenTCPOff, as ServerOptions.ListenTCP, serves QUIC only.
const ListenTCPOff = "off"

// Server is the relay side of the tunnel: it accepts sessions from edges
// whose keys Authorize knows and hands each exchange stream to a Handler, in
// a goroutine of its own.
//
// All methods are safe for concurrent use.
type Server struct {
	opts     ServerOptions
	cfg      Config
	h        Handler
	log      *slog.Logger
	tlsConf  *tls.Config // for TCP
	quicTLS  *tls.Config // for QUIC
	quicConf *quic.Config

	counts       serverCounters
	handshakeLog *logThrottle    // throttles the lines of failed session attempts
	lastAccept   atomic.Int64    // when the last stream was accepted, Unix nanoseconds
	inflight     inflight        // exchange streams being served
	closing      context.Context // ends when Close begins
	stopHandlers context.CancelFunc
	live         inflight       // sessions, in handshake or up
	wg           sync.WaitGroup // session and stream goroutines
	attempts     sync.WaitGroup // quicConnContext's callbacks; Add under mu while !closed
	closeOnce    sync.Once

	mu       sync.Mutex
	udp      *net.UDPConn
	tr       *quic.Transport
	ln       *quic.Listener
	tcpLn    net.Listener                // nil when the TCP transport is off
	sessions map[*serverSession]struct{} // accepted connections, in handshake or up
	up       int                         // sessions past WELCOME
	serving  bool
	draining bool
	closed   bool
}

// serverSession is one edge's connection.
type serverSession struct {
	conn       conn
	goaway     chan struct{} // closed to send GOAWAY
	goawayOnce sync.Once
	goawayDone chan struct{} // closed once GOAWAY was written, or will never be

	// Set by accept. peer is set under Server.mu, and marks the session
	// as up (past WELCOME).
	peer *Peer
	ctrl *controlStream
	log  *slog.Logger

	// credit returns the stream credit of finished exchanges to a QUIC
	// edge in batches.
	credit creditBatch
}

// sendGoAway asks the session's GOAWAY writer to tell the edge that the
// relay drains. It does not block.
func (ss *serverSession) sendGoAway() {
	ss.goawayOnce.Do(func() { close(ss.goaway) })
}

// NewServer checks opts and returns a Server that serves streams with h. It
// fills in the defaults of opts.Config and validates it here, once. It does
// not listen: call Listen (optional) and Serve.
func NewServer(opts ServerOptions, h Handler) (*Server, error) {
	if opts.Identity == nil {
		return nil, errors.New("tunnel server: no identity")
	}
	if opts.Authorize == nil {
		return nil, errors.New("tunnel server: no Authorize function")
	}
	if h == nil {
		return nil, errors.New("tunnel server: no handler")
	}
	if opts.MaxStreams < 0 {
		return nil, fmt.Errorf("tunnel server: max streams = %d: want a positive number", opts.MaxStreams)
	}
	if opts.MaxStreams == 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	cfg, err := opts.Config.populated()
	if err != nil {
		return nil, fmt.Errorf("tunnel server: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	closing, stopHandlers := context.WithCancel(context.Background())
	s := &Server{
		closing:      closing,
		stopHandlers: stopHandlers,
		opts:         opts,
		cfg:          cfg,
		h:            h,
		log:          log,
		// One more than MaxStreams, for the control stream, and room for
		// the credit of finished streams held back to return in batches
		// (acceptStreams holds the edge to MaxStreams itself).
		quicConf:     quicConfig(&cfg, int64(opts.MaxStreams+1+heldCredit(creditBatchSize(opts.MaxStreams))), true),
		handshakeLog: newLogThrottle(handshakeLogBurst, handshakeLogInterval, numFailureReasons),
		sessions:     make(map[*serverSession]struct{}),
	}
	s.tlsConf = serverTLSConfig(opts.Identity, opts.Authorize, func(remote net.Addr, err error) {
		s.handshakeFailed(TransportTCP, remote, err)
	})
	s.quicTLS = serverTLSConfig(opts.Identity, opts.Authorize, func(remote net.Addr, err error) {
		s.handshakeFailed(TransportQUIC, remote, err)
	})
	return s, nil
}

// Listen binds the UDP socket; Addr is valid afterwards.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.ln != nil {
		return errors.New("tunnel server: already listening")
	}
	addr, err := net.ResolveUDPAddr("udp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("tunnel server: listen address %q: %w", s.opts.Listen, err)
	}
	udp, tcpLn, err := s.listenBoth(addr)
	if err != nil {
		return err
	}
	tuneUDPBuffers(udp, s.log)
	tr := &quic.Transport{Conn: udp, ConnContext: s.quicConnContext}
	ln, err := tr.Listen(s.quicTLS, s.quicConf)
	if err != nil {
		tr.Close()
		udp.Close()
		if tcpLn != nil {
			tcpLn.Close()
		}
		return fmt.Errorf("tunnel server: listening on %s: %w", udp.LocalAddr(), err)
	}
	s.udp, s.tr, s.ln, s.tcpLn = udp, tr, ln, tcpLn
	tcpAddr := ListenTCPOff
	if tcpLn != nil {
		tcpAddr = tcpLn.Addr().String()
	}
	s.log.Info("tunnel: listening", "udp", ln.Addr().String(), "tcp", tcpAddr, "key", s.opts.Identity.Fingerprint(),
		"relay", s.opts.RelayName, "software", s.opts.Software)
	return nil
}

// listenBoth binds the UDP socket and the TCP listener. When both take the
// same port and the port is left to the system (0), the port the UDP socket
// got may be taken for TCP: then it tries again with another one.
func (s *Server) listenBoth(addr *net.UDPAddr) (*net.UDPConn, net.Listener, error) {
	for attempt := 1; ; attempt++ {
		udp, err := net.ListenUDP("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("tunnel server: %w", err)
		}
		tcpLn, err := s.listenTCP(udp.LocalAddr().(*net.UDPAddr))
		if err == nil {
			return udp, tcpLn, nil
		}
		udp.Close()
		if addr.Port != 0 || s.opts.ListenTCP != "" || !errors.Is(err, syscall.EADDRINUSE) || attempt == 10 {
			return nil, nil, err
		}
	}
}

// listenTCP opens the TCP listener of the TLS/TCP transport, by default on
// the UDP listener's host and port.
func (s *Server) listenTCP(udp *net.UDPAddr) (net.Listener, error) {
	addr := s.opts.ListenTCP
	switch addr {
	case ListenTCPOff:
		return nil, nil
	case "":
		addr = (&net.TCPAddr{IP: udp.IP, Port: udp.Port, Zone: udp.Zone}).String()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tunnel server: TCP listener: %w", err)
	}
	return ln, nil
}

// TCPAddr returns the TCP address of the TLS/TCP transport, or nil before
// Listen or when it is off.
func (s *Server) TCPAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tcpLn == nil {
		return nil
	}
	return s.tcpLn.Addr()
}

// Addr returns the UDP address the server listens on, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve accepts sessions until ctx ends, Shutdown or Close; it calls Listen
// first if needed. Each session runs in goroutines of its own, which
// Shutdown and Close wait for. When ctx ends, Serve closes the server as
// Close does (use Shutdown for a graceful stop).
//
// Serve blocks. It returns nil once stopped, or the error that stopped it.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	needListen := s.ln == nil
	s.mu.Unlock()
	if needListen {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("tunnel server: Serve is already running")
	}
	s.serving = true
	ln, tcpLn := s.ln, s.tcpLn
	s.mu.Unlock()

	if tcpLn != nil {
		s.wg.Go(func() { s.acceptTCP(tcpLn) })
	}
	for {
		qc, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return s.Close()
			}
			if errors.Is(err, quic.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("tunnel server: accepting: %w", err)
		}
		if !quicAccepted(qc) {
			continue // it ended before Accept returned it, counted as a failed attempt
		}
		s.startSession(quicConn{c: qc, io: &s.counts.io})
	}
}

// acceptTCP accepts TCP connections until the listener closes, and does
// each one's TLS handshake and yamux setup in a goroutine of its own.
func (s *Server) acceptTCP(ln net.Listener) {
	for {
		raw, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("tunnel: accepting TCP connections failed; TCP transport stopped", "err", err)
			}
			return
		}
		s.wg.Go(func() {
			c, err := s.handshakeTCP(raw)
			if err != nil {
				if !errors.Is(err, ErrUnknownPeer) { // recorded where the key is checked
					s.handshakeFailed(TransportTCP, raw.RemoteAddr(), err)
				}
				return
			}
			s.startSession(c)
		})
	}
}

// handshakeTCP does the relay side of the TLS handshake on a new TCP
// connection, within Config.HandshakeTimeout, and starts yamux on it.
func (s *Server) handshakeTCP(raw net.Conn) (conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
	defer cancel()
	tc := tls.Server(raw, s.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		lingeringClose(raw)
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	c, err := newYamuxConn(tc, true, &s.cfg, &s.counts.io, s.log)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", proto.ErrProtocol, err)
	}
	return c, nil
}

// lingeringClose closes a refused connection so that the edge reads the TLS
// alert that says why: it ends the sending side, then discards what the
// edge still sends (its first request) for up to a second before closing.
// A plain close with unread bytes would send a TCP reset, which can reach
// the edge before the alert and hide it.
func lingeringClose(c net.Conn) {
	defer c.Close()
	tc, ok := c.(*net.TCPConn)
	if !ok || tc.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// startSession registers c and serves it in a goroutine.
func (s *Server) startSession(c conn) {
	ss := &serverSession{conn: c, goaway: make(chan struct{}), goawayDone: make(chan struct{})}
	if c.transport() == TransportQUIC {
		ss.credit.size = creditBatchSize(s.opts.MaxStreams)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.closeWithError(closeNormal, "relay shutting down")
		return
	}
	s.sessions[ss] = struct{}{}
	s.live.add()
	if s.draining {
		ss.sendGoAway()
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.serveSession(ss)
}

// serveSession runs one session: accept, then run until the connection
// closes.
func (s *Server) serveSession(ss *serverSession) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, ss)
		if ss.peer != nil {
			s.up--
		}
		s.mu.Unlock()
		s.live.done()
	}()
	if err := s.accept(ss); err != nil {
		return // recorded, and the connection closed
	}
	s.run(ss)
	ss.log.Info("tunnel: edge disconnected", "reason", closeCause(ss.conn))
}

// accept does the relay side of the control handshake within
// Config.HandshakeTimeout: it reads HELLO, checks the protocol version,
// asks ServerOptions.Authorize about the edge's key and answers WELCOME.
// Then the session is up. A failure is recorded as a failed session
// attempt, the connection is closed with a code that says why, and the
// error is returned.
func (s *Server) accept(ss *serverSession) error {
	conn := ss.conn
	// refuse records a failed control handshake, unless it failed because
	// Close began (Close closes the sessions in handshake too), and closes
	// the connection.
	refuse := func(code closeCode, msg string, err error) error {
		if s.closing.Err() == nil {
			s.handshakeFailed(conn.transport(), conn.remoteAddr(), err)
		}
		conn.closeWithError(code, msg)
		return err
	}
	ctrl, hello, err := acceptControl(conn, s.cfg.HandshakeTimeout)
	if err != nil {
		return refuse(handshakeCloseCode(err), err.Error(), err)
	}
	conn.attachControl(ctrl)
	if hello.Version != proto.ProtocolVersion {
		msg := fmt.Sprintf("unsupported protocol version %d: this relay speaks version %d", hello.Version, proto.ProtocolVersion)
		return refuse(closeVersion, msg, fmt.Errorf("%w: edge %q (software %q): %s", errVersion, hello.EdgeName, hello.Software, msg))
	}
	key, err := conn.peerKey()
	if err != nil {
		return refuse(closeProtocol, err.Error(), fmt.Errorf("%w: %w", proto.ErrProtocol, err))
	}
	name, upstreams, err := s.opts.Authorize(key)
	if err != nil {
		// The TLS handshake checked the key; a reload removed it since.
		return refuse(closeUnauthorized, "edge key not authorized",
			&peerError{msg: fmt.Sprintf("edge key %s is not authorized: %v", key, err), sentinel: ErrUnknownPeer, key: key})
	}
	peer := &Peer{
		Name:       name,
		Key:        key,
		SessionID:  newSessionID(),
		Transport:  conn.transport(),
		RemoteAddr: conn.remoteAddr(),
		Upstreams:  upstreams,
	}
	err = ctrl.w.WriteMessage(&proto.Welcome{
		Version:    proto.ProtocolVersion,
		RelayName:  s.opts.RelayName,
		SessionID:  peer.SessionID,
		Upstreams:  upstreams,
		MaxStreams: uint64(s.opts.MaxStreams),
	})
	if err != nil {
		return refuse(closeProtocol, "writing WELCOME failed", fmt.Errorf("edge %s: writing WELCOME: %w", name, err))
	}
	ss.ctrl = ctrl
	ss.log = s.log.With("remote", conn.remoteAddr().String(), "transport", conn.transport(), "edge", name, "session", peer.SessionID)
	s.mu.Lock()
	s.up++
	ss.peer = peer
	s.mu.Unlock()
	ss.log.Info("tunnel: edge connected", "key", key, "edge_name", hello.EdgeName, "software", hello.Software)
	return nil
}

// errSilent: nothing at all arrived from the edge for the idle time.
var errSilent = errors.New("nothing heard from the edge")

// run serves an accepted session until its connection closes. Its
// goroutines (the control-stream loop, the GOAWAY writer, the stream
// acceptor, the silence watch on TCP, and the one that closes the
// connection) run on one errgroup whose context ends with the connection:
// the first to fail ends the others, and run returns once all have
// returned. The handlers of the streams are the Server's goroutines: their
// contexts end with the session, and Close waits for them.
func (s *Server) run(ss *serverSession) {
	conn := ss.conn
	g, ctx := errgroup.WithContext(conn.context())
	if conn.transport() == TransportTCP {
		// QUIC drops a silent peer by its idle timeout; yamux needs this.
		g.Go(func() error { return watchSilence(ctx, conn, s.cfg.idleTimeout()) })
	}
	g.Go(func() error { return fmt.Errorf("control stream: %w", s.serveControl(conn, ss.ctrl)) })
	g.Go(func() error {
		ss.writeGoAway(ctx)
		return nil
	})
	g.Go(func() error { return s.acceptStreams(ctx, ss) })
	g.Go(func() error {
		// The control loop blocks in the connection, not on ctx:
		// closing the connection is what ends it.
		<-ctx.Done()
		endSession(conn, context.Cause(ctx))
		return nil
	})
	g.Wait()
}

// endSession closes c after its session's first failure, err, with the
// code that says why, unless c is closed already.
func endSession(c conn, err error) {
	switch {
	case closeCause(c) != nil:
	case errors.Is(err, errSilent):
		c.closeWithError(closeSilent, err.Error())
	case errors.Is(err, io.EOF):
		c.closeWithError(closeControlEnded, "edge ended the control stream")
	default:
		c.closeWithError(closeProtocol, err.Error())
	}
}

// writeGoAway writes GOAWAY on the control stream once sendGoAway asks for
// it, unless ctx ends first, and then closes goawayDone.
func (ss *serverSession) writeGoAway(ctx context.Context) {
	defer close(ss.goawayDone)
	select {
	case <-ss.goaway:
		if err := ss.ctrl.w.WriteMessage(&proto.GoAway{Reason: "relay shutting down"}); err != nil {
			ss.log.Debug("tunnel: sending GOAWAY failed", "err", err)
		}
	case <-ctx.Done():
	}
}

// acceptStreams hands each stream the edge opens to the Handler, in a
// goroutine of the Server's, until accepting fails (the connection closed,
// or ctx ended); it returns why.
func (s *Server) acceptStreams(ctx context.Context, ss *serverSession) error {
	conn := ss.conn
	// Handlers' contexts end with the session, and as soon as Close
	// begins: a handler that has not started its work yet refuses the
	// stream then, so that the edge may retry it elsewhere.
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopOnClose := context.AfterFunc(s.closing, cancel)
	defer stopOnClose()
	// A stream over MaxStreams is refused (the edge may retry it on
	// another session): yamux has no stream credit, and QUIC's allows
	// MaxStreams plus what creditBatch may hold back.
	var open atomic.Int64
	for {
		st, err := conn.acceptStream(ctx)
		if err != nil {
			return fmt.Errorf("accepting streams: %w", err)
		}
		s.counts.accepted.Add(1)
		s.lastAccept.Store(time.Now().UnixNano())
		if open.Load() >= int64(s.opts.MaxStreams) {
			s.counts.refused.Add(1)
			refuseStream(st, fmt.Sprintf("airlock relay: the session is at its limit of %d streams", s.opts.MaxStreams))
			ss.credit.finished(st)
			continue
		}
		open.Add(1)
		s.inflight.add()
		s.wg.Add(1)
		go func() {
			defer open.Add(-1)
			s.serveStream(hctx, ss, st)
		}()
	}
}

// watchSilence returns an error wrapping errSilent once nothing at all has
// arrived from the peer for idle, checking four times per idle period, or
// nil when ctx ends. The edge pings every PingInterval, so a live edge is
// never silent that long; any other byte heard counts as much as a PING, so
// a PING held up behind busy streams does not make a live edge look dead.
func watchSilence(ctx context.Context, c conn, idle time.Duration) error {
	tick := time.NewTicker(idle / 4)
	defer tick.Stop()
	last, lastAt := c.heard(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			if h := c.heard(); h != last {
				last, lastAt = h, now
				continue
			}
			if now.Sub(lastAt) >= idle {
				return fmt.Errorf("%w for %s", errSilent, idle)
			}
		}
	}
}

// refuseStream answers a stream with an in-band RESET with CodeRefused,
// without reading it, and closes it.
func refuseStream(st stream, msg string) {
	proto.NewWriter(st, proto.Limits{}).Reset(proto.CodeRefused, msg)
	st.Close()
}

// serveControl answers the edge's PINGs and applies its STREAM_RESETs until
// the control stream fails, and returns why (never nil).
func (s *Server) serveControl(c conn, ctrl *controlStream) error {
	for {
		m, err := ctrl.r.ReadMessage()
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *proto.Ping:
			if err := ctrl.w.WriteMessage(&proto.Pong{ID: m.ID}); err != nil {
				return err
			}
		case *proto.Pong:
			// The relay sends no PINGs; an unsolicited PONG is harmless.
		case *proto.StreamReset:
			if !c.peerReset(m) {
				return fmt.Errorf("%w: STREAM_RESET on %s", proto.ErrProtocol, c.transport())
			}
		default:
			return fmt.Errorf("%w: unexpected %T", proto.ErrProtocol, m)
		}
	}
}

// serveStream runs the handler on one exchange stream. If the handler
// returns without closing the stream, or panics, the stream is closed or
// aborted here so that its flow-control credit is not lost.
func (s *Server) serveStream(ctx context.Context, ss *serverSession, qs stream) {
	defer s.wg.Done()
	defer s.inflight.done()
	defer ss.credit.finished(qs)
	defer func() {
		if v := recover(); v != nil {
			ss.log.Error("tunnel: stream handler panicked", "stream", qs.ID(), "panic", v, "stack", string(debug.Stack()))
			qs.Abort(proto.CodeInternal)
			return
		}
		qs.Close()
	}()
	s.h.ServeStream(ctx, ss.peer, qs)
}

// Sessions returns how many sessions are up (past WELCOME).
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up
}

// Shutdown drains the server: it stops accepting sessions and sends GOAWAY
// on every session. Edges then open no new streams there, and each edge
// closes its session once its last stream is done, which is how the relay
// knows that the answers in flight have arrived. Shutdown waits until every
// session is closed and every handler has returned, or until ctx ends, and
// then closes as Close does. It returns ctx.Err() if ctx ended first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.Close()
	}
	s.draining = true
	ln, tcpLn := s.ln, s.tcpLn
	for ss := range s.sessions {
		ss.sendGoAway()
	}
	n := len(s.sessions)
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	if tcpLn != nil {
		tcpLn.Close()
	}
	s.log.Info("tunnel: draining", "sessions", n, "streams", s.inflight.count())

	var err error
	for _, f := range []*inflight{&s.live, &s.inflight} {
		select {
		case <-f.idle():
			continue
		case <-ctx.Done():
			err = ctx.Err()
			s.log.Warn("tunnel: drain time is up; closing sessions",
				"sessions", s.live.count(), "streams", s.inflight.count())
		}
		break
	}
	s.Close()
	return err
}

// Close stops the server at once. It closes the listeners, sends GOAWAY on
// every session and ends every handler's context: handlers that have not
// begun their work refuse their streams (the edge may retry those
// elsewhere), the others abort. Once the handlers have returned, or after
// closeFlush, it closes every session and waits for all goroutines of the
// server to return. Close is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		ln, tr, udp, tcpLn := s.ln, s.tr, s.udp, s.tcpLn
		sessions := make([]*serverSession, 0, len(s.sessions))
		for ss := range s.sessions {
			sessions = append(sessions, ss)
		}
		s.mu.Unlock()
		if ln != nil {
			ln.Close()
		}
		if tcpLn != nil {
			tcpLn.Close()
		}
		for _, ss := range sessions {
			ss.sendGoAway()
		}
		s.stopHandlers()
		if len(sessions) > 0 {
			s.flush(sessions)
		}
		for _, ss := range sessions {
			ss.conn.closeWithError(closeNormal, "relay shutting down")
		}
		s.wg.Wait()
		if tr != nil {
			tr.Close()
			udp.Close()
		}
		// Closing the transport ended every QUIC connection; their
		// callbacks may still run (and may not once Close returns).
		s.attempts.Wait()
		s.logSuppressedHandshakes()
	})
	return nil
}

// closeFlush bounds how long Close waits for handlers to refuse or abort
// their streams and for the GOAWAYs to be written before it closes the
// sessions; closeLinger is how long no new stream must have arrived before
// it does (the streams edges sent before they read the GOAWAY arrive and are
// refused meanwhile), which also gives the transports time to put the last
// frames on the wire, since closing a connection drops what is queued.
const (
	closeFlush  = time.Second
	closeLinger = 100 * time.Millisecond
)

// flush waits, within closeFlush, until every handler has returned and the
// GOAWAYs of sessions are written, then until no stream has arrived for
// closeLinger.
func (s *Server) flush(sessions []*serverSession) {
	deadline := time.Now().Add(closeFlush)
	t := time.NewTimer(closeFlush)
	defer t.Stop()
	waits := []<-chan struct{}{s.inflight.idle()}
	for _, ss := range sessions {
		waits = append(waits, ss.goawayDone)
	}
	for _, w := range waits {
		select {
		case <-w:
		case <-t.C:
			return
		}
	}
	// Streams the edges opened before they read the GOAWAY are still on
	// their way; each is refused when it arrives. Wait until none has
	// arrived for closeLinger, so that none is lost with the connection.
	for {
		quiet := time.Until(time.Unix(0, s.lastAccept.Load()).Add(closeLinger))
		if quiet <= 0 {
			return
		}
		if time.Now().Add(quiet).After(deadline) {
			time.Sleep(time.Until(deadline))
			return
		}
		time.Sleep(quiet)
	}
}

// inflight counts sessions or streams being served, so that Shutdown can
// wait for them. Unlike a sync.WaitGroup it may gain streams while someone
// waits.
type inflight struct {
	mu    sync.Mutex
	n     int
	empty chan struct{} // made when n leaves 0, closed when it returns to 0
}

func (f *inflight) add() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.empty = make(chan struct{})
	}
	f.n++
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 {
		close(f.empty)
	}
}

func (f *inflight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// idle returns a channel that is closed once no stream is in flight.
func (f *inflight) idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return f.empty
}

// Reauthorize asks ServerOptions.Authorize again about the edge of every
// session up, and closes the sessions of edges it now refuses: after a
// configuration reload removed their keys, they must not keep a tunnel. It
// returns how many sessions it closed.
func (s *Server) Reauthorize() int {
	s.mu.Lock()
	var up []*serverSession
	for ss := range s.sessions {
		if ss.peer != nil {
			up = append(up, ss)
		}
	}
	s.mu.Unlock()
	closed := 0
	for _, ss := range up {
		if _, _, err := s.opts.Authorize(ss.peer.Key); err != nil {
			s.log.Warn("tunnel: closing the session of an edge no longer authorized",
				"edge", ss.peer.Name, "key", ss.peer.Key, "session", ss.peer.SessionID)
			ss.conn.closeWithError(closeUnauthorized, "edge key no longer authorized")
			closed++
		}
	}
	return closed
}
