package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/airlock-proxy/airlock/proto"
)

// ClientOptions configure a [Client].
type ClientOptions struct {
	// Config tunes timeouts and reconnects; zero fields mean their defaults.
	Config Config
	// Identity is the edge's key pair, presented to the relay. Required.
	Identity *Identity
	// RelayAddr is the relay's UDP address, "host:port". Required.
	RelayAddr string
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

	rtt  atomic.Int64  // time.Duration of the last PING, 0 when down
	done chan struct{} // closed by Close
	wg   sync.WaitGroup

	mu        sync.Mutex
	sess      *clientSession     // the session new streams go to; nil when down or draining
	ready     chan struct{}      // closed while sess != nil
	lastErr   error              // why the last attempt or session failed
	closed    bool               // Close was called
	running   bool               // Run is running
	cancelRun context.CancelFunc // ends Run's context
}

// clientSession is one QUIC connection to the relay, past WELCOME.
type clientSession struct {
	conn    *quic.Conn
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

// NewClient checks opts and returns a Client. It does not dial: call Run.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.Identity == nil {
		return nil, errors.New("tunnel client: no identity")
	}
	if opts.RelayAddr == "" {
		return nil, errors.New("tunnel client: no relay address")
	}
	pin, err := ParseFingerprint(opts.RelayKey)
	if err != nil {
		return nil, fmt.Errorf("tunnel client: relay key: %w", err)
	}
	cfg, err := opts.Config.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("tunnel client: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{
		opts:    opts,
		cfg:     cfg,
		pin:     pin,
		log:     log.With("relay_addr", opts.RelayAddr),
		tlsConf: clientTLSConfig(opts.Identity, pin),
		// The relay never opens streams to the edge.
		quicConf: quicConfig(&cfg, -1),
		done:     make(chan struct{}),
		ready:    make(chan struct{}),
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
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.running {
		c.mu.Unlock()
		return errors.New("tunnel client: Run is already running")
	}
	ctx, cancel := context.WithCancel(ctx)
	c.running = true
	c.cancelRun = cancel
	c.wg.Add(1)
	c.mu.Unlock()
	defer func() {
		cancel()
		c.mu.Lock()
		c.running = false
		c.cancelRun = nil
		c.mu.Unlock()
		c.wg.Done()
	}()

	failures := 0
	for {
		sess, err := c.connect(ctx)
		if err == nil {
			failures = 0
			err = c.serve(ctx, sess)
		}
		if ctx.Err() != nil {
			break
		}
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		wait := backoff(c.cfg.ReconnectMin.Duration, c.cfg.ReconnectMax.Duration, failures, nil)
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
	select {
	case <-c.done:
		return nil
	default:
		return ctx.Err()
	}
}

// connect dials the relay and does the control handshake, within
// Config.HandshakeTimeout.
func (c *Client) connect(ctx context.Context) (*clientSession, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout.Duration)
	defer cancel()
	conn, err := quic.DialAddr(ctx, c.opts.RelayAddr, c.tlsConf, c.quicConf)
	if err != nil {
		return nil, fmt.Errorf("dialing relay %s: %w", c.opts.RelayAddr, handshakeError(err, c.opts.Identity.Fingerprint()))
	}
	hello := &proto.Hello{
		Version:  proto.ProtocolVersion,
		EdgeName: c.opts.EdgeName,
		Software: c.opts.Software,
	}
	start := time.Now() // HELLO to WELCOME: a first round-trip time
	ctrl, welcome, err := openControl(ctx, conn, hello)
	if err != nil {
		err = handshakeError(err, c.opts.Identity.Fingerprint())
		conn.CloseWithError(handshakeCloseCode(err), err.Error())
		return nil, fmt.Errorf("handshake with relay %s: %w", c.opts.RelayAddr, err)
	}
	rtt := time.Since(start)
	key, err := peerKey(conn)
	if err != nil {
		conn.CloseWithError(closeProtocol, err.Error())
		return nil, fmt.Errorf("handshake with relay %s: %w", c.opts.RelayAddr, err)
	}
	c.rtt.Store(int64(rtt))
	return &clientSession{
		conn:    conn,
		ctrl:    ctrl,
		drained: make(chan struct{}),
		peer: &Peer{
			Name:       welcome.RelayName,
			Key:        key,
			SessionID:  welcome.SessionID,
			Transport:  transportQUIC,
			RemoteAddr: conn.RemoteAddr(),
			Upstreams:  welcome.Upstreams,
		},
	}, nil
}

// errPingTimeout: a PING got no PONG within Config.PingTimeout.
var errPingTimeout = errors.New("no PONG")

// errDrained: the relay sent GOAWAY and the last stream of the session
// finished.
var errDrained = errors.New("relay drained the session")

// serve keeps sess up until it dies or ctx ends, and returns why it ended.
func (c *Client) serve(ctx context.Context, sess *clientSession) error {
	c.mu.Lock()
	c.sess = sess
	c.lastErr = nil
	close(c.ready)
	c.mu.Unlock()
	c.log.Info("tunnel: connected to relay",
		"relay", sess.peer.Name, "session", sess.peer.SessionID, "rtt", c.RTT(), "upstreams", sess.peer.Upstreams)

	pongs := make(chan uint64, 1)
	readerDone := make(chan error, 1)
	go func() { readerDone <- c.readControl(sess, pongs) }()

	err := c.keepAlive(ctx, sess, pongs, readerDone)
	switch {
	case ctx.Err() != nil:
		sess.conn.CloseWithError(closeNormal, "edge shutting down")
	case errors.Is(err, errDrained):
		sess.conn.CloseWithError(closeNormal, "drained")
	case errors.Is(err, errPingTimeout):
		sess.conn.CloseWithError(closePingTimeout, err.Error())
	case errors.Is(err, io.EOF):
		err = errors.New("relay ended the control stream")
		sess.conn.CloseWithError(closeControlEnded, err.Error())
	default:
		sess.conn.CloseWithError(closeProtocol, err.Error())
	}
	<-readerDone

	c.markDown(sess)
	c.rtt.Store(0)
	if ctx.Err() == nil && !errors.Is(err, errDrained) {
		c.log.Warn("tunnel: session to relay lost", "relay", sess.peer.Name, "session", sess.peer.SessionID, "err", err)
	} else {
		c.log.Info("tunnel: session to relay closed", "relay", sess.peer.Name, "session", sess.peer.SessionID)
	}
	return fmt.Errorf("session %s: %w", sess.peer.SessionID, err)
}

// keepAlive sends a PING at once and then every Config.PingInterval, and
// measures the round trip from each PONG. It returns when the session dies:
// a PING without PONG in Config.PingTimeout, the control stream failed
// (readerDone, whose value it puts back for serve), the relay drained the
// session (GOAWAY, and the last stream finished), the connection closed, or
// ctx ended.
func (c *Client) keepAlive(ctx context.Context, sess *clientSession, pongs <-chan uint64, readerDone chan error) error {
	ticker := time.NewTicker(c.cfg.PingInterval.Duration)
	defer ticker.Stop()
	timeout := time.NewTimer(time.Hour)
	timeout.Stop()
	defer timeout.Stop()

	var nextID, pending uint64
	var sentAt time.Time
	ping := func() error {
		nextID++
		pending, sentAt = nextID, time.Now()
		timeout.Reset(c.cfg.PingTimeout.Duration)
		return sess.ctrl.w.WriteMessage(&proto.Ping{ID: pending})
	}
	if err := ping(); err != nil {
		return err
	}
	for {
		select {
		case <-ticker.C:
			if pending == 0 {
				if err := ping(); err != nil {
					return err
				}
			}
		case id := <-pongs:
			if id == pending && pending != 0 {
				c.rtt.Store(int64(time.Since(sentAt)))
				pending = 0
				timeout.Stop()
			}
		case <-timeout.C:
			return fmt.Errorf("%w in %s", errPingTimeout, c.cfg.PingTimeout.Duration)
		case err := <-readerDone:
			// Put it back for serve, which waits for the reader.
			readerDone <- err
			if cause := closeCause(sess.conn); cause != nil {
				return cause
			}
			return err
		case <-sess.drained:
			return errDrained
		case <-sess.conn.Context().Done():
			return closeCause(sess.conn)
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
		case *proto.GoAway:
			c.markDown(sess)
			sess.drain()
			c.log.Info("tunnel: relay is draining; opening no new streams on this session",
				"relay", sess.peer.Name, "session", sess.peer.SessionID, "reason", m.Reason)
		default:
			return fmt.Errorf("control stream: %w: unexpected %T", proto.ErrProtocol, m)
		}
	}
}

// markDown takes sess out of service for new streams, if it is the current
// session.
func (c *Client) markDown(sess *clientSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == sess {
		c.sess = nil
		c.ready = make(chan struct{})
	}
}

// OpenStream opens a stream on the current session. It never waits for a
// session: when none is up, or the relay is draining, it returns an error
// wrapping ErrNoSession at once. It blocks only while the session's stream
// limit is reached, and no longer than ctx allows.
//
// The caller must Close or Abort every stream it opens: after the relay's
// GOAWAY, the edge closes the session once its last stream is done, which
// tells the relay that every answer has arrived.
//
// The returned Peer is shared by all streams of the session and must not be
// modified.
func (c *Client) OpenStream(ctx context.Context) (Stream, *Peer, error) {
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess == nil || !sess.acquire() {
		return nil, nil, fmt.Errorf("opening stream: %w", ErrNoSession)
	}
	st, err := sess.conn.OpenStreamSync(ctx)
	if err != nil {
		sess.release()
		if ctx.Err() == nil && closeCause(sess.conn) != nil {
			return nil, nil, fmt.Errorf("opening stream: %w: %w", ErrNoSession, err)
		}
		return nil, nil, fmt.Errorf("opening stream: %w", err)
	}
	return newQUICStream(st, sess.release), sess.peer, nil
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
		up, ready, closed := c.sess != nil, c.ready, c.closed
		c.mu.Unlock()
		switch {
		case up:
			return nil
		case closed:
			return ErrClosed
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
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.done)
		if c.cancelRun != nil {
			c.cancelRun()
		}
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

var _ Opener = (*Client)(nil)
