package metrics

import (
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHandlerServesRegistry(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "test_events_total", Help: "Test events."})
	reg.MustRegister(c)
	c.Add(3)
	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{"airlock_test_events_total 3", "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestRuntimeCounters checks that /metrics carries the runtime counters
// scripts/loadgen reads per request, by the names it reads them under, each
// once and counting up.
func TestRuntimeCounters(t *testing.T) {
	reg := NewRegistry()
	scrape := func() string {
		rec := httptest.NewRecorder()
		Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	value := func(body, name string) float64 {
		t.Helper()
		var v float64
		n := 0
		for line := range strings.Lines(body) {
			if rest, ok := strings.CutPrefix(line, name+" "); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				v, n = f, n+1
			}
		}
		if n != 1 {
			t.Fatalf("/metrics has %d samples of %s, want 1", n, name)
		}
		return v
	}
	names := []string{"go_sched_goroutines_created_goroutines_total", "go_gc_heap_allocs_objects_total", "go_gc_heap_allocs_bytes_total"}
	before := scrape()
	done := make(chan []byte)
	for range 10 {
		go func() { done <- make([]byte, 1<<10) }()
		<-done
	}
	after := scrape()
	for _, name := range names {
		if b, a := value(before, name), value(after, name); a <= b {
			t.Errorf("%s went from %v to %v, want it to count up", name, b, a)
		}
	}
	if strings.Contains(after, "go_sched_latencies_seconds") {
		t.Errorf("/metrics has runtime metrics beyond RuntimeCounters (go_sched_latencies_seconds)")
	}
}

func TestStatusClass(t *testing.T) {
	for status, want := range map[int]string{200: "2xx", 201: "2xx", 101: "1xx", 302: "3xx", 404: "4xx", 499: "499", 503: "5xx", 0: "other", 700: "other"} {
		if got := StatusClass(status); got != want {
			t.Errorf("StatusClass(%d) = %q, want %q", status, got, want)
		}
	}
}

func TestBucketsAscendToTenMinutes(t *testing.T) {
	for _, b := range [][]float64{DurationBuckets, LatencyBuckets} {
		for i := 1; i < len(b); i++ {
			if b[i] <= b[i-1] {
				t.Fatalf("buckets not ascending: %v", b)
			}
		}
		if b[len(b)-1] != 600 {
			t.Errorf("last bucket %v, want 600 (10 minutes)", b[len(b)-1])
		}
	}
}
