package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestParseBenchFlags(t *testing.T) {
	t.Setenv("LOADGEN_TEST_UP", "sk-up")
	t.Setenv("LOADGEN_TEST_CLIENT", "sk-client")
	base := []string{"-direct", "http://d/v1", "-direct-key-env", "LOADGEN_TEST_UP", "-airlock", "http://a/v1", "-airlock-key-env", "LOADGEN_TEST_CLIENT"}
	nginx := []string{"-nginx", "http://n/v1", "-nginx-key-env", "LOADGEN_TEST_CLIENT", "-nginx-edge-pid", "7", "-nginx-relay-pid", "8"}
	tests := []struct {
		name        string
		args        []string
		wantTargets []string
		wantErr     string
	}{
		{"direct and airlock", base, []string{"direct", "airlock"}, ""},
		{"with nginx", append(slices.Clone(base), nginx...), []string{"direct", "nginx", "airlock"}, ""},
		{"nginx skipped", append(slices.Clone(base), "-nginx-skipped", "no network"), []string{"direct", "airlock"}, ""},
		{"nginx without key", append(slices.Clone(base), "-nginx", "http://n/v1"), nil, "-nginx-key-env is required"},
		{"nginx key unset", append(slices.Clone(base), "-nginx", "http://n/v1", "-nginx-key-env", "LOADGEN_TEST_UNSET"), nil, "LOADGEN_TEST_UNSET is not set"},
		{"nginx and skipped", append(slices.Clone(base), append(nginx, "-nginx-skipped", "x")...), nil, "-nginx-skipped is for when -nginx is not given"},
		{"no airlock", base[:4], nil, "-direct and -airlock are both required"},
		{"admin listeners", append(slices.Clone(base), "-edge-admin", "127.0.0.1:9091", "-relay-admin", "http://127.0.0.1:9092", "-tunnel-transport", "tcp"), []string{"direct", "airlock"}, ""},
		{"unknown transport", append(slices.Clone(base), "-tunnel-transport", "udp"), nil, `-tunnel-transport: "udp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseBenchFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			var got []string
			for _, tg := range cfg.targets() {
				got = append(got, tg.Name)
			}
			if !slices.Equal(got, tt.wantTargets) {
				t.Errorf("targets = %v, want %v", got, tt.wantTargets)
			}
			if slices.Contains(tt.args, "-edge-admin") && (cfg.EdgeMetrics != "http://127.0.0.1:9091/metrics" || cfg.RelayMetrics != "http://127.0.0.1:9092/metrics") {
				t.Errorf("metrics URLs = %q, %q; want the admin listeners' /metrics", cfg.EdgeMetrics, cfg.RelayMetrics)
			}
			if cfg.Nginx.BaseURL != "" && cfg.Nginx.Key != "sk-client" {
				t.Errorf("nginx key = %q, want the client key", cfg.Nginx.Key)
			}
		})
	}
}

func TestProcs(t *testing.T) {
	cfg := &benchConfig{
		Direct: target{Name: nameDirect}, Nginx: target{Name: nameNginx, BaseURL: "http://n/v1"}, Airlock: target{Name: nameAirlock},
		EdgePID: 1, RelayPID: 2, UpstreamPID: 3, NginxEdgePID: 4, NginxRelayPID: 0,
	}
	tests := []struct {
		name  string
		t     target
		roles []string
		want  []proc
	}{
		{"direct has only the upstream", cfg.Direct, []string{"edge", "relay", "upstream"}, []proc{{Name: "upstream", PID: 3}}},
		{"airlock", cfg.Airlock, []string{"edge", "relay"}, []proc{{Name: "edge", PID: 1}, {Name: "relay", PID: 2}}},
		{"nginx trees, relay PID 0 left out", cfg.Nginx, []string{"edge", "relay", "upstream"}, []proc{{Name: "edge", PID: 4, Tree: true}, {Name: "upstream", PID: 3}}},
		{"role order kept", cfg.Airlock, []string{"upstream", "relay"}, []proc{{Name: "upstream", PID: 3}, {Name: "relay", PID: 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cfg.procs(tt.t, tt.roles...); !slices.Equal(got, tt.want) {
				t.Errorf("procs(%s, %v) = %v, want %v", tt.t.Name, tt.roles, got, tt.want)
			}
		})
	}
}

func TestResultsFill(t *testing.T) {
	double := func(v float64) (float64, bool) { return 2 * v, v >= 0 }
	rs := results[float64]{
		Direct:  outcome[float64]{v: 1, ran: true},
		Airlock: outcome[float64]{v: 3, err: errors.New("boom"), ran: true},
	}
	r := rs.fill(row{ID: "x"}, double)
	if r.Direct == nil || r.Direct.Value != 2 || r.Nginx != nil || r.Airlock == nil || !r.Airlock.Failed {
		t.Errorf("fill = direct %+v, nginx %+v, airlock %+v; want 2, nil, failed", r.Direct, r.Nginx, r.Airlock)
	}
	r = rs.measured().fill(row{ID: "x"}, double)
	if r.Airlock == nil || r.Airlock.Failed || r.Airlock.Value != 6 {
		t.Errorf("measured fill: airlock %+v, want 6 (what the failed run still measured)", r.Airlock)
	}
	rs.Airlock.v = -1 // f has no figure: a failed run shows FAILED, a good one "-"
	rs.Direct.v = -1
	r = rs.measured().fill(row{ID: "x"}, double)
	if r.Airlock == nil || !r.Airlock.Failed || r.Direct != nil {
		t.Errorf("measured fill without figures: direct %+v, airlock %+v; want nil, failed", r.Direct, r.Airlock)
	}
}

func TestWriteTable(t *testing.T) {
	rows := []row{
		{ID: "throughput", Name: "throughput", Unit: "req/s", Compare: compareRatio,
			Direct: &cell{Value: 20000}, Nginx: &cell{Value: 8000}, Airlock: &cell{Value: 10000}},
		{ID: "cpu_per_request_edge_relay", Name: "  CPU per request: edge + relay", Unit: "µs", Compare: compareDelta,
			Nginx: &cell{Value: 64}, Airlock: &cell{Failed: true}},
		{ID: "throughput_syscalls_per_request", Name: "  per request: syscalls (edge / relay)", Unit: "/req", Parts: []string{"edge", "relay"}, Compare: compareDelta,
			Nginx: &cell{Value: 20, Parts: []float64{12, 8}}, Airlock: &cell{Value: 1234.5, Parts: []float64{1000.25, 234.25}}},
	}
	tests := []struct {
		name         string
		rep          report
		want, reject []string
	}{
		{
			"with nginx",
			report{Direct: "http://d/v1", Nginx: "http://n/v1", Airlock: "http://a/v1", Rows: rows},
			[]string{"nginx chain", "airlock vs nginx", "125.0% of nginx", "50.0% of direct", "FAILED", "nginx:   http://n/v1",
				"12.0 / 8.0", "1000.2 / 234.2", "+988.2 / +226.2 /req"},
			[]string{"SKIPPED"},
		},
		{
			"nginx skipped",
			report{Direct: "http://d/v1", NginxSkipped: "apt-get: no network", Airlock: "http://a/v1", Rows: rows},
			[]string{"SKIPPED, no nginx column: apt-get: no network", "airlock vs direct", "50.0% of direct"},
			[]string{"nginx chain", "airlock vs nginx", "of nginx"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.rep.writeTable(&b); err != nil {
				t.Fatalf("writeTable: %v", err)
			}
			out := b.String()
			for _, s := range tt.want {
				if !strings.Contains(out, s) {
					t.Errorf("table lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tt.reject {
				if strings.Contains(out, s) {
					t.Errorf("table has %q:\n%s", s, out)
				}
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	rep := report{Direct: "http://d/v1", NginxSkipped: "no network", Airlock: "http://a/v1", Rows: []row{
		{ID: "throughput", Unit: "req/s", Direct: &cell{Value: 2}, Nginx: &cell{Value: 1}, Airlock: &cell{Failed: true}},
	}}
	var b bytes.Buffer
	if err := rep.writeJSON(&b); err != nil {
		t.Fatalf("writeJSON: %v", err)
	}
	var got struct {
		NginxSkipped string `json:"nginx_skipped"`
		Rows         []struct {
			Nginx   *cell `json:"nginx"`
			Airlock *cell `json:"airlock"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("decoding: %v", err)
	}
	if got.NginxSkipped != "no network" || len(got.Rows) != 1 || got.Rows[0].Nginx == nil || got.Rows[0].Nginx.Value != 1 || !got.Rows[0].Airlock.Failed {
		t.Errorf("JSON = %s; want nginx_skipped and the nginx cell", b.String())
	}
}

// TestWriteTableAligns checks that figures wider than the least width,
// such as "edge / relay" parts, still line up on the right.
func TestWriteTableAligns(t *testing.T) {
	rep := report{Direct: "http://d/v1", Airlock: "http://a/v1", Rows: []row{
		{ID: "a", Name: "a", Unit: "/req", Direct: &cell{Value: 1}, Airlock: &cell{Value: 12345.5, Parts: []float64{12345, 0.5}}},
		{ID: "b", Name: "b", Unit: "/req", Direct: &cell{Value: 2}, Airlock: &cell{Value: 3}},
	}}
	var b bytes.Buffer
	if err := rep.writeTable(&b); err != nil {
		t.Fatal(err)
	}
	var ends []int
	for line := range strings.Lines(b.String()) {
		if i := strings.Index(line, "12345.0 / 0.5"); i >= 0 {
			ends = append(ends, i+len("12345.0 / 0.5"))
		}
		if strings.HasPrefix(line, "b ") {
			ends = append(ends, strings.Index(line, " 3.0")+len(" 3.0"))
		}
	}
	if len(ends) != 2 || ends[0] != ends[1] {
		t.Errorf("airlock figures end at columns %v, want one column:\n%s", ends, b.String())
	}
}

func TestAddCountRows(t *testing.T) {
	counts := func(edge, relay float64) phase {
		return phase{Counts: tally{
			{"edge", countCtxSwitches}: edge, {"relay", countCtxSwitches}: relay,
			{"edge", countAllocBytes}: 1024 * edge, {"relay", countAllocBytes}: 1024 * relay,
			{"edge", countUDPRecv}: 2 * edge, {"relay", countUDPRecv}: 2 * relay,
			{roleNet, countUDPIn}: 2 * (edge + relay),
		}, Problems: []string{"edge perf stat: perf exited"}}
	}
	type res struct {
		ph phase
		n  int64
	}
	rs := results[res]{
		Direct:  outcome[res]{v: res{phase{Counts: tally{{roleNet, countUDPIn}: 5000}}, 100}, ran: true},
		Nginx:   outcome[res]{v: res{counts(300, 200), 100}, ran: true},
		Airlock: outcome[res]{v: res{counts(400, 300), 100}, ran: true},
	}
	rows := func(cfg *benchConfig) (map[string]row, []string) {
		rep := &report{}
		addCountRows(rep, cfg, "latency", rs, func(r res) (phase, int64) { return r.ph, r.n })
		byID := map[string]row{}
		for _, r := range rep.Rows {
			byID[r.ID] = r
		}
		return byID, rep.Notes
	}
	cfg := &benchConfig{Direct: target{Name: nameDirect}, Nginx: target{Name: nameNginx, BaseURL: "http://n/v1"}, Airlock: target{Name: nameAirlock},
		TunnelTransport: "quic", perfEvents: []perfEvent{syscallEvent, udpRecvEvent}}

	byID, notes := rows(cfg)
	if len(byID) != 4 {
		t.Errorf("rows %v, want context switches, syscalls (shown without figures), allocated KiB and tunnel packets (no figures for the rest)", slices.Sorted(maps.Keys(byID)))
	}
	ctx := byID["latency_context_switches_per_request"]
	if ctx.Direct != nil || ctx.Nginx == nil || !slices.Equal(ctx.Nginx.Parts, []float64{3, 2}) || ctx.Airlock == nil || ctx.Airlock.Value != 7 {
		t.Errorf("context switches row = %+v, %+v, %+v; want -, 3 / 2, 4 / 3 (7)", ctx.Direct, ctx.Nginx, ctx.Airlock)
	}
	if kib := byID["latency_alloc_kib_per_request"]; kib.Airlock == nil || !slices.Equal(kib.Airlock.Parts, []float64{4, 3}) {
		t.Errorf("allocated KiB row airlock = %+v, want 4 / 3", kib.Airlock)
	}
	// The edge sends what the relay reads.
	if tun := byID["latency_tunnel_packets_per_request"]; tun.Direct != nil || tun.Nginx != nil || tun.Airlock == nil || !slices.Equal(tun.Airlock.Parts, []float64{6, 8}) {
		t.Errorf("tunnel packets row = %+v, %+v, %+v; want -, -, 6 / 8", tun.Direct, tun.Nginx, tun.Airlock)
	}
	if len(notes) != 2 || !strings.Contains(notes[0], "latency nginx: edge perf stat: perf exited") {
		t.Errorf("notes = %q, want the nginx and airlock problems", notes)
	}

	cfg.perfEvents = []perfEvent{syscallEvent} // no sock:sock_recv_length: /proc/net/snmp
	byID, notes = rows(cfg)
	if tun := byID["latency_tunnel_packets_per_request"]; tun.Airlock == nil || tun.Airlock.Value != 14 || tun.Airlock.Parts != nil {
		t.Errorf("tunnel packets row from /proc/net/snmp = %+v, want 14", tun.Airlock)
	}
	if len(notes) != 4 || !strings.Contains(notes[0], "latency direct: 5000 UDP datagrams") || !strings.Contains(notes[2], "latency nginx: 1000 UDP datagrams") {
		t.Errorf("notes = %q, want direct's and nginx's UDP traffic noted with the problems", notes)
	}

	cfg.TunnelTransport = "tcp"
	if byID, _ = rows(cfg); len(byID) != 3 {
		t.Errorf("rows with a TCP tunnel %v, want no tunnel packets", slices.Sorted(maps.Keys(byID)))
	}
}
