package relay

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/airlock-proxy/airlock/proto"
)

// TestUnknownUpstreamAnswersLikeForbidden checks that an Airlock-Upstream
// name the relay does not know gets exactly the answer a name this edge may
// not use gets (issue 8, section 5): the same status, headers and body
// bytes, so that a client cannot list the relay's upstreams by trying names.
// The relay's log still tells the two apart.
func TestUnknownUpstreamAnswersLikeForbidden(t *testing.T) {
	var hits atomic.Int64
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) { hits.Add(1); io.WriteString(w, "{}") })
	cfg := testConfig(upstreamConfig("open", srv.URL), upstreamConfig("secret", srv.URL))
	cfg.Edges[0].Upstreams = []string{"open"}
	h, logs := newTestHandler(t, cfg)

	ask := func(name string) (*proto.ResponseHead, []byte) {
		t.Helper()
		e := serve(t, h, testPeer())
		head := getHead("/models")
		head.Upstream = name
		e.send(head, nil)
		rh, body, err := e.response()
		if err != nil {
			t.Fatalf("upstream %q: %v", name, err)
		}
		return rh, body
	}
	// The answer must not depend on the name at all, not even on its
	// length.
	tests := []struct {
		name      string
		forbidden string
		unknown   string
	}{
		{"same length", "secret", "nosuch"},
		{"different length", "secret", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fh, fb := ask(tt.forbidden)
			uh, ub := ask(tt.unknown)
			if fh.Status != http.StatusForbidden {
				t.Errorf("forbidden: got status %d, want 403", fh.Status)
			}
			if uh.Status != fh.Status {
				t.Errorf("unknown: got status %d, want %d as for a forbidden name", uh.Status, fh.Status)
			}
			if fmt.Sprint(uh.Header) != fmt.Sprint(fh.Header) || uh.ContentLength != fh.ContentLength {
				t.Errorf("unknown: got head %v (%d), want %v (%d) as for a forbidden name",
					uh.Header, uh.ContentLength, fh.Header, fh.ContentLength)
			}
			if !bytes.Equal(ub, fb) {
				t.Errorf("unknown: got body %s, want %s as for a forbidden name", ub, fb)
			}
			if got := apiErrorOf(t, uh, ub); got.Type != "permission_error" || got.Code != "upstream_not_allowed" {
				t.Errorf("got %q %q, want permission_error upstream_not_allowed", got.Type, got.Code)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("upstream got %d requests, want 0", n)
	}
	for _, result := range []string{`"result":"unknown_upstream"`, `"result":"forbidden_upstream"`} {
		if !bytes.Contains([]byte(logs.String()), []byte(result)) {
			t.Errorf("logs lack %s; the operator must still tell the cases apart", result)
		}
	}
}
