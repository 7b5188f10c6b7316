package tunnel

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/config"
	"github.com/airlock-proxy/airlock/proto"
)

// TestLatePongIsNotDeath is issue 8's "liveness does not depend on stream
// flow control": a PONG held up (here: never sent) while the relay's
// packets keep arriving must not kill the session; the same silence with
// nothing heard must, within about one ping timeout.
func TestLatePongIsNotDeath(t *testing.T) {
	const pingTimeout = 60 * time.Millisecond
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
			go func() {
				r := proto.NewControlReader(relaySide)
				for {
					if _, err := r.ReadMessage(); err != nil {
						return
					}
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
				PingInterval: config.Duration{Duration: 20 * time.Millisecond},
				PingTimeout:  config.Duration{Duration: pingTimeout},
			}}
			sess := &clientSession{conn: fc, ctrl: newControlStream(&pipeStream{Conn: edgeSide}), drained: make(chan struct{})}
			ctx, cancel := context.WithTimeout(context.Background(), 10*pingTimeout)
			defer cancel()
			start := time.Now()
			err := c.keepAlive(ctx, sess, make(chan uint64), make(chan error, 1))
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
		})
	}
}

// fakeConn is a conn whose only behaviour is its heard count.
type fakeConn struct {
	ctx context.Context
	n   atomic.Uint64
}

func (f *fakeConn) openStream(context.Context) (stream, error)   { return nil, errors.New("fake") }
func (f *fakeConn) acceptStream(context.Context) (stream, error) { return nil, errors.New("fake") }
func (f *fakeConn) closeWithError(closeCode, string)             {}
func (f *fakeConn) context() context.Context                     { return f.ctx }
func (f *fakeConn) heard() uint64                                { return f.n.Load() }
func (f *fakeConn) remoteAddr() net.Addr                         { return &net.UDPAddr{} }
func (f *fakeConn) peerKey() (string, error)                     { return "", nil }
func (f *fakeConn) transport() string                            { return "fake" }
func (f *fakeConn) attachControl(*controlStream)                 {}
func (f *fakeConn) peerReset(*proto.StreamReset) bool            { return false }

// pipeStream is a stream over one end of a net.Pipe.
type pipeStream struct{ net.Conn }

func (p *pipeStream) CloseWrite() error        { return p.Conn.Close() }
func (p *pipeStream) Abort(proto.ResetCode)    { p.Conn.Close() }
func (p *pipeStream) ID() int64                { return 0 }
func (p *pipeStream) Context() context.Context { return context.Background() }
func (p *pipeStream) setOnDone(func())         {}

var (
	_ conn   = (*fakeConn)(nil)
	_ stream = (*pipeStream)(nil)
)
