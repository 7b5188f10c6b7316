package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/devstack"
	"github.com/airlock-proxy/airlock/internal/testupstream"
)

// BenchmarkSmallRequest measures one small request (GET /models) through
// edge, QUIC tunnel and relay, all in this process, next to the same request
// sent to the upstream directly. The difference is airlock's added latency
// without cross-process scheduling (scripts/bench measures it with three
// processes).
func BenchmarkSmallRequest(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{TestUpstream: testupstream.Options{}})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	run := func(b *testing.B, url, key string) {
		for b.Loop() {
			req, _ := http.NewRequest("GET", url+"/models", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	b.Run("through-airlock", func(b *testing.B) { run(b, st.EdgeURL, st.ClientKey) })
	// The stack's upstream takes only the key the relay holds, so the
	// direct run uses a second test upstream without a key check.
	direct := testupstream.New(testupstream.Options{})
	srv := &http.Server{Handler: direct}
	ln, url := listenLoopback(b)
	go srv.Serve(ln)
	defer srv.Close()
	b.Run("direct", func(b *testing.B) { run(b, strings.TrimSuffix(url, "/")+"/v1", "unused") })
}
