package edge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/airlock-proxy/airlock/internal/testkit/testlog"

	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
	"github.com/airlock-proxy/airlock/tunnel/tunneltest"
)

// Client keys of the test config.
var (
	aliceKey = "sk-airlock-alice-test-key-000000000000000000000000"
	bobKey   = "sk-airlock-bob-test-key-00000000000000000000000000"
)

// testConfig returns an edge config with two clients: alice may use any
// upstream, bob only "azure" and "openai".
func testConfig() *Config {
	return &Config{
		Clients: []ClientConfig{
			{Name: "alice", KeyHash: HashClientKey(aliceKey)},
			{Name: "bob", KeyHash: HashClientKey(bobKey), Upstreams: []string{"azure", "openai"}},
		},
	}
}

// relayFunc plays the relay's side of one stream.
type relayFunc func(t *testing.T, r *fakeRelay)

// fakeOpener is a tunnel.Opener whose streams are in-memory pipes; the far
// end of each is served by the relayFunc in a goroutine the opener owns.
type fakeOpener struct {
	t     *testing.T
	err   error // returned by OpenStream when set
	relay relayFunc
	peer  *tunnel.Peer

	mu    sync.Mutex
	calls int
	ends  []tunnel.Stream // relay ends, aborted if a test hangs
	wg    sync.WaitGroup
}

func (o *fakeOpener) OpenStream(ctx context.Context, _ ...string) (tunnel.Stream, *tunnel.Peer, error) {
	o.mu.Lock()
	o.calls++
	o.mu.Unlock()
	if o.err != nil {
		return nil, nil, o.err
	}
	edgeEnd, relayEnd := tunneltest.Pipe()
	o.mu.Lock()
	o.ends = append(o.ends, relayEnd)
	o.mu.Unlock()
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		r := &fakeRelay{
			s: relayEnd,
			r: proto.NewReader(relayEnd, proto.Limits{}),
			w: proto.NewWriter(relayEnd, proto.Limits{}),
		}
		defer relayEnd.Close()
		if o.relay != nil {
			o.relay(o.t, r)
		}
	}()
	return edgeEnd, o.peer, nil
}

// Calls returns how many streams were asked for.
func (o *fakeOpener) Calls() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.calls
}

// wait waits for every relay goroutine. If one hangs, it fails the test and
// aborts every stream, so that a regression fails instead of hanging.
func (o *fakeOpener) wait() {
	done := make(chan struct{})
	go func() {
		o.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(testTimeout):
	}
	o.t.Error("fake relay goroutines did not end")
	o.mu.Lock()
	for _, s := range o.ends {
		s.Abort(proto.CodeInternal)
	}
	o.mu.Unlock()
	<-done
}

// fakeRelay is the relay's end of one stream.
type fakeRelay struct {
	s tunnel.Stream
	r *proto.Reader
	w *proto.Writer
}

// head reads the request head.
func (f *fakeRelay) head(t *testing.T) *proto.RequestHead {
	t.Helper()
	h, err := f.r.ReadRequestHead()
	if err != nil {
		t.Errorf("relay: reading request head: %v", err)
		return &proto.RequestHead{Header: http.Header{}}
	}
	return h
}

// body reads the request body up to END.
func (f *fakeRelay) body() ([]byte, error) {
	return io.ReadAll(f.r)
}

// respond sends a whole response of unknown length, so that the client
// waits for the END.
func (f *fakeRelay) respond(t *testing.T, status int, h http.Header, body string) {
	t.Helper()
	f.respondLength(t, status, h, body, -1)
}

// respondLength sends a whole response with the given ContentLength.
func (f *fakeRelay) respondLength(t *testing.T, status int, h http.Header, body string, length int64) {
	t.Helper()
	if h == nil {
		h = http.Header{}
	}
	if err := f.w.WriteResponseHead(&proto.ResponseHead{Status: status, Header: h, ContentLength: length}); err != nil {
		t.Errorf("relay: writing head: %v", err)
		return
	}
	if body != "" {
		if _, err := f.w.Write([]byte(body)); err != nil {
			t.Errorf("relay: writing body: %v", err)
			return
		}
	}
	if err := f.w.End(nil); err != nil {
		t.Errorf("relay: writing END: %v", err)
	}
}

// testEdge is an edge handler behind the edge's own client servers
// (frontDoor) on a real loopback listener, as Server runs them.
type testEdge struct {
	URL    string
	addr   string // the listener's host:port
	opener *fakeOpener
	h      *handler
	front  *frontDoor
	client *http.Client // HTTP/1.1
	logs   *testlog.Buffer
	reg    *prometheus.Registry // the handler's metrics
}

// newTestEdge starts the handler for cfg (testConfig when nil) with relay
// serving every stream. The server speaks HTTP/1.1 and h2c.
func newTestEdge(t *testing.T, cfg *Config, relay relayFunc) *testEdge {
	e, _ := newEdgeWithListener(t, cfg, 1<<20, testTimeout, relay)
	return e
}

// newEdgeWithListener is newTestEdge with its clientListener, which caps
// the connections at maxConns and gives each the send timeout.
func newEdgeWithListener(t *testing.T, cfg *Config, maxConns int, sendTimeout time.Duration, relay relayFunc) (*testEdge, *clientListener) {
	t.Helper()
	if cfg == nil {
		cfg = testConfig()
	}
	o := &fakeOpener{t: t, relay: relay, peer: &tunnel.Peer{Name: "relay-1", Upstreams: []string{"openai"}}}
	logs := &testlog.Buffer{}
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	c, err := populated(cfg, "edge handler", (*Config).validateAccess)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	h, err := newHandler(c, o, logger, reg)
	if err != nil {
		t.Fatalf("newHandler: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &clientListener{Listener: ln, max: int64(maxConns), sendTimeout: sendTimeout}
	front := newFrontDoor(h, c, logger)
	served := make(chan error, 1)
	go func() { served <- front.serve(cl) }()
	tr := &http.Transport{}
	t.Cleanup(func() {
		// Relays end on their own first: the client may have read a whole
		// Content-Length body before the edge read END.
		o.wait()
		tr.CloseIdleConnections()
		front.close()
		if err := <-served; err != nil {
			t.Errorf("serving the test edge: %v", err)
		}
	})
	addr := ln.Addr().String()
	return &testEdge{URL: "http://" + addr, addr: addr, opener: o, h: h, front: front,
		client: &http.Client{Transport: tr}, logs: logs, reg: reg}, cl
}

// h2cClient returns a client that speaks HTTP/2 without TLS.
func h2cClient(t *testing.T) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// do sends a request with alice's key and returns the response with its
// body read.
func (e *testEdge) do(t *testing.T, method, path string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req := newRequest(t, t.Context(), method, e.URL+path, body)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, b
}

// checkErrorJSON checks an OpenAI-shaped error answer.
func checkErrorJSON(t *testing.T, resp *http.Response, body []byte, status int, typ, code string) string {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var got struct {
		Error map[string]any `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if len(got.Error) != 4 {
		t.Errorf("error fields = %v, want message, type, param, code", got.Error)
	}
	if p, ok := got.Error["param"]; !ok || p != nil {
		t.Errorf("param = %v, want null", p)
	}
	if got.Error["type"] != typ || got.Error["code"] != code {
		t.Errorf("type, code = %v, %v; want %s, %s", got.Error["type"], got.Error["code"], typ, code)
	}
	msg, _ := got.Error["message"].(string)
	if !strings.Contains(msg, "airlock") {
		t.Errorf("message %q does not name airlock", msg)
	}
	return msg
}

// isReset reports whether err carries a RESET with code.
func isReset(err error, code proto.ResetCode) bool {
	return errors.Is(err, &proto.ResetError{Code: code})
}
