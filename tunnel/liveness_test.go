package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

// TestLatePongIsNotDeath is issue 8's "liveness does not depend on stream
// flow control": a PONG held up (here: never sent) while the relay's
// packets keep arriving must not kill the session; the same silence with
// nothing heard must, within about one ping timeout.
func TestLatePongIsNotDeath(t *testing.T) {
	// Wide: the ticker that stands for the relay must not miss a whole
	// timeout on a loaded machine.
	const pingTimeout = 250 * time.Millisecond
	tests := []struct {
		name     string
		heard    bool // the relay keeps sending something
		wantDead bool
	}{
		{name: "relay sending, PONG held up", heard: true, wantDead: false},
		{name: "relay silent", heard: false, wantDead: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			edgeSide, relaySide := net.Pipe()
			defer edgeSide.Close()
			defer relaySide.Close()
			// The relay reads PINGs and never answers.
			var pings atomic.Int64
			go func() {
				r := proto.NewControlReader(relaySide)
				for {
					if _, err := r.ReadMessage(); err != nil {
						return
					}
					pings.Add(1)
				}
			}()
			fc := &fakeConn{ctx: context.Background()}
			stop := make(chan struct{})
			defer close(stop)
			if tt.heard {
				go func() {
					tick := time.NewTicker(5 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-tick.C:
							fc.n.Add(1)
						case <-stop:
							return
						}
					}
				}()
			}
			c := &Client{cfg: Config{
				PingInterval: 20 * time.Millisecond,
				PingTimeout:  pingTimeout,
			}}
			sess := &clientSession{conn: fc, ctrl: newControlStream(&pipeStream{Conn: edgeSide}), drained: make(chan struct{})}
			ctx, cancel := context.WithTimeout(context.Background(), 10*pingTimeout)
			defer cancel()
			start := time.Now()
			err := c.keepAlive(ctx, sess, make(chan uint64))
			took := time.Since(start)
			if dead := errors.Is(err, errPingTimeout); dead != tt.wantDead {
				t.Fatalf("keepAlive returned %v after %v: declared dead %v, want %v", err, took, dead, tt.wantDead)
			}
			if !tt.wantDead && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("keepAlive returned %v, want it to run until its context ended", err)
			}
			if tt.wantDead && took > 5*pingTimeout {
				t.Errorf("a silent relay was declared dead after %v, want about %v", took, pingTimeout)
			}
			// While the first PING waits for its PONG, the edge goes on
			// pinging each interval: the relay's sign that it lives.
			if !tt.wantDead && pings.Load() < 10 {
				t.Errorf("%d PINGs in %v with one unanswered, want one per 20ms interval", pings.Load(), took)
			}
		})
	}
}

// TestDeathIsTimedFromLastHeard: a relay whose PONG never comes is declared
// dead once nothing has been heard from it for a PingTimeout, within
// PingInterval + PingTimeout of the last thing heard, however that falls
// against the PINGs: in particular a packet heard just after a PING (the
// tail of the handshake, in TestDeadRelay) must not restart a whole
// PingTimeout at the PING's timeout. In a synctest bubble: the times are
// exact, whatever the load.
func TestDeathIsTimedFromLastHeard(t *testing.T) {
	const (
		interval = 20 * time.Millisecond
		timeout  = 250 * time.Millisecond
	)
	tests := []struct {
		name string
		// heardFor is how long the relay keeps sending (every 5ms) after
		// the first PING; -1 for never, 0 for one packet just after it.
		heardFor time.Duration
	}{
		{"silent throughout", -1},
		{"one packet just after the PING", 0},
		{"a packet between PINGs", interval + interval/2},
		{"sending while the PONG is held up", 3 * timeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				edgeSide, relaySide := net.Pipe()
				fc := &fakeConn{ctx: context.Background()}
				var lastHeard atomic.Int64 // ns after the start
				start := time.Now()
				// The relay reads PINGs and never answers; after the
				// first, it is heard for heardFor.
				readerDone := make(chan struct{})
				go func() {
					defer close(readerDone)
					r := proto.NewControlReader(relaySide)
					if _, err := r.ReadMessage(); err != nil {
						return
					}
					if tt.heardFor >= 0 {
						go func() {
							for {
								fc.n.Add(1)
								lastHeard.Store(int64(time.Since(start)))
								if time.Since(start) >= tt.heardFor {
									return
								}
								time.Sleep(5 * time.Millisecond)
							}
						}()
					}
					for {
						if _, err := r.ReadMessage(); err != nil {
							return
						}
					}
				}()
				c := &Client{cfg: Config{PingInterval: interval, PingTimeout: timeout}}
				sess := &clientSession{conn: fc, ctrl: newControlStream(&pipeStream{Conn: edgeSide}), drained: make(chan struct{})}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				err := c.keepAlive(ctx, sess, make(chan uint64))
				took := time.Since(start)
				edgeSide.Close()
				relaySide.Close()
				<-readerDone
				synctest.Wait() // the sender has returned
				if !errors.Is(err, errPingTimeout) {
					t.Fatalf("keepAlive returned %v after %v, want errPingTimeout", err, took)
				}
				silentFrom := time.Duration(lastHeard.Load())
				if got := took - silentFrom; got < timeout || got > interval+timeout {
					t.Errorf("declared dead %v after the last packet heard (at %v), want between %v and %v",
						got, silentFrom, timeout, interval+timeout)
				}
			})
		})
	}
}

// fakeConn is a conn whose only behaviours are its heard count and
// recording how it was closed.
type fakeConn struct {
	ctx    context.Context
	n      atomic.Uint64
	closed atomic.Bool
	code   closeCode
	msg    string
}

func (f *fakeConn) openStream(context.Context, time.Duration) (stream, error) {
	return nil, errors.New("fake")
}
func (f *fakeConn) acceptStream(context.Context) (stream, error) { return nil, errors.New("fake") }
func (f *fakeConn) closeWithError(code closeCode, msg string) {
	f.closed.Store(true)
	f.code, f.msg = code, msg
}
func (f *fakeConn) context() context.Context          { return f.ctx }
func (f *fakeConn) heard() uint64                     { return f.n.Load() }
func (f *fakeConn) remoteAddr() net.Addr              { return &net.UDPAddr{} }
func (f *fakeConn) peerKey() (string, error)          { return "", nil }
func (f *fakeConn) transport() string                 { return "fake" }
func (f *fakeConn) attachControl(*controlStream)      {}
func (f *fakeConn) peerReset(*proto.StreamReset) bool { return false }

// pipeStream is a stream over one end of a net.Pipe.
type pipeStream struct{ net.Conn }

func (p *pipeStream) CloseWrite() error        { return p.Conn.Close() }
func (p *pipeStream) Abort(proto.ResetCode)    { p.Conn.Close() }
func (p *pipeStream) ID() int64                { return 0 }
func (p *pipeStream) Context() context.Context { return context.Background() }
func (p *pipeStream) setOnDone(func())         {}
func (p *pipeStream) releaseCredit()           {}

var (
	_ conn   = (*fakeConn)(nil)
	_ stream = (*pipeStream)(nil)
)

// TestWatchSilence: the relay ends a TCP session from which nothing at all
// arrives for the idle time, and keeps one that carries anything, whether
// or not it is a PING.
func TestWatchSilence(t *testing.T) {
	const idle = 300 * time.Millisecond
	for _, heard := range []bool{true, false} {
		fc := &fakeConn{ctx: context.Background()}
		ctx, cancel := context.WithTimeout(context.Background(), 8*idle)
		stop := make(chan struct{})
		if heard {
			go func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(idle / 8):
						fc.n.Add(1)
					}
				}
			}()
		}
		start := time.Now()
		err := watchSilence(ctx, fc, idle)
		took := time.Since(start)
		close(stop)
		cancel()
		if silent := errors.Is(err, errSilent); silent == heard {
			t.Errorf("heard %v: got %v after %v, want errSilent %v", heard, err, took, !heard)
		}
		if !heard && (took < idle || took > 4*idle) {
			t.Errorf("a silent peer was dropped after %v, want about %v", took, idle)
		}
	}
}

// TestRelayDropsSilentTCPEdge: with yamux's keepalive off, the relay still
// drops a TCP session whose edge has gone silent (here: a path that drops
// everything), within the idle time.
func TestRelayDropsSilentTCPEdge(t *testing.T) {
	relayID, edgeID := mustIdentity(t), mustIdentity(t)
	r := startRelay(t, relayID, "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), echo)
	path, addr := faultPath(t, r, TransportTCP)
	e := startEdge(t, edgeID, addr, relayID.Fingerprint(), TransportTCP, func(o *ClientOptions) { o.TCPAddr = addr })
	waitReady(t, e.Client)
	// The edge is ready once it has read WELCOME, which the relay writes
	// just before it counts the session as up.
	eventually(t, 5*time.Second, "the relay counts the session", func() bool { return r.Sessions() == 1 })
	path.SetBlackhole(true)
	cfg := testConfig()
	idle := cfg.idleTimeout()
	start := time.Now()
	eventually(t, 2*idle, "the relay dropped the silent session", func() bool { return r.Sessions() == 0 })
	if d := time.Since(start); d < idle-idle/4 {
		t.Errorf("dropped after %v, before the idle time %v", d, idle)
	}
}

// TestEndSession: the first failure of a relay session picks the code its
// connection closes with, and a connection closed already is left alone.
func TestEndSession(t *testing.T) {
	closedCtx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("edge went away"))
	tests := []struct {
		name     string
		ctx      context.Context
		err      error
		wantCode closeCode
		wantMsg  string // "" with wantCode 0: not closed again
	}{
		{"silent", context.Background(), fmt.Errorf("%w for 10s", errSilent), closeSilent, "nothing heard from the edge for 10s"},
		{"control ended", context.Background(), fmt.Errorf("control stream: %w", io.EOF), closeControlEnded, "edge ended the control stream"},
		{"protocol", context.Background(), errors.New("control stream: bad"), closeProtocol, "control stream: bad"},
		{"closed already", closedCtx, errors.New("edge went away"), 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := &fakeConn{ctx: tt.ctx}
			endSession(fc, tt.err)
			if tt.wantMsg == "" {
				if fc.closed.Load() {
					t.Errorf("closed again with %d %q", fc.code, fc.msg)
				}
				return
			}
			if fc.code != tt.wantCode || fc.msg != tt.wantMsg {
				t.Errorf("got %d %q, want %d %q", fc.code, fc.msg, tt.wantCode, tt.wantMsg)
			}
		})
	}
}
