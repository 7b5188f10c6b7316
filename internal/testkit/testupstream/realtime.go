package testupstream

import (
	"net/http"

	"github.com/coder/websocket"
)

// maxRealtimeMessage bounds one message of the realtime echo.
const maxRealtimeMessage = 1 << 20

// realtime serves GET /v1/realtime as the Realtime API does: a WebSocket.
// Each message the client sends comes back unchanged, with its type, until
// the client closes; a request that is no WebSocket handshake gets a 426
// from the WebSocket library. It lets tests check airlock's upgrade path end
// to end, in both directions at once.
func (s *Server) realtime(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the client
	}
	defer c.CloseNow()
	c.SetReadLimit(maxRealtimeMessage)
	ctx := r.Context()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}
