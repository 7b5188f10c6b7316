// Package metricstest checks a role's /metrics endpoint in tests: that it
// serves the expected series and that the exposition passes promlint, the
// Prometheus project's checks of metric naming and documentation.
package metricstest

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// settle bounds how long Check scrapes again for lines it misses: a role
// counts an exchange just after its last byte reached the client, so a
// scrape right after a request may precede the count.
const settle = 5 * time.Second

// Check scrapes url until every line of wants starts a line of the
// exposition (for up to settle), reports as test errors those that never
// do, and every promlint problem. It returns the exposition.
func Check(t testing.TB, url string, wants ...string) string {
	t.Helper()
	var body string
	var missing []string
	for deadline := time.Now().Add(settle); ; time.Sleep(10 * time.Millisecond) {
		body = scrape(t, url)
		missing = slices.DeleteFunc(slices.Clone(wants), func(want string) bool {
			return strings.HasPrefix(body, want) || strings.Contains(body, "\n"+want)
		})
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range missing {
		t.Errorf("%s lacks a line starting %q", url, want)
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

// scrape returns the body of url.
func scrape(t testing.TB, url string) string {
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
	return string(b)
}
