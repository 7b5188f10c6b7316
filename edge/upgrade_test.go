package edge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

// dialUpgrade sends a WebSocket upgrade request, plus early bytes right
// behind its head, over a raw connection and reads the response head.
func dialUpgrade(t *testing.T, e *testEdge, early string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(testTimeout))
	fmt.Fprintf(conn, "GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: x\r\n"+
		"Authorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n%s", aliceKey, early)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return conn, br, resp
}

// upgradeRelay checks the upgrade head, switches protocols and echoes
// "pong" for every 4 bytes it gets; at the client's half-close it ends too.
func upgradeRelay(t *testing.T, r *fakeRelay) {
	h := r.head(t)
	if h.Header.Get("Connection") != "Upgrade" || h.Header.Get("Upgrade") != "websocket" ||
		h.Header.Get("Sec-Websocket-Key") == "" || h.Path != "/realtime?model=gpt-realtime" {
		t.Errorf("relay: upgrade head = %+v", h)
	}
	err := r.w.WriteResponseHead(&proto.ResponseHead{Status: 101, ContentLength: -1, Header: http.Header{
		"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Accept": {"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="},
	}})
	if err != nil {
		t.Errorf("relay: writing 101: %v", err)
		return
	}
	buf := make([]byte, 4)
	for {
		if _, err := io.ReadFull(r.r, buf); err != nil {
			if err != io.EOF {
				t.Errorf("relay: reading client bytes: %v", err)
			}
			break
		}
		fmt.Fprintf(r.w, "pong(%s)", buf)
	}
	r.w.End(nil)
}

func TestUpgrade(t *testing.T) {
	e := newTestEdge(t, nil, upgradeRelay)
	conn, br, resp := dialUpgrade(t, e, "EARL")
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" ||
		resp.Header.Get("Sec-Websocket-Accept") == "" || resp.Header.Get("Airlock-Request-Id") == "" {
		t.Fatalf("response = %d %v, want 101 with the relay's upgrade headers", resp.StatusCode, resp.Header)
	}
	// The bytes sent right behind the request head were forwarded first.
	if got := readN(t, br, len("pong(EARL)")); got != "pong(EARL)" {
		t.Errorf("got %q, want pong(EARL)", got)
	}
	io.WriteString(conn, "ping")
	if got := readN(t, br, len("pong(ping)")); got != "pong(ping)" {
		t.Errorf("got %q, want pong(ping)", got)
	}
	// Half-close: the relay gets END, ends its side, the edge closes.
	conn.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after half-close: %q, %v; want a clean EOF", rest, err)
	}
	// The access line counts the bytes that crossed each way, the early
	// ones included.
	line := upgradeAccessLine(t, e)
	for k, want := range map[string]any{
		"status": float64(101), "end": endComplete,
		"bytes_in": float64(len("EARLping")), "bytes_out": float64(len("pong(EARL)pong(ping)")),
	} {
		if line[k] != want {
			t.Errorf("access log %s = %v, want %v", k, line[k], want)
		}
	}
	if _, found := line["error"]; found {
		t.Errorf("access log error = %v, want none", line["error"])
	}
}

// upgradeAccessLine waits for the access line of the one exchange of e.
func upgradeAccessLine(t *testing.T, e *testEdge) map[string]any {
	t.Helper()
	waitAccessLines(t, e, 1)
	for _, l := range e.logs.Lines(t) {
		if l["msg"] == "request" {
			return l
		}
	}
	return nil
}

// TestUpgradeRelayResetClosesClient: a RESET from the relay after the 101
// cuts the client connection after the bytes sent before it, and the edge
// aborts its side of the stream.
func TestUpgradeRelayResetClosesClient(t *testing.T) {
	relayErr := make(chan error, 1)
	e := newTestEdge(t, nil, switchedRelay(relayErr, func(r *fakeRelay) {
		r.w.Write([]byte("hi"))
		r.w.Reset(proto.CodeUpstreamError, "upstream died")
	}))
	_, br, resp := dialUpgrade(t, e, "")
	if resp.StatusCode != 101 {
		t.Fatalf("status = %d, want 101", resp.StatusCode)
	}
	if got := readN(t, br, 2); got != "hi" {
		t.Errorf("got %q, want hi", got)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("client connection still open after the relay's RESET")
	}
	checkRelayCanceled(t, relayErr)
	line := upgradeAccessLine(t, e)
	if line["bytes_out"] != float64(2) {
		t.Errorf("access log bytes_out = %v, want 2", line["bytes_out"])
	}
	if msg, _ := line["error"].(string); !strings.Contains(msg, "upstream died") {
		t.Errorf("access log error = %q, want the relay's RESET", msg)
	}
}

// switchedRelay answers an upgrade with 101, runs then (if not nil), and
// reads the edge's direction to its end, sending how it ended to ended.
func switchedRelay(ended chan<- error, then func(r *fakeRelay)) relayFunc {
	return func(t *testing.T, r *fakeRelay) {
		r.head(t)
		r.w.WriteResponseHead(&proto.ResponseHead{Status: 101, ContentLength: -1, Header: http.Header{"Upgrade": {"websocket"}}})
		if then != nil {
			then(r)
		}
		_, err := io.ReadAll(r.r)
		ended <- err
	}
}

// checkRelayCanceled checks that the edge aborted the relay's stream with
// code cancel.
func checkRelayCanceled(t *testing.T, ended <-chan error) {
	t.Helper()
	select {
	case err := <-ended:
		if !isReset(err, proto.CodeCancel) {
			t.Errorf("relay read error = %v, want a reset with code cancel", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("relay stream not reset")
	}
}

func TestUpgradeRefused(t *testing.T) {
	e := newTestEdge(t, nil, func(t *testing.T, r *fakeRelay) {
		r.head(t)
		// The edge ends the request direction when no switch happens;
		// read it while answering, as the relay does.
		ended := make(chan error, 1)
		go func() {
			b, err := r.body()
			if err == nil && len(b) != 0 {
				err = fmt.Errorf("body %q", b)
			}
			ended <- err
		}()
		r.respond(t, 401, http.Header{"Content-Type": {"application/json"}}, `{"error":{}}`)
		if err := <-ended; err != nil {
			t.Errorf("relay: request direction: %v, want END and nothing else", err)
		}
	})
	_, _, resp := dialUpgrade(t, e, "")
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 401 || string(body) != `{"error":{}}` {
		t.Errorf("got %d %q, want the relay's 401", resp.StatusCode, body)
	}
}

func TestUpgradeClosedOnShutdown(t *testing.T) {
	relayErr := make(chan error, 1)
	e := newTestEdge(t, nil, switchedRelay(relayErr, nil))
	_, br, resp := dialUpgrade(t, e, "")
	if resp.StatusCode != 101 {
		t.Fatalf("status = %d, want 101", resp.StatusCode)
	}
	h := e.h
	if err := h.closeUpgraded(t.Context()); err != nil {
		t.Fatalf("closeUpgraded: %v", err)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("client connection still open after shutdown")
	}
	checkRelayCanceled(t, relayErr)
}

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v (got %q)", n, err, b)
	}
	return string(b)
}
