// The request body: read from the client with a bound on each wait, sent
// as DATA frames by a goroutine the exchange owns, ended with the trailers.

package edge

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/airlock-proxy/airlock/internal/clientheader"
	"github.com/airlock-proxy/airlock/internal/hopheader"

	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
)

// requestBodySender copies the client's request body into the stream as
// DATA frames, one per read of the body, then writes END with the request's
// trailers. It is a named type so that stack dumps show what it does.
type requestBodySender struct {
	pw   *proto.Writer
	s    tunnel.Stream
	body io.Reader
	r    *http.Request // for its trailers, valid after the body's EOF
	done chan struct{}

	// Set before done is closed.
	n   int64
	err error
}

func (b *requestBodySender) run() {
	defer close(b.done)
	b.n, b.err = b.pw.ReadFrom(b.body)
	if b.err == nil {
		// A write error means the relay stopped reading; the response
		// side sees the stream's state and decides.
		if b.err = b.pw.End(cleanTrailer(b.r.Trailer)); b.err == nil {
			finishRequest(b.s)
		}
		return
	}
	var se *proto.SourceError
	if errors.As(b.err, &se) {
		// The client's body failed (too large, client gone, malformed
		// chunking): the request is incomplete, so it must not reach the
		// upstream as if it were whole. RESET says so in-band; Abort
		// unblocks the response side.
		b.pw.Reset(proto.CodeCancel, "airlock edge: reading the request body failed")
		b.s.Abort(proto.CodeCancel)
	}
}

// wholeBodyMax bounds the request bodies that readWholeBody reads before
// the stream opens: most API calls (chat, embeddings) are this small, and
// the relay's upstream client sends as much with the request's head.
const wholeBodyMax = 64 << 10

// readWholeBody reads a request body of known length up to wholeBodyMax
// before a stream is opened for it. The request then leaves with its head
// and END in one write (one packet, one TLS record), and needs no goroutine
// to send its body (issue 9: most API calls are small POSTs); a client slow
// to send it holds no tunnel stream meanwhile. Each wait for the client's
// bytes is bounded by client_body_timeout. On failure it answers the client
// itself and returns false.
func (ex *exchange) readWholeBody() bool {
	r := ex.r
	body := make([]byte, r.ContentLength)
	src := &clientBody{r: r.Body, rc: ex.rc, timeout: ex.acc.bodyTimeout, eof: &ex.bodyEOF}
	n, err := io.ReadFull(src, body)
	ex.bytesIn += int64(n)
	if err == nil && !ex.bodyEOF.Load() {
		// The last bytes came without the end (HTTP/2 may send it in a
		// frame of its own): the body must end here.
		var one [1]byte
		if m, rerr := src.Read(one[:]); m > 0 {
			err = errors.New("the request body is longer than its Content-Length")
		} else if rerr != io.EOF {
			err = rerr
		}
	}
	if err == nil {
		ex.whole = body
		return true
	}
	ex.err = fmt.Errorf("reading the request body: %w", err)
	switch {
	case errors.Is(err, errBodyTimeout):
		ex.fail(ex.bodyStalled())
	case ex.r.Context().Err() != nil || errors.Is(err, io.ErrUnexpectedEOF):
		// The client left, or closed its side before the whole body.
		ex.status, ex.endReason = statusClientClosed, endClientCancel
	default:
		ex.fail(badRequest("airlock edge: reading the request body failed"))
	}
	return false
}

// errBodyTimeout is wrapped by the read error of a client that sent no
// bytes of its announced body for client_body_timeout.
var errBodyTimeout = errors.New("the client sent no bytes of its request body")

// clientBody reads the client's request body for the body sender. Each read
// waits at most timeout for the client's next bytes (nginx's
// client_body_timeout: it bounds each wait, not the whole upload). At the
// end of the body it clears the deadline before it records eof: the server
// may then read the idle connection to notice a client that leaves (h2c's
// net/http at once, the HTTP/1 server's fallback watcher after
// http1.WatchDelay), and a deadline hitting that read would cancel the
// request's context.
type clientBody struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
	eof     *atomic.Bool // set at the body's io.EOF
	wait    renewal      // the read deadline
}

func (b *clientBody) Read(p []byte) (int, error) {
	b.wait.push(b.timeout, b.rc.SetReadDeadline)
	n, err := b.r.Read(p)
	switch {
	case err == io.EOF:
		b.rc.SetReadDeadline(time.Time{})
		b.eof.Store(true)
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded) && b.wait.passed(b.timeout):
		// The client was silent for the whole timeout. A deadline error
		// before our deadline is stopBody's deadline in the past; the two
		// can also come at once (the read error of ours ends the
		// request's context, which makes the exchange stop the body), so
		// whether ours had passed decides, not who set one last.
		err = fmt.Errorf("%w for %s: %w", errBodyTimeout, b.timeout, err)
	}
	return n, err
}

// ended reports whether the sender has finished.
func (b *requestBodySender) ended() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// cleanTrailer drops from request trailers what must not cross a hop:
// hop-by-hop fields and, as requestHeader does for the head, client
// credentials.
func cleanTrailer(t http.Header) http.Header {
	if len(t) == 0 {
		return nil
	}
	t = t.Clone()
	hopheader.Remove(t)
	clientheader.RemoveCredentials(t)
	return t
}

// stopBody makes a still-running requestBodySender return and waits for it.
// The stream must be aborted first, so that a blocked write returns; a read
// of the client's body blocked on the network returns through a read
// deadline in the past. Once the body has been read to its end, the deadline
// is never set: the server may then read the idle connection to notice a
// client that leaves (see clientBody), and a deadline hitting that read
// would cancel the request as if the client had gone.
func (ex *exchange) stopBody() {
	b := ex.body
	if b == nil || b.ended() {
		return
	}
	if !ex.bodyEOF.Load() {
		ex.rc.SetReadDeadline(time.Now())
	}
	<-b.done
}

// finishRequest sends the stream's FIN once the request direction has ended
// cleanly with END, so that it travels with the END. A relay that reads the
// END then reads the end of the stream too and need not stop the edge's
// direction itself when it closes the stream (a STOP_SENDING, or yamux's
// STREAM_RESET, on every exchange otherwise: issue 9). An error shows up on
// the response side, which owns the stream.
func finishRequest(s tunnel.Stream) { _ = s.CloseWrite() }
