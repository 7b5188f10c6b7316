package metrics

import (
	"io"
	"net/http/httptest"
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
