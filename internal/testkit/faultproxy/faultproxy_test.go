package faultproxy_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/airlock-proxy/airlock/internal/testkit/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	// patience bounds anything that must happen promptly; it is generous
	// because a loaded CI machine may be slow, and a pass never waits for it.
	patience = 5 * time.Second
	// quiet is how long a test watches for traffic that must not arrive.
	quiet = 250 * time.Millisecond
)

// waitFor polls cond until it holds, failing the test after patience.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// --- UDP helpers -----------------------------------------------------------

// udpEcho is a UDP echo server that records who sent to it.
type udpEcho struct {
	conn     *net.UDPConn
	mu       sync.Mutex
	peers    []netip.AddrPort // distinct, in order of first datagram
	received int
}

func startUDPEcho(t *testing.T) *udpEcho {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := &udpEcho{conn: conn}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, peer, err := conn.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			e.mu.Lock()
			e.received++
			if !slices.Contains(e.peers, peer) {
				e.peers = append(e.peers, peer)
			}
			e.mu.Unlock()
			_, _ = conn.WriteToUDPAddrPort(buf[:n], peer)
		}
	})
	t.Cleanup(func() {
		_ = conn.Close()
		wg.Wait()
	})
	return e
}

func (e *udpEcho) addr() string { return e.conn.LocalAddr().String() }

// seen returns the distinct peers so far and the number of datagrams.
func (e *udpEcho) seen() ([]netip.AddrPort, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]netip.AddrPort(nil), e.peers...), e.received
}

// startProxy starts a proxy with newProxy (faultproxy.NewUDP or NewTCP) and
// closes it when the test ends.
func startProxy[P interface{ Close() error }](t *testing.T, newProxy func(string, faultproxy.Options) (P, error), target string, opts faultproxy.Options) P {
	t.Helper()
	p, err := newProxy(target, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func newUDP(t *testing.T, target string, opts faultproxy.Options) *faultproxy.UDP {
	t.Helper()
	return startProxy(t, faultproxy.NewUDP, target, opts)
}

func dialUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp4", nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func udpSend(t *testing.T, c *net.UDPConn, msg []byte) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
}

// udpRecv reads one datagram, failing the test if none comes in time.
func udpRecv(t *testing.T, c *net.UDPConn) []byte {
	t.Helper()
	buf := make([]byte, 64<<10)
	_ = c.SetReadDeadline(time.Now().Add(patience))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return buf[:n]
}

// udpRoundTrip sends msg and checks that the echo comes back.
func udpRoundTrip(t *testing.T, c *net.UDPConn, msg string) {
	t.Helper()
	udpSend(t, c, []byte(msg))
	if got := udpRecv(t, c); string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// udpExpectSilence checks that no datagram arrives on c for a while.
func udpExpectSilence(t *testing.T, c *net.UDPConn) {
	t.Helper()
	buf := make([]byte, 64<<10)
	_ = c.SetReadDeadline(time.Now().Add(quiet))
	if n, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("got %q, %v; want nothing", buf[:n], err)
	}
}

// --- UDP tests -------------------------------------------------------------

func TestUDPRoundTrip(t *testing.T) {
	echo := startUDPEcho(t)
	p := newUDP(t, echo.addr(), faultproxy.Options{})
	a, b := dialUDP(t, p.Addr()), dialUDP(t, p.Addr())
	for i := range 3 {
		udpRoundTrip(t, a, fmt.Sprint("a", i))
		udpRoundTrip(t, b, fmt.Sprint("b", i))
	}
	if peers, _ := echo.seen(); len(peers) != 2 {
		t.Errorf("target saw flows %v, want one per client (2)", peers)
	}
	want := faultproxy.UDPStats{
		ToTarget: faultproxy.DatagramCounts{Forwarded: 6},
		ToClient: faultproxy.DatagramCounts{Forwarded: 6},
		Flows:    2,
	}
	waitFor(t, "stats", func() bool { return p.Stats() == want })
}

func TestUDPLoss(t *testing.T) {
	tests := []struct {
		name   string
		loss   float64
		n      int
		lo, hi float64 // bounds of the dropped fraction in each direction
	}{
		{"none", 0, 300, 0, 0},
		{"all", 1, 300, 1, 1},
		{"half", 0.5, 2000, 0.4, 0.6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			echo := startUDPEcho(t)
			p := newUDP(t, echo.addr(), faultproxy.Options{Seed: 1})
			p.SetLoss(tc.loss)
			c := dialUDP(t, p.Addr())

			// Send in small batches, each taken in by the proxy before the
			// next, so no socket buffer overflows and every datagram the
			// proxy forwards reaches the target and is echoed.
			msg := []byte("datagram")
			for sent := 0; sent < tc.n; {
				batch := min(64, tc.n-sent)
				for range batch {
					udpSend(t, c, msg)
				}
				sent += batch
				waitFor(t, "the proxy to take in every datagram", func() bool {
					s := p.Stats().ToTarget
					return s.Forwarded+s.Dropped == uint64(sent)
				})
			}
			var s faultproxy.UDPStats
			waitFor(t, "every echo to reach the proxy", func() bool {
				s = p.Stats()
				_, received := echo.seen()
				return received == int(s.ToTarget.Forwarded) &&
					s.ToClient.Forwarded+s.ToClient.Dropped == s.ToTarget.Forwarded
			})
			checkFraction(t, "to target", s.ToTarget, tc.lo, tc.hi)
			if s.ToTarget.Forwarded > 0 {
				checkFraction(t, "to client", s.ToClient, tc.lo, tc.hi)
			}
		})
	}
}

func checkFraction(t *testing.T, dir string, c faultproxy.DatagramCounts, lo, hi float64) {
	t.Helper()
	f := float64(c.Dropped) / float64(c.Forwarded+c.Dropped)
	if f < lo || f > hi {
		t.Errorf("%s: dropped %d of %d (%.3f), want a fraction in [%v, %v]",
			dir, c.Dropped, c.Forwarded+c.Dropped, f, lo, hi)
	}
}

func TestUDPDelay(t *testing.T) {
	const d = 60 * time.Millisecond
	echo := startUDPEcho(t)
	p := newUDP(t, echo.addr(), faultproxy.Options{})
	p.SetDelay(d)
	c := dialUDP(t, p.Addr())

	const n = 20
	sentAt := make([]time.Time, n)
	for i := range n {
		sentAt[i] = time.Now()
		udpSend(t, c, binary.BigEndian.AppendUint32(nil, uint32(i)))
	}
	for i := range n {
		got := udpRecv(t, c)
		rtt := time.Since(sentAt[i])
		if seq := binary.BigEndian.Uint32(got); seq != uint32(i) {
			t.Fatalf("datagram %d arrived in place %d", seq, i)
		}
		if rtt < 2*d {
			t.Errorf("datagram %d came back after %v, want at least %v (the delay each way)", i, rtt, 2*d)
		}
	}
}

func TestUDPQueueLimit(t *testing.T) {
	const limit, n = 8, 20
	echo := startUDPEcho(t)
	p := newUDP(t, echo.addr(), faultproxy.Options{QueueLimit: limit})
	p.SetDelay(time.Hour) // nothing leaves the queue during the test
	c := dialUDP(t, p.Addr())
	for range n {
		udpSend(t, c, []byte("x"))
	}
	waitFor(t, "the datagrams beyond the queue to be dropped", func() bool {
		return p.Stats().ToTarget.Dropped == n-limit
	})
	if s := p.Stats().ToTarget; s.Forwarded != 0 {
		t.Errorf("forwarded %d datagrams during an hour's delay", s.Forwarded)
	}
}

func TestUDPBlackhole(t *testing.T) {
	echo := startUDPEcho(t)
	p := newUDP(t, echo.addr(), faultproxy.Options{})
	c := dialUDP(t, p.Addr())
	udpRoundTrip(t, c, "before")
	_, before := echo.seen()

	p.SetBlackhole(true)
	for range 5 {
		udpSend(t, c, []byte("during"))
	}
	udpExpectSilence(t, c)
	if _, n := echo.seen(); n != before {
		t.Errorf("target received %d datagrams during the blackhole", n-before)
	}
	if s := p.Stats(); s.ToTarget.Dropped != 5 {
		t.Errorf("dropped to target = %d, want 5", s.ToTarget.Dropped)
	}

	p.SetBlackhole(false)
	udpRoundTrip(t, c, "after") // and not one of the datagrams sent during it
}

func TestUDPRebind(t *testing.T) {
	echo := startUDPEcho(t)
	p := newUDP(t, echo.addr(), faultproxy.Options{})
	c := dialUDP(t, p.Addr())
	udpRoundTrip(t, c, "one")
	udpRoundTrip(t, c, "two")
	peers, _ := echo.seen()
	if len(peers) != 1 {
		t.Fatalf("target saw %v before Rebind, want one flow", peers)
	}

	p.Rebind()
	udpRoundTrip(t, c, "three")
	peers, _ = echo.seen()
	if len(peers) != 2 || peers[1].Port() == peers[0].Port() {
		t.Fatalf("target saw %v, want a second flow from a new source port", peers)
	}
	if s := p.Stats(); s.Flows != 1 {
		t.Errorf("flows = %d after the rebound flow's first datagram, want 1", s.Flows)
	}
}

func TestUDPFlowIdle(t *testing.T) {
	const idle = 300 * time.Millisecond
	echo := startUDPEcho(t)
	p := newUDP(t, echo.addr(), faultproxy.Options{FlowIdle: idle})
	c := dialUDP(t, p.Addr())

	// A flow with traffic more often than idle lives on.
	for start := time.Now(); time.Since(start) < 2*idle; {
		udpRoundTrip(t, c, "busy")
		time.Sleep(10 * time.Millisecond)
	}
	if peers, _ := echo.seen(); len(peers) != 1 {
		t.Fatalf("target saw %v from a busy client, want one flow", peers)
	}

	// An idle one is forgotten, not before idle has passed.
	lastSend := time.Now()
	udpRoundTrip(t, c, "last")
	waitFor(t, "the idle flow to be forgotten", func() bool { return p.Stats().Flows == 0 })
	if waited := time.Since(lastSend); waited < idle {
		t.Errorf("flow forgotten %v after its last datagram, want at least %v", waited, idle)
	}
	udpRoundTrip(t, c, "again")
	if s := p.Stats(); s.Flows != 1 {
		t.Errorf("flows = %d after the client came back, want 1", s.Flows)
	}
}

// --- TCP helpers -----------------------------------------------------------

// startTCPEcho starts a TCP server that echoes every connection and passes
// the half-close back, and returns its address.
func startTCPEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[*net.TCPConn]struct{}{}
	)
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				if _, err := io.Copy(c, c); err == nil {
					_ = c.CloseWrite()
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func newTCP(t *testing.T, target string, opts faultproxy.Options) *faultproxy.TCP {
	t.Helper()
	return startProxy(t, faultproxy.NewTCP, target, opts)
}

func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp4", addr, patience)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

// tcpRead reads exactly n bytes, failing the test if they do not come in time.
func tcpRead(t *testing.T, c *net.TCPConn, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	_ = c.SetReadDeadline(time.Now().Add(patience))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	return buf
}

func tcpRoundTrip(t *testing.T, c *net.TCPConn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if got := tcpRead(t, c, len(msg)); string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// tcpExpectSilence checks that no byte arrives on c for a while.
func tcpExpectSilence(t *testing.T, c *net.TCPConn) {
	t.Helper()
	buf := make([]byte, 1)
	_ = c.SetReadDeadline(time.Now().Add(quiet))
	if n, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("got %q, %v; want nothing", buf[:n], err)
	}
}

// tcpExpectReset checks that c is reset promptly.
func tcpExpectReset(t *testing.T, c *net.TCPConn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(patience))
	if _, err := io.Copy(io.Discard, c); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v, want a connection reset", err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(b)
	return b
}

// --- TCP tests -------------------------------------------------------------

func TestTCPPipe(t *testing.T) {
	const size = 1 << 20
	tests := []struct {
		name   string
		opts   faultproxy.Options
		faults func(*faultproxy.TCP)
	}{
		{"clean", faultproxy.Options{}, func(*faultproxy.TCP) {}},
		{"delay", faultproxy.Options{}, func(p *faultproxy.TCP) { p.SetDelay(10 * time.Millisecond) }},
		{"loss", faultproxy.Options{RetransmitDelay: 2 * time.Millisecond}, func(p *faultproxy.TCP) { p.SetLoss(0.5) }},
		{"small queue", faultproxy.Options{QueueLimit: 1}, func(p *faultproxy.TCP) { p.SetDelay(time.Millisecond) }},
	}
	want := randomBytes(size)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newTCP(t, startTCPEcho(t), tc.opts)
			tc.faults(p)
			c := dialTCP(t, p.Addr())

			wrote := make(chan error, 1)
			go func() {
				_, err := c.Write(want)
				if err == nil {
					err = c.CloseWrite()
				}
				wrote <- err
			}()
			_ = c.SetReadDeadline(time.Now().Add(patience))
			got, err := io.ReadAll(c) // up to the echoed half-close
			if werr := <-wrote; werr != nil {
				t.Fatalf("write: %v", werr)
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("echo differs: got %d bytes, want %d", len(got), len(want))
			}
			waitFor(t, "the pair to end", func() bool {
				s := p.Stats()
				return s.Active == 0 && s.BytesToTarget == size && s.BytesToClient == size
			})
		})
	}
}

func TestTCPLatency(t *testing.T) {
	const d = 100 * time.Millisecond
	tests := []struct {
		name   string
		opts   faultproxy.Options
		faults func(*faultproxy.TCP)
	}{
		{"delay", faultproxy.Options{}, func(p *faultproxy.TCP) { p.SetDelay(d) }},
		{"loss", faultproxy.Options{RetransmitDelay: d}, func(p *faultproxy.TCP) { p.SetLoss(1) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newTCP(t, startTCPEcho(t), tc.opts)
			c := dialTCP(t, p.Addr())
			tcpRoundTrip(t, c, "warm") // the dial to the target is not part of the measure
			tc.faults(p)
			start := time.Now()
			tcpRoundTrip(t, c, "ping")
			if rtt := time.Since(start); rtt < 2*d {
				t.Errorf("round trip took %v, want at least %v (%v each way)", rtt, 2*d, d)
			}
		})
	}
}

func TestTCPBlackhole(t *testing.T) {
	p := newTCP(t, startTCPEcho(t), faultproxy.Options{})
	old := dialTCP(t, p.Addr())
	tcpRoundTrip(t, old, "before")

	p.SetBlackhole(true)
	// Many writes, so that order across chunks is tested too.
	payload := randomBytes(256 << 10)
	for chunk := range slices.Chunk(payload, 1000) {
		if _, err := old.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	fresh := dialTCP(t, p.Addr()) // accepted during the partition
	if _, err := fresh.Write([]byte("fresh")); err != nil {
		t.Fatal(err)
	}
	tcpExpectSilence(t, old)
	tcpExpectSilence(t, fresh)
	if s := p.Stats(); s.BytesToTarget != uint64(len("before")) {
		t.Errorf("%d bytes reached the target during the blackhole", s.BytesToTarget-uint64(len("before")))
	}

	p.SetBlackhole(false)
	if got := tcpRead(t, old, len(payload)); !bytes.Equal(got, payload) {
		t.Error("data held during the blackhole came back changed")
	}
	if got := tcpRead(t, fresh, len("fresh")); string(got) != "fresh" {
		t.Errorf("fresh connection echoed %q", got)
	}
}

func TestTCPRefuse(t *testing.T) {
	p := newTCP(t, startTCPEcho(t), faultproxy.Options{})
	p.SetRefuse(true)
	// The reset may even beat the client's connect to completion.
	c, err := net.DialTimeout("tcp4", p.Addr(), patience)
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
		tcpExpectReset(t, c.(*net.TCPConn))
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial: %v, want success or a connection reset", err)
	}
	if s := p.Stats(); s.Accepted != 1 || s.Refused != 1 {
		t.Errorf("stats %+v, want one connection accepted and refused", s)
	}

	p.SetRefuse(false)
	tcpRoundTrip(t, dialTCP(t, p.Addr()), "served")
}

func TestTCPCutAll(t *testing.T) {
	p := newTCP(t, startTCPEcho(t), faultproxy.Options{})
	a, b := dialTCP(t, p.Addr()), dialTCP(t, p.Addr())
	tcpRoundTrip(t, a, "a")
	tcpRoundTrip(t, b, "b")
	if s := p.Stats(); s.Active != 2 {
		t.Fatalf("active = %d, want 2", s.Active)
	}

	p.CutAll()
	tcpExpectReset(t, a)
	tcpExpectReset(t, b)
	waitFor(t, "no active pairs", func() bool { return p.Stats().Active == 0 })
	tcpRoundTrip(t, dialTCP(t, p.Addr()), "after")
}

// --- Close -----------------------------------------------------------------

func TestCloseWithLiveTraffic(t *testing.T) {
	udpEcho, tcpEcho := startUDPEcho(t), startTCPEcho(t)
	servers := goleak.IgnoreCurrent() // from here on, every new goroutine must end

	u, err := faultproxy.NewUDP(udpEcho.addr(), faultproxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tp, err := faultproxy.NewTCP(tcpEcho, faultproxy.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// UDP: two live flows, one with datagrams queued.
	uc1, uc2 := dialUDP(t, u.Addr()), dialUDP(t, u.Addr())
	udpRoundTrip(t, uc1, "one")
	udpRoundTrip(t, uc2, "two")
	u.SetDelay(time.Hour)
	udpSend(t, uc1, []byte("queued"))
	// TCP: one idle pair, and one with data held by a blackhole.
	idle, held := dialTCP(t, tp.Addr()), dialTCP(t, tp.Addr())
	tcpRoundTrip(t, idle, "idle")
	tcpRoundTrip(t, held, "held")
	tp.SetBlackhole(true)
	if _, err := held.Write(randomBytes(64 << 10)); err != nil {
		t.Fatal(err)
	}

	closed := make(chan error, 1)
	go func() { closed <- errors.Join(u.Close(), tp.Close()) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("Close did not return")
	}
	if err := errors.Join(u.Close(), tp.Close()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	tcpExpectReset(t, idle)
	tcpExpectReset(t, held)
	if s := tp.Stats(); s.Active != 0 {
		t.Errorf("active = %d after Close", s.Active)
	}
	if s := u.Stats(); s.Flows != 0 {
		t.Errorf("flows = %d after Close", s.Flows)
	}
	goleak.VerifyNone(t, servers)
}
