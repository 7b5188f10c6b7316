package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

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
	// From here the copiers see an edge abort in their own reads and
	// writes; the stream's context also ends at a clean half-close, which
	// must not cut the other direction.
	ex.stopWatch()
	// The transport no longer watches the context once it handed the
	// connection over (golang.org/issue/35559).
	stop := context.AfterFunc(upCtx, func() { conn.Close() })
	defer stop()

	errc := make(chan copyResult, 2)
	go edgeToUpstream{r: ex.r, conn: conn, n: &ex.bytesIn}.copy(errc)
	go upstreamToEdge{w: ex.w, conn: conn, n: &ex.bytesOut}.copy(errc)
	first := <-errc
	if first.err != nil {
		conn.Close()
		ex.s.Abort(first.code)
	}
	second := <-errc
	conn.Close()
	switch {
	case first.err != nil:
		ex.upgradeFailed(upCtx, first)
	case second.err != nil:
		ex.s.Abort(second.code)
		ex.upgradeFailed(upCtx, second)
	default:
		ex.result = "ok"
		ex.s.Close()
	}
}

// upgradeFailed records why an upgraded exchange ended abnormally.
func (ex *exchange) upgradeFailed(upCtx context.Context, r copyResult) {
	ex.errDetail = r.err.Error()
	switch {
	case upCtx.Err() != nil:
		ex.result = "session_closed"
	case r.code == proto.CodeUpstreamError:
		ex.result = "upstream_error"
	default:
		ex.result = "edge_canceled"
	}
}

// copyBufPool holds the buffers of edgeToUpstream copiers.
var copyBufPool = sync.Pool{New: func() any {
	b := make([]byte, proto.CopyBufferSize)
	return &b
}}

// copyResult is how one direction of an upgraded exchange ended: err is nil
// after a clean half-close, and code is the reset code to abort the stream
// with otherwise.
type copyResult struct {
	err  error
	code proto.ResetCode
}

// edgeToUpstream copies the edge's DATA frames to the upstream connection;
// the edge's END half-closes the connection.
type edgeToUpstream struct {
	r    *proto.Reader
	conn io.ReadWriteCloser
	n    *atomic.Int64
}

func (c edgeToUpstream) copy(errc chan<- copyResult) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := c.r.Read(buf)
		if n > 0 {
			c.n.Add(int64(n))
			if _, werr := c.conn.Write(buf[:n]); werr != nil {
				errc <- copyResult{err: fmt.Errorf("writing upstream: %w", werr), code: proto.CodeUpstreamError}
				return
			}
		}
		if rerr == io.EOF {
			if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
				// Best effort: where the connection cannot half-close,
				// the upgraded protocol has its own close handshake.
				cw.CloseWrite()
			}
			errc <- copyResult{}
			return
		}
		if rerr != nil {
			code := proto.CodeCancel
			if errors.Is(rerr, proto.ErrProtocol) {
				code = proto.CodeProtocol
			}
			errc <- copyResult{err: fmt.Errorf("reading edge: %w", rerr), code: code}
			return
		}
	}
}

// upstreamToEdge copies the upstream connection to DATA frames, one per read;
// the upstream's EOF becomes END.
type upstreamToEdge struct {
	w    *proto.Writer
	conn io.ReadWriteCloser
	n    *atomic.Int64
}

func (c upstreamToEdge) copy(errc chan<- copyResult) {
	n, err := c.w.ReadFrom(c.conn)
	c.n.Add(n)
	var se *proto.SourceError
	switch {
	case errors.As(err, &se):
		errc <- copyResult{err: err, code: proto.CodeUpstreamError}
	case err != nil:
		errc <- copyResult{err: err, code: proto.CodeCancel}
	default:
		if err := c.w.End(nil); err != nil {
			errc <- copyResult{err: err, code: proto.CodeCancel}
			return
		}
		errc <- copyResult{}
	}
}
