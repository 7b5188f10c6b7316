package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// chunkSize is the size of each TCP read buffer, so the most one chunk
	// holds.
	chunkSize = 32 << 10
	// acceptBackoff is the pause after a failed accept (out of file
	// descriptors, say), so the accept loop does not spin.
	acceptBackoff = 50 * time.Millisecond
)

// TCP is a fault-injecting TCP proxy. It pairs each accepted connection with
// a new connection to the target and copies bytes both ways, passing a
// half-close (FIN) on after the data before it. Its methods are safe for
// concurrent use.
type TCP struct {
	ln         *net.TCPListener
	target     string
	retransmit time.Duration
	queueLimit int
	faults     *faults
	refuse     atomic.Bool

	toTarget, toClient atomic.Uint64 // bytes written
	accepted, refused  atomic.Uint64

	done      chan struct{} // closed by Close
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex
	pairs  map[*pair]struct{}
	closed bool
}

// TCPStats counts bytes and connections since the proxy started.
type TCPStats struct {
	BytesToTarget uint64 // bytes written to target connections
	BytesToClient uint64 // bytes written to client connections
	Accepted      uint64 // connections accepted, refused ones included
	Refused       uint64 // connections closed at once because of SetRefuse
	Active        int    // connection pairs open now
}

// pair is one client connection and its target connection.
type pair struct {
	client *net.TCPConn
	cancel context.CancelFunc // cancels the dial to the target
	done   <-chan struct{}    // closed when the pair ends

	mu     sync.Mutex
	target *net.TCPConn // nil until dialed
	ended  bool
}

// NewTCP starts a TCP proxy on 127.0.0.1 that forwards to target, a
// "host:port", with no faults set. The target is dialed once per accepted
// connection.
func NewTCP(target string, opts Options) (*TCP, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("faultproxy: target: %w", err)
	}
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	t := &TCP{
		ln:         ln,
		target:     target,
		retransmit: orDefault(opts.RetransmitDelay, defaultRetransmitDelay),
		queueLimit: orDefault(opts.QueueLimit, defaultTCPQueueLimit),
		faults:     newFaults(opts.Seed),
		done:       make(chan struct{}),
		pairs:      make(map[*pair]struct{}),
	}
	t.wg.Go(t.acceptLoop)
	return t, nil
}

// Addr returns the proxy's address, "127.0.0.1:port", for clients to dial.
func (t *TCP) Addr() string { return t.ln.Addr().String() }

// SetLoss makes each chunk read from now on, in either direction, count as
// lost with probability p, clamped to [0, 1]. No byte is ever dropped: a lost
// chunk is written Options.RetransmitDelay later than it would have been, and
// everything behind it in that direction waits for it.
func (t *TCP) SetLoss(p float64) { t.faults.setLoss(p) }

// SetDelay makes each chunk read from now on be written d after it was read,
// in each direction, in order. Zero turns the delay off.
func (t *TCP) SetDelay(d time.Duration) { t.faults.setDelay(d) }

// SetBlackhole turns a silent partition on or off. While it is on, nothing
// is written either way and every connection stays open; new connections are
// still accepted and dialed, but carry nothing. Data read meanwhile is held,
// up to Options.QueueLimit per connection and direction (then the sender's
// socket buffers fill and it blocks), and is written in order once the
// blackhole is off again, as TCP retransmission would deliver it.
func (t *TCP) SetBlackhole(on bool) { t.faults.setBlackhole(on) }

// SetRefuse makes the proxy reset every connection it accepts from now on,
// at once, without dialing the target; off makes it serve them again.
func (t *TCP) SetRefuse(on bool) { t.refuse.Store(on) }

// CutAll closes every current connection pair abruptly: both the client and
// the target see a reset, and data still queued is lost. New connections are
// served as usual.
func (t *TCP) CutAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.abortPairs()
}

// Stats returns the byte and connection counts so far.
func (t *TCP) Stats() TCPStats {
	t.mu.Lock()
	active := len(t.pairs)
	t.mu.Unlock()
	return TCPStats{
		BytesToTarget: t.toTarget.Load(),
		BytesToClient: t.toClient.Load(),
		Accepted:      t.accepted.Load(),
		Refused:       t.refused.Load(),
		Active:        active,
	}
}

// Close stops the proxy: it closes the listener, resets every connection
// pair, and waits for all its goroutines to end. Calling it again returns
// the first call's result.
func (t *TCP) Close() error {
	t.closeOnce.Do(func() {
		close(t.done)
		if err := t.ln.Close(); err != nil {
			t.closeErr = fmt.Errorf("faultproxy: close listener: %w", err)
		}
		t.mu.Lock()
		t.closed = true
		t.abortPairs()
		t.mu.Unlock()
		t.wg.Wait()
	})
	return t.closeErr
}

// abortPairs resets every pair; each one's goroutines then end and untrack
// it. t.mu must be held.
func (t *TCP) abortPairs() {
	for p := range t.pairs {
		p.abort()
	}
}

func (t *TCP) acceptLoop() {
	for {
		c, err := t.ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			select {
			case <-time.After(acceptBackoff):
				continue
			case <-t.done:
				return
			}
		}
		t.accepted.Add(1)
		if t.refuse.Load() {
			t.refused.Add(1)
			reset(c)
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		p := &pair{client: c, cancel: cancel, done: ctx.Done()}
		if !t.track(p) {
			p.abort() // Close is under way
			return
		}
		t.wg.Go(func() { t.serve(ctx, p) })
	}
}

// track adds p to the pairs that CutAll and Close reach, unless the proxy
// is closed.
func (t *TCP) track(p *pair) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.pairs[p] = struct{}{}
	return true
}

func (t *TCP) untrack(p *pair) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pairs, p)
}

// serve dials the target for p and copies both ways until both directions
// have ended or the pair is aborted. ctx is canceled when p ends.
func (t *TCP) serve(ctx context.Context, p *pair) {
	defer t.untrack(p)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.target)
	if err != nil {
		p.abort() // the client sees a reset, as if the target had refused it
		return
	}
	target := conn.(*net.TCPConn)
	if !p.attach(target) {
		return
	}
	var up sync.WaitGroup
	up.Go(func() { t.forward(p, p.client, target, &t.toTarget) })
	t.forward(p, target, p.client, &t.toClient)
	up.Wait()
	p.finish()
}

// forward copies src to dst through a delay line until src ends (its FIN is
// then passed on to dst) or the pair is aborted. It counts the bytes written
// in written.
func (t *TCP) forward(p *pair, src, dst *net.TCPConn, written *atomic.Uint64) {
	// Each entry is one chunk read from src; nil marks the end of src.
	line := newDelayLine[[]byte](t.queueLimit)
	var writer sync.WaitGroup
	defer writer.Wait()
	writer.Go(func() {
		line.run(p.done, t.faults.waitOpen, func(b []byte) bool {
			if b == nil {
				if err := dst.CloseWrite(); err != nil {
					p.abort()
				}
				return false
			}
			n, err := dst.Write(b)
			written.Add(uint64(n))
			if err != nil {
				p.abort()
				return false
			}
			return true
		})
	})

	// put queues b with the latency the faults give it, waiting while the
	// line is full.
	put := func(b []byte) bool {
		delay, lost, _ := t.faults.draw()
		if lost {
			delay += t.retransmit
		}
		return line.put(time.Now().Add(delay), b, p.done)
	}
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 && !put(bytes.Clone(buf[:n])) {
			return
		}
		if errors.Is(err, io.EOF) {
			put(nil)
			return
		}
		if err != nil {
			p.abort() // a reset, or the pair was aborted already
			return
		}
	}
}

// attach records p's target connection. It reports false, and resets c, if
// p has ended meanwhile.
func (p *pair) attach(c *net.TCPConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		reset(c)
		return false
	}
	p.target = c
	return true
}

// abort ends p at once: both peers see a reset.
func (p *pair) abort() { p.end(reset) }

// finish ends p after both directions ended in order.
func (p *pair) finish() { p.end(func(c *net.TCPConn) { _ = c.Close() }) }

// end closes p's connections with closeConn, the first time it is called.
func (p *pair) end(closeConn func(*net.TCPConn)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
	p.ended = true
	p.cancel()
	closeConn(p.client)
	if p.target != nil {
		closeConn(p.target)
	}
}

// reset closes c so that its peer sees a reset (RST) instead of an orderly
// end (FIN).
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
