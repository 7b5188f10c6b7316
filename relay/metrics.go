package relay

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/airlock-proxy/airlock/internal/metrics"
	"github.com/airlock-proxy/airlock/tunnel"
)

// relayMetrics are the relay's exchange metrics.
type relayMetrics struct {
	upstream     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	exchanges    *prometheus.CounterVec
	keyErrors    *prometheus.CounterVec
	keyCooldowns *prometheus.CounterVec
}

func newRelayMetrics(reg prometheus.Registerer) *relayMetrics {
	const sub = "relay"
	m := &relayMetrics{
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: sub, Name: "upstream_requests_total",
			Help: "Upstream calls, by upstream name and the status class of the answer (\"error\": no answer).",
		}, []string{"upstream", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: sub, Name: "upstream_latency_seconds",
			Help:    "Time from an upstream call to its response head, by upstream name.",
			Buckets: metrics.LatencyBuckets,
		}, []string{"upstream"}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: sub, Name: "exchanges_total",
			Help: "Exchanges served, by upstream name and how they ended (ok, upstream_error, edge_canceled, refused, ...).",
		}, []string{"upstream", "result"}),
	}
	m.keyErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: sub, Name: "upstream_key_errors_total",
		Help: "Upstream answers that refused a key (401, 403, 429), by upstream, key name and status.",
	}, []string{"upstream", "key", "code"})
	m.keyCooldowns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: sub, Name: "upstream_key_cooldowns_total",
		Help: "Times a key started to rest after such an answer, by upstream and key name.",
	}, []string{"upstream", "key"})
	reg.MustRegister(m.upstream, m.latency, m.exchanges, m.keyErrors, m.keyCooldowns)
	return m
}

// upstreamCodes are the code values of an upstream's calls that show from
// the start.
var upstreamCodes = []string{"2xx", "4xx", "5xx", "error"}

// addKeys makes the series of up show from the start, at 0: its calls by
// code class, their latency, and its keys' errors and cool-downs. A series
// that appears with its first event at 1 hides that event from rate() and
// increase(), such as the first 429s of a storm (AirlockUpstreamRateLimited
// divides them by the calls).
func (m *relayMetrics) addKeys(up *upstream) {
	for _, code := range upstreamCodes {
		m.upstream.WithLabelValues(up.name, code)
	}
	m.latency.WithLabelValues(up.name)
	for _, k := range up.keys {
		m.keyCooldowns.WithLabelValues(up.name, k.name)
		for _, code := range []string{"401", "403", "429"} {
			m.keyErrors.WithLabelValues(up.name, k.name, code)
		}
	}
}

// observe records one finished exchange.
func (m *relayMetrics) observe(ex *exchange) {
	up := ex.upstreamLabel()
	m.exchanges.WithLabelValues(up, ex.result).Inc()
	if !ex.called {
		return
	}
	code := "error"
	if ex.upstreamStatus != 0 {
		code = metrics.StatusClass(ex.upstreamStatus)
		m.latency.WithLabelValues(up).Observe(ex.upstreamTime.Seconds())
	}
	m.upstream.WithLabelValues(up, code).Inc()
}

// upstreamLabel is the upstream of the metrics: a configured name, "unknown"
// for a name the edge sent that is not one, "none" before the head.
func (ex *exchange) upstreamLabel() string {
	if ex.upstream == "" {
		return "none"
	}
	if _, ok := ex.p.upstreams[ex.upstream]; ok {
		return ex.upstream
	}
	return "unknown"
}

// tunnelCollector exports the tunnel server's sessions and counters at
// scrape time, so that no metric call sits on the tunnel's data path.
type tunnelCollector struct {
	srv *tunnel.Server

	sessions, streams, accepted, refused, failures, tx, rx *prometheus.Desc
}

// handshakeFailuresHelp explains the reasons of relay_handshake_failures_total,
// the relay's side of the edge's names (tunnel.ServerStats.Failures); each
// reason's series shows from the start, at 0.
const handshakeFailuresHelp = "Failed session attempts of edges, by reason: unauthorized (the edge's key is not listed), " +
	"pin_mismatch (the edge refused this relay's key: it pins another), timeout, protocol (not airlock's TLS: garbage, " +
	"another ALPN or version), network (the connection broke)."

func newTunnelCollector(srv *tunnel.Server) *tunnelCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return metrics.NewDesc("relay", name, help, labels...)
	}
	return &tunnelCollector{
		srv:      srv,
		sessions: desc("sessions", "Tunnel sessions up, by edge name and transport (quic or tcp).", "edge", "transport"),
		streams:  desc("streams_open", "Exchange streams being served."),
		accepted: desc("streams_accepted_total", "Exchange streams accepted."),
		refused:  desc("streams_refused_total", "Streams refused because their session was at its stream limit."),
		failures: desc("handshake_failures_total", handshakeFailuresHelp, "reason"),
		tx:       desc("sent_bytes_total", "Stream payload bytes sent to edges."),
		rx:       desc("received_bytes_total", "Stream payload bytes received from edges."),
	}
}

// Describe implements prometheus.Collector.
func (c *tunnelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.streams, c.accepted, c.refused, c.failures, c.tx, c.rx} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *tunnelCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	for k, n := range st.Sessions {
		metrics.Gauge(ch, c.sessions, float64(n), k.Edge, k.Transport)
	}
	metrics.Gauge(ch, c.streams, float64(st.Streams))
	metrics.Counter(ch, c.accepted, st.StreamsAccepted)
	metrics.Counter(ch, c.refused, st.StreamsRefused)
	metrics.Counter(ch, c.tx, st.BytesSent)
	metrics.Counter(ch, c.rx, st.BytesReceived)
	for r, n := range st.Failures {
		metrics.Counter(ch, c.failures, n, r)
	}
}
