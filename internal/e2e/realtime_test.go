package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-proxy/airlock/internal/testkit/testupstream"
)

// TestRealtimeWebSocket: a WebSocket (the Realtime API's transport) goes
// through edge, tunnel and relay over both transports, messages flowing
// both ways at once; the upstream sees the relay's key, not the client's.
func TestRealtimeWebSocket(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		st := startStackOver(t, transport, testupstream.Options{})
		drainRequests(st.Upstream)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		url := "ws" + strings.TrimPrefix(st.EdgeURL, "http") + "/realtime?model=gpt-4o-realtime-preview"
		c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer " + st.ClientKey}},
		})
		if err != nil {
			t.Fatalf("dial %s: %v", url, err)
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d, want 101", resp.StatusCode)
		}
		info := <-st.Upstream.Requests()
		if got := info.Header.Get("Authorization"); got == "Bearer "+st.ClientKey || got == "" {
			t.Errorf("upstream saw Authorization %q: want the relay's key, never the client's", got)
		}

		// Writes and reads overlap: the pipe is full duplex.
		const n = 50
		errc := make(chan error, 1)
		go func() {
			for i := range n {
				if err := c.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf(`{"type":"event","n":%d}`, i))); err != nil {
					errc <- err
					return
				}
			}
			errc <- c.Write(ctx, websocket.MessageBinary, make([]byte, 256<<10))
		}()
		for i := range n {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if want := fmt.Sprintf(`{"type":"event","n":%d}`, i); typ != websocket.MessageText || string(msg) != want {
				t.Fatalf("message %d: %v %q, want text %q", i, typ, msg, want)
			}
		}
		typ, msg, err := c.Read(ctx)
		if err != nil || typ != websocket.MessageBinary || len(msg) != 256<<10 {
			t.Fatalf("binary message: %v, %d bytes, %v", typ, len(msg), err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
			t.Errorf("close: %v", err)
		}
	})
}
