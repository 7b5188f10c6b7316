package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/airlock-proxy/airlock/internal/hopheader"

	"github.com/airlock-proxy/airlock/proto"
)

// errShuttingDown ends an upgrade that raced with shutdown.
var errShuttingDown = errors.New("edge is shutting down")

// serveUpgrade turns the exchange into a byte pipe after the relay answered
// an upgrade request with 101: it takes over the client connection, writes
// the 101, and copies bytes both ways as DATA frames until both directions
// have ended. END is a half-close in either direction.
func (ex *exchange) serveUpgrade(resp *proto.ResponseHead) {
	got := resp.Header.Get("Upgrade")
	if !strings.EqualFold(got, ex.upgrade) || !proto.Printable(got) {
		ex.failBeforeHead(fmt.Errorf("relay switched protocols to %q, the client asked for %q: %w",
			got, ex.upgrade, proto.ErrProtocol))
		return
	}
	conn, brw, err := ex.rc.Hijack()
	if err != nil {
		// HTTP/2 connections cannot be hijacked (and carry no
		// Connection: Upgrade).
		ex.failBeforeHead(fmt.Errorf("taking over the client connection: %w", err))
		return
	}
	ex.status = http.StatusSwitchingProtocols
	if !ex.h.upgrades.add(conn) {
		conn.Close()
		ex.release(proto.CodeCancel)
		ex.err = errShuttingDown
		return
	}
	defer ex.h.upgrades.remove(conn)

	h := resp.Header
	hopheader.Remove(h)
	h.Del("Content-Length")
	ex.setEdgeHeaders(h)
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", got)
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	h.Write(brw)
	brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		ex.err = fmt.Errorf("writing the 101 response: %w", err)
		conn.Close()
		ex.release(proto.CodeCancel)
		return
	}
	// Bytes the client sent right after its request head are already in
	// the server's read buffer; they go first (Caddy issue 6273). From
	// then on the connection is read directly.
	var early []byte
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ = brw.Reader.Peek(n)
	}

	// From here the pipe owns conn and its goroutines; a failure of
	// either direction aborts the stream, which ends the other.
	pipe := &proto.Pipe{Conn: conn, Early: early, W: ex.pw, R: ex.pr,
		Abort: func(error) { ex.s.Abort(proto.CodeCancel) }}
	sent, received := pipe.Run()
	ex.err = errors.Join(sent.Err, received.Err)
	code := noReset
	if ex.err != nil {
		code = proto.CodeCancel
	}
	ex.release(code)
	ex.bytesIn += sent.N
	ex.bytesOut += received.N
}

// upgradeTracker registers hijacked client connections, which http.Server
// no longer tracks, so that shutdown can close them and wait for their
// exchanges.
type upgradeTracker struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// add registers c; it returns false once shutdown has begun.
func (t *upgradeTracker) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.conns == nil {
		t.conns = make(map[net.Conn]struct{})
	}
	t.conns[c] = struct{}{}
	t.wg.Add(1)
	return true
}

// remove unregisters c when its exchange is over.
func (t *upgradeTracker) remove(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	t.wg.Done()
}

// closeAndWait closes every registered connection, refuses new ones and
// waits for their exchanges to end, or for ctx.
func (t *upgradeTracker) closeAndWait(ctx context.Context) error {
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	done := make(chan struct{})
	go func() {
		t.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("closing upgraded connections: %w", ctx.Err())
	}
}
