package edge

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/airlock-proxy/airlock/internal/metrics"
	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
)

// routes are the values of the route label: the first path segment after
// /v1/ when it is one of OpenAI's API families, else "other". A fixed set,
// so that no request can add a time series.
var routes = map[string]bool{
	"chat": true, "completions": true, "embeddings": true, "responses": true, "models": true,
	"files": true, "uploads": true, "audio": true, "images": true, "batches": true,
	"moderations": true, "fine_tuning": true, "vector_stores": true, "assistants": true,
	"threads": true, "realtime": true, "containers": true, "conversations": true, "evals": true,
}

// routeOf returns the route label of a request path.
func routeOf(path string) string {
	rest, ok := strings.CutPrefix(path, apiPrefix)
	if !ok {
		return "other"
	}
	seg, _, _ := strings.Cut(rest, "/")
	if routes[seg] {
		return seg
	}
	return "other"
}

// Rejection reasons: why the edge answered a request itself without
// carrying it to a relay.
const (
	rejectAuth       = "auth"        // no or unknown client key
	rejectPolicy     = "policy"      // an upstream the client may not use
	rejectLimit      = "limit"       // body or headers over the limits, max_concurrent
	rejectNoTunnel   = "no_tunnel"   // no tunnel session up
	rejectBadRequest = "bad_request" // not under /v1/, malformed, or a stalled body
)

// rejectionOf maps the code of an edge-made error answer to its rejection
// reason; "" for errors that are not rejections (a failed upstream).
func rejectionOf(code string) string {
	switch code {
	case codeInvalidAPIKey:
		return rejectAuth
	case codeUpstreamNotAllowed:
		return rejectPolicy
	case codeRequestTooLarge, codeHeadersTooLarge, codeTooManyRequests:
		return rejectLimit
	case codeTunnelUnavailable:
		return rejectNoTunnel
	case codeNotFound, codeInvalidRequest, codeRequestTimeout:
		return rejectBadRequest
	}
	return ""
}

// edgeMetrics are the edge's request metrics.
type edgeMetrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	ttfb       *prometheus.HistogramVec
	overhead   prometheus.Histogram
	inFlight   prometheus.Gauge
	rejections *prometheus.CounterVec
	retries    prometheus.Counter
	tokens     *prometheus.CounterVec

	models modelLabels // the bounded model label of tokens

	upMu sync.RWMutex
	// upstreams are the upstream label values whose request series
	// exist, pre-created by addUpstreams.
	upstreams map[string]bool
	// lastPeer is the session whose upstreams were added last: a request
	// over it has nothing to add, without a lock or a map lookup.
	lastPeer atomic.Pointer[tunnel.Peer]
}

func newEdgeMetrics(reg prometheus.Registerer) *edgeMetrics {
	const sub = "edge"
	m := &edgeMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: sub, Name: "requests_total",
			Help: "Requests answered, by API route, upstream name and status class (499: the client went away before the end of the answer).",
		}, []string{"route", "upstream", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: sub, Name: "request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its response, by API route.",
			Buckets: metrics.DurationBuckets,
		}, []string{"route"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: sub, Name: "time_to_first_byte_seconds",
			Help:    "Time from a request's arrival to its response head from the relay, by API route.",
			Buckets: metrics.LatencyBuckets,
		}, []string{"route"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: sub, Name: "overhead_seconds",
			Help:    "Time airlock added before a response head: time to first byte less the upstream's own time.",
			Buckets: metrics.LatencyBuckets,
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metrics.Namespace, Subsystem: sub, Name: "requests_in_flight",
			Help: "Requests being served.",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: sub, Name: "rejections_total",
			Help: "Requests the edge answered itself, by reason: auth, policy, limit, no_tunnel, bad_request.",
		}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: sub, Name: "refused_retries_total",
			Help: "Requests sent again on another session after a relay refused them before calling the upstream.",
		}),
		upstreams: map[string]bool{},
	}
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "usage", Name: "tokens_total",
		Help: fmt.Sprintf("Tokens the upstream reported, by client, model (at most %d names per edge, then \"other\"), "+
			"type (prompt or completion; their sum is the total) and how the request ended.", maxModels),
	}, []string{"client", "model", "type", "end"})
	reg.MustRegister(m.requests, m.duration, m.ttfb, m.overhead, m.inFlight, m.rejections, m.retries, m.tokens)
	for _, r := range []string{rejectAuth, rejectPolicy, rejectLimit, rejectNoTunnel, rejectBadRequest} {
		m.rejections.WithLabelValues(r) // every reason shows, at 0
	}
	m.precreate()
	return m
}

// Pre-created series. A series that appears with its first request at 1
// hides that request from rate() and increase(), which need two samples: a
// route's first requests, or the first 503s of an outage, would be missed.
// So the series of the fixed label sets exist from the start, at 0: the
// latency histograms of every route (20 routes: 380 duration and 440 time to
// first byte series), the answers the edge gives itself (upstream "none":
// 4xx, 5xx) on every route, and, once a relay has named them, each
// upstream's series on every route with the classes in upstreamCodes (80 per
// upstream, for at most maxPrecreatedUpstreams upstreams). 1xx, 3xx and
// other statuses, upstream "other" and the rest appear on first use.
var (
	// upstreamCodes are the code classes pre-created per route and upstream.
	upstreamCodes = []string{"2xx", "4xx", "5xx", "499"}
	// noneCodes are those of the edge's own answers, given before any
	// relay was reached: its 4xx rejections and 503 (no tunnel).
	noneCodes = []string{"4xx", "5xx"}
)

// maxPrecreatedUpstreams bounds the upstream names whose series are
// pre-created: the names come from the relays' configs, and a relay with
// more upstreams than this gets the others' series on first use.
const maxPrecreatedUpstreams = 16

// routeLabels returns every value of the route label.
func routeLabels() []string {
	out := make([]string, 0, len(routes)+1)
	for r := range routes {
		out = append(out, r)
	}
	return append(out, "other")
}

// precreate makes the series that need no relay show from the start.
func (m *edgeMetrics) precreate() {
	for _, route := range routeLabels() {
		m.duration.WithLabelValues(route)
		m.ttfb.WithLabelValues(route)
		for _, code := range noneCodes {
			m.requests.WithLabelValues(route, "none", code)
		}
	}
}

// addUpstreams pre-creates the request series of every route for the
// upstreams a relay named in its WELCOME, the first time they are seen.
func (m *edgeMetrics) addUpstreams(names []string) {
	m.upMu.RLock()
	known := true
	for _, name := range names {
		if !m.upstreams[name] {
			known = false
			break
		}
	}
	full := len(m.upstreams) >= maxPrecreatedUpstreams
	m.upMu.RUnlock()
	if known || full {
		return
	}
	m.upMu.Lock()
	defer m.upMu.Unlock()
	for _, name := range names {
		if m.upstreams[name] || len(m.upstreams) >= maxPrecreatedUpstreams {
			continue
		}
		m.upstreams[name] = true
		for _, route := range routeLabels() {
			for _, code := range upstreamCodes {
				m.requests.WithLabelValues(route, name, code)
			}
		}
	}
}

// observe records one finished exchange.
func (m *edgeMetrics) observe(ex *exchange) {
	route := ex.route
	if ex.peer != nil && m.lastPeer.Load() != ex.peer {
		m.addUpstreams(ex.peer.Upstreams)
		m.lastPeer.Store(ex.peer)
	}
	m.requests.WithLabelValues(route, ex.upstreamLabel(), codeLabel(ex)).Inc()
	m.duration.WithLabelValues(route).Observe(ex.duration.Seconds())
	if ex.ttfb > 0 {
		m.ttfb.WithLabelValues(route).Observe(ex.ttfb.Seconds())
		m.overhead.Observe(ex.overhead.Seconds())
	}
	if ex.rejection != "" {
		m.rejections.WithLabelValues(ex.rejection).Inc()
	}
	if ex.retries > 0 {
		m.retries.Add(float64(ex.retries))
	}
	if ex.tokens {
		client := ex.clientLabel()
		model := m.models.label(client, ex.used.Model)
		m.tokens.WithLabelValues(client, model, "prompt", ex.endReason).Add(float64(ex.used.PromptTokens))
		m.tokens.WithLabelValues(client, model, "completion", ex.endReason).Add(float64(ex.used.CompletionTokens))
	}
}

// codeLabel is the code of the request metrics: the class of the status,
// except that a success the client cut short counts as 499, as a client
// that left before the head does. The status was 2xx, but the client left
// before the end of the answer (endClientCancel; a client that left after
// the API's own end of it, such as an SSE client closing after "data:
// [DONE]", ended complete, see exchange.end), so it did not get what the
// 2xx promised. An error status stays what it is: the 5xx ratio must still
// see an upstream that failed while its client gave up.
func codeLabel(ex *exchange) string {
	if ex.endReason == endClientCancel && ex.status >= 200 && ex.status < 300 {
		return metrics.StatusClass(statusClientClosed)
	}
	return metrics.StatusClass(ex.status)
}

// Bounds of the model label of airlock_usage_tokens_total. The model name is
// what the upstream's answer says, and some upstreams echo whatever model a
// request named, so without a bound every made-up name would add series
// (issue 8: 3,000 names made 6,002).
const (
	// maxModels is how many model names one edge gives a label of their
	// own; later names count as "other".
	maxModels = 100
	// maxModelsPerClient is how many of them one client may add, so that
	// one client (or one leaked key) cannot take the whole set. With auth =
	// "none" every request is one client, "anonymous".
	maxModelsPerClient = maxModels / 4
	// maxModelLabel bounds a name's length: model names are short, and a
	// longer one is more likely an upstream echoing what a client made up.
	maxModelLabel = 64
)

// modelLabels bounds the model label: a name becomes a label value the
// first time a successful (2xx) answer reports token usage with it (observe
// sees only those), while fewer than maxModels names have, and fewer than
// maxModelsPerClient of them came from the same client; every other name is
// "other" ("unknown" when the answer named none).
//
// The trade-off: admission is first come, first served, and for the life of
// the process (a counter cannot be dropped without losing its totals). An
// answer with usage is what the upstream really served and billed, which
// keeps out names a strict upstream refuses (OpenAI answers 404
// model_not_found), but not those of an upstream that echoes any name: a
// client can then take its share of the set, never all of it, and names it
// did not take keep their labels. A list of known names would be stricter,
// but the edge has none: models are the upstream's business, and the
// upstream's /v1/models answer is neither requested by most clients nor
// complete for aliases and fine-tuned models. The access log always has the
// real name.
type modelLabels struct {
	mu       sync.RWMutex
	admitted map[string]bool // the names with a label of their own
	byClient map[string]int  // how many of them each client added
}

// label returns the model label of a usage report by client for model.
func (s *modelLabels) label(client, model string) string {
	switch {
	case model == "":
		return "unknown"
	case len(model) > maxModelLabel || !proto.Printable(model):
		return "other"
	}
	s.mu.RLock()
	ok, full := s.admitted[model], len(s.admitted) >= maxModels
	s.mu.RUnlock()
	switch {
	case ok:
		return model
	case full:
		return "other"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.admitted[model] {
		return model
	}
	if len(s.admitted) >= maxModels || s.byClient[client] >= maxModelsPerClient {
		return "other"
	}
	if s.admitted == nil {
		s.admitted, s.byClient = map[string]bool{}, map[string]int{}
	}
	s.admitted[model] = true
	s.byClient[client]++
	return model
}

// tunnelCollector exports the tunnel pool's state and counters at scrape
// time, so that no metric call sits on the tunnel's data path.
type tunnelCollector struct {
	pool *tunnel.Pool

	sessions, rtt, streams                                   *prometheus.Desc
	reconnects, failures, fallbacks, goAways, opened, tx, rx *prometheus.Desc
}

func newTunnelCollector(pool *tunnel.Pool) *tunnelCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return metrics.NewDesc("tunnel", name, help, labels...)
	}
	return &tunnelCollector{
		pool:       pool,
		sessions:   desc("sessions", "Tunnel sessions up, by relay and transport (quic or tcp).", "relay", "transport"),
		rtt:        desc("rtt_seconds", "Round-trip time of each connection's last PING, 0 while down.", "relay", "connection"),
		streams:    desc("streams_open", "Streams open, by relay.", "relay"),
		reconnects: desc("reconnects_total", "Sessions established after a connection's first one, by relay.", "relay"),
		failures:   desc("handshake_failures_total", "Failed connection attempts, by relay and reason.", "relay", "reason"),
		fallbacks:  desc("fallbacks_total", "Times transport auto moved from QUIC to TCP: TCP sessions established after QUIC failed, by relay (reconnects while on TCP do not count).", "relay"),
		goAways:    desc("goaways_total", "GOAWAYs received (the relay draining), by relay.", "relay"),
		opened:     desc("streams_opened_total", "Streams opened, by relay.", "relay"),
		tx:         desc("sent_bytes_total", "Stream payload bytes sent to the relay.", "relay"),
		rx:         desc("received_bytes_total", "Stream payload bytes received from the relay.", "relay"),
	}
}

// Describe implements prometheus.Collector.
func (c *tunnelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.rtt, c.streams, c.reconnects, c.failures, c.fallbacks, c.goAways, c.opened, c.tx, c.rx} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the pool's connections summed by
// relay.
func (c *tunnelCollector) Collect(ch chan<- prometheus.Metric) {
	type relaySums struct {
		sessions                                       map[string]int
		streams                                        int
		reconnects, fallbacks, goAways, opened, tx, rx uint64
		failures                                       map[string]uint64
	}
	sums := map[string]*relaySums{}
	var order []string
	conn := map[string]int{}
	for _, st := range c.pool.Stats() {
		s := sums[st.Relay]
		if s == nil {
			s = &relaySums{sessions: map[string]int{tunnel.TransportQUIC: 0, tunnel.TransportTCP: 0}, failures: map[string]uint64{}}
			sums[st.Relay] = s
			order = append(order, st.Relay)
		}
		if st.Transport != "" {
			s.sessions[st.Transport]++
		}
		s.streams += st.Streams
		if st.Connects > 1 {
			s.reconnects += st.Connects - 1
		}
		s.fallbacks += st.Fallbacks
		s.goAways += st.GoAways
		s.opened += st.StreamsOpened
		s.tx += st.BytesSent
		s.rx += st.BytesReceived
		for r, n := range st.Failures {
			s.failures[r] += n
		}
		metrics.Gauge(ch, c.rtt, st.RTT.Seconds(), st.Relay, strconv.Itoa(conn[st.Relay]))
		conn[st.Relay]++
	}
	for _, relay := range order {
		s := sums[relay]
		for tr, n := range s.sessions {
			metrics.Gauge(ch, c.sessions, float64(n), relay, tr)
		}
		metrics.Gauge(ch, c.streams, float64(s.streams), relay)
		metrics.Counter(ch, c.reconnects, s.reconnects, relay)
		metrics.Counter(ch, c.fallbacks, s.fallbacks, relay)
		metrics.Counter(ch, c.goAways, s.goAways, relay)
		metrics.Counter(ch, c.opened, s.opened, relay)
		metrics.Counter(ch, c.tx, s.tx, relay)
		metrics.Counter(ch, c.rx, s.rx, relay)
		for r, n := range s.failures {
			metrics.Counter(ch, c.failures, n, relay, r)
		}
	}
}
