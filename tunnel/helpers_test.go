package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/airlock-proxy/airlock/internal/testkit/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testConfig has short intervals so that liveness tests run fast.
func testConfig() Config {
	return Config{
		HandshakeTimeout: 2 * time.Second,
		PingInterval:     50 * time.Millisecond,
		PingTimeout:      400 * time.Millisecond,
		ReconnectMin:     10 * time.Millisecond,
		ReconnectMax:     100 * time.Millisecond,
	}
}

func mustIdentity(t testing.TB) *Identity {
	t.Helper()
	id, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// logBuffer collects log output for assertions and echoes it to t.Log.
type logBuffer struct {
	t   testing.TB
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogger(t testing.TB, prefix string) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{t: t}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", prefix), lb
}

// testRelay is a Server on loopback, serving until the test ends.
type testRelay struct {
	*Server
	id   *Identity
	logs *logBuffer
	done chan error // Serve's result
}

// edgeAuth authorizes exactly one edge key, as "edge-1" with two upstreams.
func edgeAuth(key string) func(string) (string, []string, error) {
	return func(k string) (string, []string, error) {
		if k != key {
			return "", nil, errors.New("unknown key")
		}
		return "edge-1", []string{"openai", "azure"}, nil
	}
}

// startRelay starts a Server on addr; mods adjust its options.
func startRelay(t testing.TB, id *Identity, addr string, auth func(string) (string, []string, error), h Handler, mods ...func(*ServerOptions)) *testRelay {
	t.Helper()
	log, lb := newLogger(t, "relay")
	opts := ServerOptions{
		Identity:  id,
		Listen:    addr,
		RelayName: "relay-test",
		Authorize: auth,
		Logger:    log,
		Config:    testConfig(),
	}
	for _, mod := range mods {
		mod(&opts)
	}
	srv, err := NewServer(opts, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	r := &testRelay{Server: srv, id: id, logs: lb, done: make(chan error, 1)}
	go func() { r.done <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-r.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return r
}

// testEdge is a Client running until the test ends.
type testEdge struct {
	*Client
	id   *Identity
	logs *logBuffer
}

// startEdge starts a Client of relay addr over transport (TransportAuto when
// empty); mods adjust its options.
func startEdge(t testing.TB, id *Identity, addr, pin, transport string, mods ...func(*ClientOptions)) *testEdge {
	t.Helper()
	log, lb := newLogger(t, "edge")
	opts := ClientOptions{
		Config:    testConfig(),
		Identity:  id,
		RelayAddr: addr,
		RelayKey:  pin,
		Transport: transport,
		EdgeName:  "edge-self",
		Software:  "airlock-test",
		Logger:    log,
	}
	for _, mod := range mods {
		mod(&opts)
	}
	c, err := NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	t.Cleanup(func() {
		c.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &testEdge{Client: c, id: id, logs: lb}
}

// transports are the transports every session test runs over.
var transports = []string{TransportQUIC, TransportTCP}

// forEachTransport runs f as a subtest per transport.
func forEachTransport(t *testing.T, f func(t *testing.T, transport string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

// pair starts a relay with handler h and an edge it authorizes, connected
// over transport, and waits until the session is up.
func pair(t testing.TB, transport string, h Handler) (*testRelay, *testEdge) {
	t.Helper()
	relayID, edgeID := mustIdentity(t), mustIdentity(t)
	r := startRelay(t, relayID, "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), h)
	e := startEdge(t, edgeID, r.Addr().String(), relayID.Fingerprint(), transport)
	waitReady(t, e.Client)
	if got := e.Transport(); got != transport {
		t.Fatalf("edge connected over %q, want %q", got, transport)
	}
	return r, e
}

func waitReady(t testing.TB, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v (last error: %v)", err, c.LastError())
	}
}

// eventually polls cond until it holds or timeout passes, for states that
// no channel announces.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// echo is a Handler that writes back what it reads, then ends cleanly.
var echo = HandlerFunc(func(ctx context.Context, peer *Peer, s Stream) {
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if _, werr := s.Write(buf[:n]); werr != nil {
				s.Abort(1)
				return
			}
		}
		if err != nil {
			break
		}
	}
	s.CloseWrite()
	s.Close()
})

// echoByte sends a byte on s, whose peer is echo, and reads it back.
func echoByte(s Stream) error {
	if _, err := s.Write([]byte("x")); err != nil {
		return err
	}
	_, err := io.ReadFull(s, make([]byte, 1))
	return err
}

// faultPath puts a fault-injecting proxy in front of the relay's address for
// transport and returns it (its SetBlackhole cuts the path silently) with the
// address to dial.
func faultPath(t *testing.T, r *testRelay, transport string) (interface{ SetBlackhole(bool) }, string) {
	t.Helper()
	if transport == TransportTCP {
		p, err := faultproxy.NewTCP(r.TCPAddr().String(), faultproxy.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p, p.Addr()
	}
	p, err := faultproxy.NewUDP(r.Addr().String(), faultproxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, p.Addr()
}
