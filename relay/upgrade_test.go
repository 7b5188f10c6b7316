package relay

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/airlock-proxy/airlock/proto"
)

// startEchoUpgrade runs an upstream that answers an upgrade to "websocket"
// with 101 and then echoes raw bytes until the relay half-closes, then
// closes. It is not a WebSocket: the relay only pipes bytes.
func startEchoUpgrade(t *testing.T, sawHeader chan<- http.Header) string {
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		sawHeader <- r.Header.Clone()
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Extra: 1\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw) // echo until the relay's half-close
	})
	return srv.URL
}

func upgradeHead() *proto.RequestHead {
	return &proto.RequestHead{
		Method: http.MethodGet,
		Path:   "/realtime?model=gpt-realtime",
		Header: http.Header{
			"Connection":            {"Upgrade"},
			"Upgrade":               {"websocket"},
			"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
			"Sec-Websocket-Version": {"13"},
		},
		RequestID:     "req-ws",
		ContentLength: 0,
	}
}

func TestUpgradeRoundTrip(t *testing.T) {
	saw := make(chan http.Header, 1)
	h, logs := newTestHandler(t, testConfig(upstreamConfig("openai", startEchoUpgrade(t, saw))))
	e := serve(t, h, testPeer())
	// No END after an upgrade request's head: the edge's bytes follow the 101.
	if err := e.w.WriteRequestHead(upgradeHead()); err != nil {
		t.Fatal(err)
	}
	head := e.readHead()
	if head.Status != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d, want 101", head.Status)
	}
	if head.Header.Get("Upgrade") != "websocket" || head.Header.Get("Connection") != "Upgrade" || head.Header.Get("X-Extra") != "1" {
		t.Errorf("101 head headers = %v", head.Header)
	}
	sent := <-saw
	if sent.Get("Authorization") != "Bearer "+testKey || sent.Get("Sec-Websocket-Key") == "" {
		t.Errorf("upstream saw headers %v, want the relay's key and the WebSocket headers", sent)
	}
	for _, msg := range []string{"hello", "second message"} {
		go e.w.Write([]byte(msg))
		got := make([]byte, 0, len(msg))
		for len(got) < len(msg) {
			b, err := e.readOnce()
			if err != nil {
				t.Fatalf("reading echo: %v", err)
			}
			got = append(got, b...)
		}
		if string(got) != msg {
			t.Errorf("echo = %q, want %q", got, msg)
		}
	}
	// The edge half-closes; the upstream sees EOF, closes, and the relay
	// ends its direction with END.
	if err := within(t, defaultWait, func() error { return e.w.End(nil) }); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(e.r)
	if err != nil || len(rest) != 0 {
		t.Fatalf("after half-close: %q, %v; want a clean END", rest, err)
	}
	<-e.done
	if line := lastLogLine(t, logs); line["result"] != "ok" || line["status"] != float64(101) {
		t.Errorf("log result/status = %v/%v, want ok/101", line["result"], line["status"])
	}
}

func TestUpgradeEdgeAbortClosesUpstream(t *testing.T) {
	closed := make(chan struct{})
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		io.Copy(io.Discard, brw) // returns when the relay closes the connection
		close(closed)
	})
	h, _ := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
	e := serve(t, h, testPeer())
	if err := e.w.WriteRequestHead(upgradeHead()); err != nil {
		t.Fatal(err)
	}
	if head := e.readHead(); head.Status != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d, want 101", head.Status)
	}
	e.s.Abort(proto.CodeCancel)
	if err := within(t, defaultWait, func() error { <-closed; return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestUpgradeUpstreamDiesIsReset(t *testing.T) {
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhi")
		brw.Flush()
		// An abortive close (RST), as when the upstream crashes.
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	})
	h, _ := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
	e := serve(t, h, testPeer())
	if err := e.w.WriteRequestHead(upgradeHead()); err != nil {
		t.Fatal(err)
	}
	e.readHead()
	var err error
	for err == nil {
		_, err = e.readOnce()
	}
	// A reset connection must not look like a clean end.
	if !isReset(err, proto.CodeUpstreamError) {
		t.Fatalf("got %v, want a RESET with code upstream_error", err)
	}
}

func TestUpgradeMismatchIs502(t *testing.T) {
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
		brw.Flush()
		bufio.NewReader(conn).ReadByte()
	})
	h, _ := newTestHandler(t, testConfig(upstreamConfig("openai", srv.URL)))
	e := serve(t, h, testPeer())
	e.send(upgradeHead(), nil)
	head, body, err := e.response()
	if err != nil {
		t.Fatal(err)
	}
	if head.Status != http.StatusBadGateway {
		t.Fatalf("status = %d, want 502", head.Status)
	}
	if got := apiErrorOf(t, head, body); got.Code != "upstream_error" {
		t.Errorf("code = %q, want upstream_error", got.Code)
	}
}
