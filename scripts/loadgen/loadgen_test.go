package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i + 1)
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value", []time.Duration{7}, 99, 7},
		{"p50 of 1..100", hundred, 50, 50},
		{"p99 of 1..100", hundred, 99, 99},
		{"p100 is the max", hundred, 100, 100},
		{"p0 is the min", hundred, 0, 1},
		{"p50 of two rounds down to the first", []time.Duration{1, 2}, 50, 1},
		{"p51 of two is the second", []time.Duration{1, 2}, 51, 2},
		{"p99 of ten is the max", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(p%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	in := []time.Duration{5, 1, 4, 2, 3}
	got := summarize(in)
	want := summary{N: 5, Min: 1, Mean: 3, P50: 3, P90: 5, P99: 5, Max: 5}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if in[0] != 5 {
		t.Errorf("summarize sorted its input: got %v, want it unchanged", in)
	}
	if got := summarize(nil); got != (summary{}) {
		t.Errorf("summarize(nil) = %+v, want the zero summary", got)
	}
}

func TestRate(t *testing.T) {
	tests := []struct {
		name  string
		count float64
		d     time.Duration
		want  float64
	}{
		{"per second", 500, 2 * time.Second, 250},
		{"zero time", 10, 0, 0},
		{"negative time", 10, -time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rate(tt.count, tt.d); got != tt.want {
				t.Errorf("rate(%v, %v) = %v, want %v", tt.count, tt.d, got, tt.want)
			}
		})
	}
}

func TestNextEvent(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantEvent string
		wantAdv   int
	}{
		{"incomplete", "data: {\"a\":1}\n", "", 0},
		{"empty", "", "", 0},
		{"lf", "data: x\n\ndata: y", "data: x", 9},
		{"crlf", "data: x\r\n\r\nrest", "data: x", 11},
		{"cr", "data: x\r\rrest", "data: x", 9},
		{"first of two", "a\n\nb\n\n", "a", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, adv := nextEvent([]byte(tt.in))
			if string(ev) != tt.wantEvent || adv != tt.wantAdv {
				t.Errorf("nextEvent(%q) = %q, %d; want %q, %d", tt.in, ev, adv, tt.wantEvent, tt.wantAdv)
			}
		})
	}
}

func TestParseStamp(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   int64
		wantOK bool
	}{
		{"compact", `data: {"i":1,"airlock_sent_unix_ns":1700000000123456789}`, 1700000000123456789, true},
		{"spaces", `data: {"airlock_sent_unix_ns" : 42, "i": 1}`, 42, true},
		{"missing", `data: {"i":1}`, 0, false},
		{"done", `data: [DONE]`, 0, false},
		{"not a number", `data: {"airlock_sent_unix_ns":"x"}`, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseStamp([]byte(tt.in))
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("parseStamp(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tairlock\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n"
	got, err := parseVmRSS([]byte(status))
	if err != nil || got != 12345*1024 {
		t.Errorf("parseVmRSS = %d, %v; want %d, nil", got, err, 12345*1024)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Errorf("parseVmRSS without VmRSS: got nil error, want one")
	}
}

func TestParseStatCPU(t *testing.T) {
	// Fields after the name: state ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime stime ...
	stat := "4242 (air lock) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0"
	got, err := parseStatCPU([]byte(stat))
	if want := 3 * time.Second; err != nil || got != want {
		t.Errorf("parseStatCPU = %v, %v; want %v, nil", got, err, want)
	}
}

func TestPatternReader(t *testing.T) {
	for _, size := range []int64{0, 1, 1000, int64(len(patternBlock)) + 7, 3 << 20} {
		n, err := io.CopyBuffer(io.Discard, &patternReader{left: size}, make([]byte, 100_000))
		if err != nil || n != size {
			t.Errorf("patternReader{%d}: read %d bytes, %v; want %d, nil", size, n, err, size)
		}
	}
}

func TestVersus(t *testing.T) {
	tests := []struct {
		name     string
		row      row
		base     func(row) *cell
		baseName string
		want     string
	}{
		{"delta up", row{Unit: "ms", Direct: &cell{Value: 0.1}, Airlock: &cell{Value: 0.35}, Compare: compareDelta}, direct, nameDirect, "+0.250 ms"},
		{"delta down", row{Unit: "count", Direct: &cell{Value: 3}, Airlock: &cell{Value: 1}, Compare: compareDelta}, direct, nameDirect, "-2 count"},
		{"ratio", row{Unit: "req/s", Direct: &cell{Value: 200}, Airlock: &cell{Value: 50}, Compare: compareRatio}, direct, nameDirect, "25.0% of direct"},
		{"ratio of zero", row{Unit: "req/s", Direct: &cell{Value: 0}, Airlock: &cell{Value: 50}, Compare: compareRatio}, direct, nameDirect, ""},
		{"failed", row{Unit: "ms", Direct: &cell{Failed: true}, Airlock: &cell{Value: 1}, Compare: compareDelta}, direct, nameDirect, ""},
		{"airlock only", row{Unit: "MiB", Airlock: &cell{Value: 1}}, direct, nameDirect, ""},
		{"no compare", row{Unit: "ms", Direct: &cell{Value: 1}, Airlock: &cell{Value: 2}, Compare: compareNone}, direct, nameDirect, ""},
		{"vs nginx ratio", row{Unit: "req/s", Direct: &cell{Value: 200}, Nginx: &cell{Value: 80}, Airlock: &cell{Value: 100}, Compare: compareRatio}, nginx, nameNginx, "125.0% of nginx"},
		{"vs nginx delta", row{Unit: "µs", Nginx: &cell{Value: 64}, Airlock: &cell{Value: 195.5}, Compare: compareDelta}, nginx, nameNginx, "+131.5 µs"},
		{"vs nginx missing", row{Unit: "µs", Direct: &cell{Value: 1}, Airlock: &cell{Value: 2}, Compare: compareDelta}, nginx, nameNginx, ""},
		{"airlock failed", row{Unit: "ms", Nginx: &cell{Value: 1}, Airlock: &cell{Failed: true}, Compare: compareDelta}, nginx, nameNginx, ""},
		{"parts", row{Unit: "/req", Nginx: &cell{Value: 5, Parts: []float64{3, 2}}, Airlock: &cell{Value: 6.5, Parts: []float64{2.5, 4}}, Compare: compareDelta}, nginx, nameNginx, "-0.5 / +2.0 /req"},
		{"parts rounding to zero", row{Unit: "/req", Nginx: &cell{Value: 12.6, Parts: []float64{6.3, 6.3}}, Airlock: &cell{Value: 13.78, Parts: []float64{7.5, 6.28}}, Compare: compareDelta}, nginx, nameNginx, "+1.2 / +0.0 /req"},
		{"parts against none", row{Unit: "/req", Nginx: &cell{Value: 5}, Airlock: &cell{Value: 6.5, Parts: []float64{2.5, 4}}, Compare: compareDelta}, nginx, nameNginx, ""},
		{"parts by ratio", row{Unit: "/req", Nginx: &cell{Value: 5, Parts: []float64{3, 2}}, Airlock: &cell{Value: 6.5, Parts: []float64{2.5, 4}}, Compare: compareRatio}, nginx, nameNginx, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.row.versus(tt.base(tt.row), tt.baseName); got != tt.want {
				t.Errorf("versus(%s) = %q, want %q", tt.baseName, got, tt.want)
			}
		})
	}
}

func direct(x row) *cell { return x.Direct }
func nginx(x row) *cell  { return x.Nginx }

// fakeUpstream serves the test upstream endpoints the scenarios call, in
// the shapes internal/testkit/testupstream answers them.
func fakeUpstream(t *testing.T, key string) target {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, `{"error":{"message":"want JSON"}}`, http.StatusBadRequest)
			return
		}
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"object":"chat.completion","choices":[]}`)
	})
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"object":"list","data":[]}`)
	})
	mux.HandleFunc("GET /v1/airlock-test/sse", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("events"))
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range n {
			fmt.Fprintf(w, "data: {\"i\":%d,\"airlock_sent_unix_ns\":%d}\n\n", i, time.Now().UnixNano())
			http.NewResponseController(w).Flush()
			time.Sleep(time.Millisecond)
		}
		io.WriteString(w, "data: [DONE]\n\n")
	})
	mux.HandleFunc("POST /v1/airlock-test/upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		json.NewEncoder(w).Encode(map[string]int64{"bytes": n})
	})
	mux.HandleFunc("GET /v1/airlock-test/download", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
		io.Copy(w, &patternReader{left: n})
	})
	mux.HandleFunc("GET /v1/airlock-test/hold", func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+key {
			http.Error(w, `{"error":{"message":"bad key"}}`, http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return target{Name: "direct", BaseURL: srv.URL + "/v1", Key: key}
}

func TestScenariosAgainstFakeUpstream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tg := fakeUpstream(t, "sk-test")

	self := proc{Name: "self", PID: selfPID(t)}
	lat, err := measureLatency(ctx, tg, latencyParams{Request: smallRequest{Method: "GET", Path: "/models"}, Warmup: 2, N: 20, Watch: watch{Procs: []proc{self}}})
	if err != nil || len(lat.Samples) != 20 {
		t.Errorf("latency: got %d samples, %v; want 20, nil", len(lat.Samples), err)
	}
	if _, ok := lat.Phase.cpuPerRequest(lat.requests(), "self"); !ok {
		t.Errorf("latency: no CPU figure for the watched process")
	}

	tp, err := measureThroughput(ctx, tg, throughputParams{
		Request: smallRequest{Method: "POST", Path: "/chat/completions", Body: []byte(defaultSmallBody)}, Concurrency: 4, Warmup: 10 * time.Millisecond,
		Duration: 50 * time.Millisecond, MaxRequests: 1000,
	})
	if err != nil || tp.Requests == 0 || tp.Requests > 1000 || tp.Errors != 0 {
		t.Errorf("throughput: got %d requests, %d errors, %v; want 1..1000, 0, nil", tp.Requests, tp.Errors, err)
	}

	sse, err := measureSSE(ctx, tg, sseParams{Events: 20, Interval: time.Millisecond, Streams: 2})
	if err != nil || sse.Events != 40 || len(sse.Delays) != 40 {
		t.Errorf("sse: got %d events, %d delays, %v; want 40, 40, nil", sse.Events, len(sse.Delays), err)
	}

	bulk, err := measureBulk(ctx, tg, 8<<20)
	if err != nil || bulk.Upload <= 0 || bulk.Download <= 0 {
		t.Errorf("bulk: got %+v, %v; want positive rates, nil", bulk, err)
	}

	hold, err := measureHold(ctx, tg, holdParams{Streams: 20, Parallel: 5, Timeout: 5 * time.Second, Procs: []proc{self}})
	if err != nil || hold.Open != 20 || hold.Held["self"] <= 0 {
		t.Errorf("hold: got %d open, RSS %d, %v; want 20, positive, nil", hold.Open, hold.Held["self"], err)
	}

	bad := tg
	bad.Key = "wrong"
	if _, err := measureLatency(ctx, bad, latencyParams{Request: smallRequest{Method: "GET", Path: "/models"}, N: 1}); err == nil {
		t.Errorf("latency with a wrong key: got nil error, want a status error")
	}
}

// selfPID returns this process's PID, skipping the test where /proc is
// missing.
func selfPID(t *testing.T) int {
	t.Helper()
	p := proc{Name: "self", PID: os.Getpid()}
	if _, err := p.rss(); err != nil {
		t.Skipf("no /proc: %v", err)
	}
	return p.PID
}

func TestWaitURL(t *testing.T) {
	tg := fakeUpstream(t, "sk-test")
	url := tg.BaseURL + "/models"
	tests := []struct {
		name      string
		key       string
		anyStatus bool
		wantErr   bool
	}{
		{"key", "sk-test", false, false},
		{"wrong key", "wrong", false, true},
		{"no key", "", false, true},
		{"no key, any status", "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := waitURL(context.Background(), url, tt.key, tt.anyStatus, 200*time.Millisecond)
			if (err != nil) != tt.wantErr {
				t.Errorf("waitURL(key %q, any %v) = %v, want error %v", tt.key, tt.anyStatus, err, tt.wantErr)
			}
		})
	}
}
