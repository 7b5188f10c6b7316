package relay

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestKeyRest(t *testing.T) {
	for _, tt := range []struct {
		status     int
		retryAfter string
		want       time.Duration
	}{
		{200, "", 0},
		{500, "", 0},
		{400, "", 0},
		{401, "", keyAuthRest},
		{403, "", keyAuthRest},
		{429, "", keyRateLimitRest},
		{429, "7", 7 * time.Second},
		{429, " 12 ", 12 * time.Second},
		{429, "99999", keyMaxRest},
		{429, "Wed, 21 Oct 2015 07:28:00 GMT", keyRateLimitRest},
		{429, "-3", keyRateLimitRest},
	} {
		if got := keyRest(tt.status, tt.retryAfter); got != tt.want {
			t.Errorf("keyRest(%d, %q) = %v, want %v", tt.status, tt.retryAfter, got, tt.want)
		}
	}
}

func TestPickKey(t *testing.T) {
	a, b, c := &apiKey{name: "a"}, &apiKey{name: "b"}, &apiKey{name: "c"}
	u := &upstream{keys: []*apiKey{a, b, c}}
	now := time.Now()
	var got []string
	for range 6 {
		got = append(got, u.pickKey(now).name)
	}
	if s := strings.Join(got, ""); s != "abcabc" {
		t.Errorf("keys in turn = %s, want abcabc", s)
	}
	b.rest(now, time.Minute)
	got = got[:0]
	for range 4 {
		got = append(got, u.pickKey(now).name)
	}
	if s := strings.Join(got, ""); strings.Contains(s, "b") {
		t.Errorf("a resting key was used: %s", s)
	}
	a.rest(now, 3*time.Minute)
	c.rest(now, 2*time.Minute)
	if k := u.pickKey(now); k != b {
		t.Errorf("with every key resting, got %s, want b (whose rest ends first)", k.name)
	}
	if k := u.pickKey(now.Add(150 * time.Second)); k != b && k != c {
		t.Errorf("after b's and c's rest, got %s", k.name)
	}
	if (&upstream{}).pickKey(now) != nil {
		t.Error("an upstream without keys gave a key")
	}
	if a.rest(now, time.Second) {
		t.Error("a shorter rest replaced a longer one")
	}
}

// TestKeyRotation: requests take the keys in turn; a key the upstream
// answers with 429 rests, and is counted, while the others carry on.
func TestKeyRotation(t *testing.T) {
	srv := startUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer key-a" {
			w.Header().Set("Retry-After", "60")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")))
	})
	up := upstreamConfig("openai", srv.URL)
	up.Key = ""
	up.Keys = []KeyConfig{{Name: "a", Key: "key-a"}, {Name: "b", Key: "key-b"}}
	h, logs := newTestHandler(t, testConfig(up))
	var statuses []int
	for range 4 {
		e := serve(t, h, testPeer())
		e.send(getHead("/models"), nil)
		rh, _, err := e.response()
		if err != nil {
			t.Fatal(err)
		}
		statuses = append(statuses, rh.Status)
	}
	if statuses[0] != 429 || statuses[1] != 200 || statuses[2] != 200 || statuses[3] != 200 {
		t.Errorf("statuses %v, want [429 200 200 200]: key a rests after its 429", statuses)
	}
	if got := testutil.ToFloat64(h.metrics.keyErrors.WithLabelValues("openai", "a", "429")); got != 1 {
		t.Errorf("key errors of a = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.metrics.keyCooldowns.WithLabelValues("openai", "a")); got != 1 {
		t.Errorf("cool-downs of a = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.metrics.keyCooldowns.WithLabelValues("openai", "b")); got != 0 {
		t.Errorf("cool-downs of b = %v, want 0", got)
	}
	if l := logs.String(); !strings.Contains(l, `"key":"a"`) || strings.Contains(l, "key-a") {
		t.Errorf("the logs should name key a and never show it: %s", l)
	}
}
