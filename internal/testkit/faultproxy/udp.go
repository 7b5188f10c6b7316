package faultproxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// maxDatagram is the largest UDP payload, and the size of each read buffer.
const maxDatagram = 64 << 10

// UDP is a fault-injecting UDP proxy. Like a NAT, it gives each client
// address its own upstream socket, so the target sees one flow (one source
// port) per client, and sends the target's replies on that socket back to
// that client. Its methods are safe for concurrent use.
type UDP struct {
	ln     *net.UDPConn
	target *net.UDPAddr
	idle   time.Duration
	faults *faults

	toTarget, toClient udpDirection

	done      chan struct{} // closed by Close
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex
	flows  map[netip.AddrPort]*flow // by client address
	closed bool
}

// UDPStats counts datagrams since the proxy started, and the current flows.
type UDPStats struct {
	ToTarget DatagramCounts // client → target
	ToClient DatagramCounts // target → client
	Flows    int            // clients that currently have an upstream socket
}

// DatagramCounts counts the datagrams of one direction.
type DatagramCounts struct {
	// Forwarded datagrams were sent on towards their destination.
	Forwarded uint64
	// Dropped datagrams were lost to SetLoss or SetBlackhole, arrived at a
	// full queue, or could not be sent (the send failed or the proxy closed).
	Dropped uint64
}

type udpDirection struct {
	line               delayLine[datagram]
	forwarded, dropped atomic.Uint64
}

func (d *udpDirection) counts() DatagramCounts {
	return DatagramCounts{Forwarded: d.forwarded.Load(), Dropped: d.dropped.Load()}
}

// datagram is one payload on its way to or from client.
type datagram struct {
	client netip.AddrPort
	b      []byte
}

// flow is one client's upstream socket, connected to the target.
type flow struct {
	client netip.AddrPort
	conn   *net.UDPConn
	last   atomic.Int64 // Unix nanoseconds of the latest datagram either way
}

func (f *flow) touch() { f.last.Store(time.Now().UnixNano()) }

func (f *flow) lastActive() time.Time { return time.Unix(0, f.last.Load()) }

// NewUDP starts a UDP proxy on 127.0.0.1 that forwards to target, a
// "host:port", with no faults set.
func NewUDP(target string, opts Options) (*UDP, error) {
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: resolve target %q: %w", target, err)
	}
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	limit := orDefault(opts.QueueLimit, defaultUDPQueueLimit)
	u := &UDP{
		ln:       ln,
		target:   raddr,
		idle:     orDefault(opts.FlowIdle, defaultFlowIdle),
		faults:   newFaults(opts.Seed),
		toTarget: udpDirection{line: newDelayLine[datagram](limit)},
		toClient: udpDirection{line: newDelayLine[datagram](limit)},
		done:     make(chan struct{}),
		flows:    make(map[netip.AddrPort]*flow),
	}
	u.wg.Go(u.readClients)
	u.wg.Go(func() { u.toTarget.line.run(u.done, nil, u.deliver(&u.toTarget, u.writeTarget)) })
	u.wg.Go(func() { u.toClient.line.run(u.done, nil, u.deliver(&u.toClient, u.writeClient)) })
	return u, nil
}

// Addr returns the proxy's address, "127.0.0.1:port", for clients to send to.
func (u *UDP) Addr() string { return u.ln.LocalAddr().String() }

// SetLoss makes the proxy drop each datagram, in either direction, with
// probability p, clamped to [0, 1].
func (u *UDP) SetLoss(p float64) { u.faults.setLoss(p) }

// SetDelay makes the proxy deliver each datagram that arrives from now on d
// after its arrival, in each direction, in order of arrival. Zero turns the
// delay off.
func (u *UDP) SetDelay(d time.Duration) { u.faults.setDelay(d) }

// SetBlackhole turns a silent partition on or off. While it is on, every
// datagram either way is dropped, including those already queued; sockets
// stay open and nothing reports an error. Once it is off again, datagrams
// that arrive afterwards are forwarded.
func (u *UDP) SetBlackhole(on bool) { u.faults.setBlackhole(on) }

// Rebind closes every upstream socket, as a NAT that lost its mappings
// would: the next datagram from each client leaves from a new source port,
// and replies the target still sends to the old port are lost.
func (u *UDP) Rebind() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closeFlows()
}

// Stats returns the datagram counts so far and the number of live flows.
func (u *UDP) Stats() UDPStats {
	u.mu.Lock()
	flows := len(u.flows)
	u.mu.Unlock()
	return UDPStats{ToTarget: u.toTarget.counts(), ToClient: u.toClient.counts(), Flows: flows}
}

// Close stops the proxy: it closes the listening socket and every upstream
// socket, discards queued datagrams, and waits for all its goroutines to
// end. Calling it again returns the first call's result.
func (u *UDP) Close() error {
	u.closeOnce.Do(func() {
		close(u.done)
		if err := u.ln.Close(); err != nil {
			u.closeErr = fmt.Errorf("faultproxy: close listener: %w", err)
		}
		u.mu.Lock()
		u.closed = true
		u.closeFlows()
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u.closeErr
}

// closeFlows closes and forgets every flow. u.mu must be held.
func (u *UDP) closeFlows() {
	for _, f := range u.flows {
		_ = f.conn.Close() // its reader sees net.ErrClosed and ends
	}
	clear(u.flows)
}

// readClients reads datagrams from clients until the listener is closed.
func (u *UDP) readClients() {
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := u.ln.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // a transient error such as an ICMP report; the socket still works
		}
		u.admit(&u.toTarget, datagram{client: client, b: bytes.Clone(buf[:n])})
	}
}

// readTarget reads the target's replies on f until f is closed or idle.
func (u *UDP) readTarget(f *flow) {
	buf := make([]byte, maxDatagram)
	for {
		_ = f.conn.SetReadDeadline(f.lastActive().Add(u.idle))
		n, err := f.conn.Read(buf)
		switch {
		case err == nil:
			f.touch()
			u.admit(&u.toClient, datagram{client: f.client, b: bytes.Clone(buf[:n])})
		case errors.Is(err, os.ErrDeadlineExceeded):
			if u.expire(f) {
				return
			}
		case errors.Is(err, net.ErrClosed):
			return
		default:
			// An ICMP report, such as the target's port being closed; a NAT
			// keeps the mapping, and so does the flow.
		}
	}
}

// admit applies loss and the blackhole to a datagram that has just arrived,
// and queues it for delivery in direction dir.
func (u *UDP) admit(dir *udpDirection, d datagram) {
	delay, lost, blackholed := u.faults.draw()
	if lost || blackholed || !dir.line.offer(time.Now().Add(delay), d) {
		dir.dropped.Add(1)
	}
}

// deliver returns the delay-line callback of direction dir: it sends each
// datagram with send unless the blackhole is on, and counts the outcome.
func (u *UDP) deliver(dir *udpDirection, send func(datagram) error) func(datagram) bool {
	return func(d datagram) bool {
		if u.faults.blackholed() || send(d) != nil {
			dir.dropped.Add(1)
		} else {
			dir.forwarded.Add(1)
		}
		return true
	}
}

func (u *UDP) writeTarget(d datagram) error {
	f, err := u.flow(d.client)
	if err != nil {
		return err
	}
	_, err = f.conn.Write(d.b)
	return err
}

func (u *UDP) writeClient(d datagram) error {
	_, err := u.ln.WriteToUDPAddrPort(d.b, d.client)
	return err
}

// flow returns client's flow, marked active, opening it if there is none.
func (u *UDP) flow(client netip.AddrPort) (*flow, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, net.ErrClosed
	}
	f := u.flows[client]
	if f == nil {
		conn, err := net.DialUDP("udp", nil, u.target)
		if err != nil {
			return nil, fmt.Errorf("faultproxy: dial target: %w", err)
		}
		f = &flow{client: client, conn: conn}
		u.flows[client] = f
		u.wg.Go(func() { u.readTarget(f) })
	}
	// Marking under u.mu means expire cannot close a flow just handed out.
	f.touch()
	return f, nil
}

// expire closes and forgets f if it has been idle for u.idle, and reports
// whether it did.
func (u *UDP) expire(f *flow) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if time.Since(f.lastActive()) < u.idle {
		return false
	}
	if u.flows[f.client] == f {
		delete(u.flows, f.client)
	}
	_ = f.conn.Close()
	return true
}
