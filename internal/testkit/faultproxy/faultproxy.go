// Package faultproxy provides small fault-injecting UDP and TCP proxies for
// tests of the tunnel under a bad network, on machines without tc netem.
//
// A proxy listens on 127.0.0.1 (an ephemeral port, see Addr) and forwards to
// a target address; the test points one tunnel end at the proxy instead of
// at the other end. [UDP] sits in front of the QUIC transport and [TCP] in
// front of the TLS/TCP fallback. Faults can be changed at any time while
// traffic flows:
//
//   - loss: UDP drops datagrams; TCP never loses bytes but holds a "lost"
//     chunk back for a retransmission timeout, which is what loss costs TCP;
//   - delay: a one-way latency added in each direction, order preserved;
//   - blackhole: a silent partition where sockets stay open and nothing
//     flows (UDP drops, TCP holds data and delivers it once healed);
//   - UDP only: Rebind, a NAT rebinding that gives every flow a new source
//     port;
//   - TCP only: refusing new connections, and cutting every current one with
//     a reset.
//
// Limits: this is a model in user space, not a network emulator. Faults apply
// per datagram or per read of up to 32 KiB, not per IP packet; there is no
// bandwidth limit, jitter, reordering, duplication or MTU. Delays are lower
// bounds: timers and scheduling may add more under load. Queues are bounded
// (see [Options.QueueLimit]), so a delay longer than the queue can cover
// costs UDP datagrams and slows a TCP sender down. Loss decisions come from a
// pseudo-random source seeded by [Options.Seed], so the sequence of decisions
// is the same in every run; which datagram meets which decision still depends
// on how the two directions interleave.
package faultproxy

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Options tune a proxy. The zero value selects the defaults given per field;
// a negative value counts as zero.
type Options struct {
	// Seed seeds the pseudo-random source behind loss decisions. Every seed,
	// 0 included, gives the same sequence of decisions in every run.
	Seed uint64
	// FlowIdle is how long a UDP flow may go without a datagram in either
	// direction before it is forgotten and its upstream socket closed.
	// Default 2 minutes. TCP ignores it.
	FlowIdle time.Duration
	// RetransmitDelay is the extra latency of a TCP chunk that SetLoss
	// declared lost: the cost of a retransmission timeout. Default 200 ms.
	// UDP ignores it.
	RetransmitDelay time.Duration
	// QueueLimit bounds each direction's delay queue. For UDP it counts
	// datagrams (default 4096); a datagram arriving at a full queue is
	// dropped and counted as dropped. For TCP it counts chunks of at most
	// 32 KiB per connection and direction (default 256, so at most 8 MiB);
	// the proxy stops reading from the sender while the queue is full.
	QueueLimit int
}

const (
	defaultFlowIdle        = 2 * time.Minute
	defaultRetransmitDelay = 200 * time.Millisecond
	defaultUDPQueueLimit   = 4096
	defaultTCPQueueLimit   = 256

	// pcgStream is the second word of the PCG state; Options.Seed is the first.
	pcgStream = 0x6661756c7470726f // "faultpro"
)

// orDefault returns v, or def when v is zero or negative.
func orDefault[T ~int | ~int64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// faults holds the fault settings of one proxy, shared by all its flows or
// connections and both directions. It is safe for concurrent use.
type faults struct {
	mu     sync.Mutex
	rng    *rand.Rand
	loss   float64
	delay  time.Duration
	lifted chan struct{} // non-nil while the blackhole is on; closed when it goes off
}

func newFaults(seed uint64) *faults {
	return &faults{rng: rand.New(rand.NewPCG(seed, pcgStream))}
}

// setLoss sets the loss probability, clamped to [0, 1]; NaN counts as 0.
func (f *faults) setLoss(p float64) {
	if !(p > 0) {
		p = 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loss = min(p, 1)
}

// setDelay sets the one-way delay; a negative d counts as 0.
func (f *faults) setDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = max(d, 0)
}

func (f *faults) setBlackhole(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case on && f.lifted == nil:
		f.lifted = make(chan struct{})
	case !on && f.lifted != nil:
		close(f.lifted)
		f.lifted = nil
	}
}

// draw decides the fate of one datagram or chunk that has just arrived: the
// delay it gets, whether it is lost, and whether the blackhole is on.
func (f *faults) draw() (delay time.Duration, lost, blackholed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delay, f.loss > 0 && f.rng.Float64() < f.loss, f.lifted != nil
}

func (f *faults) blackholed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lifted != nil
}

// waitOpen blocks while the blackhole is on. It reports false if stop was
// closed first.
func (f *faults) waitOpen(stop <-chan struct{}) bool {
	for {
		f.mu.Lock()
		lifted := f.lifted
		f.mu.Unlock()
		if lifted == nil {
			return true
		}
		select {
		case <-lifted:
		case <-stop:
			return false
		}
	}
}

// delayLine is a bounded FIFO queue whose entries are released no earlier
// than their due time, in the order they were queued. One goroutine per
// direction runs it, so there is no goroutine per packet and whoever queues
// never waits on a timer.
type delayLine[T any] struct {
	q chan timed[T]
	// slots holds one token per entry in the line, the one run is waiting
	// on or delivering included, so that the line holds exactly up to its
	// limit. A token is taken before an entry goes into q, so sending on q
	// never blocks.
	slots chan struct{}
}

type timed[T any] struct {
	due time.Time
	v   T
}

// newDelayLine returns a line that holds at most limit entries.
func newDelayLine[T any](limit int) delayLine[T] {
	return delayLine[T]{q: make(chan timed[T], limit), slots: make(chan struct{}, limit)}
}

// offer queues v unless the line is full, and reports whether it did.
func (l delayLine[T]) offer(due time.Time, v T) bool {
	select {
	case l.slots <- struct{}{}:
		l.q <- timed[T]{due, v}
		return true
	default:
		return false
	}
}

// put queues v, waiting for room. It reports false if stop was closed first.
func (l delayLine[T]) put(due time.Time, v T, stop <-chan struct{}) bool {
	select {
	case l.slots <- struct{}{}:
		l.q <- timed[T]{due, v}
		return true
	case <-stop:
		return false
	}
}

// run passes the queued entries to deliver in order, each no earlier than its
// due time and, if open is not nil, only once open(stop) returns; open
// returning false ends run. run also returns when stop is closed or when
// deliver returns false. Entries still queued then are discarded.
func (l delayLine[T]) run(stop <-chan struct{}, open func(stop <-chan struct{}) bool, deliver func(T) bool) {
	timer := time.NewTimer(time.Hour)
	timer.Stop() // armed by Reset per entry; since Go 1.23 Reset never sees a stale tick
	defer timer.Stop()
	for {
		var e timed[T]
		select {
		case e = <-l.q:
		case <-stop:
			return
		}
		if wait := time.Until(e.due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-stop:
				return
			}
		}
		if open != nil && !open(stop) {
			return
		}
		more := deliver(e.v)
		<-l.slots
		if !more {
			return
		}
	}
}
