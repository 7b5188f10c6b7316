// The access record: how an exchange ended, in the metrics and one log
// line.

package edge

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

// How an exchange ended, for the access log and the usage metrics.
const (
	endComplete      = "complete"       // the whole response reached the client
	endClientCancel  = "client_cancel"  // the client went away first
	endUpstreamError = "upstream_error" // the relay, tunnel or upstream failed
	endRejected      = "rejected"       // the edge answered by itself
)

// end records the finished exchange in the metrics and the access log.
func (ex *exchange) end() {
	// Every path that ends the stream releases it; this covers one that
	// did not (a panic).
	ex.release(proto.CodeCancel)
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
// It never logs bodies, keys or the Authorization header. The record goes
// to the handler directly: through Logger.LogAttrs it would also capture
// the caller's PC (runtime.Callers), which nobody reads, on every request.
func (ex *exchange) logLine() {
	ctx := context.Background()
	lh := ex.h.logger.Handler()
	if !lh.Enabled(ctx, slog.LevelInfo) {
		return
	}
	var relay, transport string
	if ex.peer != nil {
		relay, transport = ex.peer.Name, ex.peer.Transport
	}
	rec := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
	rec.AddAttrs(
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
	)
	if ex.upstreamRequestID != "" {
		rec.AddAttrs(slog.String("upstream_request_id", ex.upstreamRequestID))
	}
	if ex.retries > 0 {
		rec.AddAttrs(slog.Int("retries", ex.retries))
	}
	if ex.tokens {
		rec.AddAttrs(slog.String("model", ex.used.Model),
			slog.Int64("prompt_tokens", ex.used.PromptTokens), slog.Int64("completion_tokens", ex.used.CompletionTokens))
	}
	if ex.err != nil && !errors.Is(ex.err, context.Canceled) {
		rec.AddAttrs(slog.String("error", ex.err.Error()))
	}
	// A handler's failure to write is its own to report; the exchange is
	// over either way.
	_ = lh.Handle(ctx, rec)
}
