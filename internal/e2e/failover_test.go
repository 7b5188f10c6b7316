package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/testkit/devstack"
	"github.com/airlock-proxy/airlock/internal/testkit/testlog"
	"github.com/airlock-proxy/airlock/tunnel"
)

// startTwoRelays runs an edge with two relays over transport, and waits
// until the edge has sessions to both.
func startTwoRelays(t *testing.T, transport string) (*devstack.Stack, *testlog.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	logs := &testlog.Buffer{}
	st, err := devstack.Start(ctx, devstack.Options{
		Relays:    2,
		Transport: transport,
		Logger:    slog.New(slog.NewJSONHandler(logs, nil)),
		Tunnel: tunnel.Config{
			ReconnectMin: 50 * time.Millisecond,
			ReconnectMax: 200 * time.Millisecond,
		},
	})
	if err != nil {
		t.Fatalf("starting the stack: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the stack: %v", err)
		}
	})
	for _, r := range st.Relays {
		deadline := time.Now().Add(5 * time.Second)
		for r.Sessions() < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("relay has %d sessions from the edge, want 2", r.Sessions())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return st, logs
}

// loadResult is one request of a load run.
type loadResult struct {
	id        string // the X-Test-Id the upstream sees
	requestID string // the edge's request id, in the relays' log lines
	status    int
	err       error
}

// runLoad sends chat completions from workers goroutines until stop is
// closed, each tagged with an X-Test-Id and held delay at the upstream, and
// returns every result.
func runLoad(t *testing.T, st *devstack.Stack, workers int, delay time.Duration, stop <-chan struct{}) []loadResult {
	t.Helper()
	var mu sync.Mutex
	var results []loadResult
	var seq atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprint(seq.Add(1))
				req, _ := http.NewRequest("POST", st.EdgeURL+"/chat/completions",
					strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"load `+id+`"}]}`))
				req.Header.Set("Authorization", "Bearer "+st.ClientKey)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Test-Id", id)
				req.Header.Set("X-Test-Delay", delay.String())
				res := loadResult{id: id}
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					res.status = resp.StatusCode
					res.requestID = resp.Header.Get("Airlock-Request-Id")
				}
				res.err = err
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return results
}

// upstreamSeen collects the X-Test-Id of every request that reached the test
// upstream until the test ends; call the returned function, after the load
// ended, for the set.
func upstreamSeen(t *testing.T, st *devstack.Stack) func() map[string]bool {
	seen := map[string]bool{}
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case info := <-st.Upstream.Requests():
				mu.Lock()
				seen[info.Header.Get("X-Test-Id")] = true
				mu.Unlock()
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return func() map[string]bool {
		time.Sleep(50 * time.Millisecond) // the last reports
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string]bool, len(seen))
		for k := range seen {
			out[k] = true
		}
		return out
	}
}

// upstreamCalls returns the request ids of the exchanges that failed after
// their relay had sent them upstream, from the relays' log lines: a relay
// that closes refuses an exchange whose request headers it had not written
// (result "refused"), so "session_closed" and "upstream_error" mean sent.
func upstreamCalls(t *testing.T, logs *testlog.Buffer) map[string]bool {
	called := map[string]bool{}
	for _, l := range logs.Lines(t) {
		if l["role"] != "relay" || l["msg"] != "exchange" {
			continue
		}
		switch l["result"] {
		case "session_closed", "upstream_error":
			if id, ok := l["request_id"].(string); ok {
				called[id] = true
			}
		}
	}
	return called
}

// TestTwoRelaysOneKilledMidLoad: when one of two relays stops at once under
// load, no request fails that the relay had not yet sent upstream: the dying
// relay refuses those (and the edge retries them on the other relay), and
// new requests go to the other relay. Requests it had sent upstream may fail,
// visibly. "Sent" is the relay's view (request headers written): a request
// whose headers were on their way may still not have reached the upstream
// when the connection was cut, and airlock must not send it twice.
func TestTwoRelaysOneKilledMidLoad(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		st, logs := startTwoRelays(t, transport)
		seen := upstreamSeen(t, st)
		stop := make(chan struct{})
		go func() {
			time.Sleep(300 * time.Millisecond)
			st.Relays[1].Close()
			time.Sleep(300 * time.Millisecond)
			close(stop)
		}()
		results := runLoad(t, st, 16, 20*time.Millisecond, stop)
		reached := seen()
		called := upstreamCalls(t, logs)
		var ok, failedStarted, failedUnstarted int
		for _, r := range results {
			switch {
			case r.err == nil && r.status == http.StatusOK:
				ok++
			case reached[r.id] || called[r.requestID]:
				failedStarted++
			default:
				failedUnstarted++
				t.Errorf("request %s failed (status %d, %v) before its relay sent it upstream", r.id, r.status, r.err)
			}
		}
		t.Logf("FIGURE: %s: %d requests, %d ok, %d failed after the killed relay sent them upstream, %d failed before",
			transport, len(results), ok, failedStarted, failedUnstarted)
		if ok < len(results)/2 {
			t.Errorf("only %d of %d requests succeeded", ok, len(results))
		}
	})
}

// TestRollingRestartLosesNothing: a relay that drains (SIGTERM) while
// streams are in flight finishes every one of them, and requests that arrive
// meanwhile go to the other relay: not one request fails.
func TestRollingRestartLosesNothing(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		st, _ := startTwoRelays(t, transport)
		stop := make(chan struct{})
		drained := make(chan error, 1)
		go func() {
			time.Sleep(200 * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			drained <- st.Relays[1].Shutdown(ctx)
			time.Sleep(100 * time.Millisecond)
			close(stop)
		}()
		// Requests held 100 ms at the upstream: many are in flight on the
		// draining relay when it starts.
		results := runLoad(t, st, 16, 100*time.Millisecond, stop)
		if err := <-drained; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		failed := 0
		for _, r := range results {
			if r.err != nil || r.status != http.StatusOK {
				failed++
				t.Errorf("request %s: status %d, %v", r.id, r.status, r.err)
			}
		}
		t.Logf("FIGURE: %s: rolling restart: %d requests, %d failed", transport, len(results), failed)
	})
}
