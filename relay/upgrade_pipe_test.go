package relay

import (
	"io"
	"net/http"
	"testing"

	"github.com/airlock-proxy/airlock/internal/testkit/testlog"

	"github.com/airlock-proxy/airlock/proto"
)

// switchedEcho starts an exchange on the echoing upstream and reads the 101.
func switchedEcho(t *testing.T) (*testEdge, *testlog.Buffer) {
	t.Helper()
	h, logs := newTestHandler(t, testConfig(upstreamConfig("openai", startEchoUpgrade(t, make(chan http.Header, 1)))))
	e := serve(t, h, testPeer())
	if err := e.w.WriteRequestHead(upgradeHead()); err != nil {
		t.Fatal(err)
	}
	if head := e.readHead(); head.Status != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d, want 101", head.Status)
	}
	return e, logs
}

// TestUpgradeLogCountsBytes: the log line of an upgraded exchange counts the
// bytes that crossed each way.
func TestUpgradeLogCountsBytes(t *testing.T) {
	e, logs := switchedEcho(t)
	const msg = "ping pong"
	go e.w.Write([]byte(msg))
	var echo []byte
	for len(echo) < len(msg) {
		b, err := e.readOnce()
		if err != nil {
			t.Fatalf("reading echo: %v", err)
		}
		echo = append(echo, b...)
	}
	if err := within(t, defaultWait, func() error { return e.w.End(nil) }); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(e.r); err != nil || len(rest) != 0 {
		t.Fatalf("after half-close: %q, %v; want a clean END", rest, err)
	}
	<-e.done
	line := lastLogLine(t, logs)
	for k, want := range map[string]any{"result": "ok", "bytes_in": float64(len(msg)), "bytes_out": float64(len(msg))} {
		if line[k] != want {
			t.Errorf("log %s = %v, want %v", k, line[k], want)
		}
	}
}

// TestUpgradeEdgeProtocolErrorIsReset: a malformed frame from the edge
// after the 101 resets the stream with code protocol_error, and the
// upstream connection is closed.
func TestUpgradeEdgeProtocolErrorIsReset(t *testing.T) {
	e, logs := switchedEcho(t)
	// A second HEAD where only DATA, END or RESET may come.
	go proto.NewWriter(e.s, proto.Limits{}).WriteRequestHead(upgradeHead())
	var err error
	for err == nil {
		_, err = e.readOnce()
	}
	if !isReset(err, proto.CodeProtocol) {
		t.Fatalf("got %v, want a RESET with code protocol_error", err)
	}
	<-e.done
	if line := lastLogLine(t, logs); line["result"] != "edge_canceled" {
		t.Errorf("log result = %v, want edge_canceled", line["result"])
	}
}
