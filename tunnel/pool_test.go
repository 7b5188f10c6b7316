package tunnel

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// startPool starts a Pool of the given relays with connections sessions to
// each, running until the test ends.
func startPool(t *testing.T, id *Identity, relays []*testRelay, connections int) *Pool {
	t.Helper()
	log, _ := newLogger(t, "pool")
	targets := make([]RelayTarget, len(relays))
	for i, r := range relays {
		targets[i] = RelayTarget{Addr: r.Addr().String(), Key: r.id.Fingerprint()}
	}
	cfg := testConfig()
	cfg.Connections = connections
	p, err := NewPool(PoolOptions{
		Client: ClientOptions{Config: cfg, Identity: id, Transport: TransportQUIC, EdgeName: "edge-pool", Logger: log},
		Relays: targets,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p
}

// named answers every stream with the name of its relay, after the edge's
// first byte, and holds it until the edge ends its side.
func named(name string) Handler {
	return HandlerFunc(func(ctx context.Context, _ *Peer, s Stream) {
		if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
			s.Abort(1)
			return
		}
		s.Write([]byte(name))
		io.Copy(io.Discard, s)
		s.Close()
	})
}

func upCount(p *Pool) int {
	n := 0
	for _, st := range p.State() {
		if st.Transport != "" {
			n++
		}
	}
	return n
}

// TestPoolSpreadsAndFailsOver: streams go to the session with the fewest
// open streams, across relays and connections; when a relay dies or
// drains, new streams go to the other one.
func TestPoolSpreadsAndFailsOver(t *testing.T) {
	edgeID := mustIdentity(t)
	auth := edgeAuth(edgeID.Fingerprint())
	a := startRelay(t, mustIdentity(t), "127.0.0.1:0", auth, named("a"))
	b := startRelay(t, mustIdentity(t), "127.0.0.1:0", auth, named("b"))
	p := startPool(t, edgeID, []*testRelay{a, b}, 2)
	eventually(t, 5*time.Second, "4 sessions up", func() bool { return upCount(p) == 4 })
	if got, want := p.Summary(), "4 of 4 sessions up: "+a.Addr().String()+" quic×2, "+b.Addr().String()+" quic×2"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}

	open := func() (Stream, string) {
		t.Helper()
		s, _, err := p.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte("x"))
		name := make([]byte, 1)
		if _, err := io.ReadFull(s, name); err != nil {
			t.Fatal(err)
		}
		return s, string(name)
	}
	// Four held streams: one on each session, two on each relay.
	perRelay := map[string]int{}
	var held []Stream
	for range 4 {
		s, name := open()
		perRelay[name]++
		held = append(held, s)
	}
	if perRelay["a"] != 2 || perRelay["b"] != 2 {
		t.Errorf("4 streams went to relays %v, want 2 each", perRelay)
	}
	for _, st := range p.State() {
		if st.Streams != 1 {
			t.Errorf("session %+v has %d streams, want 1 each", st, st.Streams)
		}
	}
	for _, s := range held {
		s.CloseWrite()
		s.Close()
	}

	// Relay a drains (GOAWAY): new streams go to b at once.
	shut := make(chan error, 1)
	go func() { shut <- a.Shutdown(context.Background()) }()
	eventually(t, 2*time.Second, "a's sessions out of service", func() bool { return upCount(p) == 2 })
	for range 4 {
		s, name := open()
		if name != "b" {
			t.Errorf("a stream went to relay %q while a drains, want b", name)
		}
		s.CloseWrite()
		s.Close()
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}

	// Relay b dies too: nothing is up, and OpenStream says so at once.
	b.Close()
	eventually(t, 2*time.Second, "no session up", func() bool { return !p.Ready() })
	start := time.Now()
	if _, _, err := p.OpenStream(context.Background()); !errors.Is(err, ErrNoSession) {
		t.Errorf("OpenStream with every relay down: %v, want ErrNoSession", err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("OpenStream took %v with every relay down, want an immediate error", d)
	}
	if err := p.LastError(); err == nil || !strings.Contains(err.Error(), "relay") {
		t.Errorf("LastError() = %v, want the sessions' errors", err)
	}
}

// TestPoolAvoid: a stream refused by one session is opened on another, and
// with every session avoided there is none.
func TestPoolAvoid(t *testing.T) {
	edgeID := mustIdentity(t)
	r := startRelay(t, mustIdentity(t), "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), named("r"))
	p := startPool(t, edgeID, []*testRelay{r}, 2)
	eventually(t, 5*time.Second, "2 sessions up", func() bool { return upCount(p) == 2 })
	s1, peer1, err := p.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, peer2, err := p.OpenStream(context.Background(), peer1.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if peer2.SessionID == peer1.SessionID {
		t.Errorf("the avoided session %s was used", peer1.SessionID)
	}
	if _, _, err := p.OpenStream(context.Background(), peer1.SessionID, peer2.SessionID); !errors.Is(err, ErrNoSession) {
		t.Errorf("OpenStream avoiding every session: %v, want ErrNoSession", err)
	}
}

func TestNewPoolErrors(t *testing.T) {
	id := mustIdentity(t)
	for _, tt := range []struct {
		name string
		opts PoolOptions
		want string
	}{
		{"no relays", PoolOptions{Client: ClientOptions{Identity: id}}, "no relays"},
		{"negative connections", PoolOptions{Client: ClientOptions{Identity: id, Config: Config{Connections: -1}},
			Relays: []RelayTarget{{Addr: "r:1", Key: id.Fingerprint()}}}, "Config.Connections = -1"},
		{"bad key", PoolOptions{Client: ClientOptions{Identity: id}, Relays: []RelayTarget{{Addr: "r:1", Key: "sha256:x"}}}, "relay 0 (r:1)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewPool(tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewPool: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
