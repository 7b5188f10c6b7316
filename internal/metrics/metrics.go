// Package metrics holds what the edge's and the relay's Prometheus metrics
// share: a registry of their own with the Go runtime and process collectors,
// the /metrics handler, histogram buckets and bounded label values.
//
// Each role registers its metrics on its own registry, never on the global
// default one, so that two roles in one process (airlock dev, the tests)
// keep separate metrics. Names start with airlock_, use base units (seconds,
// bytes) and end in _total for counters; label values come from small fixed
// sets or from the configuration, never from requests.
package metrics

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace is the prefix of every airlock metric.
const Namespace = "airlock"

// DurationBuckets are the buckets of request duration histograms, in
// seconds: from 5 ms to 10 minutes, since a long generation streams for
// minutes.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// LatencyBuckets are the buckets of histograms of short delays (time to
// first byte, overhead, round trips), in seconds: from 0.5 ms to 10 minutes.
var LatencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// RuntimeCounters are the runtime/metrics counters the Go collector exports
// besides its defaults, so that a benchmark can count what one request
// costs a process (issue 9; scripts/loadgen scrapes them): goroutines
// created (go_sched_goroutines_created_goroutines_total) and heap
// allocations in objects and bytes (go_gc_heap_allocs_objects_total,
// go_gc_heap_allocs_bytes_total). Each is one cumulative counter, read at
// scrape time.
var RuntimeCounters = []string{"/sched/goroutines-created:goroutines", "/gc/heap/allocs:objects", "/gc/heap/allocs:bytes"}

// NewRegistry returns an empty registry with the Go runtime and process
// collectors. The Go collector exports its defaults and RuntimeCounters.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// newGoCollector returns the Go runtime collector with RuntimeCounters.
func newGoCollector() prometheus.Collector {
	names := make([]string, len(RuntimeCounters))
	for i, n := range RuntimeCounters {
		names[i] = regexp.QuoteMeta(n)
	}
	only := regexp.MustCompile(`^(` + strings.Join(names, "|") + `)$`)
	return collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.GoRuntimeMetricsRule{Matcher: only}))
}

// Handler serves reg's metrics in the Prometheus text format (or
// OpenMetrics, when the scraper asks for it). Errors while gathering are
// served as HTTP 500 so that the scrape fails visibly.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg,
		EnableOpenMetrics: true,
		ErrorHandling:     promhttp.HTTPErrorOnError,
	})
}

// NewDesc describes an airlock metric of subsystem that a collector exports
// at scrape time (a value read from the data path's own counters).
func NewDesc(subsystem, name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, subsystem, name), help, labels, nil)
}

// Counter sends a counter read at scrape time to ch.
func Counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

// Gauge sends a gauge read at scrape time to ch.
func Gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// StatusClass returns the class of an HTTP status for a label: "2xx",
// "4xx", "5xx" (and "1xx", "3xx"); "499" for a client that went away first
// (a status no response ever carried), "other" for anything else.
func StatusClass(status int) string {
	switch {
	case status == 499:
		return "499"
	case status >= 100 && status < 600:
		return strconv.Itoa(status/100) + "xx"
	}
	return "other"
}
