// The response: the relay's head and body written to the client frame by
// frame, flushed whenever no further frame is at hand.

package edge

import (
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/airlock-proxy/airlock/edge/usage"
	"github.com/airlock-proxy/airlock/internal/hopheader"

	"github.com/airlock-proxy/airlock/proto"
)

// writeResponseHead copies the relay's head to the client and flushes it,
// so that a client waiting for an event stream sees the headers at once.
func (ex *exchange) writeResponseHead(resp *proto.ResponseHead) {
	src := resp.Header
	hopheader.Remove(src)
	// The head's ContentLength is the one source of the length.
	src.Del("Content-Length")
	dst := ex.w.Header()
	for k, vv := range src {
		dst[k] = vv
	}
	ex.setEdgeHeaders(dst)
	ex.overhead = max(ex.ttfb-resp.UpstreamTime, 0)
	dst.Set(headerOverhead, formatMillis(ex.overhead))
	if isEventStream(src.Get("Content-Type")) {
		// Tell caches and buffering proxies in front of the edge (nginx
		// honours X-Accel-Buffering) to pass events through at once.
		dst.Set("Cache-Control", "no-cache")
		dst.Set("X-Accel-Buffering", "no")
	}
	if resp.ContentLength >= 0 {
		dst.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	if _, ok := dst["Content-Type"]; !ok {
		// A nil value keeps net/http from sniffing a Content-Type the
		// upstream never sent.
		dst["Content-Type"] = nil
	}
	ex.status = resp.Status
	ex.upstreamRequestID = src.Get("X-Request-Id")
	if resp.Status >= 200 && resp.Status < 300 {
		ex.meter = usage.NewMeter(src.Get("Content-Type"))
	}
	ex.w.WriteHeader(resp.Status)
	ex.flushUnlessMoreIsHere()
}

// flushUnlessMoreIsHere flushes what was written to the client unless the
// next frame has already arrived: then it goes out in the same write. Frames
// that arrived together leave together, and no frame ever waits for a later
// one, so an SSE event is never held back.
func (ex *exchange) flushUnlessMoreIsHere() error {
	if ex.pr.Ready() {
		return nil
	}
	return ex.rc.Flush()
}

// copyResponse writes the response body to the client and flushes whenever
// no further frame is at hand: each DATA frame reaches the client as soon as
// it arrives. On a failure it aborts the client connection (it does not
// return).
func (ex *exchange) copyResponse() {
	cb := proto.NewCopyBuffer()
	defer cb.Release()
	var send renewal // HTTP/2's write deadline
	for {
		buf := cb.Bytes()
		n, rerr := ex.pr.Read(buf)
		if n > 0 {
			if ex.r.ProtoMajor == 2 {
				// An HTTP/1 connection has this bound in clientConn,
				// which counts every byte of progress; an HTTP/2
				// stream can stall on its own flow-control window
				// while its connection flows, so it gets the stream's
				// write deadline: a write may take at most
				// client_send_timeout.
				send.push(ex.h.sendTimeout, ex.rc.SetWriteDeadline)
			}
			nw, werr := ex.w.Write(buf[:n])
			ex.bytesOut += int64(nw)
			if ex.meter != nil {
				ex.meter.Write(buf[:nw])
			}
			if werr == nil && nw != n {
				werr = io.ErrShortWrite
			}
			if werr == nil {
				werr = ex.flushUnlessMoreIsHere()
			}
			cb.Grow(n)
			if werr != nil {
				ex.abortAfterHead(proto.CodeCancel, fmt.Errorf("%w: %w", errClientWrite, werr))
			}
		}
		if rerr == io.EOF {
			return
		}
		if rerr != nil {
			code := proto.CodeCancel
			if errors.Is(rerr, proto.ErrProtocol) {
				code = proto.CodeProtocol
			}
			ex.abortAfterHead(code, fmt.Errorf("reading response: %w", rerr))
		}
	}
}

// errClientWrite is wrapped by the error of an exchange whose client could
// not take its response: gone, reset, or stalled past client_send_timeout.
var errClientWrite = errors.New("writing the response to the client")
