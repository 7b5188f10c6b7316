package relay

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/airlock-proxy/airlock/internal/hopheader"

	"github.com/airlock-proxy/airlock/proto"
)

// switchProtocols serves a 101 answer to an upgrade request (WebSocket, e.g.
// the Realtime API): after the 101 head, the stream is a full-duplex byte
// pipe of DATA frames in both directions, END being a half-close.
func (ex *exchange) switchProtocols(upCtx context.Context, resp *http.Response, reqUpgrade string) {
	respUpgrade, _ := hopheader.UpgradeType(resp.Header)
	if reqUpgrade == "" || !proto.Printable(respUpgrade) || !strings.EqualFold(reqUpgrade, respUpgrade) {
		ex.fail(errUpstreamBadSwitch(ex.upstream))
		return
	}
	conn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		ex.errDetail = "101 response body is not writable"
		ex.fail(errUpstreamBadSwitch(ex.upstream))
		return
	}
	ex.status = resp.StatusCode
	head := &proto.ResponseHead{
		Status:        resp.StatusCode,
		Header:        responseHeader(resp, respUpgrade),
		ContentLength: -1,
	}
	if err := ex.w.WriteResponseHead(head); err != nil {
		conn.Close()
		ex.edgeGone(err)
		return
	}
	// From here the pipe sees an edge abort in its own reads and
	// writes; the stream's context also ends at a clean half-close, which
	// must not cut the other direction.
	ex.stopWatch()
	// The transport no longer watches the context once it handed the
	// connection over (golang.org/issue/35559).
	stop := context.AfterFunc(upCtx, func() { conn.Close() })
	defer stop()

	// The first direction to fail aborts the stream with a code that
	// says which side failed; Run calls Abort on this goroutine.
	var failed error
	pipe := &proto.Pipe{Conn: conn, W: ex.w, R: ex.r, Abort: func(err error) {
		failed = err
		ex.release(upgradeResetCode(err))
	}}
	sent, received := pipe.Run()
	ex.bytesIn.Add(received.N)
	ex.bytesOut.Add(sent.N)
	if failed != nil {
		ex.upgradeFailed(upCtx, failed)
		return
	}
	ex.result = "ok"
	ex.release(noReset)
}

// upgradeResetCode is the code a failed direction of an upgraded exchange
// aborts the stream with: a failure to read or write the upstream
// connection is the upstream's, a malformed frame the edge's protocol
// error, and anything else (a reset or a cut stream) the edge's going away.
func upgradeResetCode(err error) proto.ResetCode {
	_, source := errors.AsType[*proto.SourceError](err)
	_, sink := errors.AsType[*proto.SinkError](err)
	switch {
	case source || sink:
		return proto.CodeUpstreamError
	case errors.Is(err, proto.ErrProtocol):
		return proto.CodeProtocol
	}
	return proto.CodeCancel
}

// upgradeFailed records why an upgraded exchange ended abnormally.
func (ex *exchange) upgradeFailed(upCtx context.Context, err error) {
	ex.errDetail = err.Error()
	switch {
	case upCtx.Err() != nil:
		ex.result = "session_closed"
	case upgradeResetCode(err) == proto.CodeUpstreamError:
		ex.result = "upstream_error"
	default:
		ex.result = "edge_canceled"
	}
}
