// The exchange: one HTTP request carried over one tunnel stream, from the
// request head to its end, and the answers the edge gives by itself.

package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/airlock-proxy/airlock/edge/usage"
	"github.com/airlock-proxy/airlock/internal/apierror"
	"github.com/airlock-proxy/airlock/internal/hopheader"
	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
)

// exchange is one HTTP request carried over one tunnel stream. Its methods
// run on the request's goroutine; the request body is sent by a
// requestBodySender goroutine that the exchange waits for before it ends.
//
// The exchange owns its stream, and release is the one way it ends: every
// path that is done with the stream calls it, and ServeHTTP calls it last
// in case none did. The client-gone watcher and the body sender may abort
// the stream to wake the exchange, but never release it.
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
	// released is set once the current stream was ended (release).
	released bool
	body     *requestBodySender
	// whole is a small request body read before the stream opened
	// (readWholeBody); nil otherwise.
	whole []byte
	// replay is the client's body as the senders read it, recorded for a
	// retry after a refusal; nil for a request without a body, or with a
	// whole one.
	replay *replayBody
	// bodyEOF is set once the client's body has been read to its end:
	// from then on nothing reads the client connection for it again.
	bodyEOF atomic.Bool
	retries int   // refused attempts sent again
	refusal error // the last refusal, when retries > 0

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
	if r.ContentLength > 0 && r.ContentLength <= wholeBodyMax && !ex.readWholeBody() {
		return
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
		if ex.pw.End(nil) == nil {
			finishRequest(ex.s)
		}
	}
	if resp.Status < 200 {
		ex.failBeforeHead(fmt.Errorf("relay sent status %d without an upgrade: %w", resp.Status, proto.ErrProtocol))
		return
	}
	ex.writeResponseHead(resp)
	ex.copyResponse()
	ex.finish()
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
	// No timeout of our own, which would cost a timer per request: the
	// Opener opens at once unless the session is at its stream limit,
	// bounds that wait itself (tunnel.StreamOpenTimeout, then an error
	// wrapping context.DeadlineExceeded), and ends it when the client
	// goes away.
	s, peer, err := ex.h.opener.OpenStream(ex.r.Context(), avoid...)
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
	ex.s, ex.peer, ex.released = s, peer, false
	ex.pw = proto.NewWriter(s, proto.Limits{})
	ex.pr = proto.NewReader(s, proto.Limits{})
	// When the client goes away, reset the stream: the relay cancels the
	// upstream request at once, and every blocked read and write here
	// returns.
	ex.stopWatch = context.AfterFunc(ex.r.Context(), func() { s.Abort(proto.CodeCancel) })
	return true
}

// noReset is release's code for a stream that may end cleanly.
const noReset proto.ResetCode = 0

// release ends the current stream, once: with a clean Close when code is
// noReset, the client is still there and the request body went out whole, and
// with Abort(code) (CodeCancel if code is noReset) otherwise. It stops the
// client-gone watcher and then the body sender, which an Abort unblocks.
// It reports whether the client was still there. Without a stream, or
// after the first call, it does nothing and reports true.
func (ex *exchange) release(code proto.ResetCode) (clientStayed bool) {
	if ex.s == nil || ex.released {
		return true
	}
	ex.released = true
	clientStayed = ex.stopWatch()
	if code == noReset && (!clientStayed || (ex.body != nil && !ex.body.ended())) {
		// The client left, or the relay answered before it took the
		// whole body (an early error): the rest has nowhere to go.
		code = proto.CodeCancel
	}
	if code != noReset {
		ex.s.Abort(code)
	} else {
		ex.s.Close()
	}
	ex.stopBody()
	return clientStayed
}

// sendRequest writes the request HEAD. A request without a body ends its
// direction in the same write; an upgrade request keeps it open for the
// upgraded bytes; any other request gets a requestBodySender.
func (ex *exchange) sendRequest(head *proto.RequestHead) error {
	r := ex.r
	switch {
	case ex.upgrade != "":
		return ex.pw.WriteRequestHead(head)
	case r.ContentLength == 0 || ex.whole != nil:
		if err := ex.pw.WriteWholeRequest(head, ex.whole); err != nil {
			return err
		}
		finishRequest(ex.s)
		return nil
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
			r: body, rc: ex.rc, timeout: ex.acc.bodyTimeout, eof: &ex.bodyEOF,
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

// failBeforeHead ends an exchange that failed before any response head was
// written: it aborts the stream and answers the client with error JSON that
// fits the cause.
func (ex *exchange) failBeforeHead(err error) {
	gone := ex.r.Context().Err() != nil
	code := proto.CodeCancel
	if errors.Is(err, proto.ErrProtocol) {
		code = proto.CodeProtocol
	}
	ex.release(code)
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
			ex.fail(ex.bodyStalled())
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
	ex.release(code)
	panic(http.ErrAbortHandler)
}

// finish ends an exchange whose response ended cleanly with END.
func (ex *exchange) finish() {
	for k, vv := range ex.pr.Trailer() {
		ex.w.Header()[http.TrailerPrefix+k] = vv
	}
	ex.endReason = endComplete
	if !ex.release(noReset) {
		ex.endReason = endClientCancel
	}
}

// bodyStalled is the 408 answer.
func (ex *exchange) bodyStalled() *apiError {
	return &apiError{
		status: http.StatusRequestTimeout, typ: apierror.TypeInvalidRequest, code: codeRequestTimeout,
		message: fmt.Sprintf("airlock edge: the request body stalled: no bytes arrived for %s", ex.acc.bodyTimeout),
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
	ex.setEdgeHeaders(h)
	unread := ex.r.ContentLength != 0 && !ex.bodyEOF.Load()
	if ex.r.ProtoMajor == 1 && (e.status == http.StatusUnauthorized || unread) {
		// With a body left unread, the HTTP/1 server closes anyway,
		// after a lingering read that keeps the answer from being
		// destroyed by a reset (http1.Server).
		h.Set("Connection", "close")
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

// setEdgeHeaders sets the headers the edge adds to every response it writes
// (fail, the preflight, writeResponseHead, serveUpgrade): its
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
