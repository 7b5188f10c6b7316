package edge

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/airlock-proxy/airlock/proto"
)

// refuseFirst refuses the first stream after reading its head and readBefore
// bytes of its body, as a closing relay does; later streams are hashed.
func refuseFirst(readBefore int64) relayFunc {
	var n atomic.Int32
	return func(t *testing.T, r *fakeRelay) {
		if n.Add(1) > 1 {
			hashRelay(t, r)
			return
		}
		r.head(t)
		io.CopyN(io.Discard, r.r, readBefore)
		r.w.Reset(proto.CodeRefused, "airlock relay: shutting down; the request was not sent upstream")
	}
}

// TestRefusedRequestIsRetried: a request that a relay refused before it
// reached the upstream is sent again, body and all, on another session; one
// whose body could not be kept gets the refusal as a 503.
func TestRefusedRequestIsRetried(t *testing.T) {
	small := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
	large := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{2}).Read(large)
	hash := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	for _, tt := range []struct {
		name       string
		body       []byte
		chunked    bool
		readBefore int64 // body bytes the refusing relay reads first
		wantStatus int
		wantCalls  int
	}{
		{"no body", nil, false, 0, 200, 2},
		{"small body", small, false, 0, 200, 2},
		{"small chunked body", small, true, 0, 200, 2},
		{"large body refused at once", large, false, 0, 200, 2},
		{"large body refused after 1.5 MiB", large, true, 3 << 19, 503, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEdge(t, nil, refuseFirst(tt.readBefore))
			var body io.Reader = bytes.NewReader(tt.body)
			if tt.chunked {
				body = struct{ io.Reader }{body}
			}
			method := "POST"
			if tt.body == nil {
				method, body = "GET", nil
			}
			resp, err := e.client.Do(newRequest(t, t.Context(), method, e.URL+"/v1/files", body))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, got, tt.wantStatus)
			}
			if c := e.opener.Calls(); c != tt.wantCalls {
				t.Errorf("%d streams opened, want %d", c, tt.wantCalls)
			}
			if tt.wantStatus == 200 && string(got) != hash(tt.body) {
				t.Errorf("the retried request reached the relay with body sha256 %s, want %s", got, hash(tt.body))
			}
			if tt.wantStatus == 503 {
				if !strings.Contains(string(got), "refused the request before calling the upstream") || resp.Header.Get("Retry-After") == "" {
					t.Errorf("503 answer %s (Retry-After %q), want the refusal with Retry-After", got, resp.Header.Get("Retry-After"))
				}
			}
			if tt.wantStatus == 200 && !strings.Contains(e.logs.String(), `"retries":1`) {
				t.Errorf("access log lacks retries=1: %s", e.logs.String())
			}
		})
	}
}

// TestRefusedTooOftenIsAnError: refusals on every session end in a 503 after
// maxRefusedRetries more attempts, never a loop.
func TestRefusedTooOftenIsAnError(t *testing.T) {
	e := newTestEdge(t, nil, func(t *testing.T, r *fakeRelay) {
		r.head(t)
		r.w.Reset(proto.CodeRefused, "no")
	})
	resp, err := e.client.Do(newRequest(t, t.Context(), "GET", e.URL+"/v1/models", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
	if c := e.opener.Calls(); c != 1+maxRefusedRetries {
		t.Errorf("%d streams opened, want %d", c, 1+maxRefusedRetries)
	}
}
