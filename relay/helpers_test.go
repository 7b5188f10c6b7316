package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/testkit/testlog"

	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
	"github.com/airlock-proxy/airlock/tunnel/tunneltest"
)

// testKey is the upstream key the relay holds in tests. No test output,
// error or log may ever contain it.
const testKey = "sk-relay-upstream-SECRET-0123456789abcdef"

// defaultWait bounds every wait in tests that should take milliseconds.
const defaultWait = 5 * time.Second

// clientKey is what a client sent as its own credential.
const clientKey = "sk-airlock-client-credential"

// fakeFingerprint returns a well-formed key fingerprint derived from seed.
func fakeFingerprint(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:])
}

var testEdgeKey = fakeFingerprint("edge office")

// testPeer is the edge of every exchange test, as the tunnel server would
// describe it.
func testPeer() *tunnel.Peer {
	return &tunnel.Peer{Name: "office", Key: testEdgeKey, SessionID: "sess-1", Transport: "pipe"}
}

// upstreamConfig is an upstream at srvURL (an httptest server URL) with the
// test key and the /v1 version prefix.
func upstreamConfig(name, srvURL string) UpstreamConfig {
	return UpstreamConfig{Name: name, BaseURL: srvURL + "/v1", Key: testKey}
}

// testConfig is a relay config with one edge (allowed everything) and ups.
func testConfig(ups ...UpstreamConfig) *Config {
	return &Config{
		KeyFile:   "unused.key",
		Edges:     []EdgeConfig{{Name: "office", Key: testEdgeKey}},
		Upstreams: ups,
	}
}

// newTestHandler builds a Handler whose logs go to the returned buffer (JSON).
func newTestHandler(t *testing.T, cfg *Config) (*Handler, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	h, err := NewHandler(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	t.Cleanup(h.closeIdle)
	t.Cleanup(func() {
		if s := logs.String(); bytes.Contains([]byte(s), []byte(testKey)) {
			t.Errorf("logs contain the upstream key:\n%s", s)
		}
	})
	return h, logs
}

// startUpstream runs handler as an upstream on loopback: HTTP/1.1 in clear,
// or over TLS offering HTTP/2 and HTTP/1.1 (trustUpstream then makes the
// handler trust the test CA).
func startUpstream(t *testing.T, tls bool, handler http.HandlerFunc) *httptest.Server {
	t.Helper()
	if !tls {
		srv := httptest.NewServer(handler)
		t.Cleanup(srv.Close)
		return srv
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// trustUpstream makes h's clients for the named upstream trust srv's test
// certificate; with h2, the upstream is called as with http2 = true.
func trustUpstream(h *Handler, name string, srv *httptest.Server, h2 bool) {
	if srv.TLS == nil {
		return
	}
	up := h.peers.Load().upstreams[name]
	tr := up.transport
	tr.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	up.pool.Close()
	up.pool = nil
	if !h2 {
		up.pool = newPool(up.base, tr.ResponseHeaderTimeout, tr.TLSClientConfig.RootCAs)
	}
}

// testEdge is the edge side of one exchange over an in-memory stream, with
// ServeStream running on the other side.
type testEdge struct {
	t       *testing.T
	s       tunnel.Stream
	r       *proto.Reader
	w       *proto.Writer
	done    chan struct{} // closed when ServeStream returned
	sendErr chan error
}

// serve starts ServeStream for peer and returns the edge side.
func serve(t *testing.T, h *Handler, peer *tunnel.Peer) *testEdge {
	t.Helper()
	relayEnd, edgeEnd := tunneltest.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	e := &testEdge{
		t:       t,
		s:       edgeEnd,
		r:       proto.NewReader(edgeEnd, proto.Limits{}),
		w:       proto.NewWriter(edgeEnd, proto.Limits{}),
		done:    make(chan struct{}),
		sendErr: make(chan error, 1),
	}
	go func() {
		defer close(e.done)
		h.ServeStream(ctx, peer, relayEnd)
	}()
	t.Cleanup(func() {
		select {
		case <-e.done:
		case <-time.After(5 * time.Second):
			t.Errorf("ServeStream did not return")
			cancel()
			<-e.done
		}
		cancel()
		edgeEnd.Close()
	})
	return e
}

// send writes head, body (if any) and END in a goroutine, as an edge does
// while it reads the response.
func (e *testEdge) send(head *proto.RequestHead, body io.Reader) {
	go func() {
		e.sendErr <- func() error {
			if err := e.w.WriteRequestHead(head); err != nil {
				return err
			}
			if body != nil {
				if _, err := io.Copy(e.w, body); err != nil {
					return err
				}
			}
			return e.w.End(nil)
		}()
	}()
}

// response reads the whole response: head, body and the error that ended it
// (nil after END).
func (e *testEdge) response() (*proto.ResponseHead, []byte, error) {
	e.t.Helper()
	type result struct {
		head *proto.ResponseHead
		body []byte
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		head, err := e.r.ReadResponseHead()
		if err != nil {
			ch <- result{err: err}
			return
		}
		body, err := io.ReadAll(e.r)
		ch <- result{head, body, err}
	}()
	select {
	case res := <-ch:
		return res.head, res.body, res.err
	case <-time.After(5 * time.Second):
		e.t.Fatalf("no response within 5s")
		return nil, nil, nil
	}
}

// readHead reads the response head within 5s.
func (e *testEdge) readHead() *proto.ResponseHead {
	e.t.Helper()
	var head *proto.ResponseHead
	err := within(e.t, 5*time.Second, func() (err error) {
		head, err = e.r.ReadResponseHead()
		return err
	})
	if err != nil {
		e.t.Fatalf("reading response head: %v", err)
	}
	return head
}

// readOnce does one Read of the response body (at most one DATA frame)
// within 5s.
func (e *testEdge) readOnce() ([]byte, error) {
	e.t.Helper()
	buf := make([]byte, 64<<10)
	var n int
	err := within(e.t, 5*time.Second, func() (err error) {
		n, err = e.r.Read(buf)
		return err
	})
	return buf[:n], err
}

// within runs f and fails the test if it does not return within d.
func within(t *testing.T, d time.Duration, f func() error) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("timed out after %v", d)
		return nil
	}
}

// errorObject is the decoded "error" member of an OpenAI error body.
type errorObject struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code"`
}

// apiErrorOf decodes an OpenAI-shaped error body.
func apiErrorOf(t *testing.T, head *proto.ResponseHead, body []byte) errorObject {
	t.Helper()
	if ct := head.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if head.ContentLength != int64(len(body)) {
		t.Errorf("ContentLength = %d, body has %d bytes", head.ContentLength, len(body))
	}
	var eb struct {
		Error struct {
			errorObject
			Param json.RawMessage `json:"param"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if string(eb.Error.Param) != "null" {
		t.Errorf("param = %s, want null", eb.Error.Param)
	}
	if bytes.Contains(body, []byte(testKey)) {
		t.Errorf("error body contains the upstream key: %s", body)
	}
	return eb.Error.errorObject
}

// isReset reports whether err is a RESET with code.
func isReset(err error, code proto.ResetCode) bool {
	var rst *proto.ResetError
	return errors.As(err, &rst) && rst.Code == code
}

// getHead is a bodiless GET of path.
func getHead(path string) *proto.RequestHead {
	return &proto.RequestHead{
		Method:        http.MethodGet,
		Path:          path,
		Header:        http.Header{},
		RequestID:     "req-get",
		Client:        "app",
		ContentLength: 0,
	}
}
