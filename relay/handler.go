package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/airlock-proxy/airlock/internal/hopheader"
	"github.com/airlock-proxy/airlock/internal/http1"
	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
)

// headTimeout bounds the wait for a stream's request HEAD; an edge that opens
// a stream and sends nothing has the stream aborted.
const headTimeout = 10 * time.Second

// maxLoggedPath caps the path in log lines.
const maxLoggedPath = 256

// Causes of the upstream context's cancellation, which decide how the stream
// ends.
var (
	// errEdgeAborted: the edge reset the stream (its client went away) or
	// the tunnel session ended.
	errEdgeAborted = errors.New("edge aborted the stream")
	// errEdgeProtocol: the edge sent frames it must not send.
	errEdgeProtocol = errors.New("edge broke the exchange protocol")
	// errEdgeGone: writing to the edge failed.
	errEdgeGone = errors.New("edge stopped reading")
)

// Handler turns tunnel streams into upstream HTTP exchanges. It implements
// tunnel.Handler, and its Authorize method is what a tunnel.Server asks
// about each edge's key. It is safe for concurrent use.
type Handler struct {
	logger      *slog.Logger
	fwdAddr     bool
	headTimeout time.Duration
	metrics     *relayMetrics
	// peers holds the edges and upstreams, which a reload swaps whole;
	// each exchange reads them once, at its start.
	peers atomic.Pointer[peers]
}

// peers are the relay's authorized edges and its upstreams.
type peers struct {
	upstreams map[string]*upstream
	edges     map[string]*edgeEntry // by key fingerprint
}

// newPeers resolves the keys of c's upstreams, builds their transports and
// indexes c's edges. c must be validated.
func newPeers(c *Config) (*peers, error) {
	p := &peers{
		upstreams: make(map[string]*upstream, len(c.Upstreams)),
		edges:     make(map[string]*edgeEntry, len(c.Edges)),
	}
	all := make([]string, 0, len(c.Upstreams))
	for i := range c.Upstreams {
		up, err := newUpstream(&c.Upstreams[i])
		if err != nil {
			p.closeIdle()
			return nil, err
		}
		p.upstreams[up.name] = up
		all = append(all, up.name)
	}
	for _, e := range c.Edges {
		fp, _ := tunnel.ParseFingerprint(e.Key) // validated
		allowed := slices.Clone(e.Upstreams)
		if len(allowed) == 0 {
			allowed = all
		}
		p.edges[fp] = &edgeEntry{name: e.Name, upstreams: allowed}
	}
	return p, nil
}

// closeIdle closes the idle upstream connections of every upstream, and
// those of exchanges still running as they finish.
func (p *peers) closeIdle() {
	for _, up := range p.upstreams {
		up.close()
	}
}

// edgeEntry is an authorized edge.
type edgeEntry struct {
	name      string
	upstreams []string // allowed, the first being the default; never empty
}

// NewHandler resolves every upstream's key (from the config, a file or the
// environment; once, here) and builds one pooled HTTP/2-capable transport
// per upstream. cfg is copied; defaults are filled in and the edges and
// upstreams are validated. A nil logger discards. The exchange metrics are
// registered with reg; nil keeps them unregistered.
func NewHandler(cfg *Config, logger *slog.Logger, reg prometheus.Registerer) (*Handler, error) {
	c, err := populated(cfg, (*Config).validatePeers)
	if err != nil {
		return nil, err
	}
	return newHandler(c, logger, reg)
}

// newHandler builds the Handler of c, whose defaults are filled in and whose
// edges and upstreams are validated (by NewHandler, or by NewServer with the
// rest).
func newHandler(c *Config, logger *slog.Logger, reg prometheus.Registerer) (*Handler, error) {
	p, err := newPeers(c)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	h := &Handler{
		metrics:     newRelayMetrics(reg),
		logger:      logger,
		fwdAddr:     c.ForwardClientAddress,
		headTimeout: headTimeout,
	}
	h.setPeers(p)
	return h, nil
}

// setPeers makes p the edges and upstreams of the exchanges that start from
// now on. The upstreams p replaces keep serving the exchanges that use them
// and lose their idle connections.
func (h *Handler) setPeers(p *peers) {
	for _, up := range p.upstreams {
		h.metrics.addKeys(up)
	}
	if old := h.peers.Swap(p); old != nil {
		old.closeIdle()
	}
}

// reload uses c's edges and upstreams from now on; c's defaults are filled
// in and it is validated (by Server.Reload). Upstream keys are read again
// from their sources.
func (h *Handler) reload(c *Config) error {
	p, err := newPeers(c)
	if err != nil {
		return err
	}
	h.setPeers(p)
	return nil
}

// Authorize maps an edge's key fingerprint to its configured name and the
// upstreams it may use, the first being its default. An unknown key is an
// error wrapping tunnel.ErrUnknownPeer.
func (h *Handler) Authorize(edgeKey string) (name string, upstreams []string, err error) {
	e, ok := h.peers.Load().edges[edgeKey]
	if !ok {
		return "", nil, fmt.Errorf("authorizing edge key %s: %w", edgeKey, tunnel.ErrUnknownPeer)
	}
	return e.name, slices.Clone(e.upstreams), nil
}

// closeIdle closes the idle upstream connections of every transport.
func (h *Handler) closeIdle() { h.peers.Load().closeIdle() }

// ServeStream serves one exchange: it reads the request HEAD (aborting the
// stream if none comes within 10s), calls the upstream with the request body
// streamed from the edge, and streams the response back, one DATA frame per
// upstream read. Errors before the response head are answered with an
// OpenAI-shaped error response; after it, with a RESET. If the edge resets
// the stream, or ctx ends, the upstream request is cancelled at once.
// The edge is identified by peer.Key and looked up in the relay's own
// configuration (peer.Upstreams is not trusted). ServeStream blocks until
// the exchange is over, and always closes or aborts s before it returns.
func (h *Handler) ServeStream(ctx context.Context, peer *tunnel.Peer, s tunnel.Stream) {
	ex := &exchange{
		h:     h,
		p:     h.peers.Load(),
		s:     s,
		r:     proto.NewReader(s, proto.Limits{}),
		w:     proto.NewWriter(s, proto.Limits{}),
		start: time.Now(),
	}
	if peer != nil {
		ex.peer = *peer
	}
	// When the session dies or the relay closes, an exchange still waiting
	// for its head refuses the stream, so that the edge may retry it on
	// another relay. A started one sees its upstream context end: it
	// refuses too if the upstream never got the request's headers, and
	// aborts otherwise (serve decides). Reads and writes of the stream
	// that still block end with the session, which the closing relay ends
	// within a moment.
	refused := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(refused)
		if ex.state.CompareAndSwap(exchangeNew, exchangeRefused) {
			ex.refuse()
		}
	})
	ex.serve(ctx)
	if !stop() {
		// The refusal may still be writing its RESET; the stream must not
		// be closed under it, or the edge would see the stream end bare
		// and could not tell that it may retry.
		<-refused
	}
	// Every path that ends the stream releases it; this covers one that
	// did not.
	ex.release(proto.CodeCancel)
	h.metrics.observe(ex)
	ex.log(ctx)
}

// Exchange states: an exchange is either claimed by its handler (from the
// moment its head is read, before anything reaches the upstream) or refused
// because its context ended first, never both.
const (
	exchangeNew     int32 = iota // waiting for the request head
	exchangeStarted              // the handler owns the stream's writes
	exchangeRefused              // refused: nothing reached the upstream
)

// exchange is the state of one ServeStream.
type exchange struct {
	h     *Handler
	p     *peers // the edges and upstreams when the exchange started
	s     tunnel.Stream
	r     *proto.Reader
	w     *proto.Writer
	peer  tunnel.Peer
	state atomic.Int32 // exchangeNew, exchangeStarted or exchangeRefused
	// wroteHeaders is set once the request's headers were written to the
	// upstream connection: from then on the request is never refused.
	wroteHeaders atomic.Bool

	cancel context.CancelCauseFunc // of the upstream request; nil before it

	// stopWatch stops the callback that cancels the upstream call when the
	// edge aborts the stream; nil before the upstream call.
	stopWatch func() bool
	// released is set by the first release: the stream has been ended.
	released atomic.Bool

	// For the log line.
	start          time.Time
	ttfb           time.Duration
	upstreamTime   time.Duration // the upstream's time to its response head
	called         bool          // the upstream call was made
	upstreamStatus int           // its answer's status; 0 without one
	key            *apiKey       // the key the call was made with; nil without one
	head           *proto.RequestHead
	upstream       string
	status         int    // sent to the edge; 499 when the edge went away first
	result         string // "ok" or what went wrong
	errDetail      string
	bytesIn        atomic.Int64
	bytesOut       atomic.Int64
}

func (ex *exchange) serve(ctx context.Context) {
	head, ok := ex.readHead()
	if !ok {
		return
	}
	if !ex.state.CompareAndSwap(exchangeNew, exchangeStarted) {
		ex.result = "refused"
		return
	}
	ex.head = head
	edge, ok := ex.p.edges[ex.peer.Key]
	if !ok {
		ex.fail(errUnknownEdge())
		return
	}
	name := head.Upstream
	if name == "" {
		name = edge.upstreams[0]
	}
	ex.upstream = name
	up, ok := ex.p.upstreams[name]
	if !ok {
		ex.fail(errUpstreamNotAllowed("unknown_upstream"))
		return
	}
	if !slices.Contains(edge.upstreams, name) {
		ex.fail(errUpstreamNotAllowed("forbidden_upstream"))
		return
	}
	switch head.Method {
	case http.MethodConnect, http.MethodTrace, "TRACK":
		// CONNECT would tunnel anywhere; TRACE echoes the request,
		// upstream key included.
		ex.fail(errMethodNotAllowed(head.Method))
		return
	}
	target, err := joinPath(up.base, head.Path)
	if err != nil {
		ex.fail(errBadPath(err))
		return
	}
	upgrade, ok := hopheader.UpgradeType(head.Header)
	if !ok {
		ex.fail(errBadUpgrade())
		return
	}

	upCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ex.cancel = cancel
	// The edge aborts the stream when its client goes away; the stream's
	// context ends at once (QUIC STOP_SENDING), even while the upstream is
	// silent and nobody reads or writes, and the upstream call stops: a
	// generation that nobody reads must stop costing money. No goroutine
	// waits for it.
	ex.stopWatch = context.AfterFunc(ex.s.Context(), func() { cancel(errEdgeAborted) })
	defer ex.stopWatch()

	var body io.Reader
	if upgrade == "" && head.ContentLength != 0 {
		// The body is the edge's DATA frames. An upgrade request has
		// none: its bytes follow the 101 as DATA, with no END before.
		body = &requestBody{ex: ex}
	}
	ex.key = up.pickKey(time.Now())
	header := requestHeader(head.Header, up, ex.key, ex.h.fwdAddr, upgrade)
	upStart := time.Now()
	ex.called = true
	var resp *http.Response
	if up.pool != nil && upgrade == "" {
		resp, err = up.pool.RoundTrip(upCtx, &http1.Request{
			Method:        head.Method,
			Target:        target.RequestURI(),
			Host:          target.Host,
			Header:        header,
			Body:          body,
			ContentLength: head.ContentLength,
		})
		ex.wroteHeaders.Store(!http1.Unsent(err))
	} else {
		resp, err = ex.viaTransport(upCtx, up, target, header, body)
	}
	ex.ttfb = time.Since(ex.start)
	ex.upstreamTime = time.Since(upStart)
	// The request's headers went out (or never will): the log line
	// needs the rest of the head, not them.
	head.Header = nil
	if err != nil {
		if ctx.Err() != nil && !ex.wroteHeaders.Load() && ex.s.Context().Err() == nil {
			// The relay closes and the upstream never got the request:
			// the edge may send it elsewhere.
			ex.result = "refused"
			ex.refuse()
			return
		}
		if ex.canceled(upCtx) {
			return
		}
		ex.errDetail = errDetail(err)
		ex.fail(errUpstreamFailed(up.name, err))
		return
	}
	defer resp.Body.Close()
	ex.upstreamStatus = resp.StatusCode
	ex.judgeKey(up, resp)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		ex.switchProtocols(upCtx, resp, upgrade)
		return
	}
	ex.respond(upCtx, resp)
}

// viaTransport makes the upstream call with net/http: for an upgrade
// (WebSocket), or an upstream that takes HTTP/2 or a proxy. The trace tells
// whether the upstream may have seen the request at all.
func (ex *exchange) viaTransport(ctx context.Context, up *upstream, target *url.URL, header http.Header, body io.Reader) (*http.Response, error) {
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteHeaders: func() { ex.wroteHeaders.Store(true) },
	})
	if body == nil {
		body = http.NoBody
	}
	// The request gets target itself as its URL: its string form parsed
	// again would cost a URL per request.
	req, err := http.NewRequestWithContext(ctx, ex.head.Method, "", body)
	if err != nil {
		return nil, err
	}
	req.URL, req.Host = target, target.Host
	if body != http.NoBody {
		req.ContentLength = ex.head.ContentLength
	}
	if _, ok := header["User-Agent"]; !ok {
		// A present but empty User-Agent keeps Go's default out.
		header["User-Agent"] = []string{""}
	}
	req.Header = header
	req.Close = false
	// The transport itself, not an http.Client: a proxy passes redirects
	// on to its client instead of following them.
	return up.transport.RoundTrip(req)
}

// readHead reads the request HEAD within the handler's head timeout. When it
// returns false the stream has been ended.
//
// The timeout is a read deadline, which arms a timer only if a Read has to
// wait: the head usually arrives with the stream.
func (ex *exchange) readHead() (*proto.RequestHead, bool) {
	deadline := time.Now().Add(ex.h.headTimeout)
	ex.s.SetReadDeadline(deadline)
	head, err := ex.r.ReadRequestHead()
	if err == nil {
		ex.s.SetReadDeadline(time.Time{})
		return head, true
	}
	// A read cut by the deadline, or any failure once it has passed (a
	// frame length cut short by it reads as malformed).
	if errors.Is(err, os.ErrDeadlineExceeded) || !time.Now().Before(deadline) {
		ex.result = "head_timeout"
		ex.release(proto.CodeProtocol)
		return nil, false
	}
	if ex.state.Load() == exchangeRefused {
		ex.result = "refused"
		return nil, false
	}
	ex.errDetail = err.Error()
	var rst *proto.ResetError
	switch {
	case errors.As(err, &rst):
		ex.result = "edge_reset"
		ex.release(proto.CodeCancel)
	case errors.Is(err, proto.ErrProtocol):
		ex.result = "protocol_error"
		ex.w.Reset(proto.CodeProtocol, "airlock relay: bad request head")
		ex.release(noReset)
	default:
		ex.result = "edge_error"
		ex.release(proto.CodeCancel)
	}
	return nil, false
}

// judgeKey lets the key of the exchange rest when the upstream's answer
// refused it (401, 403, 429), and counts it in the metrics.
func (ex *exchange) judgeKey(up *upstream, resp *http.Response) {
	if ex.key == nil {
		return
	}
	d := keyRest(resp.StatusCode, resp.Header.Get("Retry-After"))
	if d == 0 {
		return
	}
	ex.h.metrics.keyErrors.WithLabelValues(up.name, ex.key.name, strconv.Itoa(resp.StatusCode)).Inc()
	if ex.key.rest(time.Now(), d) {
		ex.h.metrics.keyCooldowns.WithLabelValues(up.name, ex.key.name).Inc()
		ex.h.logger.Warn("relay: upstream key resting", "upstream", up.name, "key", ex.key.name,
			"status", resp.StatusCode, "rest", d, "keys", len(up.keys))
	}
}

// refuse tells the edge, in-band, that the request never reached the
// upstream, and ends the stream; the edge may retry it elsewhere. It runs
// only before the handler has claimed the exchange, so nothing else writes.
func (ex *exchange) refuse() {
	ex.status = http.StatusServiceUnavailable
	ex.w.Reset(proto.CodeRefused, "airlock relay: shutting down; the request was not sent upstream")
	ex.release(noReset)
}

// respond streams a non-101 response to the edge.
func (ex *exchange) respond(upCtx context.Context, resp *http.Response) {
	ex.status = resp.StatusCode
	head := &proto.ResponseHead{
		Status:        resp.StatusCode,
		Header:        responseHeader(resp, ""),
		ContentLength: resp.ContentLength,
		UpstreamTime:  ex.upstreamTime,
	}
	if b, ok := resp.Body.(wholeBody); ok {
		if body, ok := b.TakeWhole(nil); ok {
			ex.respondWhole(head, body)
			return
		}
	}
	if err := ex.w.WriteResponseHead(head); err != nil {
		ex.edgeGone(err)
		return
	}
	// The headers went out: a stream held open for minutes should not
	// hold them (issue 9, memory per held stream).
	resp.Header = nil
	// One DATA frame per upstream read: an SSE event is on its way to the
	// edge before the next read blocks.
	n, err := ex.w.ReadFrom(resp.Body)
	ex.bytesOut.Add(n)
	if err != nil {
		var se *proto.SourceError
		if !errors.As(err, &se) {
			ex.edgeGone(err)
			return
		}
		if ex.canceled(upCtx) {
			return
		}
		// The edge must see an error, never a clean end of a cut body.
		ex.result = "upstream_error"
		ex.errDetail = errDetail(se.Err)
		ex.w.Reset(proto.CodeUpstreamError, fmt.Sprintf("airlock relay: upstream %q failed mid-response", ex.upstream))
		ex.release(noReset)
		return
	}
	// Closing the body fills in the trailers (checklist item 10).
	resp.Body.Close()
	if err := ex.w.End(trailerOf(resp)); err != nil {
		if ex.w.Ended() {
			ex.edgeGone(err)
			return
		}
		ex.result = "upstream_error"
		ex.errDetail = err.Error()
		ex.w.Reset(proto.CodeUpstreamError, "airlock relay: the upstream's trailers are too large")
		ex.release(noReset)
		return
	}
	ex.result = "ok"
	ex.release(noReset)
}

// wholeBody is an upstream response body that can hand over all of itself
// once it has arrived (http1's).
type wholeBody interface {
	TakeWhole(dst []byte) ([]byte, bool)
}

// respondWhole sends a response whose whole body arrived with its head as
// HEAD, DATA and END in one write: one packet (QUIC) or one TLS record
// (TCP) instead of three, and no copy loop (issue 9).
func (ex *exchange) respondWhole(head *proto.ResponseHead, body []byte) {
	if err := ex.w.WriteWholeResponse(head, body); err != nil {
		ex.edgeGone(err)
		return
	}
	ex.bytesOut.Add(int64(len(body)))
	ex.result = "ok"
	ex.release(noReset)
}

// fail answers with an OpenAI-shaped error response and ends the stream.
func (ex *exchange) fail(e *apiError) {
	ex.status = e.status
	ex.result = e.result
	if err := writeAPIError(ex.w, e); err != nil {
		ex.edgeGone(err)
		return
	}
	ex.release(noReset)
}

// canceled reports whether the upstream context ended because of the edge or
// the session, and if so aborts the stream with a fitting code.
func (ex *exchange) canceled(upCtx context.Context) bool {
	if upCtx.Err() == nil {
		return false
	}
	cause := context.Cause(upCtx)
	if ex.status == 0 {
		ex.status = 499 // client closed request (nginx, Caddy)
	}
	code := proto.CodeCancel
	switch {
	case errors.Is(cause, errEdgeProtocol):
		ex.result = "protocol_error"
		code = proto.CodeProtocol
	case errors.Is(cause, errEdgeGone):
		ex.result = "edge_gone"
	case errors.Is(cause, errEdgeAborted):
		ex.result = "edge_canceled"
	default:
		ex.result = "session_closed"
	}
	ex.release(code)
	return true
}

// edgeGone handles a failed write to the edge: the upstream call is
// cancelled and the stream aborted.
func (ex *exchange) edgeGone(err error) {
	if ex.cancel != nil {
		ex.cancel(errEdgeGone)
	}
	ex.result = "edge_gone"
	ex.errDetail = err.Error()
	ex.release(proto.CodeCancel)
}

// noReset is release's code for a stream that ends cleanly.
const noReset proto.ResetCode = 0

// release ends the stream, once: Close when code is noReset (after END, or
// a RESET or error answer written in-band), Abort(code) otherwise. The
// watch on the stream's context stops first: closing our send side ends
// that context too, and that is not the edge aborting. Every path that is
// done with the stream calls it, and ServeStream calls it last in case none
// did; a refusal may call it from the session's goroutine.
func (ex *exchange) release(code proto.ResetCode) {
	if !ex.released.CompareAndSwap(false, true) {
		return
	}
	if ex.stopWatch != nil {
		ex.stopWatch()
	}
	if code == noReset {
		ex.s.Close()
	} else {
		ex.s.Abort(code)
	}
}

// log writes the exchange's one log line. It never logs bodies, keys or
// query strings.
func (ex *exchange) log(ctx context.Context) {
	// The edge writes the access line of every request; the relay's own
	// line is for failures, and for every exchange at debug level. It cost
	// a tenth of the relay's CPU on small requests (scripts/bench profile).
	level := slog.LevelDebug
	if ex.result != "ok" {
		level = slog.LevelInfo
	}
	if !ex.h.logger.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	if ex.head != nil {
		path, _, _ := strings.Cut(ex.head.Path, "?")
		if len(path) > maxLoggedPath {
			path = path[:maxLoggedPath] + "..."
		}
		attrs = append(attrs,
			slog.String("request_id", ex.head.RequestID),
			slog.String("edge", ex.peer.Name),
			slog.String("client", ex.head.Client),
			slog.String("upstream", ex.upstream),
			slog.String("method", ex.head.Method),
			slog.String("path", path),
		)
	} else {
		attrs = append(attrs, slog.String("edge", ex.peer.Name))
	}
	attrs = append(attrs,
		slog.Int("status", ex.status),
		slog.String("result", ex.result),
		slog.Int64("bytes_in", ex.bytesIn.Load()),
		slog.Int64("bytes_out", ex.bytesOut.Load()),
		slog.Duration("duration", time.Since(ex.start)),
		slog.Duration("ttfb", ex.ttfb),
		slog.String("session", ex.peer.SessionID),
		slog.Int64("stream", ex.s.ID()),
	)
	if ex.errDetail != "" {
		attrs = append(attrs, slog.String("err", ex.errDetail))
	}
	ex.h.logger.LogAttrs(ctx, level, "exchange", attrs...)
}

// requestBody is the upstream request's body: the edge's DATA frames, read
// by the transport as it sends them. END is io.EOF; any other error (a RESET
// from the edge, a broken frame) cancels the upstream request at once.
type requestBody struct{ ex *exchange }

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.ex.r.Read(p)
	b.ex.bytesIn.Add(int64(n))
	if err != nil && err != io.EOF {
		b.fail(err)
	}
	return n, err
}

// WriteTo copies the body to w frame by frame (proto.Reader.WriteTo), for
// the upstream client's body writer: each DATA frame is one write upstream.
// A failure of w is the upstream's and cancels nothing here.
func (b *requestBody) WriteTo(w io.Writer) (int64, error) {
	n, err := b.ex.r.WriteTo(w)
	b.ex.bytesIn.Add(n)
	if _, sink := errors.AsType[*proto.SinkError](err); err != nil && !sink {
		b.fail(err)
	}
	return n, err
}

// fail cancels the upstream call for a body that could not be read.
func (b *requestBody) fail(err error) {
	if errors.Is(err, proto.ErrProtocol) {
		b.ex.cancel(errEdgeProtocol)
	} else {
		b.ex.cancel(errEdgeAborted)
	}
}

// Close does nothing: the stream belongs to ServeStream, not to the
// transport.
func (b *requestBody) Close() error { return nil }

// Interface guards.
var _ tunnel.Handler = (*Handler)(nil)
