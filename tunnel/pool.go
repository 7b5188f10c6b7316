package tunnel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultConnections is how many sessions a Pool keeps to each relay unless
// Config.Connections says otherwise.
const DefaultConnections = 2

// RelayTarget is one relay a Pool keeps sessions to.
type RelayTarget struct {
	// Addr is the relay's host:port, UDP for QUIC and TCP for the
	// fallback unless TCPAddr is set. Required.
	Addr string
	// TCPAddr is the relay's TCP address when it differs from Addr.
	TCPAddr string
	// Key pins the relay's public key, "sha256:<base64url>". Required.
	Key string
}

// PoolOptions configure a [Pool].
type PoolOptions struct {
	// Client is the template of every connection: identity, transport,
	// dialer, timers (Config.Connections is the number per relay). Its
	// RelayAddr, TCPAddr and RelayKey are ignored.
	Client ClientOptions
	// Relays are the relays to keep sessions to. At least one.
	Relays []RelayTarget
}

// Pool is the edge side of the tunnel with several relays: it keeps
// Config.Connections sessions to each relay, each a [Client] with its own
// reconnects and backoff, and opens each stream on the healthiest session
// up: the one with the fewest open streams, then the lowest round-trip
// time. A relay that fails or drains (GOAWAY) simply has no session up, and
// new streams go to the others.
//
// All methods are safe for concurrent use.
type Pool struct {
	relays  []RelayTarget
	clients []*Client // relay i's connections are clients[i*n : (i+1)*n]
	perRly  int

	guard runGuard
	wg    sync.WaitGroup // the goroutines that start each relay's connections
}

// NewPool checks opts and returns a Pool. It fills in the defaults of
// opts.Client.Config and validates it here, once, for every connection. It
// does not dial: call Run.
func NewPool(opts PoolOptions) (*Pool, error) {
	if len(opts.Relays) == 0 {
		return nil, errors.New("tunnel pool: no relays")
	}
	tmpl, err := opts.Client.populated()
	if err != nil {
		return nil, fmt.Errorf("tunnel pool: %w", err)
	}
	n := tmpl.Config.Connections
	p := &Pool{relays: opts.Relays, perRly: n, guard: runGuard{what: "tunnel pool"}}
	for i, r := range opts.Relays {
		for k := range n {
			o := tmpl
			o.RelayAddr, o.TCPAddr, o.RelayKey = r.Addr, r.TCPAddr, r.Key
			o.Logger = tmpl.Logger.With("relay_index", i, "connection", k)
			c, err := newClient(o)
			if err != nil {
				return nil, fmt.Errorf("tunnel pool: relay %d (%s): %w", i, r.Addr, err)
			}
			p.clients = append(p.clients, c)
		}
	}
	return p, nil
}

// Run keeps every connection up until ctx ends or Close is called; see
// [Client.Run]. The connections to one relay come up one after the other:
// each starts once the one before it has connected or failed its first
// attempt, so that a restarted edge does not hit a relay with all its
// handshakes at once. Run blocks, and returns nil after Close, ctx.Err()
// when ctx ends, and ErrClosed when called after Close.
func (p *Pool) Run(ctx context.Context) error {
	ctx, err := p.guard.start(ctx)
	if err != nil {
		return err
	}

	for i := range p.relays {
		conns := p.clients[i*p.perRly : (i+1)*p.perRly]
		p.wg.Go(func() {
			var started sync.WaitGroup
			for _, c := range conns {
				started.Go(func() { c.Run(ctx) })
				select {
				case <-c.attempted:
				case <-ctx.Done():
				}
			}
			started.Wait()
		})
	}
	p.wg.Wait()
	err = ctx.Err()
	if p.guard.end() {
		return nil
	}
	return err
}

// OpenStream opens a stream on the healthiest session up, skipping the
// sessions whose IDs are in avoid (those that just refused the same
// request). It returns an error wrapping ErrNoSession at once when no other
// session is up; it waits only as [Client.OpenStream] does, at a session's
// stream limit.
func (p *Pool) OpenStream(ctx context.Context, avoid ...string) (Stream, *Peer, error) {
	var tried []*Client
	var err error
	for {
		c := p.best(avoid, tried)
		if c == nil {
			if err == nil {
				err = fmt.Errorf("opening stream: %w", ErrNoSession)
			}
			return nil, nil, err
		}
		var s Stream
		var peer *Peer
		s, peer, err = c.OpenStream(ctx, avoid...)
		if err == nil || !errors.Is(err, ErrNoSession) {
			return s, peer, err
		}
		// That session went down meanwhile: try the next best.
		tried = append(tried, c)
	}
}

// best returns the connection whose session takes new streams, is not in
// avoid and not in skip, with the fewest open streams and then the lowest
// round-trip time; nil when there is none.
func (p *Pool) best(avoid []string, skip []*Client) *Client {
	var best *Client
	var bestStreams int
	var bestRTT time.Duration
	for _, c := range p.clients {
		streams, id, ok := c.load()
		if !ok || slices.Contains(avoid, id) || slices.Contains(skip, c) {
			continue
		}
		rtt := c.RTT()
		if best == nil || streams < bestStreams || (streams == bestStreams && rtt < bestRTT) {
			best, bestStreams, bestRTT = c, streams, rtt
		}
	}
	return best
}

// Transport returns the transport of the session the next stream would go
// to, or "" when none is up.
func (p *Pool) Transport() string {
	if c := p.best(nil, nil); c != nil {
		return c.Transport()
	}
	return ""
}

// Ready reports whether at least one session is up.
func (p *Pool) Ready() bool {
	for _, c := range p.clients {
		if c.Ready() {
			return true
		}
	}
	return false
}

// WaitReady blocks until a session is up, ctx ends (ctx.Err()) or the pool
// is closed (ErrClosed).
func (p *Pool) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(p.clients))
	for _, c := range p.clients {
		go func() { errc <- c.WaitReady(ctx) }()
	}
	var err error
	for range p.clients {
		if err = <-errc; err == nil {
			return nil
		}
	}
	return err
}

// SessionState describes one connection of the pool, for /readyz and logs.
type SessionState struct {
	// Relay is the relay's configured address.
	Relay string
	// Transport is TransportQUIC or TransportTCP while the session is
	// up, "" while it is down.
	Transport string
	// RTT is the last measured round-trip time, 0 while down.
	RTT time.Duration
	// Streams is the number of open streams.
	Streams int
	// Err is why the connection is down (nil while up or before the
	// first attempt).
	Err error
}

// State returns every connection's state, relay by relay.
func (p *Pool) State() []SessionState {
	out := make([]SessionState, len(p.clients))
	for i, c := range p.clients {
		streams, _, _ := c.load()
		out[i] = SessionState{
			Relay:     p.relays[i/p.perRly].Addr,
			Transport: c.Transport(),
			RTT:       c.RTT(),
			Streams:   streams,
			Err:       c.LastError(),
		}
	}
	return out
}

// Summary describes the pool's state in one line, e.g. "3 of 4 sessions up:
// relay-a:7443 quic×2, relay-b:7443 tcp×1".
func (p *Pool) Summary() string {
	states := p.State()
	up := 0
	var parts []string
	count := map[string]int{}
	var order []string
	for _, s := range states {
		if s.Transport == "" {
			continue
		}
		up++
		k := s.Relay + " " + s.Transport
		if count[k] == 0 {
			order = append(order, k)
		}
		count[k]++
	}
	for _, k := range order {
		parts = append(parts, fmt.Sprintf("%s×%d", k, count[k]))
	}
	return fmt.Sprintf("%d of %d sessions up: %s", up, len(states), strings.Join(parts, ", "))
}

// LastError returns the errors of the connections that are down, joined,
// or nil when none has failed.
func (p *Pool) LastError() error {
	var errs []error
	for _, c := range p.clients {
		if err := c.LastError(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close ends Run, closes every session and waits for all goroutines.
// Streams in flight fail. Close is idempotent.
func (p *Pool) Close() error {
	p.guard.close()
	for _, c := range p.clients {
		c.Close()
	}
	p.wg.Wait()
	return nil
}

var _ Opener = (*Pool)(nil)
