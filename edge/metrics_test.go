package edge

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/airlock-proxy/airlock/internal/testkit/faultproxy"
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
	// Every route's series exists (pre-created); only chat and models have
	// observations.
	for _, mf := range mustGather(t, e) {
		if mf.GetName() != "airlock_edge_time_to_first_byte_seconds" {
			continue
		}
		if n := len(mf.GetMetric()); n != len(routes)+1 {
			t.Errorf("%d time-to-first-byte series, want %d (every route)", n, len(routes)+1)
		}
		for _, m := range mf.GetMetric() {
			route := m.GetLabel()[0].GetValue()
			if n, want := m.GetHistogram().GetSampleCount(), route == "chat" || route == "models"; (n > 0) != want {
				t.Errorf("time to first byte of route %q: %d observations", route, n)
			}
		}
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
	return e.h.metrics
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
		leave bool // the client goes away after the first event
		want  string
	}{
		{"complete", okRelay, aliceKey, false, endComplete},
		{"rejected", okRelay, "wrong", false, endRejected},
		// The client stays to the end of the body: it sees the cut only
		// after the edge has taken the RESET and chosen the end reason.
		// A client that left after the first event could race the RESET
		// (the edge flushes a DATA frame that arrives on its own) and
		// make it client_cancel.
		{"upstream cut", cutRelay, aliceKey, false, endUpstreamError},
		{"client gone", holdRelay, aliceKey, true, endClientCancel},
		{"client gone after [DONE]", doneThenHold, aliceKey, true, endComplete},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEdge(t, nil, tt.relay)
			ctx, cancel := context.WithCancel(t.Context())
			req := newRequest(t, ctx, "GET", e.URL+"/v1/chat/completions", nil)
			req.Header.Set("Authorization", "Bearer "+tt.key)
			resp, err := e.client.Do(req)
			if err == nil {
				br := bufio.NewReader(resp.Body)
				if tt.leave {
					br.ReadString('\n') // the first event
					cancel()
				}
				_, err = io.Copy(io.Discard, br)
				resp.Body.Close()
				if tt.want == endUpstreamError && err == nil {
					t.Error("the client read the cut body to a clean end")
				}
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

// echoModelRelay answers like an upstream that echoes whatever model a
// request names: 200 with that model and a usage report.
func echoModelRelay(t *testing.T, r *fakeRelay) {
	r.head(t)
	b, err := r.body()
	if err != nil {
		t.Errorf("relay: reading body: %v", err)
	}
	var req struct {
		Model string `json:"model"`
	}
	json.Unmarshal(b, &req)
	body := fmt.Sprintf(`{"object":"chat.completion","model":%q,"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`, req.Model)
	r.respond(t, http.StatusOK, http.Header{"Content-Type": {"application/json"}}, body)
}

// labelValues returns the values of label in the series of the gathered
// family name.
func labelValues(t *testing.T, e *testEdge, name, label string) map[string]bool {
	t.Helper()
	vals := map[string]bool{}
	for _, mf := range mustGather(t, e) {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					vals[lp.GetValue()] = true
				}
			}
		}
	}
	return vals
}

// TestUsageModelLabelBounded: an upstream that echoes any model name cannot
// make a series per name (issue 8: 3,000 made-up names made 6,002 series).
// The model label takes at most maxModels names, then "other"; a name
// admitted before the flood keeps its own label, and the access log keeps
// every real name. The requests go straight to the handler: 3,000 of them
// over loopback HTTP take seconds with the race detector.
func TestUsageModelLabelBounded(t *testing.T) {
	const names, workers = 3000, 4
	e := newTestEdge(t, nil, echoModelRelay)
	h := e.h
	send := func(key, model string) error {
		req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(`{"model":"`+model+`"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			return fmt.Errorf("model %s: status %d", model, rec.Code)
		}
		return nil
	}
	if err := send(aliceKey, "gpt-4o-mini"); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < names; i += workers {
				key := aliceKey
				if i%2 == 1 {
					key = bobKey
				}
				if err := send(key, fmt.Sprintf("made-up-%d", i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := send(bobKey, "gpt-4o-mini"); err != nil {
		t.Fatal(err)
	}

	models := labelValues(t, e, "airlock_usage_tokens_total", "model")
	if len(models) > maxModels+1 {
		t.Errorf("%d model label values after %d made-up names, want at most %d (maxModels and other)", len(models), names, maxModels+1)
	}
	for _, want := range []string{"gpt-4o-mini", "other"} {
		if !models[want] {
			t.Errorf("no model=%q series", want)
		}
	}
	logged := map[string]bool{}
	for _, l := range e.logs.Lines(t) {
		if m, ok := l["model"].(string); ok {
			logged[m] = true
		}
	}
	if len(logged) != names+1 {
		t.Errorf("the access log has %d model names, want all %d", len(logged), names+1)
	}
}

// waitAccessLines waits until the access log has n request lines: each is
// written after its exchange was counted in the metrics.
func waitAccessLines(t *testing.T, e *testEdge, n int) {
	t.Helper()
	got := 0
	for deadline := time.Now().Add(testTimeout); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		got = 0
		for _, l := range e.logs.Lines(t) {
			if l["msg"] == "request" {
				got++
			}
		}
		if got >= n {
			return
		}
	}
	t.Fatalf("%d access log lines, want %d", got, n)
}

// TestModelLabels: the model label's bounds, by themselves.
func TestModelLabels(t *testing.T) {
	var s modelLabels
	for _, tt := range []struct {
		name, client, model, want string
	}{
		{"known", "alice", "gpt-4o-mini", "gpt-4o-mini"},
		{"again", "bob", "gpt-4o-mini", "gpt-4o-mini"},
		{"none", "alice", "", "unknown"},
		{"too long", "alice", strings.Repeat("m", maxModelLabel+1), "other"},
		{"not printable", "alice", "gpt 4o", "other"},
	} {
		if got := s.label(tt.client, tt.model); got != tt.want {
			t.Errorf("%s: label(%q, %q) = %q, want %q", tt.name, tt.client, tt.model, got, tt.want)
		}
	}

	// One client takes its share, never the whole set.
	s = modelLabels{}
	own := 0
	for i := range 1000 {
		if s.label("mallory", fmt.Sprintf("made-up-%d", i)) != "other" {
			own++
		}
	}
	if own != maxModelsPerClient {
		t.Errorf("one client got %d names a label, want %d", own, maxModelsPerClient)
	}
	if got := s.label("alice", "gpt-4o-mini"); got != "gpt-4o-mini" {
		t.Errorf("after one client's flood, another's model = %q, want its name", got)
	}

	// Many clients: at most maxModels names, then "other" for every new one.
	s = modelLabels{}
	seen := map[string]bool{}
	for i := range 3000 {
		seen[s.label(fmt.Sprintf("client-%d", i%300), fmt.Sprintf("made-up-%d", i))] = true
	}
	if len(seen) != maxModels+1 || !seen["other"] {
		t.Errorf("3000 names from 300 clients gave %d label values, want %d and other", len(seen), maxModels)
	}
	if got := s.label("client-0", "made-up-0"); got != "made-up-0" {
		t.Errorf("an admitted name after the set filled = %q, want its own label", got)
	}
}

// TestClientCancelCounts499: a client that leaves before the end of a 2xx
// answer is counted as 499, as the access log's end=client_cancel says, not
// as a 2xx it never got; one that leaves after the API's own end ([DONE])
// had the whole answer (2xx); an error answer keeps its class.
func TestClientCancelCounts499(t *testing.T) {
	holdAfter := func(status int, event string) relayFunc {
		return func(t *testing.T, r *fakeRelay) {
			r.head(t)
			err := r.w.WriteResponseHead(&proto.ResponseHead{
				Status: status, Header: http.Header{"Content-Type": {"text/event-stream"}}, ContentLength: -1,
			})
			if err != nil {
				t.Errorf("relay: writing head: %v", err)
			}
			r.w.Write([]byte(event))
			<-r.s.Context().Done() // until the edge aborts
		}
	}
	for _, tt := range []struct {
		name  string
		relay relayFunc
		want  string
	}{
		{"mid-stream", holdAfter(http.StatusOK, "data: 1\n\n"), "499"},
		{"after [DONE]", holdAfter(http.StatusOK, "data: [DONE]\n\n"), "2xx"},
		{"error answer", holdAfter(http.StatusInternalServerError, "data: 1\n\n"), "5xx"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEdge(t, nil, tt.relay)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			req := newRequest(t, ctx, "GET", e.URL+"/v1/chat/completions", nil)
			req.Header.Set("Authorization", "Bearer "+aliceKey)
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			bufio.NewReader(resp.Body).ReadString('\n') // the first event
			cancel()
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			waitAccessLines(t, e, 1)
			for _, code := range []string{"2xx", "499", "5xx"} {
				want := 0.0
				if code == tt.want {
					want = 1
				}
				if got := testutil.ToFloat64(e.handlerMetrics().requests.WithLabelValues("chat", "openai", code)); got != want {
					t.Errorf("requests_total{chat,openai,%s} = %v, want %v", code, got, want)
				}
			}
		})
	}
}

// TestRequestSeriesPrecreated: the request and latency series exist at 0
// before the first request, so that rate() and increase() count it: the
// latency histograms and the edge's own answers per route from the start,
// and every route's series of an upstream once a relay has named it.
func TestRequestSeriesPrecreated(t *testing.T) {
	e := newTestEdge(t, nil, okRelay)
	e.opener.peer.Upstreams = []string{"openai", "azure"}
	allRoutes := routeLabels()
	if len(allRoutes) != len(routes)+1 {
		t.Fatalf("routeLabels() = %v, want every route and other", allRoutes)
	}
	for _, name := range []string{"airlock_edge_request_duration_seconds", "airlock_edge_time_to_first_byte_seconds"} {
		got := labelValues(t, e, name, "route")
		for _, r := range allRoutes {
			if !got[r] {
				t.Errorf("before any request, %s has no route=%q series", name, r)
			}
		}
	}
	if n, want := testutil.CollectAndCount(e.handlerMetrics().requests), len(allRoutes)*len(noneCodes); n != want {
		t.Errorf("before any request, %d requests_total series, want %d (the edge's own answers on every route)", n, want)
	}
	// requests_total{route="models",upstream="none",code="5xx"} shows, at 0.
	found := false
	for _, mf := range mustGather(t, e) {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "airlock_edge_requests_total" && labelsAre(m, "code", "5xx", "route", "models", "upstream", "none") {
				found = m.GetCounter().GetValue() == 0
			}
		}
	}
	if !found {
		t.Error(`no airlock_edge_requests_total{code="5xx",route="models",upstream="none"} 0 before any request`)
	}

	e.do(t, "GET", "/v1/models", nil, nil)
	waitAccessLines(t, e, 1)
	want := len(allRoutes) * (len(noneCodes) + 2*len(upstreamCodes))
	if n := testutil.CollectAndCount(e.handlerMetrics().requests); n != want {
		t.Errorf("after the first request, %d requests_total series, want %d (both upstreams' on every route)", n, want)
	}
	for _, tt := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"models", "openai", "2xx"}, 1},
		{[]string{"chat", "openai", "2xx"}, 0},
		{[]string{"embeddings", "azure", "5xx"}, 0},
		{[]string{"responses", "azure", "499"}, 0},
	} {
		if got := testutil.ToFloat64(e.handlerMetrics().requests.WithLabelValues(tt.labels...)); got != tt.want {
			t.Errorf("requests_total%v = %v, want %v", tt.labels, got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(e.handlerMetrics().requests); n != want {
		t.Errorf("the checks above added series: %d, want %d", n, want)
	}
}

// labelsAre reports whether m's labels are exactly the name, value pairs of
// kv, in the exposition's (sorted) order.
func labelsAre(m *dto.Metric, kv ...string) bool {
	lps := m.GetLabel()
	if len(lps)*2 != len(kv) {
		return false
	}
	for i, lp := range lps {
		if lp.GetName() != kv[2*i] || lp.GetValue() != kv[2*i+1] {
			return false
		}
	}
	return true
}

// TestTunnelFallbacksCountsFallbacks: airlock_tunnel_fallbacks_total counts
// the times an "auto" edge moved from QUIC to TCP, not its failed attempts
// (issue 8). With UDP blocked and the relay's TCP port refusing, every
// reconnect tries QUIC, then TCP, and fails: no fallback happened. Once TCP
// works, the edge falls back once; a TCP session that dies and comes back
// over TCP is no new fallback.
func TestTunnelFallbacksCountsFallbacks(t *testing.T) {
	relayID, err := tunnel.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	edgeID, err := tunnel.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := tunnel.NewServer(tunnel.ServerOptions{
		Identity: relayID,
		Listen:   "127.0.0.1:0",
		Authorize: func(key string) (string, []string, error) {
			if key != edgeID.Fingerprint() {
				return "", nil, tunnel.ErrUnknownPeer
			}
			return "edge-1", []string{"openai"}, nil
		},
	}, tunnel.HandlerFunc(func(_ context.Context, _ *tunnel.Peer, s tunnel.Stream) { s.Abort(proto.CodeRefused) }))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		srv.Close()
		<-serveDone
	})
	// UDP blocked: QUIC goes to a socket that never answers.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	tcp, err := faultproxy.NewTCP(srv.TCPAddr().String(), faultproxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	tcp.SetRefuse(true)

	var cfg tunnel.Config
	cfg.Connections = 1
	cfg.FallbackTimeout = 50 * time.Millisecond
	cfg.ReconnectMin = 10 * time.Millisecond
	cfg.ReconnectMax = 20 * time.Millisecond
	relay := silent.LocalAddr().String()
	pool, err := tunnel.NewPool(tunnel.PoolOptions{
		Client: tunnel.ClientOptions{Config: cfg, Identity: edgeID, Transport: tunnel.TransportAuto},
		Relays: []tunnel.RelayTarget{{Addr: relay, TCPAddr: tcp.Addr(), Key: relayID.Fingerprint()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- pool.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(newTunnelCollector(pool))
	counter := func(name string) float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var sum float64
		for _, mf := range mfs {
			if mf.GetName() == name {
				for _, m := range mf.GetMetric() {
					sum += m.GetCounter().GetValue()
				}
			}
		}
		return sum
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(testTimeout); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}

	// Three rounds of a QUIC and a TCP attempt, each failing.
	waitFor("6 failed attempts", func() bool { return counter("airlock_tunnel_handshake_failures_total") >= 6 })
	if got := counter("airlock_tunnel_fallbacks_total"); got != 0 {
		t.Errorf("fallbacks_total = %v after only failed attempts, want 0: no TCP session came up", got)
	}

	tcp.SetRefuse(false)
	waitFor("a session over TCP", pool.Ready)
	if tr := pool.Transport(); tr != tunnel.TransportTCP {
		t.Fatalf("transport = %q with UDP blocked, want tcp", tr)
	}
	if got := counter("airlock_tunnel_fallbacks_total"); got != 1 {
		t.Errorf("fallbacks_total = %v once on TCP, want 1", got)
	}

	// The TCP session dies and comes back over TCP: still the same fallback.
	tcp.CutAll()
	waitFor("a reconnect", func() bool { return counter("airlock_tunnel_reconnects_total") >= 1 && pool.Ready() })
	if got := counter("airlock_tunnel_fallbacks_total"); got != 1 {
		t.Errorf("fallbacks_total = %v after a reconnect over TCP, want still 1", got)
	}
}
