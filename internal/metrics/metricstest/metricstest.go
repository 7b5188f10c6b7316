// Package metricstest checks a role's /metrics endpoint in tests: that it
// serves the expected series and that the exposition passes promlint, the
// Prometheus project's checks of metric naming and documentation.
package metricstest

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// Check scrapes url and reports, as test errors, every line of wants that
// starts no line of the exposition, and every promlint problem. It returns
// the exposition.
func Check(t testing.TB, url string, wants ...string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	body := string(b)
	for _, want := range wants {
		if !strings.HasPrefix(body, want) && !strings.Contains(body, "\n"+want) {
			t.Errorf("%s lacks a line starting %q", url, want)
		}
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	return body
}
