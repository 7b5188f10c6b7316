package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

func TestRoundTrip(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		peers := make(chan *Peer, 100)
		h := HandlerFunc(func(ctx context.Context, peer *Peer, s Stream) {
			peers <- peer
			echo(ctx, peer, s)
		})
		r, e := pair(t, transport, h)

		const streams = 50
		var wg sync.WaitGroup
		errc := make(chan error, streams)
		for i := range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				s, peer, err := e.OpenStream(ctx)
				if err != nil {
					errc <- err
					return
				}
				defer s.Close()
				if peer.Transport != transport || peer.Key != r.id.Fingerprint() || peer.Name != "relay-test" {
					errc <- errors.New("bad client-side peer")
					return
				}
				want := make([]byte, 64<<10+i)
				rand.Read(want)
				werr := make(chan error, 1)
				go func() {
					_, err := s.Write(want)
					if err == nil {
						err = s.CloseWrite()
					}
					werr <- err
				}()
				got, err := io.ReadAll(s)
				if err != nil {
					errc <- err
					return
				}
				if err := <-werr; err != nil {
					errc <- err
					return
				}
				if !bytes.Equal(got, want) {
					errc <- errors.New("echoed bytes differ")
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}

		// Server side: the edge as Authorize named it.
		p := <-peers
		if p.Name != "edge-1" || p.Key != e.id.Fingerprint() || p.Transport != transport || p.SessionID == "" || p.RemoteAddr == nil {
			t.Errorf("server peer = %+v", p)
		}
		if got, want := strings.Join(p.Upstreams, ","), "openai,azure"; got != want {
			t.Errorf("server peer upstreams = %q, want %q", got, want)
		}

		// Client side: the relay as WELCOME described it.
		s, cp, err := e.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if cp.SessionID != p.SessionID {
			t.Errorf("client session id %q, server %q", cp.SessionID, p.SessionID)
		}
		if got, want := strings.Join(cp.Upstreams, ","), "openai,azure"; got != want {
			t.Errorf("client peer upstreams = %q, want %q", got, want)
		}
		if cp.RemoteAddr.String() != r.Addr().String() {
			t.Errorf("client peer addr = %s, want %s", cp.RemoteAddr, r.Addr())
		}
		if got := r.Sessions(); got != 1 {
			t.Errorf("Sessions() = %d, want 1", got)
		}
	})
}

// refusedEdge starts a relay that accepts relayAccepts and an edge that
// pins pin, waits for the edge's first failed attempt, and checks that its
// error wraps sentinel and says want, and, when the test ends, that the
// relay's handler never ran.
func refusedEdge(t *testing.T, transport string, relayID, edgeID *Identity, relayAccepts, pin string, sentinel error, want string) (*testEdge, *testRelay) {
	t.Helper()
	called := make(chan struct{}, 1)
	r := startRelay(t, relayID, "127.0.0.1:0", edgeAuth(relayAccepts),
		HandlerFunc(func(ctx context.Context, _ *Peer, s Stream) { called <- struct{}{}; s.Close() }))
	e := startEdge(t, edgeID, r.Addr().String(), pin, transport)
	eventually(t, 2*time.Second, "a failed attempt", func() bool { return e.LastError() != nil })
	err := e.LastError()
	if !errors.Is(err, sentinel) {
		t.Fatalf("LastError() = %v, want %v", err, sentinel)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("LastError() = %q, want it to contain %q", err, want)
	}
	t.Cleanup(func() {
		select {
		case <-called:
			t.Error("handler was called")
		default:
		}
	})
	return e, r
}

func TestPinMismatch(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		relayID, edgeID, otherID := mustIdentity(t), mustIdentity(t), mustIdentity(t)
		e, _ := refusedEdge(t, transport, relayID, edgeID, edgeID.Fingerprint(), otherID.Fingerprint(), ErrPinMismatch,
			"relay key "+relayID.Fingerprint()+" does not match the pinned key "+otherID.Fingerprint())
		if e.Ready() {
			t.Error("Ready() = true with a mismatched pin")
		}
		if f := e.Stats().Failures; f["pin_mismatch"] == 0 {
			t.Errorf("Stats().Failures = %v, want pin_mismatch counted", f)
		}
		if _, _, err := e.OpenStream(context.Background()); !errors.Is(err, ErrNoSession) {
			t.Errorf("OpenStream: got %v, want ErrNoSession", err)
		}
	})
}

func TestUnknownEdge(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		relayID, edgeID, otherID := mustIdentity(t), mustIdentity(t), mustIdentity(t)
		e, r := refusedEdge(t, transport, relayID, edgeID, otherID.Fingerprint(), relayID.Fingerprint(), ErrUnknownPeer,
			"relay refused this edge's key "+edgeID.Fingerprint()+": add it to the relay's [[edge]] list")
		if logs, want := r.logs.String(), "refused edge key "+edgeID.Fingerprint(); !strings.Contains(logs, want) {
			t.Errorf("relay logs lack %q", want)
		}
		if e.Ready() || r.Sessions() != 0 {
			t.Errorf("Ready() = %v, Sessions() = %d; want false, 0", e.Ready(), r.Sessions())
		}
		if f := e.Stats().Failures; f["unauthorized"] == 0 {
			t.Errorf("edge Stats().Failures = %v, want unauthorized counted", f)
		}
		if f := r.Stats().Failures; f["unauthorized"] == 0 {
			t.Errorf("relay Stats().Failures = %v, want unauthorized counted", f)
		}
	})
}

func TestAbortPropagates(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		t.Run("edge to relay", func(t *testing.T) {
			started := make(chan struct{})
			readErr := make(chan error, 1)
			_, e := pair(t, transport, HandlerFunc(func(ctx context.Context, _ *Peer, s Stream) {
				if _, err := io.ReadFull(s, make([]byte, 5)); err != nil {
					readErr <- err
					s.Abort(proto.CodeInternal)
					return
				}
				close(started)
				_, err := io.Copy(io.Discard, s)
				readErr <- err
				s.Close()
			}))
			s, _, err := e.OpenStream(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-started:
			case err := <-readErr:
				t.Fatalf("relay: %v", err)
			}
			start := time.Now()
			s.Abort(proto.CodeCancel)
			s.Abort(proto.CodeCancel) // idempotent
			select {
			case err := <-readErr:
				checkReset(t, err, proto.CodeCancel)
				if d := time.Since(start); d > 100*time.Millisecond {
					t.Errorf("relay saw the abort after %s, want within 100ms", d)
				}
			case <-time.After(time.Second):
				t.Fatal("relay's Read did not fail")
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close after Abort: %v", err)
			}
		})
		t.Run("relay to edge", func(t *testing.T) {
			aborted := make(chan time.Time, 1)
			_, e := pair(t, transport, HandlerFunc(func(ctx context.Context, _ *Peer, s Stream) {
				buf := make([]byte, 1)
				if _, err := s.Read(buf); err != nil {
					s.Abort(proto.CodeInternal)
					return
				}
				aborted <- time.Now()
				s.Abort(proto.CodeUpstreamError)
			}))
			s, _, err := e.OpenStream(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(io.Discard, s)
			checkReset(t, err, proto.CodeUpstreamError)
			if d := time.Since(<-aborted); d > 100*time.Millisecond {
				t.Errorf("edge saw the abort after %s, want within 100ms", d)
			}
			// Writes fail too, with the peer's code (STOP_SENDING).
			eventually(t, time.Second, "write failure", func() bool {
				_, err := s.Write([]byte("y"))
				return err != nil
			})
			_, err = s.Write([]byte("y"))
			checkReset(t, err, proto.CodeUpstreamError)
		})
	})
}

func checkReset(t *testing.T, err error, want proto.ResetCode) {
	t.Helper()
	var rst *proto.ResetError
	if !errors.As(err, &rst) {
		t.Fatalf("got error %v, want a *proto.ResetError", err)
	}
	if rst.Code != want {
		t.Errorf("got code %s, want %s", rst.Code, want)
	}
}

func TestCleanEOF(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		_, e := pair(t, transport, echo)
		s, _, err := e.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if s.ID() < 0 {
			t.Errorf("ID() = %d", s.ID())
		}
		s.Write([]byte("ping"))
		s.CloseWrite()
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "ping" {
			t.Errorf("got %q, %v; want \"ping\", nil", got, err)
		}
		if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
		}
	})
}

func TestPingMeasuresRTT(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		_, e := pair(t, transport, echo)
		if e.RTT() <= 0 {
			t.Errorf("RTT() = %s after the handshake, want > 0", e.RTT())
		}
		e.rtt.Store(0)
		// PingInterval is 50ms: a PONG updates the RTT soon.
		eventually(t, 500*time.Millisecond, "RTT from a PONG", func() bool { return e.RTT() > 0 })
	})
}

func TestDeadRelay(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		relayID, edgeID := mustIdentity(t), mustIdentity(t)
		r := startRelay(t, relayID, "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), echo)
		path, addr := faultPath(t, r, transport)
		e := startEdge(t, edgeID, addr, relayID.Fingerprint(), transport, func(o *ClientOptions) { o.TCPAddr = addr })
		waitReady(t, e.Client)

		path.SetBlackhole(true)
		start := time.Now()
		// The edge notices within PingInterval + PingTimeout of the
		// last packet heard (TestDeathIsTimedFromLastHeard times that
		// exactly). The slack is for a loaded machine; it stays below
		// the 2 × PingTimeout that a packet heard just after the
		// session's first PING (the tail of the handshake, arriving as
		// the path is cut) cost when the wait restarted from the
		// timeout.
		cfg := testConfig()
		limit := cfg.PingInterval + cfg.PingTimeout + cfg.PingTimeout/2
		eventually(t, 2*limit, "Ready() == false", func() bool { return !e.Ready() })
		if d := time.Since(start); d > limit {
			t.Errorf("dead relay noticed after %s, want within %s", d, limit)
		}
		// The session is taken out of service and its error recorded
		// in one step: no window where Ready is false and LastError nil.
		if err := e.LastError(); err == nil || !strings.Contains(err.Error(), "no PONG") {
			t.Errorf("LastError() = %v, want \"no PONG\"", err)
		}
		// No waiting for a session: the path is still cut, so an
		// OpenStream that waited would run into its context's deadline
		// instead of failing with ErrNoSession.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, _, err := e.OpenStream(ctx); !errors.Is(err, ErrNoSession) {
			t.Errorf("OpenStream: got %v, want ErrNoSession", err)
		}

		// The path heals: the edge reconnects.
		path.SetBlackhole(false)
		waitReady(t, e.Client)
	})
}

func TestReconnect(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		relayID, edgeID := mustIdentity(t), mustIdentity(t)
		auth := edgeAuth(edgeID.Fingerprint())
		r1 := startRelay(t, relayID, "127.0.0.1:0", auth, echo)
		addr := r1.Addr().String()
		e := startEdge(t, edgeID, addr, relayID.Fingerprint(), transport)
		waitReady(t, e.Client)

		r1.Close()
		eventually(t, time.Second, "Ready() == false", func() bool { return !e.Ready() })

		startRelay(t, relayID, addr, auth, echo)
		waitReady(t, e.Client)
		s, _, err := e.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte("again"))
		s.CloseWrite()
		got, err := io.ReadAll(s)
		s.Close()
		if err != nil || string(got) != "again" {
			t.Errorf("got %q, %v; want \"again\", nil", got, err)
		}
	})
}

func TestClientLifecycle(t *testing.T) {
	relayID, edgeID := mustIdentity(t), mustIdentity(t)
	c, err := NewClient(ClientOptions{Identity: edgeID, RelayAddr: "127.0.0.1:1", RelayKey: relayID.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.OpenStream(context.Background()); !errors.Is(err, ErrNoSession) {
		t.Errorf("OpenStream before Run: got %v, want ErrNoSession", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.WaitReady(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitReady: got %v, want context.DeadlineExceeded", err)
	}
	c.Close()
	c.Close()
	if err := c.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: got %v, want ErrClosed", err)
	}
	if err := c.WaitReady(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitReady after Close: got %v, want ErrClosed", err)
	}

	// Run ends with its context.
	c2, err := NewClient(ClientOptions{Identity: edgeID, RelayAddr: "127.0.0.1:1", RelayKey: relayID.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c2.Run(ctx2) }()
	cancel2()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run: got %v, want context.Canceled", err)
	}
}

func TestNewClientErrors(t *testing.T) {
	id := mustIdentity(t)
	tests := []struct {
		name string
		opts ClientOptions
		want string
	}{
		{"no identity", ClientOptions{RelayAddr: "x:1", RelayKey: id.Fingerprint()}, "no identity"},
		{"no address", ClientOptions{Identity: id, RelayKey: id.Fingerprint()}, "no relay address"},
		{"bad key", ClientOptions{Identity: id, RelayAddr: "x:1", RelayKey: "sha256:nope"}, "relay key"},
		{"bad config", ClientOptions{Identity: id, RelayAddr: "x:1", RelayKey: id.Fingerprint(),
			Config: Config{PingTimeout: testConfig().PingTimeout, ReconnectMin: testConfig().ReconnectMax, ReconnectMax: testConfig().ReconnectMin}},
			"tunnel client: Config.ReconnectMax"},
		{"bad transport", ClientOptions{Identity: id, RelayAddr: "x:1", RelayKey: id.Fingerprint(), Transport: "udp"}, `transport "udp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestStreamContextEndsOnPeerAbort: a relay that is not reading (waiting on a
// silent upstream) still learns at once that the edge aborted, through the
// stream's context, and a clean exchange does not end it early.
func TestStreamContextEndsOnPeerAbort(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		got := make(chan time.Time, 1)
		_, e := pair(t, transport, HandlerFunc(func(_ context.Context, _ *Peer, s Stream) {
			if _, err := io.ReadFull(s, make([]byte, 5)); err != nil {
				s.Abort(proto.CodeInternal)
				return
			}
			select {
			case <-s.Context().Done():
				got <- time.Now()
			case <-time.After(2 * time.Second):
			}
			s.Abort(proto.CodeCancel)
		}))
		s, _, err := e.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
			t.Fatal("relay's stream context ended before the edge aborted")
		case <-time.After(100 * time.Millisecond):
		}
		start := time.Now()
		s.Abort(proto.CodeCancel)
		select {
		case at := <-got:
			if d := at.Sub(start); d > 100*time.Millisecond {
				t.Errorf("relay's stream context ended %v after the abort, want within 100ms", d)
			}
		case <-time.After(time.Second):
			t.Fatal("relay's stream context did not end after the edge aborted")
		}
		if s.Context().Err() == nil {
			t.Error("the aborting side's own context is still live")
		}
	})
}

// TestAutoFallsBackToTCPAndReturnsToQUIC: with UDP blocked, an "auto" edge
// serves over TCP within the fallback deadline; once UDP works again, new
// streams move to QUIC while a stream opened on TCP finishes there.
func TestAutoFallsBackToTCPAndReturnsToQUIC(t *testing.T) {
	relayID, edgeID := mustIdentity(t), mustIdentity(t)
	release := make(chan struct{})
	r := startRelay(t, relayID, "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), HandlerFunc(func(ctx context.Context, p *Peer, s Stream) {
		if _, err := io.ReadFull(s, make([]byte, 4)); err != nil {
			s.Abort(proto.CodeProtocol)
			return
		}
		if p.Transport == TransportTCP {
			<-release // hold the TCP stream until the test lets it go
		}
		s.Write([]byte(p.Transport))
		s.Close()
	}))
	udp, udpAddr := faultPath(t, r, TransportQUIC)
	udp.SetBlackhole(true)
	const fallback = 300 * time.Millisecond
	start := time.Now()
	e := startEdge(t, edgeID, udpAddr, relayID.Fingerprint(), TransportAuto, func(o *ClientOptions) {
		o.TCPAddr = r.TCPAddr().String()
		o.Config.FallbackTimeout = fallback
		o.Config.QUICProbeInterval = 100 * time.Millisecond
	})
	waitReady(t, e.Client)
	if d := time.Since(start); d > fallback+time.Second {
		t.Errorf("serving over TCP took %v, want about the fallback deadline %v", d, fallback)
	}
	if tr := e.Transport(); tr != TransportTCP {
		t.Fatalf("Transport() = %q with UDP blocked, want tcp", tr)
	}
	exchange := func(s Stream) (string, error) {
		if _, err := s.Write([]byte("ping")); err != nil {
			return "", err
		}
		s.CloseWrite()
		b, err := io.ReadAll(s)
		s.Close()
		return string(b), err
	}
	held, _, err := e.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	heldDone := make(chan string, 1)
	go func() {
		got, err := exchange(held)
		if err != nil {
			got = err.Error()
		}
		heldDone <- got
	}()

	udp.SetBlackhole(false)
	eventually(t, 5*time.Second, "new streams on QUIC", func() bool { return e.Transport() == TransportQUIC })
	s, _, err := e.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := exchange(s); err != nil || got != TransportQUIC {
		t.Errorf("new stream answered %q, %v; want %q", got, err, TransportQUIC)
	}
	close(release)
	if got := <-heldDone; got != TransportTCP {
		t.Errorf("the stream opened on TCP got %q, want it to finish there", got)
	}
	eventually(t, 2*time.Second, "the drained TCP session closed", func() bool { return r.Sessions() == 1 })
}

// TestStats: both sides count sessions, streams and bytes.
func TestStats(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		r, e := pair(t, transport, echo)
		const streams, size = 5, 10000
		for range streams {
			s, _, err := e.OpenStream(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			s.Write(make([]byte, size))
			s.CloseWrite()
			if n, err := io.Copy(io.Discard, s); n != size || err != nil {
				t.Fatalf("echo: %d bytes, %v", n, err)
			}
			s.Close()
		}
		es := e.Stats()
		if es.Transport != transport || es.Connects != 1 || es.StreamsOpened != streams ||
			es.BytesSent < streams*size || es.BytesReceived < streams*size || es.RTT <= 0 {
			t.Errorf("edge stats = %+v", es)
		}
		eventually(t, time.Second, "relay streams done", func() bool { return r.Stats().Streams == 0 })
		rs := r.Stats()
		if rs.Sessions[SessionKey{"edge-1", transport}] != 1 || rs.StreamsAccepted != streams ||
			rs.BytesReceived < streams*size || rs.BytesSent < streams*size {
			t.Errorf("relay stats = %+v", rs)
		}
	})
}
