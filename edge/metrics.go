package edge

import (
	"strconv"
	"strings"

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
	rejectLimit      = "limit"       // body or headers over the limits
	rejectNoTunnel   = "no_tunnel"   // no tunnel session up
	rejectBadRequest = "bad_request" // not under /v1/, or malformed
)

// rejectionOf maps the code of an edge-made error answer to its rejection
// reason; "" for errors that are not rejections (a failed upstream).
func rejectionOf(code string) string {
	switch code {
	case codeInvalidAPIKey:
		return rejectAuth
	case codeUpstreamNotAllowed:
		return rejectPolicy
	case codeRequestTooLarge, codeHeadersTooLarge:
		return rejectLimit
	case codeTunnelUnavailable:
		return rejectNoTunnel
	case codeNotFound, codeInvalidRequest:
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
}

func newEdgeMetrics(reg prometheus.Registerer) *edgeMetrics {
	const sub = "edge"
	m := &edgeMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: sub, Name: "requests_total",
			Help: "Requests answered, by API route, upstream name and status class (499: the client went away first).",
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
	}
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "usage", Name: "tokens_total",
		Help: "Tokens the upstream reported, by client, model, type (prompt or completion; their sum is the total) and how the request ended.",
	}, []string{"client", "model", "type", "end"})
	reg.MustRegister(m.requests, m.duration, m.ttfb, m.overhead, m.inFlight, m.rejections, m.retries, m.tokens)
	for _, r := range []string{rejectAuth, rejectPolicy, rejectLimit, rejectNoTunnel, rejectBadRequest} {
		m.rejections.WithLabelValues(r) // every reason shows, at 0
	}
	return m
}

// observe records one finished exchange.
func (m *edgeMetrics) observe(ex *exchange) {
	route := ex.route
	m.requests.WithLabelValues(route, ex.upstreamLabel(), metrics.StatusClass(ex.status)).Inc()
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
		client, model := ex.clientLabel(), modelLabel(ex.used.Model)
		m.tokens.WithLabelValues(client, model, "prompt", ex.endReason).Add(float64(ex.used.PromptTokens))
		m.tokens.WithLabelValues(client, model, "completion", ex.endReason).Add(float64(ex.used.CompletionTokens))
	}
}

// maxModelLabel bounds the model label: model names are short, and a longer
// one is more likely an upstream echoing what a client made up.
const maxModelLabel = 64

// modelLabel is the model of the metrics: the upstream's name for it when it
// is a short printable name, else "other" ("unknown" when it said none).
func modelLabel(model string) string {
	switch {
	case model == "":
		return "unknown"
	case len(model) > maxModelLabel || !proto.Printable(model):
		return "other"
	}
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
		fallbacks:  desc("fallbacks_total", "Times transport auto fell back from QUIC to TCP, by relay.", "relay"),
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
