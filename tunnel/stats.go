package tunnel

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

// Why a connection attempt failed: the indexes of FailureReasons.
const (
	failTimeout = iota
	failNetwork
	failPinMismatch
	failUnauthorized
	failProxyAuth
	failProtocol
	numFailureReasons
)

// FailureReasons are the values of the reason of a failed connection
// attempt, in [ClientStats] and [ServerStats]: a small fixed set, fit for a
// metric label.
var FailureReasons = [numFailureReasons]string{
	failTimeout:      "timeout",      // no answer in time (UDP blocked, relay down, path dead)
	failNetwork:      "network",      // refused, reset, unreachable, DNS
	failPinMismatch:  "pin_mismatch", // the relay presented another key than the pinned one
	failUnauthorized: "unauthorized", // the relay does not know this edge's key
	failProxyAuth:    "proxy_auth",   // the CONNECT proxy refused the credentials
	failProtocol:     "protocol",     // a malformed or unexpected handshake, another version
}

// failureReason classifies why a connection attempt failed, as an index of
// FailureReasons.
func failureReason(err error) int {
	var ne net.Error
	switch {
	case errors.Is(err, ErrPinMismatch):
		return failPinMismatch
	case errors.Is(err, ErrUnknownPeer):
		return failUnauthorized
	case errors.Is(err, ErrProxyAuth):
		return failProxyAuth
	case errors.Is(err, proto.ErrProtocol), errors.Is(err, errVersion):
		return failProtocol
	case errors.Is(err, errHandshakeTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return failTimeout
	}
	return failNetwork
}

// ioCounters count the payload bytes of a connection's streams, control
// stream included.
type ioCounters struct {
	sent, received atomic.Uint64
}

func (c *ioCounters) addSent(n int) {
	if c != nil && n > 0 {
		c.sent.Add(uint64(n))
	}
}

func (c *ioCounters) addReceived(n int) {
	if c != nil && n > 0 {
		c.received.Add(uint64(n))
	}
}

// failureCounters count failed connection attempts by reason.
type failureCounters [numFailureReasons]atomic.Uint64

func (f *failureCounters) add(err error) { f[failureReason(err)].Add(1) }

// snapshot returns the counts of reasons, as indexes of FailureReasons, by
// reason name.
func (f *failureCounters) snapshot(reasons []int) map[string]uint64 {
	m := make(map[string]uint64, len(reasons))
	for _, i := range reasons {
		m[FailureReasons[i]] = f[i].Load()
	}
	return m
}

// clientFailureReasons are the reasons an edge counts failures by: all of
// them (a relay counts some: serverFailureReasons).
var clientFailureReasons = func() []int {
	r := make([]int, numFailureReasons)
	for i := range r {
		r[i] = i
	}
	return r
}()

// ClientStats describe one connection of an edge to a relay, for metrics.
// Counters are cumulative over the Client's life.
type ClientStats struct {
	// Relay is the relay's configured address.
	Relay string
	// Transport is the current session's transport, "" while down.
	Transport string
	// RTT is the last measured round-trip time, 0 while down.
	RTT time.Duration
	// Streams is the number of open streams.
	Streams int
	// Connects counts sessions established.
	Connects uint64
	// Failures counts failed connection attempts by reason, one of
	// FailureReasons.
	Failures map[string]uint64
	// Fallbacks counts the times transport "auto" fell back to TCP: a
	// TCP session established right after a QUIC attempt failed. Failed
	// attempts (QUIC and TCP both failing) and reconnects while on TCP
	// do not count.
	Fallbacks uint64
	// GoAways counts the GOAWAYs the relay sent.
	GoAways uint64
	// StreamsOpened counts the streams opened.
	StreamsOpened uint64
	// BytesSent and BytesReceived count stream payload bytes.
	BytesSent, BytesReceived uint64
}

// clientCounters are a Client's cumulative counts.
type clientCounters struct {
	connects, fallbacks, goAways, streamsOpened atomic.Uint64
	failures                                    failureCounters
	io                                          ioCounters
}

// Stats returns the connection's counters and state.
func (c *Client) Stats() ClientStats {
	streams, _, _ := c.load()
	return ClientStats{
		Relay:         c.opts.RelayAddr,
		Transport:     c.Transport(),
		RTT:           c.RTT(),
		Streams:       streams,
		Connects:      c.counts.connects.Load(),
		Failures:      c.counts.failures.snapshot(clientFailureReasons),
		Fallbacks:     c.counts.fallbacks.Load(),
		GoAways:       c.counts.goAways.Load(),
		StreamsOpened: c.counts.streamsOpened.Load(),
		BytesSent:     c.counts.io.sent.Load(),
		BytesReceived: c.counts.io.received.Load(),
	}
}

// Stats returns every connection's counters and state, relay by relay.
func (p *Pool) Stats() []ClientStats {
	out := make([]ClientStats, len(p.clients))
	for i, c := range p.clients {
		out[i] = c.Stats()
	}
	return out
}

// ServerStats describe a relay's tunnel listener, for metrics. Counters are
// cumulative over the Server's life.
type ServerStats struct {
	// Sessions counts the sessions up by edge name and transport.
	Sessions map[SessionKey]int
	// Streams is the number of exchange streams being served.
	Streams int
	// StreamsAccepted counts the exchange streams accepted (refused ones
	// included).
	StreamsAccepted uint64
	// StreamsRefused counts the streams refused for the session's stream
	// limit.
	StreamsRefused uint64
	// Failures counts edges' failed session attempts by reason, every
	// reason present (zero or not). The reasons are the edge's names for
	// the same failures, seen from the relay:
	//   - unauthorized: the edge's key is not among the accepted ones;
	//   - pin_mismatch: the edge refused the relay's certificate, because it
	//     pins another relay key (or, for another TLS client, a CA check);
	//   - timeout: no TLS handshake or HELLO within HandshakeTimeout;
	//   - protocol: not TLS 1.3 with ALPN airlock/1 (plain text, garbage, a
	//     wrong ALPN), a malformed HELLO or another protocol version;
	//   - network: the connection broke or the edge closed it meanwhile.
	Failures map[string]uint64
	// BytesSent and BytesReceived count stream payload bytes.
	BytesSent, BytesReceived uint64
}

// SessionKey names a group of sessions in ServerStats.
type SessionKey struct {
	Edge, Transport string
}

// serverCounters are a Server's cumulative counts.
type serverCounters struct {
	accepted, refused atomic.Uint64
	failures          failureCounters
	io                ioCounters
}

// Stats returns the server's counters and sessions.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	sessions := make(map[SessionKey]int)
	for ss := range s.sessions {
		if ss.peer != nil {
			sessions[SessionKey{ss.peer.Name, ss.peer.Transport}]++
		}
	}
	s.mu.Unlock()
	return ServerStats{
		Sessions:        sessions,
		Streams:         s.inflight.count(),
		StreamsAccepted: s.counts.accepted.Load(),
		StreamsRefused:  s.counts.refused.Load(),
		Failures:        s.counts.failures.snapshot(serverFailureReasons),
		BytesSent:       s.counts.io.sent.Load(),
		BytesReceived:   s.counts.io.received.Load(),
	}
}
