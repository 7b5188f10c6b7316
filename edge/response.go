// The response: the relay's head and body written to the client frame by
// frame, flushed whenever no further frame is at hand.

package edge

import (
	"errors"
	"fmt"
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
	if !ex.pr.Ready() {
		// The body's first frame has not arrived: the head goes out
		// now. Otherwise it leaves with that frame, as frames that
		// arrived together do (proto.Reader.WriteTo).
		ex.rc.Flush()
	}
}

// copyResponse writes the response body to the client and flushes whenever
// no further frame is at hand (proto.Reader.WriteTo): each DATA frame
// reaches the client as soon as it arrives. On a failure it aborts the
// client connection (it does not return).
func (ex *exchange) copyResponse() {
	n, err := ex.pr.WriteTo(&clientWriter{ex: ex})
	ex.bytesOut += n
	if err == nil {
		return
	}
	if sink, ok := errors.AsType[*proto.SinkError](err); ok {
		ex.abortAfterHead(proto.CodeCancel, fmt.Errorf("%w: %w", errClientWrite, sink.Err))
	}
	code := proto.CodeCancel
	if errors.Is(err, proto.ErrProtocol) {
		code = proto.CodeProtocol
	}
	ex.abortAfterHead(code, fmt.Errorf("reading response: %w", err))
}

// clientWriter is the response body's way to the client: it renews
// HTTP/2's write deadline before each write and meters what was written.
// Its Flush is the ResponseWriter's, which proto.Reader.WriteTo calls when
// no further frame is at hand.
type clientWriter struct {
	ex   *exchange
	send renewal // HTTP/2's write deadline
}

func (w *clientWriter) Write(p []byte) (int, error) {
	ex := w.ex
	if ex.r.ProtoMajor == 2 {
		// An HTTP/1 connection has this bound in clientConn, which
		// counts every byte of progress; an HTTP/2 stream can stall on
		// its own flow-control window while its connection flows, so it
		// gets the stream's write deadline: a write may take at most
		// client_send_timeout.
		w.send.push(ex.h.sendTimeout, ex.rc.SetWriteDeadline)
	}
	n, err := ex.w.Write(p)
	if ex.meter != nil {
		ex.meter.Write(p[:n])
	}
	return n, err
}

// Flush sends what was written to the client.
func (w *clientWriter) Flush() error { return w.ex.rc.Flush() }

// errClientWrite is wrapped by the error of an exchange whose client could
// not take its response: gone, reset, or stalled past client_send_timeout.
var errClientWrite = errors.New("writing the response to the client")
