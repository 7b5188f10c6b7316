package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sync/errgroup"

	"github.com/airlock-proxy/airlock/proto"
)

// ClientOptions configure a [Client].
type ClientOptions struct {
	// Config tunes timeouts and reconnects; zero fields mean their defaults.
	Config Config
	// Identity is the edge's key pair, presented to the relay. Required.
	Identity *Identity
	// RelayAddr is the relay's address, "host:port": UDP for QUIC and,
	// unless TCPAddr says otherwise, TCP for the fallback. Required.
	RelayAddr string
	// TCPAddr is the relay's TCP address for the TLS/TCP transport, when
	// it differs from RelayAddr (e.g. port 443 behind a firewall).
	TCPAddr string
	// Transport is TransportAuto (the default when empty), TransportQUIC
	// or TransportTCP.
	Transport string
	// Dialer dials the TCP transport, possibly through a CONNECT proxy;
	// nil dials directly.
	Dialer *ProxyDialer
	// RelayKey pins the relay's public key, "sha256:<base64url>": a relay
	// presenting another key is refused. Required.
	RelayKey string
	// EdgeName names this edge in HELLO, for the relay's logs.
	EdgeName string
	// Software is this edge's software version, sent in HELLO.
	Software string
	// Logger receives connection state changes; nil discards them.
	Logger *slog.Logger
}

// Client is the edge side of the tunnel: it keeps one session to a relay up
// (see [Client.Run]) and opens a stream on it per exchange.
//
// All methods are safe for concurrent use.
type Client struct {
	opts     ClientOptions
	cfg      Config
	pin      string
	log      *slog.Logger
	tlsConf  *tls.Config
	quicConf *quic.Config
	tcpAddr  string
	dialer   *ProxyDialer
	// openWait bounds OpenStream's wait at the session's stream limit:
	// StreamOpenTimeout, shorter in tests.
	openWait time.Duration

	counts    clientCounters
	rtt       atomic.Int64  // time.Duration of the last PING, 0 when down
	attempted chan struct{} // closed once the first connection attempt is over
	firstOnce sync.Once
	preferTCP atomic.Bool   // auto: QUIC failed, so reconnect over TCP and probe QUIC aside
	done      chan struct{} // closed by Close
	wg        sync.WaitGroup

	mu      sync.Mutex
	sess    *clientSession // the session new streams go to; nil when down or draining
	ready   chan struct{}  // closed while sess != nil
	lastErr error          // why the last attempt or session failed

	guard runGuard
}

// clientSession is one connection to the relay, past WELCOME.
type clientSession struct {
	conn    conn
	ctrl    *controlStream
	peer    *Peer
	drained chan struct{} // closed once draining with no stream left

	mu       sync.Mutex
	streams  int  // streams opened and not yet closed or aborted
	draining bool // GOAWAY arrived
}

// acquire counts a new stream, unless the session drains.
func (s *clientSession) acquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.streams++
	return true
}

// release uncounts a stream; the last one of a draining session closes
// drained.
func (s *clientSession) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams--
	if s.draining && s.streams == 0 {
		close(s.drained)
	}
}

// drain marks the session as draining after GOAWAY.
func (s *clientSession) drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return
	}
	s.draining = true
	if s.streams == 0 {
		close(s.drained)
	}
}

// NewClient checks opts and returns a Client. It fills in the defaults of
// opts.Config and validates it here, once. It does not dial: call Run.
func NewClient(opts ClientOptions) (*Client, error) {
	o, err := opts.populated()
	if err != nil {
		return nil, fmt.Errorf("tunnel client: %w", err)
	}
	return newClient(o)
}

// populated returns a copy of o with its defaults filled in (Config,
// Transport, Dialer, Logger) and what every connection shares validated.
// RelayAddr, TCPAddr and RelayKey are left for newClient, which a Pool calls
// once per relay.
func (o ClientOptions) populated() (ClientOptions, error) {
	if o.Identity == nil {
		return o, errors.New("no identity")
	}
	var err error
	if o.Config, err = o.Config.populated(); err != nil {
		return o, err
	}
	switch o.Transport {
	case "":
		o.Transport = TransportAuto
	case TransportAuto, TransportQUIC, TransportTCP:
	default:
		return o, fmt.Errorf("transport %q: want %q, %q or %q",
			o.Transport, TransportAuto, TransportQUIC, TransportTCP)
	}
	if o.Dialer == nil {
		if o.Dialer, err = NewProxyDialer("", false); err != nil {
			return o, err
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// newClient returns a Client to the relay that opts name. opts must come
// from ClientOptions.populated.
func newClient(opts ClientOptions) (*Client, error) {
	if opts.RelayAddr == "" {
		return nil, errors.New("tunnel client: no relay address")
	}
	pin, err := ParseFingerprint(opts.RelayKey)
	if err != nil {
		return nil, fmt.Errorf("tunnel client: relay key: %w", err)
	}
	tcpAddr := opts.TCPAddr
	if tcpAddr == "" {
		tcpAddr = opts.RelayAddr
	}
	return &Client{
		guard:   runGuard{what: "tunnel client"},
		opts:    opts,
		cfg:     opts.Config,
		pin:     pin,
		log:     opts.Logger.With("relay_addr", opts.RelayAddr),
		tlsConf: clientTLSConfig(opts.Identity, pin),
		// The relay never opens streams to the edge.
		quicConf:  quicConfig(&opts.Config, -1, false),
		tcpAddr:   tcpAddr,
		dialer:    opts.Dialer,
		openWait:  StreamOpenTimeout,
		done:      make(chan struct{}),
		ready:     make(chan struct{}),
		attempted: make(chan struct{}),
	}, nil
}

// Run keeps a session to the relay up until ctx ends or Close is called:
// it dials, does the control handshake, pings, and when the session dies it
// redials after an exponential backoff with full jitter between
// Config.ReconnectMin and Config.ReconnectMax (reset after every successful
// handshake). Failures are logged and kept for [Client.LastError]; they do
// not end Run.
//
// Run blocks. It returns nil after Close, ctx.Err() when ctx ends, and
// ErrClosed when called after Close. Only one Run may be active at a time.
func (c *Client) Run(ctx context.Context) error {
	ctx, err := c.guard.start(ctx)
	if err != nil {
		return err
	}

	failures := 0
	for {
		sess, err := c.connect(ctx)
		c.firstOnce.Do(func() { close(c.attempted) })
		for err == nil {
			failures = 0
			var next *clientSession
			next, err = c.serveSession(ctx, sess)
			if next == nil {
				break
			}
			sess = next
		}
		if ctx.Err() != nil {
			break
		}
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		wait := backoff(c.cfg.ReconnectMin, c.cfg.ReconnectMax, failures, nil)
		failures++
		if sess == nil {
			c.log.Warn("tunnel: connecting to relay failed", "err", err, "attempt", failures, "retry_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		if ctx.Err() != nil {
			break
		}
	}
	err = ctx.Err()
	if c.guard.end() {
		return nil // Close ended Run
	}
	return err
}

// connect dials the relay and does the control handshake over the
// configured transport. With TransportAuto it tries QUIC first, within
// Config.FallbackTimeout, then TCP; once QUIC has failed that way it goes
// straight to TCP on later reconnects (QUIC is probed aside, see
// serveSession) until a TCP attempt fails too.
func (c *Client) connect(ctx context.Context) (*clientSession, error) {
	switch c.opts.Transport {
	case TransportQUIC, TransportTCP:
		return c.handshake(ctx, c.opts.Transport, c.cfg.HandshakeTimeout)
	}
	quicFailed := false
	if !c.preferTCP.Load() {
		sess, err := c.handshake(ctx, TransportQUIC, c.cfg.FallbackTimeout)
		if err == nil || ctx.Err() != nil || errors.Is(err, ErrPinMismatch) || errors.Is(err, ErrUnknownPeer) {
			return sess, err
		}
		c.log.Warn("tunnel: QUIC failed; falling back to TCP", "err", err, "tcp_addr", c.tcpAddr)
		c.preferTCP.Store(true)
		quicFailed = true
	}
	sess, err := c.handshake(ctx, TransportTCP, c.cfg.HandshakeTimeout)
	if err != nil {
		// Maybe the relay is down rather than UDP blocked: try QUIC
		// first again next time.
		c.preferTCP.Store(false)
		return nil, err
	}
	if quicFailed {
		// A fallback is the move from QUIC to TCP, counted once it has
		// happened: not each round of failed attempts while the relay is
		// unreachable, nor a reconnect while already on TCP (issue 8).
		c.counts.fallbacks.Add(1)
	}
	return sess, nil
}

// handshake dials the relay over one transport and does the control
// handshake, within timeout.
func (c *Client) handshake(ctx context.Context, transport string, timeout time.Duration) (*clientSession, error) {
	sess, err := c.dialSession(ctx, transport, timeout)
	switch {
	case err == nil:
		c.counts.connects.Add(1)
	case ctx.Err() == nil:
		c.counts.failures.add(err)
	}
	return sess, err
}

// dialSession dials and handshakes for handshake.
func (c *Client) dialSession(ctx context.Context, transport string, timeout time.Duration) (*clientSession, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := c.opts.RelayAddr
	var cn conn
	var err error
	if transport == TransportTCP {
		addr = c.tcpAddr
		cn, err = dialTCP(ctx, addr, c.dialer, c.tlsConf, &c.cfg, &c.counts.io, c.log)
	} else {
		var qc quicConn
		qc, err = dialQUIC(ctx, addr, c.tlsConf, c.quicConf, &c.counts.io, c.log)
		if err == nil {
			cn = qc
		}
	}
	if err != nil {
		return nil, fmt.Errorf("dialing relay %s over %s: %w", addr, transport, handshakeError(err, c.opts.Identity.Fingerprint()))
	}
	hello := &proto.Hello{
		Version:  proto.ProtocolVersion,
		EdgeName: c.opts.EdgeName,
		Software: c.opts.Software,
	}
	start := time.Now() // HELLO to WELCOME: a first round-trip time
	ctrl, welcome, err := openControl(ctx, cn, hello)
	if err != nil {
		if cause := closeCause(cn); cause != nil && !errors.Is(err, errHandshakeTimeout) {
			// The relay closed the connection: its reason says more
			// than the failed read.
			err = cause
		}
		err = handshakeError(err, c.opts.Identity.Fingerprint())
		cn.closeWithError(handshakeCloseCode(err), err.Error())
		return nil, fmt.Errorf("handshake with relay %s over %s: %w", addr, transport, err)
	}
	rtt := time.Since(start)
	key, err := cn.peerKey()
	if err != nil {
		cn.closeWithError(closeProtocol, err.Error())
		return nil, fmt.Errorf("handshake with relay %s over %s: %w", addr, transport, err)
	}
	cn.attachControl(ctrl)
	c.rtt.Store(int64(rtt))
	return &clientSession{
		conn:    cn,
		ctrl:    ctrl,
		drained: make(chan struct{}),
		peer: &Peer{
			Name:       welcome.RelayName,
			Key:        key,
			SessionID:  welcome.SessionID,
			Transport:  transport,
			RemoteAddr: cn.remoteAddr(),
			Upstreams:  welcome.Upstreams,
		},
	}, nil
}

// serveSession serves sess until it dies, as runSession does. A TCP session of
// TransportAuto is served while QUIC is probed every
// Config.QUICProbeInterval: once a QUIC session is up, sess drains (its
// streams finish; new ones go to QUIC) and serveSession returns the QUIC
// session for the caller to serve next.
func (c *Client) serveSession(ctx context.Context, sess *clientSession) (*clientSession, error) {
	if c.opts.Transport != TransportAuto || sess.peer.Transport != TransportTCP {
		return nil, c.runSession(ctx, sess)
	}
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	probed := make(chan *clientSession, 1)
	served := make(chan error, 1)
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		probed <- c.probeQUIC(probeCtx)
	}()
	// The TCP session's server outlives serveSession while it drains.
	go func() {
		defer c.wg.Done()
		served <- c.runSession(ctx, sess)
	}()
	select {
	case err := <-served:
		stopProbe()
		if q := <-probed; q != nil {
			return q, nil
		}
		return nil, err
	case q := <-probed:
		if q == nil {
			return nil, <-served
		}
		c.preferTCP.Store(false)
		c.log.Info("tunnel: QUIC works again; new streams move to it, the TCP session drains",
			"relay", sess.peer.Name, "tcp_session", sess.peer.SessionID, "quic_session", q.peer.SessionID)
		c.markDown(sess, nil)
		sess.drain()
		return q, nil
	}
}

// probeQUIC tries a QUIC session every Config.QUICProbeInterval (with ±20%
// jitter) until one is up, which it returns, or until ctx ends (nil).
func (c *Client) probeQUIC(ctx context.Context) *clientSession {
	every := c.cfg.QUICProbeInterval
	for {
		wait := every*4/5 + time.Duration(rand.Int64N(int64(every*2/5)+1))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
		sess, err := c.handshake(ctx, TransportQUIC, c.cfg.FallbackTimeout)
		if err != nil {
			c.log.Debug("tunnel: QUIC probe failed; staying on TCP", "err", err)
			continue
		}
		if ctx.Err() != nil {
			sess.conn.closeWithError(closeNormal, "edge no longer needs the session")
			return nil
		}
		return sess
	}
}

// errPingTimeout: a PING got no PONG within Config.PingTimeout.
var errPingTimeout = errors.New("no PONG")

// errDrained: the relay sent GOAWAY and the last stream of the session
// finished.
var errDrained = errors.New("relay drained the session")

// errControlEnded: the relay ended the control stream.
var errControlEnded = errors.New("relay ended the control stream")

// runSession keeps sess, handshaken, up until it dies or ctx ends, and
// returns why it ended. The session's goroutines (the control-stream reader
// and the pinger) and the one that closes its connection run on one
// errgroup: the first to fail ends the others, and runSession returns once
// all have returned.
func (c *Client) runSession(ctx context.Context, sess *clientSession) error {
	c.mu.Lock()
	if c.sess == nil {
		close(c.ready)
	}
	c.sess = sess
	c.lastErr = nil
	c.mu.Unlock()
	c.log.Info("tunnel: connected to relay", "relay", sess.peer.Name, "session", sess.peer.SessionID,
		"transport", sess.peer.Transport, "remote", sess.peer.RemoteAddr.String(), "rtt", c.RTT(), "upstreams", sess.peer.Upstreams)

	g, gctx := errgroup.WithContext(ctx)
	pongs := make(chan uint64, 1)
	g.Go(func() error {
		err := c.readControl(sess, pongs)
		if cause := closeCause(sess.conn); cause != nil {
			// The connection closed under the read: its cause says
			// more than the failed read.
			return cause
		}
		if errors.Is(err, io.EOF) {
			return errControlEnded
		}
		return err
	})
	g.Go(func() error { return c.keepAlive(gctx, sess, pongs) })
	g.Go(func() error {
		// The reader blocks in the connection, not on gctx: closing the
		// connection is what ends it.
		<-gctx.Done()
		c.closeSession(ctx, sess, context.Cause(gctx))
		return nil
	})
	cause := g.Wait()
	err := fmt.Errorf("session %s: %w", sess.peer.SessionID, cause)

	// LastError says why in the same step that takes the session out of
	// service: whoever sees Ready turn false sees why (Run records it
	// again, later, for the sessions it serves).
	why := err
	if ctx.Err() != nil {
		why = nil // shutting down: nothing failed
	}
	if c.markDown(sess, why) {
		c.rtt.Store(0)
	}
	if ctx.Err() == nil && !errors.Is(cause, errDrained) {
		c.log.Warn("tunnel: session to relay lost", "relay", sess.peer.Name, "session", sess.peer.SessionID, "err", cause)
	} else {
		c.log.Info("tunnel: session to relay closed", "relay", sess.peer.Name, "session", sess.peer.SessionID)
	}
	return err
}

// closeSession closes sess's connection with the code that says why the
// session ended: err, its first failure, unless ctx (the edge's) ended.
func (c *Client) closeSession(ctx context.Context, sess *clientSession, err error) {
	switch {
	case ctx.Err() != nil:
		sess.conn.closeWithError(closeNormal, "edge shutting down")
	case errors.Is(err, errDrained):
		sess.conn.closeWithError(closeNormal, "drained")
	case errors.Is(err, errPingTimeout):
		sess.conn.closeWithError(closePingTimeout, err.Error())
	case errors.Is(err, errControlEnded):
		sess.conn.closeWithError(closeControlEnded, err.Error())
	default:
		sess.conn.closeWithError(closeProtocol, err.Error())
	}
}

// keepAlive sends a PING at once and then every Config.PingInterval, and
// measures the round trip from each PONG it waited for (pongs). It returns
// when the session dies: a PING without PONG in Config.PingTimeout and
// nothing at all heard from the relay in the last PingTimeout either (a
// PONG held up behind busy or blocked streams while the relay's packets
// keep arriving is late, not lost: the wait goes on until the relay has
// been silent for a PingTimeout), the relay drained the session (GOAWAY,
// and the last stream finished), the connection closed, or ctx ended (the
// session's other goroutine failed, or the edge is shutting down).
//
// The silence is timed from when keepAlive saw the heard count change,
// which it looks at every PingInterval: later than the packet by at most
// one PingInterval, so a dead relay is noticed within PingInterval +
// PingTimeout of its last packet. (Timed from the PING's timeout instead, a
// packet that arrived just after the PING, such as the tail of the
// handshake, would push the verdict to twice the PingTimeout.)
func (c *Client) keepAlive(ctx context.Context, sess *clientSession, pongs <-chan uint64) error {
	ticker := time.NewTicker(c.cfg.PingInterval)
	defer ticker.Stop()
	timeout := time.NewTimer(time.Hour)
	timeout.Stop()
	defer timeout.Stop()

	var nextID, pending uint64
	var sentAt time.Time
	// heard is the relay's heard count as last looked at, heardAt when it
	// was seen to change (or keepAlive started).
	heard, heardAt := sess.conn.heard(), time.Now()
	look := func(now time.Time) {
		if h := sess.conn.heard(); h != heard {
			heard, heardAt = h, now
		}
	}
	ping := func() error {
		nextID++
		pending, sentAt = nextID, time.Now()
		timeout.Reset(c.cfg.PingTimeout)
		return sess.ctrl.w.WriteMessage(&proto.Ping{ID: pending})
	}
	if err := ping(); err != nil {
		return err
	}
	for {
		select {
		case <-ticker.C:
			look(time.Now())
			if pending == 0 {
				if err := ping(); err != nil {
					return err
				}
				continue
			}
			// A PING is still unanswered. Send another, untimed: the
			// relay counts every byte it hears from the edge as a sign
			// of life (watchSilence), and the wait for the first PONG
			// may outlast its idle time on a slow, busy link.
			nextID++
			if err := sess.ctrl.w.WriteMessage(&proto.Ping{ID: nextID}); err != nil {
				return err
			}
		case id := <-pongs:
			if id == pending && pending != 0 {
				c.rtt.Store(int64(time.Since(sentAt)))
				pending = 0
				timeout.Stop()
			}
		case <-timeout.C:
			now := time.Now()
			look(now)
			if quiet := heardAt.Add(c.cfg.PingTimeout); now.Before(quiet) {
				// Late, not dead: the relay was heard within the
				// last PingTimeout. Wait until it has been silent
				// that long.
				timeout.Reset(quiet.Sub(now))
				continue
			}
			return fmt.Errorf("%w in %s and nothing else heard from the relay", errPingTimeout, c.cfg.PingTimeout)
		case <-sess.drained:
			return errDrained
		case <-sess.conn.context().Done():
			return closeCause(sess.conn) // never nil once the context ended
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readControl reads the control stream until it fails: PONGs go to pongs,
// PINGs are answered, GOAWAY drains the session.
func (c *Client) readControl(sess *clientSession, pongs chan<- uint64) error {
	for {
		m, err := sess.ctrl.r.ReadMessage()
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *proto.Pong:
			select {
			case pongs <- m.ID:
			default:
			}
		case *proto.Ping:
			if err := sess.ctrl.w.WriteMessage(&proto.Pong{ID: m.ID}); err != nil {
				return err
			}
		case *proto.StreamReset:
			if !sess.conn.peerReset(m) {
				return fmt.Errorf("control stream: %w: STREAM_RESET on %s", proto.ErrProtocol, sess.peer.Transport)
			}
		case *proto.GoAway:
			c.counts.goAways.Add(1)
			c.markDown(sess, nil)
			sess.drain()
			c.log.Info("tunnel: relay is draining; opening no new streams on this session",
				"relay", sess.peer.Name, "session", sess.peer.SessionID, "reason", m.Reason)
		default:
			return fmt.Errorf("control stream: %w: unexpected %T", proto.ErrProtocol, m)
		}
	}
}

// markDown takes sess out of service for new streams, if it is the current
// session, and reports whether it was. A non-nil why becomes LastError in
// the same step.
func (c *Client) markDown(sess *clientSession, why error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != sess {
		return false
	}
	c.sess = nil
	c.ready = make(chan struct{})
	if why != nil {
		c.lastErr = why
	}
	return true
}

// load returns the current session's open streams and ID, and false when
// no session takes new streams.
func (c *Client) load() (streams int, sessionID string, ok bool) {
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess == nil {
		return 0, "", false
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.streams, sess.peer.SessionID, !sess.draining
}

// OpenStream opens a stream on the current session, unless its ID is in
// avoid. It never waits for a session: when none is up, the relay is
// draining, or the session is to be avoided, it returns an error wrapping
// ErrNoSession at once. It blocks only while the session's stream limit is
// reached, no longer than ctx allows nor than StreamOpenTimeout (then the
// error wraps context.DeadlineExceeded); only that wait arms a timer, so
// callers need not bound the call themselves.
//
// The caller must Close or Abort every stream it opens: after the relay's
// GOAWAY, the edge closes the session once its last stream is done, which
// tells the relay that every answer has arrived.
//
// The returned Peer is shared by all streams of the session and must not be
// modified.
func (c *Client) OpenStream(ctx context.Context, avoid ...string) (Stream, *Peer, error) {
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess == nil || slices.Contains(avoid, sess.peer.SessionID) || !sess.acquire() {
		return nil, nil, fmt.Errorf("opening stream: %w", ErrNoSession)
	}
	if err := ctx.Err(); err != nil {
		sess.release()
		return nil, nil, fmt.Errorf("opening stream: %w", err)
	}
	st, err := sess.conn.openStream(ctx, c.openWait)
	if err != nil {
		sess.release()
		if ctx.Err() == nil && closeCause(sess.conn) != nil {
			return nil, nil, fmt.Errorf("opening stream: %w: %w", ErrNoSession, err)
		}
		return nil, nil, fmt.Errorf("opening stream: %w", err)
	}
	st.setOnDone(sess.release)
	c.counts.streamsOpened.Add(1)
	return st, sess.peer, nil
}

// Transport returns the transport of the session new streams go to
// (TransportQUIC or TransportTCP), or "" when none is up.
func (c *Client) Transport() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return ""
	}
	return c.sess.peer.Transport
}

// Ready reports whether a session is up and accepting new streams.
func (c *Client) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess != nil
}

// WaitReady blocks until a session is up, ctx ends (ctx.Err()) or the
// client is closed (ErrClosed).
func (c *Client) WaitReady(ctx context.Context) error {
	for {
		c.mu.Lock()
		up, ready := c.sess != nil, c.ready
		c.mu.Unlock()
		if up {
			return nil
		}
		select {
		case <-c.done:
			return ErrClosed
		default:
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return ErrClosed
		}
	}
}

// RTT returns the round-trip time measured by the last PING (at first, by
// the handshake), or 0 when no session is up.
func (c *Client) RTT() time.Duration { return time.Duration(c.rtt.Load()) }

// LastError returns why the last connection attempt or session failed, or
// nil while a session is up (and before the first attempt). Errors from a
// relay presenting the wrong key wrap ErrPinMismatch; a relay refusing this
// edge's key, ErrUnknownPeer.
func (c *Client) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Close ends Run, closes the session and waits until all the client's
// goroutines have returned. Streams in flight fail. Close is idempotent.
func (c *Client) Close() error {
	if c.guard.close() {
		close(c.done)
	}
	c.guard.wait()
	c.wg.Wait()
	return nil
}

var _ Opener = (*Client)(nil)
