package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlock-proxy/airlock/internal/apierror"

	"github.com/airlock-proxy/airlock/internal/clientheader"
	"github.com/airlock-proxy/airlock/internal/hopheader"
	"github.com/airlock-proxy/airlock/internal/usage"

	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
)

// exchange is one HTTP request carried over one tunnel stream. Its methods
// run on the request's goroutine; the request body is sent by a
// requestBodySender goroutine that the exchange waits for before it ends.
type exchange struct {
	h       *handler
	acc     *access // the access settings when the request started
	w       http.ResponseWriter
	r       *http.Request
	rc      *http.ResponseController
	start   time.Time
	id      string
	client  *clientPolicy // nil when auth = "none"
	upgrade string        // requested protocol of an upgrade, or ""
	// upstream is the upstream name sent in the head; "" is the relay's
	// default.
	upstream string

	s         tunnel.Stream
	peer      *tunnel.Peer
	pw        *proto.Writer
	pr        *proto.Reader
	stopWatch func() bool // stops the client-gone watcher
	body      *requestBodySender
	// replay is the client's body as the senders read it, recorded for a
	// retry after a refusal; nil for a request without a body.
	replay *replayBody
	// bodyEOF is set once the client's body has been read to its end:
	// from then on nothing reads the client connection for it again.
	bodyEOF atomic.Bool
	// bodyStopped is set by stopBody before it makes a blocked read of the
	// body fail with a deadline in the past, so that the failure is not
	// taken for the client's silence.
	bodyStopped atomic.Bool
	retries     int   // refused attempts sent again
	refusal     error // the last refusal, when retries > 0

	// For the access log.
	status            int
	upstreamRequestID string // the upstream's X-Request-Id, if it sent one
	bytesIn           int64
	bytesOut          int64
	ttfb              time.Duration
	overhead          time.Duration // what airlock added to ttfb
	duration          time.Duration // set by end
	// rejection is why the edge answered by itself, for the metrics; ""
	// when the request went to a relay.
	rejection string
	endReason string // how the exchange ended: see the end* constants
	// meter reads the token usage from a successful response's body as
	// it passes; nil otherwise.
	meter *usage.Meter
	// Set by end, for the metrics and the access log: the route label, and
	// the usage the upstream reported (tokens is false without a report).
	route  string
	used   usage.Usage
	tokens bool
	err    error
}

// run carries the request to the relay and the answer back.
func (ex *exchange) run() {
	r := ex.r
	if r.ContentLength > ex.acc.maxBody {
		ex.fail(ex.tooLarge())
		return
	}
	upgrade, ok := hopheader.UpgradeType(r.Header)
	if !ok {
		ex.fail(badRequest("airlock edge: the Upgrade header must be printable ASCII"))
		return
	}
	if r.ContentLength == 0 {
		// A request that asks for an upgrade has no body: after the 101
		// the stream carries the upgraded connection's bytes instead.
		ex.upgrade = upgrade
	}
	head, apiErr := ex.requestHead()
	if apiErr != nil {
		ex.fail(apiErr)
		return
	}
	resp, ok := ex.exchangeHeads(head)
	if !ok {
		return
	}
	ex.ttfb = time.Since(ex.start)
	if ex.upgrade != "" {
		if resp.Status == http.StatusSwitchingProtocols {
			ex.serveUpgrade(resp)
			return
		}
		// Not switched: end the request direction, which has no body. An
		// error here shows up on the response side.
		ex.pw.End(nil)
	}
	if resp.Status < 200 {
		ex.failBeforeHead(fmt.Errorf("relay sent status %d without an upgrade: %w", resp.Status, proto.ErrProtocol))
		return
	}
	ex.writeResponseHead(resp)
	ex.copyResponse()
	ex.finish()
}

// maxRefusedRetries is how many times a request that a relay refused before
// it reached the upstream is sent again, each time on another session.
const maxRefusedRetries = 2

// maxReplay is the most of a request body kept for sending it again after a
// refusal; a request whose body grew past it before the refusal came is
// answered with the refusal (503) instead. Chat, embeddings and most other
// API bodies are far smaller; the recording is dropped as soon as the
// response head arrives.
const maxReplay = 1 << 20

// exchangeHeads opens a stream, sends the request and reads the response
// head. A refusal by the relay (RESET refused: it did not call the
// upstream) is retried on another session, up to maxRefusedRetries times,
// with the body replayed; once a relay has accepted the request, it is
// never sent again. On failure it answers the client and returns false.
func (ex *exchange) exchangeHeads(head *proto.RequestHead) (*proto.ResponseHead, bool) {
	var avoid []string
	for {
		if !ex.open(avoid) {
			return nil, false
		}
		err := ex.sendRequest(head)
		var resp *proto.ResponseHead
		if err == nil {
			resp, err = ex.pr.ReadResponseHead()
		}
		if err == nil {
			ex.replay.release()
			return resp, true
		}
		if ex.retries >= maxRefusedRetries || !refused(err) || !ex.rewind() {
			ex.failBeforeHead(err)
			return nil, false
		}
		ex.retries++
		ex.refusal = err
		avoid = append(avoid, ex.peer.SessionID)
	}
}

// refused reports whether err is the relay's refusal of a request it did not
// send upstream.
func refused(err error) bool {
	var rst *proto.ResetError
	return errors.As(err, &rst) && rst.Code == proto.CodeRefused
}

// rewind ends the refused stream and readies the request body to be sent
// again from its start. It reports false when that cannot be done: the
// client left, its body failed, or more of it than maxReplay was read.
func (ex *exchange) rewind() bool {
	ex.s.Abort(proto.CodeCancel)
	ex.stopWatch()
	if b := ex.body; b != nil {
		// The sender returns once its next write fails; a read of the
		// client's body in progress completes first.
		select {
		case <-b.done:
		case <-ex.r.Context().Done():
			ex.stopBody()
			return false
		}
		var se *proto.SourceError
		if errors.As(b.err, &se) {
			return false
		}
		ex.body = nil
	}
	if ex.r.Context().Err() != nil {
		return false
	}
	if ex.replay == nil {
		return true // no body
	}
	next, ok := ex.replay.rewind()
	ex.replay = next
	return ok
}

// requestHead builds the HEAD of the request.
func (ex *exchange) requestHead() (*proto.RequestHead, *apiError) {
	r := ex.r
	for seg := range strings.SplitSeq(r.URL.Path, "/") {
		if seg == "." || seg == ".." {
			return nil, badRequest("airlock edge: the path must not contain \".\" or \"..\" segments")
		}
	}
	path := r.URL.EscapedPath()
	if !strings.HasPrefix(path, apiPrefix) {
		// RawPath spelled the prefix with escapes ("/%761/"); use the
		// canonical escaping of the decoded path.
		path = (&url.URL{Path: r.URL.Path}).EscapedPath()
	}
	path = strings.TrimPrefix(path, "/v1")
	if r.URL.RawQuery != "" {
		path += "?" + escapeQuery(r.URL.RawQuery)
	}
	h := requestHeader(r, ex.upgrade)
	if n, size := headerSize(h); n > proto.DefaultMaxHeaderCount || size+len(path) > proto.DefaultMaxHeadSize-1024 {
		return nil, &apiError{
			status: http.StatusRequestHeaderFieldsTooLarge, typ: apierror.TypeInvalidRequest, code: codeHeadersTooLarge,
			message: fmt.Sprintf("airlock edge: the request headers are too large: at most %d fields and %d KiB",
				proto.DefaultMaxHeaderCount, proto.DefaultMaxHeadSize>>10-1),
		}
	}
	head := &proto.RequestHead{
		Method:        r.Method,
		Path:          path,
		Header:        h,
		RequestID:     ex.id,
		Upstream:      ex.upstream,
		ContentLength: r.ContentLength,
	}
	if ex.client != nil {
		head.Client = ex.client.name
	}
	return head, nil
}

// headerSize returns the number of header fields and about the bytes they
// take in a head, so that a head over proto's limits is answered with 431
// instead of failing on the wire.
func headerSize(h http.Header) (fields, size int) {
	for k, vv := range h {
		for _, v := range vv {
			fields++
			size += len(k) + len(v) + 8
		}
	}
	return fields, size
}

// open opens a tunnel stream on a session not in avoid and starts watching
// for the client to go away. It answers the client itself and returns false
// on failure.
func (ex *exchange) open(avoid []string) bool {
	ctx, cancel := context.WithTimeout(ex.r.Context(), streamOpenTimeout)
	s, peer, err := ex.h.opener.OpenStream(ctx, avoid...)
	cancel()
	if err != nil {
		ex.err = err
		if ex.r.Context().Err() != nil {
			ex.status = statusClientClosed
			return false
		}
		if ex.refusal != nil && errors.Is(err, tunnel.ErrNoSession) {
			// Refused, and no other session to try.
			ex.err = ex.refusal
			ex.fail(streamError(ex.refusal))
			return false
		}
		msg := "airlock edge: opening a tunnel stream to the relay failed; retry shortly"
		switch {
		case errors.Is(err, tunnel.ErrNoSession):
			msg = "airlock edge: no tunnel to a relay is up; retry shortly"
		case errors.Is(err, context.DeadlineExceeded):
			msg = "airlock edge: the tunnel to the relay did not grant a stream in time; retry shortly"
		}
		ex.fail(&apiError{
			status: http.StatusServiceUnavailable, typ: apierror.TypeServer, code: codeTunnelUnavailable,
			message: msg, retry: true,
		})
		return false
	}
	ex.s, ex.peer = s, peer
	ex.pw = proto.NewWriter(s, proto.Limits{})
	ex.pr = proto.NewReader(s, proto.Limits{})
	// When the client goes away, reset the stream: the relay cancels the
	// upstream request at once, and every blocked read and write here
	// returns.
	ex.stopWatch = context.AfterFunc(ex.r.Context(), func() { s.Abort(proto.CodeCancel) })
	return true
}

// sendRequest writes the request HEAD. A request without a body ends its
// direction in the same write; an upgrade request keeps it open for the
// upgraded bytes; any other request gets a requestBodySender.
func (ex *exchange) sendRequest(head *proto.RequestHead) error {
	r := ex.r
	switch {
	case ex.upgrade != "":
		return ex.pw.WriteRequestHead(head)
	case r.ContentLength == 0:
		return ex.pw.WriteRequestHeadAndEnd(head)
	}
	if err := ex.pw.WriteRequestHead(head); err != nil {
		return err
	}
	if ex.replay == nil {
		var body io.Reader = r.Body
		if r.ContentLength < 0 {
			body = http.MaxBytesReader(ex.w, r.Body, ex.acc.maxBody)
		}
		ex.replay = &replayBody{src: &clientBody{
			r: body, rc: ex.rc, timeout: ex.acc.bodyTimeout, eof: &ex.bodyEOF, stopped: &ex.bodyStopped,
		}}
	}
	// HTTP/1.1 handlers may not read the body once the response has
	// started unless full duplex is on; the relay may answer (and an SSE
	// stream may flow) while the body is still arriving. HTTP/2 is always
	// full duplex, and the error for writers that cannot is harmless.
	ex.rc.EnableFullDuplex()
	ex.body = &requestBodySender{pw: ex.pw, s: ex.s, body: ex.replay, r: r, done: make(chan struct{})}
	go ex.body.run()
	return nil
}

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
		b.err = b.pw.End(cleanTrailer(b.r.Trailer))
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

// errBodyTimeout is wrapped by the read error of a client that sent no
// bytes of its announced body for client_body_timeout.
var errBodyTimeout = errors.New("the client sent no bytes of its request body")

// clientBody reads the client's request body for the body sender. Each read
// waits at most timeout for the client's next bytes (nginx's
// client_body_timeout: it bounds each wait, not the whole upload). At the
// end of the body it clears the deadline before it records eof: net/http
// then reads the idle connection in the background, and a deadline hitting
// that read would cancel the connection's context.
type clientBody struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
	eof     *atomic.Bool // set at the body's io.EOF
	stopped *atomic.Bool // set by stopBody: a deadline error is its doing
	armedAt time.Time    // when the read deadline was last pushed out
}

func (b *clientBody) Read(p []byte) (int, error) {
	// Pushing the deadline out only every sixteenth of the timeout spares a
	// timer update per read.
	if now := time.Now(); now.Sub(b.armedAt) > b.timeout/16 {
		b.armedAt = now
		b.rc.SetReadDeadline(now.Add(b.timeout))
	}
	n, err := b.r.Read(p)
	switch {
	case err == io.EOF:
		b.rc.SetReadDeadline(time.Time{})
		b.eof.Store(true)
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded) && !b.stopped.Load():
		err = fmt.Errorf("%w for %s: %w", errBodyTimeout, b.timeout, err)
	}
	return n, err
}

// replayBody reads the client's request body and records what it read, up to
// maxReplay bytes, so that a request refused before it reached the upstream
// can be sent again.
type replayBody struct {
	src io.Reader

	mu   sync.Mutex
	buf  []byte
	over bool // more than maxReplay bytes were read, or released
}

func (r *replayBody) Read(p []byte) (int, error) {
	n, err := r.src.Read(p)
	if n > 0 {
		r.mu.Lock()
		if !r.over {
			if len(r.buf)+n > maxReplay {
				r.over, r.buf = true, nil
			} else {
				r.buf = append(r.buf, p[:n]...)
			}
		}
		r.mu.Unlock()
	}
	return n, err
}

// rewind returns a body that yields the recorded bytes and then the rest of
// the client's body, recording again; false if the recording is incomplete.
// The reader of r must have stopped.
func (r *replayBody) rewind() (*replayBody, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.over {
		return nil, false
	}
	return &replayBody{src: io.MultiReader(bytes.NewReader(r.buf), r.src)}, true
}

// release drops the recording once a relay has accepted the request. r may
// be nil.
func (r *replayBody) release() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.over, r.buf = true, nil
	r.mu.Unlock()
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
// is never set: net/http then reads the idle connection in the background to
// notice a client that leaves, and a deadline hitting that read would cancel
// the connection's context, failing the next request on a kept-alive
// connection before it starts.
func (ex *exchange) stopBody() {
	b := ex.body
	if b == nil || b.ended() {
		return
	}
	if !ex.bodyEOF.Load() {
		ex.bodyStopped.Store(true)
		ex.rc.SetReadDeadline(time.Now())
	}
	<-b.done
}

// failBeforeHead ends an exchange that failed before any response head was
// written: it aborts the stream and answers the client with error JSON that
// fits the cause.
func (ex *exchange) failBeforeHead(err error) {
	gone := ex.r.Context().Err() != nil
	code := proto.CodeCancel
	if errors.Is(err, proto.ErrProtocol) {
		code = proto.CodeProtocol
	}
	ex.s.Abort(code)
	ex.stopWatch()
	ex.stopBody()
	if ex.body != nil && errors.Is(ex.body.err, errBodyTimeout) {
		// A read error on the client's connection, the body timeout
		// among them, also ends the request's context: the client is
		// not gone, it is answered.
		gone = false
	}
	ex.err = err
	ex.endReason = endUpstreamError
	if gone {
		ex.endReason = endClientCancel
		ex.err = context.Cause(ex.r.Context())
		ex.status = statusClientClosed
		return
	}
	if b := ex.body; b != nil && b.err != nil {
		var tooLarge *http.MaxBytesError
		var se *proto.SourceError
		switch {
		case errors.As(b.err, &tooLarge):
			ex.err = b.err
			ex.fail(ex.tooLarge())
			return
		case errors.Is(b.err, errBodyTimeout):
			ex.err = b.err
			ex.fail(&apiError{
				status: http.StatusRequestTimeout, typ: apierror.TypeInvalidRequest, code: codeRequestTimeout,
				message: fmt.Sprintf("airlock edge: the request body stalled: no bytes arrived for %s", ex.acc.bodyTimeout),
			})
			return
		case errors.As(b.err, &se) && !errors.Is(b.err, os.ErrDeadlineExceeded):
			ex.err = b.err
			ex.fail(badRequest("airlock edge: reading the request body failed"))
			return
		}
	}
	ex.fail(streamError(err))
}

// streamError maps a stream failure before the response head to the answer:
// a relay refusal is 503 (nothing reached the upstream; retry), an upstream
// timeout 504, anything else 502.
func streamError(err error) *apiError {
	var rst *proto.ResetError
	if !errors.As(err, &rst) {
		return &apiError{
			status: http.StatusBadGateway, typ: apierror.TypeServer, code: codeUpstreamError,
			message: "airlock edge: the tunnel stream to the relay broke before the response head",
		}
	}
	switch rst.Code {
	case proto.CodeRefused:
		return &apiError{
			status: http.StatusServiceUnavailable, typ: apierror.TypeServer, code: codeTunnelUnavailable,
			message: "airlock relay refused the request before calling the upstream (draining or at capacity); retry shortly",
			retry:   true,
		}
	case proto.CodeUpstreamTimeout:
		return &apiError{
			status: http.StatusGatewayTimeout, typ: apierror.TypeServer, code: codeUpstreamTimeout,
			message: "airlock relay: the upstream did not answer in time",
		}
	}
	msg := "airlock relay reset the request: " + rst.Code.String()
	if rst.Message != "" {
		msg += ": " + truncate(rst.Message, maxEchoed)
	}
	return &apiError{status: http.StatusBadGateway, typ: apierror.TypeServer, code: codeUpstreamError, message: msg}
}

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
	var armedAt time.Time
	for {
		buf := cb.Bytes()
		n, rerr := ex.pr.Read(buf)
		if n > 0 {
			if ex.r.ProtoMajor == 2 {
				armedAt = ex.armSendDeadline(armedAt)
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

// armSendDeadline bounds the next write of an HTTP/2 response by
// client_send_timeout, unless the deadline armed at armedAt is recent
// enough, and returns when it was armed. An HTTP/1 connection has that bound
// in clientConn, which counts every byte of progress; an HTTP/2 stream can
// stall on its own flow-control window while its connection flows, so it
// gets the stream's write deadline: a write may take at most the timeout,
// which a client granting even a few hundred bytes a second meets.
func (ex *exchange) armSendDeadline(armedAt time.Time) time.Time {
	timeout := ex.h.sendTimeout
	if now := time.Now(); now.Sub(armedAt) > timeout/16 {
		ex.rc.SetWriteDeadline(now.Add(timeout))
		return now
	}
	return armedAt
}

// abortAfterHead ends an exchange whose response head was already written:
// the status cannot change any more, so the client connection is aborted
// (HTTP/1.1: closed without the final chunk; HTTP/2: RST_STREAM), and no
// client mistakes a cut stream for a complete one (Go issue 23643).
func (ex *exchange) abortAfterHead(code proto.ResetCode, err error) {
	ex.err = err
	ex.endReason = endUpstreamError
	if ex.r.Context().Err() != nil || errors.Is(err, errClientWrite) {
		ex.endReason = endClientCancel
	}
	ex.s.Abort(code)
	ex.stopWatch()
	ex.stopBody()
	panic(http.ErrAbortHandler)
}

// finish ends an exchange whose response ended cleanly with END.
func (ex *exchange) finish() {
	for k, vv := range ex.pr.Trailer() {
		ex.w.Header()[http.TrailerPrefix+k] = vv
	}
	clientStayed := ex.stopWatch()
	ex.endReason = endComplete
	if !clientStayed {
		ex.endReason = endClientCancel
	}
	if ex.body != nil && !ex.body.ended() {
		// The relay answered before it took the whole body (an early
		// error); the rest of the body has nowhere to go.
		ex.s.Abort(proto.CodeCancel)
		ex.stopBody()
		return
	}
	if clientStayed {
		ex.s.Close()
	}
}

// tooLarge is the 413 answer.
func (ex *exchange) tooLarge() *apiError {
	return &apiError{
		status: http.StatusRequestEntityTooLarge, typ: apierror.TypeInvalidRequest, code: codeRequestTooLarge,
		message: fmt.Sprintf("airlock edge: the request body is larger than this edge accepts (%d bytes)", ex.acc.maxBody),
	}
}

func badRequest(msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: apierror.TypeInvalidRequest, code: codeInvalidRequest, message: msg}
}

// fail answers the client with e before any response head; an answer the
// edge gives by itself (a rejection) carries Airlock-Overhead-Ms. On HTTP/1 it
// closes the connection after the answer when the client's body was not
// read to its end (reading what is left could wait forever on a client that
// announced a body and went silent) and after every 401 (a client without a
// valid key gets no kept-alive connection to hold).
func (ex *exchange) fail(e *apiError) {
	ex.status = e.status
	ex.rejection = rejectionOf(e.code)
	if ex.err == nil {
		ex.err = errors.New(e.code)
	}
	h := ex.w.Header()
	unread := ex.r.ContentLength != 0 && !ex.bodyEOF.Load()
	if ex.r.ProtoMajor == 1 && (e.status == http.StatusUnauthorized || unread) {
		h.Set("Connection", "close")
		if unread {
			// After the handler, net/http reads up to 256 KiB of an
			// unread body even when it closes the connection; a
			// deadline in the past makes that read fail at once. No
			// background read is running: the body has not ended.
			defer ex.rc.SetReadDeadline(time.Now())
		}
	}
	if ex.rejection != "" {
		// All of it is airlock's own time: no upstream was asked.
		ex.ttfb = time.Since(ex.start)
		ex.overhead = ex.ttfb
		h.Set(headerOverhead, formatMillis(ex.overhead))
	}
	ex.bytesOut += int64(e.write(ex.w))
}

// formatMillis formats d in milliseconds with three decimals.
func formatMillis(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
}

// setEdgeHeaders sets the headers the edge adds to every response: its
// request id, as Airlock-Request-Id and as X-Request-Id unless the upstream
// sent its own, and CORS headers for a cross-origin request.
func (ex *exchange) setEdgeHeaders(h http.Header) {
	h.Set(headerRequestID, ex.id)
	if _, ok := h["X-Request-Id"]; !ok {
		h["X-Request-Id"] = []string{ex.id}
	}
	if ex.r.Header.Get("Origin") != "" {
		setCORS(h)
	}
}

// How an exchange ended, for the access log and the usage metrics.
const (
	endComplete      = "complete"       // the whole response reached the client
	endClientCancel  = "client_cancel"  // the client went away first
	endUpstreamError = "upstream_error" // the relay, tunnel or upstream failed
	endRejected      = "rejected"       // the edge answered by itself
)

// end records the finished exchange in the metrics and the access log.
func (ex *exchange) end() {
	ex.duration = time.Since(ex.start)
	switch {
	case ex.rejection != "":
		ex.endReason = endRejected
	case ex.endReason == endClientCancel && ex.meter != nil && ex.meter.Finished():
		// The client left after the API's own end of the answer (an SSE
		// client closes after "data: [DONE]"), before the relay's END
		// reached the edge: it had the whole answer.
		ex.endReason = endComplete
	case ex.endReason != "":
	case ex.status == statusClientClosed:
		ex.endReason = endClientCancel
	default:
		ex.endReason = endComplete
	}
	if ex.body != nil && ex.body.ended() {
		ex.bytesIn += ex.body.n
	}
	ex.route = routeOf(ex.r.URL.Path)
	if ex.meter != nil {
		ex.used, ex.tokens = ex.meter.Result()
	}
	ex.h.metrics.observe(ex)
	ex.logLine()
}

// clientLabel is the client of the metrics and logs: its configured name,
// "anonymous" with auth = "none".
func (ex *exchange) clientLabel() string {
	if ex.client == nil {
		return "anonymous"
	}
	return ex.client.name
}

// upstreamName is the upstream the request was for: the one the client
// named, else the default of the relay that took it.
func (ex *exchange) upstreamName() string {
	if ex.upstream == "" && ex.peer != nil && len(ex.peer.Upstreams) > 0 {
		return ex.peer.Upstreams[0]
	}
	return ex.upstream
}

// upstreamLabel is the upstream of the metrics: a name the relay listed for
// this edge, "other" for a name it did not (so that clients cannot add time
// series), "none" when no relay was reached.
func (ex *exchange) upstreamLabel() string {
	if ex.peer == nil {
		return "none"
	}
	if name := ex.upstreamName(); slices.Contains(ex.peer.Upstreams, name) {
		return name
	}
	return "other"
}

// logLine writes the access log line, unless the log level is above info.
// It never logs bodies, keys or the Authorization header.
func (ex *exchange) logLine() {
	ctx := context.Background()
	if !ex.h.logger.Enabled(ctx, slog.LevelInfo) {
		return
	}
	var relay, transport string
	if ex.peer != nil {
		relay, transport = ex.peer.Name, ex.peer.Transport
	}
	attrs := []slog.Attr{
		slog.String("request_id", ex.id),
		slog.String("client", ex.clientLabel()),
		slog.String("method", ex.r.Method),
		slog.String("route", ex.route),
		slog.String("path", ex.r.URL.Path),
		slog.String("upstream", ex.upstreamName()),
		slog.Int("status", ex.status),
		slog.Int64("bytes_in", ex.bytesIn),
		slog.Int64("bytes_out", ex.bytesOut),
		slog.Duration("duration", ex.duration),
		slog.Duration("ttfb", ex.ttfb),
		slog.String("end", ex.endReason),
		slog.String("relay", relay),
		slog.String("transport", transport),
	}
	if ex.upstreamRequestID != "" {
		attrs = append(attrs, slog.String("upstream_request_id", ex.upstreamRequestID))
	}
	if ex.retries > 0 {
		attrs = append(attrs, slog.Int("retries", ex.retries))
	}
	if ex.tokens {
		attrs = append(attrs, slog.String("model", ex.used.Model),
			slog.Int64("prompt_tokens", ex.used.PromptTokens), slog.Int64("completion_tokens", ex.used.CompletionTokens))
	}
	if ex.err != nil && !errors.Is(ex.err, context.Canceled) {
		attrs = append(attrs, slog.String("error", ex.err.Error()))
	}
	ex.h.logger.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
}
