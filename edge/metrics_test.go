package edge

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
)

func TestRouteOf(t *testing.T) {
	for path, want := range map[string]string{
		"/v1/chat/completions":          "chat",
		"/v1/embeddings":                "embeddings",
		"/v1/responses/resp_1/cancel":   "responses",
		"/v1/audio/transcriptions":      "audio",
		"/v1/files/file-abc/content":    "files",
		"/v1/whatever-a-client-invents": "other",
		"/v1/":                          "other",
		"/v2/models":                    "other",
	} {
		if got := routeOf(path); got != want {
			t.Errorf("routeOf(%q) = %q, want %q", path, got, want)
		}
	}
}

// TestRequestMetrics: every request is counted once with bounded labels,
// edge-made answers by rejection reason, and the metrics pass promlint.
func TestRequestMetrics(t *testing.T) {
	e := newTestEdge(t, nil, okRelay)
	e.opener.peer.Upstreams = []string{"openai", "azure"}
	e.do(t, "POST", "/v1/chat/completions", strings.NewReader(`{}`), nil)
	e.do(t, "GET", "/v1/models", nil, map[string]string{"Airlock-Upstream": "azure"})
	e.do(t, "GET", "/v1/models", nil, map[string]string{"Airlock-Upstream": "made-up-" + strings.Repeat("x", 20)})
	e.do(t, "GET", "/v1/models", nil, map[string]string{"Authorization": "Bearer wrong"})
	req := newRequest(t, t.Context(), "GET", e.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+bobKey)
	req.Header.Set("Airlock-Upstream", "local")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	e.opener.err = tunnel.ErrNoSession
	e.do(t, "GET", "/v1/models", nil, nil)

	for _, tt := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"chat", "openai", "2xx"}, 1},
		{[]string{"models", "azure", "2xx"}, 1},
		{[]string{"models", "other", "2xx"}, 1}, // an upstream the relay did not list
		{[]string{"models", "none", "4xx"}, 2},  // 401 and 403: no relay reached
		{[]string{"models", "none", "5xx"}, 1},  // 503: no tunnel
	} {
		if got := testutil.ToFloat64(e.handlerMetrics().requests.WithLabelValues(tt.labels...)); got != tt.want {
			t.Errorf("requests_total%v = %v, want %v", tt.labels, got, tt.want)
		}
	}
	for reason, want := range map[string]float64{rejectAuth: 1, rejectPolicy: 1, rejectNoTunnel: 1, rejectLimit: 0} {
		if got := testutil.ToFloat64(e.handlerMetrics().rejections.WithLabelValues(reason)); got != want {
			t.Errorf("rejections_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if got := testutil.ToFloat64(e.handlerMetrics().inFlight); got != 0 {
		t.Errorf("requests_in_flight = %v after all requests ended", got)
	}
	if n := testutil.CollectAndCount(e.handlerMetrics().ttfb); n != 2 {
		t.Errorf("%d time-to-first-byte series, want 2 (chat, models)", n)
	}
	problems, err := promlint.NewWithMetricFamilies(mustGather(t, e)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// handlerMetrics returns the metrics of e's handler.
func (e *testEdge) handlerMetrics() *edgeMetrics {
	return e.srv.Config.Handler.(*handler).metrics
}

func mustGather(t *testing.T, e *testEdge) []*dto.MetricFamily {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// TestAccessLogEndReason: every access line says how its exchange ended.
func TestAccessLogEndReason(t *testing.T) {
	cutRelay := func(t *testing.T, r *fakeRelay) {
		r.head(t)
		sendSSEHead(t, r)
		r.w.Write([]byte("data: 1\n\n"))
		r.w.Reset(proto.CodeUpstreamError, "upstream cut")
	}
	holdRelay := func(t *testing.T, r *fakeRelay) {
		r.head(t)
		sendSSEHead(t, r)
		r.w.Write([]byte("data: 1\n\n"))
		<-r.s.Context().Done() // until the edge aborts
	}
	doneThenHold := func(t *testing.T, r *fakeRelay) {
		r.head(t)
		sendSSEHead(t, r)
		r.w.Write([]byte("data: [DONE]\n\n"))
		<-r.s.Context().Done() // END comes too late: the client has gone
	}
	for _, tt := range []struct {
		name  string
		relay relayFunc
		key   string
		want  string
	}{
		{"complete", okRelay, aliceKey, endComplete},
		{"rejected", okRelay, "wrong", endRejected},
		{"upstream cut", cutRelay, aliceKey, endUpstreamError},
		{"client gone", holdRelay, aliceKey, endClientCancel},
		{"client gone after [DONE]", doneThenHold, aliceKey, endComplete},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEdge(t, nil, tt.relay)
			ctx, cancel := context.WithCancel(t.Context())
			req := newRequest(t, ctx, "GET", e.URL+"/v1/chat/completions", nil)
			req.Header.Set("Authorization", "Bearer "+tt.key)
			resp, err := e.srv.Client().Do(req)
			if err == nil {
				bufio.NewReader(resp.Body).ReadString('\n') // the first event, if any
				cancel()
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			cancel()
			var got string
			for deadline := time.Now().Add(testTimeout); got == "" && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				for _, l := range e.logs.Lines(t) {
					if l["msg"] == "request" {
						got, _ = l["end"].(string)
					}
				}
			}
			if got != tt.want {
				t.Errorf("access log end = %q, want %q", got, tt.want)
			}
		})
	}
}
