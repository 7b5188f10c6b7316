package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

// scenarioNames lists the scenarios in the order they run. rss runs before
// bulk so that its idle figure is not inflated by the bulk transfers' heap.
var scenarioNames = []string{"latency", "throughput", "sse", "rss", "bulk"}

// Target names, as they appear in failures and JSON.
const (
	nameDirect  = "direct"
	nameNginx   = "nginx"
	nameAirlock = "airlock"
)

// benchConfig is everything `loadgen bench` takes on its command line.
type benchConfig struct {
	// Direct, Nginx and Airlock are the base URLs under test, with their
	// keys. Nginx.BaseURL is empty when the nginx chain is not measured.
	Direct, Nginx, Airlock target
	// EdgePID, RelayPID and UpstreamPID name the processes whose CPU time
	// and RSS are read; 0 leaves a process out.
	EdgePID, RelayPID, UpstreamPID int
	// NginxEdgePID and NginxRelayPID name the nginx chain's two master
	// processes, each counted with its workers; 0 leaves one out.
	NginxEdgePID, NginxRelayPID int
	// NginxSkipped says why the nginx chain is not measured, for the report.
	NginxSkipped string
	// EdgeMetrics and RelayMetrics are the URLs of the edge's and the
	// relay's Prometheus /metrics (on their admin listeners), scraped for
	// the Go runtime counters; empty leaves a role out.
	EdgeMetrics, RelayMetrics string
	// TunnelTransport is the edge's tunnel transport, "quic", "tcp" or
	// "auto": only a QUIC tunnel's packets are counted.
	TunnelTransport string
	// PerfStat counts the edge's and the relay's syscalls, and the
	// tunnel's packets, with perf stat when perf works here.
	PerfStat bool
	// perfEvents are the events perf stat counts here, set by checkPerf.
	perfEvents []perfEvent
	// Scenarios are the scenarios to run, in scenarioNames order.
	Scenarios []string
	// Latency, Throughput, SSE, BulkBytes and Hold size the scenarios.
	Latency    latencyParams
	Throughput throughputParams
	SSE        sseParams
	BulkBytes  int64
	Hold       holdParams
	// JSON prints the report as JSON instead of a table.
	JSON bool
	// Label is printed in the report header.
	Label string
	// Timeout bounds the whole run.
	Timeout time.Duration
	// Quick marks smoke-test sizes.
	Quick bool

	directKeyEnv, nginxKeyEnv, airlockKeyEnv, scenarios, edgeAdmin, relayAdmin, smallBody string // raw flag values
}

// defaultSmallBody is the small request's body: a non-streamed chat
// completion, the call most API traffic is, and what issue 9's harness
// measured.
const defaultSmallBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one word."}]}`

// quickDefaults are the scenario sizes -quick uses for flags not given
// explicitly: the whole bench runs in a few seconds.
var quickDefaults = map[string]string{
	"latency-n":         "200",
	"latency-warmup":    "20",
	"throughput-d":      "1s",
	"throughput-warmup": "200ms",
	"sse-events":        "50",
	"sse-streams":       "1",
	"bulk-bytes":        "16777216",
	"hold-streams":      "200",
	"hold-timeout":      "10s",
}

// parseBenchFlags parses the flags of `loadgen bench`.
func parseBenchFlags(args []string, stderr io.Writer) (*benchConfig, error) {
	cfg := &benchConfig{Direct: target{Name: nameDirect}, Nginx: target{Name: nameNginx}, Airlock: target{Name: nameAirlock}}
	fs := flag.NewFlagSet("loadgen bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: loadgen bench -direct URL -direct-key-env VAR [-nginx URL -nginx-key-env VAR] -airlock URL -airlock-key-env VAR [flags]\n\n"+
			"Runs the scenarios (%s) against every base URL and prints one table.\n\nFlags:\n",
			strings.Join(scenarioNames, ", "))
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Direct.BaseURL, "direct", "", "DIRECT base `URL` (the test upstream), e.g. http://127.0.0.1:8081/v1")
	fs.StringVar(&cfg.directKeyEnv, "direct-key-env", "", "environment `variable` with the upstream's API key")
	fs.StringVar(&cfg.Airlock.BaseURL, "airlock", "", "AIRLOCK base `URL` (the edge), e.g. http://127.0.0.1:8080/v1")
	fs.StringVar(&cfg.airlockKeyEnv, "airlock-key-env", "", "environment `variable` with the edge's client key")
	fs.IntVar(&cfg.EdgePID, "edge-pid", 0, "edge process `id`, for RSS and CPU (0: not measured)")
	fs.IntVar(&cfg.RelayPID, "relay-pid", 0, "relay process `id`, for RSS and CPU (0: not measured)")
	fs.IntVar(&cfg.UpstreamPID, "upstream-pid", 0, "test upstream process `id`, for CPU (0: not measured)")
	fs.StringVar(&cfg.Nginx.BaseURL, "nginx", "", "NGINX base `URL` (the edge nginx of the peer chain; empty: not measured)")
	fs.StringVar(&cfg.nginxKeyEnv, "nginx-key-env", "", "environment `variable` with the edge nginx's client key")
	fs.IntVar(&cfg.NginxEdgePID, "nginx-edge-pid", 0, "edge nginx master process `id`, counted with its workers, for RSS and CPU (0: not measured)")
	fs.IntVar(&cfg.NginxRelayPID, "nginx-relay-pid", 0, "relay nginx master process `id`, counted with its workers, for RSS and CPU (0: not measured)")
	fs.StringVar(&cfg.NginxSkipped, "nginx-skipped", "", "why the nginx chain is not measured (`text` for the report; with -nginx empty)")
	fs.StringVar(&cfg.edgeAdmin, "edge-admin", "", "edge admin listener `address` (host:port or base URL), whose /metrics has the Go runtime counters (empty: not read)")
	fs.StringVar(&cfg.relayAdmin, "relay-admin", "", "relay admin listener `address` (host:port or base URL), whose /metrics has the Go runtime counters (empty: not read)")
	fs.StringVar(&cfg.TunnelTransport, "tunnel-transport", "quic", "the edge's tunnel `transport`, quic, tcp or auto (a TCP tunnel's packets are not counted)")
	fs.BoolVar(&cfg.PerfStat, "perf-stat", true, "count the edge's and the relay's syscalls and UDP datagrams with perf stat, when perf works here")
	fs.StringVar(&cfg.scenarios, "scenarios", strings.Join(scenarioNames, ","), "comma-separated `list` of scenarios to run")

	fs.StringVar(&cfg.Latency.Request.Path, "latency-path", "/chat/completions", "small request `path` below the base URL (latency, throughput)")
	fs.StringVar(&cfg.smallBody, "latency-body", defaultSmallBody, "small request's JSON `body`, POSTed; empty: a GET (latency, throughput)")
	fs.IntVar(&cfg.Latency.N, "latency-n", 2000, "measured requests at concurrency 1")
	fs.IntVar(&cfg.Latency.Warmup, "latency-warmup", 200, "unmeasured warm-up requests before them")
	fs.IntVar(&cfg.Throughput.Concurrency, "throughput-c", 32, "concurrent workers")
	fs.DurationVar(&cfg.Throughput.Duration, "throughput-d", 5*time.Second, "measuring time")
	fs.DurationVar(&cfg.Throughput.Warmup, "throughput-warmup", time.Second, "unmeasured warm-up time before it")
	fs.Int64Var(&cfg.Throughput.MaxRequests, "throughput-max", 10_000_000, "upper bound on measured requests")
	fs.IntVar(&cfg.SSE.Events, "sse-events", 200, "stamped events per SSE stream")
	fs.DurationVar(&cfg.SSE.Interval, "sse-interval", 5*time.Millisecond, "upstream pause between events")
	fs.IntVar(&cfg.SSE.Streams, "sse-streams", 3, "measured SSE streams, read one after another")
	fs.Int64Var(&cfg.BulkBytes, "bulk-bytes", 512<<20, "bytes uploaded and downloaded, single stream")
	fs.IntVar(&cfg.Hold.Streams, "hold-streams", 2000, "concurrent held streams through the edge for the RSS figures")
	fs.IntVar(&cfg.Hold.Parallel, "hold-parallel", 100, "held streams waiting for response headers at once")
	fs.DurationVar(&cfg.Hold.Timeout, "hold-timeout", 60*time.Second, "longest wait for all held streams' headers")

	fs.BoolVar(&cfg.Quick, "quick", false, "small sizes for a smoke test (flags given explicitly still win)")
	fs.BoolVar(&cfg.JSON, "json", false, "print the report as JSON instead of a table")
	fs.StringVar(&cfg.Label, "label", "", "free `text` printed in the report header (e.g. the airlock version)")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "upper bound on the whole run")
	if err := parseFlags(fs, args, 0); err != nil {
		return nil, err
	}
	if cfg.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range quickDefaults {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return nil, fmt.Errorf("-quick: %s: %w", name, err)
				}
			}
		}
	}
	return cfg, cfg.finish()
}

// finish validates cfg and fills in what derives from the flags.
func (cfg *benchConfig) finish() error {
	if cfg.Direct.BaseURL == "" || cfg.Airlock.BaseURL == "" {
		return fmt.Errorf("-direct and -airlock are both required")
	}
	if cfg.Nginx.BaseURL != "" && cfg.NginxSkipped != "" {
		return fmt.Errorf("-nginx-skipped is for when -nginx is not given")
	}
	type keyFlag struct {
		flag, env string
		dst       *string
	}
	keys := []keyFlag{{"-direct-key-env", cfg.directKeyEnv, &cfg.Direct.Key}}
	if cfg.Nginx.BaseURL != "" {
		keys = append(keys, keyFlag{"-nginx-key-env", cfg.nginxKeyEnv, &cfg.Nginx.Key})
	}
	keys = append(keys, keyFlag{"-airlock-key-env", cfg.airlockKeyEnv, &cfg.Airlock.Key})
	for _, k := range keys {
		if k.env == "" {
			return fmt.Errorf("%s is required", k.flag)
		}
		if *k.dst = os.Getenv(k.env); *k.dst == "" {
			return fmt.Errorf("%s: environment variable %s is not set or empty", k.flag, k.env)
		}
	}
	for s := range strings.SplitSeq(cfg.scenarios, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(scenarioNames, s) {
			return fmt.Errorf("-scenarios: unknown scenario %q; want some of %s", s, strings.Join(scenarioNames, ","))
		}
		cfg.Scenarios = append(cfg.Scenarios, s)
	}
	switch {
	case cfg.Latency.N < 1 || cfg.Latency.Warmup < 0:
		return fmt.Errorf("-latency-n must be at least 1 and -latency-warmup not negative")
	case cfg.Throughput.Concurrency < 1 || cfg.Throughput.Duration <= 0 || cfg.Throughput.MaxRequests < 1:
		return fmt.Errorf("-throughput-c, -throughput-d and -throughput-max must be positive")
	case cfg.SSE.Events < 1 || cfg.SSE.Streams < 1 || cfg.SSE.Interval < 0:
		return fmt.Errorf("-sse-events and -sse-streams must be positive, -sse-interval not negative")
	case cfg.BulkBytes < 1:
		return fmt.Errorf("-bulk-bytes must be positive")
	case cfg.Hold.Streams < 1 || cfg.Hold.Timeout <= 0:
		return fmt.Errorf("-hold-streams and -hold-timeout must be positive")
	}
	if !slices.Contains([]string{"quic", "tcp", "auto"}, cfg.TunnelTransport) {
		return fmt.Errorf("-tunnel-transport: %q, want quic, tcp or auto", cfg.TunnelTransport)
	}
	cfg.EdgeMetrics, cfg.RelayMetrics = metricsURL(cfg.edgeAdmin), metricsURL(cfg.relayAdmin)
	cfg.Latency.Request.Method = http.MethodGet
	if cfg.smallBody != "" {
		cfg.Latency.Request.Method, cfg.Latency.Request.Body = http.MethodPost, []byte(cfg.smallBody)
	}
	cfg.Throughput.Request = cfg.Latency.Request
	return nil
}

// metricsURL returns the /metrics URL of an admin listener given as
// host:port or as a base URL; empty stays empty.
func metricsURL(admin string) string {
	if admin == "" {
		return ""
	}
	if !strings.Contains(admin, "://") {
		admin = "http://" + admin
	}
	return strings.TrimSuffix(admin, "/") + "/metrics"
}

// targets returns the targets measured in this run, in the order each
// scenario runs them: DIRECT, NGINX when given, AIRLOCK.
func (cfg *benchConfig) targets() []target {
	if cfg.Nginx.BaseURL == "" {
		return []target{cfg.Direct, cfg.Airlock}
	}
	return []target{cfg.Direct, cfg.Nginx, cfg.Airlock}
}

// proxies returns the targets that are proxy chains: NGINX when given, and
// AIRLOCK.
func (cfg *benchConfig) proxies() []target {
	return cfg.targets()[1:]
}

// procs returns the processes that serve t among the roles "edge", "relay"
// and "upstream" and have a PID: the upstream serves every target, DIRECT
// has no edge or relay, and each nginx counts with its workers.
func (cfg *benchConfig) procs(t target, roles ...string) []proc {
	all := []proc{{Name: "upstream", PID: cfg.UpstreamPID}}
	switch t.Name {
	case nameNginx:
		all = append(all, proc{Name: "edge", PID: cfg.NginxEdgePID, Tree: true}, proc{Name: "relay", PID: cfg.NginxRelayPID, Tree: true})
	case nameAirlock:
		all = append(all, proc{Name: "edge", PID: cfg.EdgePID}, proc{Name: "relay", PID: cfg.RelayPID})
	}
	var out []proc
	for _, r := range roles {
		for _, p := range all {
			if p.Name == r && p.PID > 0 {
				out = append(out, p)
			}
		}
	}
	return out
}

// watch returns what is read about the processes that serve t among roles
// around a measured phase: their CPU time and context switches; with perf,
// the edge's and the relay's syscalls and, for airlock, UDP datagrams read;
// airlock's Go runtime counters; and the UDP counters of /proc/net/snmp.
func (cfg *benchConfig) watch(t target, roles ...string) watch {
	w := watch{Procs: cfg.procs(t, roles...), Metrics: map[string]string{}, Net: true}
	for _, p := range w.Procs {
		if p.Name == "edge" || p.Name == "relay" {
			w.Perf = append(w.Perf, p.Name)
		}
	}
	for _, e := range cfg.perfEvents {
		if e != udpRecvEvent || t.Name == nameAirlock {
			w.PerfEvents = append(w.PerfEvents, e)
		}
	}
	if t.Name == nameAirlock {
		for role, url := range map[string]string{"edge": cfg.EdgeMetrics, "relay": cfg.RelayMetrics} {
			if url != "" && slices.Contains(roles, role) {
				w.Metrics[role] = url
			}
		}
	}
	return w
}

// checkPerf sets the events perf stat counts in the latency and the
// throughput scenarios, those of syscallEvent and (with a tunnel that may
// be QUIC) udpRecvEvent that it can count here, and says in the report,
// once, what it counts and why it does not count the others.
func (cfg *benchConfig) checkPerf(ctx context.Context, rep *report) {
	if !slices.Contains(cfg.Scenarios, "latency") && !slices.Contains(cfg.Scenarios, "throughput") {
		return
	}
	if !cfg.PerfStat {
		rep.notef("perf stat: not run (-perf-stat=false): no syscalls; tunnel packets from /proc/net/snmp")
		return
	}
	want := []perfEvent{syscallEvent}
	if cfg.TunnelTransport != "tcp" {
		want = append(want, udpRecvEvent)
	}
	ok, why := probePerf(ctx, want)
	cfg.perfEvents = ok
	var names []string
	for _, e := range ok {
		names = append(names, e.Name)
	}
	if len(ok) > 0 {
		rep.notef("perf stat: counts %s of the edge and the relay during each measured phase", strings.Join(names, " and "))
	}
	for _, w := range why {
		rep.notef("perf stat cannot count %s", w)
	}
}

// countsUDP reports whether perf counts the tunnel's packets.
func (cfg *benchConfig) countsUDP() bool { return slices.Contains(cfg.perfEvents, udpRecvEvent) }

// runBench is `loadgen bench`: it runs the chosen scenarios and prints the
// report. It fails when any measurement failed, after printing the rest.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseBenchFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	rep := newReport(cfg)
	cfg.checkPerf(ctx, rep)
	for _, s := range cfg.Scenarios {
		if ctx.Err() != nil {
			rep.fail(s, "all", ctx.Err())
			continue
		}
		fmt.Fprintf(stderr, "loadgen: running %s\n", s)
		switch s {
		case "latency":
			benchLatency(ctx, cfg, rep)
		case "throughput":
			benchThroughput(ctx, cfg, rep)
		case "sse":
			benchSSE(ctx, cfg, rep)
		case "rss":
			benchHold(ctx, cfg, rep)
		case "bulk":
			benchBulk(ctx, cfg, rep)
		}
	}
	if cfg.JSON {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeTable(stdout)
	}
	if err != nil {
		return err
	}
	if len(rep.Failures) > 0 {
		return fmt.Errorf("%d measurement(s) failed (see the report)", len(rep.Failures))
	}
	return nil
}

// outcome is one target's result of a scenario. The zero outcome is a
// target that was not run.
type outcome[T any] struct {
	v   T
	err error
	ran bool
}

// results holds one scenario's outcome on each target.
type results[T any] struct {
	Direct, Nginx, Airlock outcome[T]
	// partial shows what a failed outcome still measured.
	partial bool
}

// of returns the outcome of the target named name.
func (rs *results[T]) of(name string) *outcome[T] {
	switch name {
	case nameDirect:
		return &rs.Direct
	case nameNginx:
		return &rs.Nginx
	}
	return &rs.Airlock
}

// cellOf returns f(o.v) as a cell: nil when o did not run or f says the
// figure does not apply, a failed cell when o failed (with partial, only
// when f has no figure).
func cellOf[T any](o outcome[T], partial bool, f func(T) (float64, bool)) *cell {
	return cellWith(o, partial, func(v T) (cell, bool) {
		x, ok := f(v)
		return cell{Value: x}, ok
	})
}

// partsCellOf is cellOf for a figure in parts (e.g. the edge's and the
// relay's), whose sum is the cell's value.
func partsCellOf[T any](o outcome[T], partial bool, f func(T) ([]float64, bool)) *cell {
	return cellWith(o, partial, func(v T) (cell, bool) {
		parts, ok := f(v)
		var sum float64
		for _, x := range parts {
			sum += x
		}
		return cell{Value: sum, Parts: parts}, ok
	})
}

// cellWith is cellOf for any cell f makes.
func cellWith[T any](o outcome[T], partial bool, f func(T) (cell, bool)) *cell {
	switch {
	case !o.ran:
		return nil
	case o.err != nil && !partial:
		return &cell{Failed: true}
	}
	c, ok := f(o.v)
	switch {
	case !ok && o.err != nil:
		return &cell{Failed: true}
	case !ok:
		return nil
	}
	return &c
}

// fill sets r's three cells from f of each target's outcome.
func (rs results[T]) fill(r row, f func(T) (float64, bool)) row {
	r.Direct = cellOf(rs.Direct, rs.partial, f)
	r.Nginx = cellOf(rs.Nginx, rs.partial, f)
	r.Airlock = cellOf(rs.Airlock, rs.partial, f)
	return r
}

// fillParts sets r's three cells from f of each target's outcome, a figure
// in the parts r.Parts names.
func (rs results[T]) fillParts(r row, f func(T) ([]float64, bool)) row {
	r.Direct = partsCellOf(rs.Direct, rs.partial, f)
	r.Nginx = partsCellOf(rs.Nginx, rs.partial, f)
	r.Airlock = partsCellOf(rs.Airlock, rs.partial, f)
	return r
}

// measured returns rs showing what failed outcomes still measured; the
// failures are in the report already.
func (rs results[T]) measured() results[T] {
	rs.partial = true
	return rs
}

// always adapts a figure that applies to every target for fill.
func always[T any](f func(T) float64) func(T) (float64, bool) {
	return func(v T) (float64, bool) { return f(v), true }
}

// onTargets runs f against each of targets in turn and records failures.
func onTargets[T any](ctx context.Context, rep *report, scenario string, targets []target, f func(context.Context, target) (T, error)) results[T] {
	var rs results[T]
	for _, t := range targets {
		v, err := f(ctx, t)
		*rs.of(t.Name) = outcome[T]{v: v, err: err, ran: true}
		if err != nil {
			rep.fail(scenario, t.Name, err)
		}
	}
	return rs
}

// microseconds converts d to float microseconds.
func microseconds(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func benchLatency(ctx context.Context, cfg *benchConfig, rep *report) {
	rs := onTargets(ctx, rep, "latency", cfg.targets(), func(ctx context.Context, t target) (latencyResult, error) {
		p := cfg.Latency
		p.Watch = cfg.watch(t, "edge", "relay")
		return measureLatency(ctx, t, p)
	})
	name := fmt.Sprintf("small request latency (%s, c=1, n=%d)", cfg.Latency.Request, cfg.Latency.N)
	for i, q := range []quantile{p50, p90, p99} {
		rep.add(rs.fill(row{ID: "latency_" + q.label, Name: q.rowName(name, i), Unit: "ms", Compare: compareDelta},
			always(func(r latencyResult) float64 { return ms(q.of(summarize(r.Samples))) })))
	}
	// The target is in added latency: each proxy chain's p50 minus
	// DIRECT's, from the same run.
	if d := rs.Direct; d.ran && d.err == nil {
		direct := summarize(d.v.Samples).P50
		rep.add(row{ID: "latency_added_p50", Name: "  added p50 (p50 − direct's p50)", Unit: "ms", Compare: compareDelta,
			Nginx:   cellOf(rs.Nginx, false, always(func(r latencyResult) float64 { return ms(summarize(r.Samples).P50 - direct) })),
			Airlock: cellOf(rs.Airlock, false, always(func(r latencyResult) float64 { return ms(summarize(r.Samples).P50 - direct) })),
		})
	}
	rep.addIfAny(rs.fill(row{ID: "latency_cpu_per_request_edge_relay", Name: "  CPU per request: edge + relay", Unit: "µs", Compare: compareDelta},
		func(r latencyResult) (float64, bool) {
			d, ok := r.Phase.cpuPerRequest(r.requests(), "edge", "relay")
			return microseconds(d), ok
		}))
	addCountRows(rep, cfg, "latency", rs, func(r latencyResult) (phase, int64) { return r.Phase, r.requests() })
}

func benchThroughput(ctx context.Context, cfg *benchConfig, rep *report) {
	p := cfg.Throughput
	rs := onTargets(ctx, rep, "throughput", cfg.targets(), func(ctx context.Context, t target) (throughputResult, error) {
		p := p
		p.Watch = cfg.watch(t, "edge", "relay", "upstream")
		return measureThroughput(ctx, t, p)
	})
	rep.add(rs.fill(row{
		ID: "throughput", Name: fmt.Sprintf("throughput (%s, c=%d, %v)", p.Request, p.Concurrency, p.Duration), Unit: "req/s", Compare: compareRatio,
	}, always(throughputResult.perSecond)))
	for _, t := range cfg.targets() {
		if o := *rs.of(t.Name); o.err == nil && o.v.Errors > 0 {
			rep.notef("throughput %s: %d failed requests, first: %v", t.Name, o.v.Errors, o.v.FirstError)
		}
	}
	for _, c := range []struct {
		id, label string
		names     []string
	}{
		{"upstream", "upstream", []string{"upstream"}},
		{"edge", "edge", []string{"edge"}},
		{"relay", "relay", []string{"relay"}},
		{"edge_relay", "edge + relay", []string{"edge", "relay"}},
	} {
		rep.addIfAny(rs.fill(row{ID: "cpu_per_request_" + c.id, Name: "  CPU per request: " + c.label, Unit: "µs", Compare: compareDelta},
			func(r throughputResult) (float64, bool) {
				d, ok := r.Phase.cpuPerRequest(r.requests(), c.names...)
				return microseconds(d), ok
			}))
	}
	addCountRows(rep, cfg, "throughput", rs, func(r throughputResult) (phase, int64) { return r.Phase, r.requests() })
}

// countRows are the per-request rows of the edge's and the relay's
// counters (issue 9), with their ID part, label, unit, counter and scale.
// The syscalls row shows even without figures, as "-" with a note saying
// why perf did not count.
var countRows = []struct {
	id, label, unit, name string
	scale                 float64
}{
	{"context_switches", "context switches", "/req", countCtxSwitches, 1},
	{"syscalls", "syscalls", "/req", countSyscalls, 1},
	{"goroutines", "goroutines created", "/req", countGoroutines, 1},
	{"allocs", "heap allocations", "/req", countAllocs, 1},
	{"alloc_kib", "heap allocated", "KiB", countAllocBytes, 1.0 / 1024},
}

// addCountRows adds a scenario's rows of what the edge and the relay did
// per request (context switches, syscalls, goroutines created, heap
// allocations) and of the tunnel's packets, and notes what could not be
// read. of returns a result's measured phase and its number of requests.
func addCountRows[T any](rep *report, cfg *benchConfig, scenario string, rs results[T], of func(T) (phase, int64)) {
	roles := []string{"edge", "relay"}
	for _, c := range countRows {
		add := rep.addIfAny
		if c.name == countSyscalls {
			add = rep.add
		}
		add(rs.fillParts(row{
			ID: scenario + "_" + c.id + "_per_request", Name: "  per request: " + c.label + " (edge / relay)",
			Unit: c.unit, Parts: roles, Compare: compareDelta,
		}, func(v T) ([]float64, bool) {
			ph, n := of(v)
			parts := make([]float64, len(roles))
			for i, role := range roles {
				x, ok := ph.Counts.perRequest(n, role, c.name)
				if !ok {
					return nil, false
				}
				parts[i] = x * c.scale
			}
			return parts, true
		}))
	}
	switch {
	case cfg.TunnelTransport == "tcp":
	case cfg.countsUDP():
		// What the edge sends, the relay reads, and the other way round.
		rep.addIfAny(row{ID: scenario + "_tunnel_packets_per_request", Name: "  per request: tunnel packets sent / received (edge)", Unit: "/req",
			Parts: []string{"sent", "received"}, Airlock: partsCellOf(rs.Airlock, false, func(v T) ([]float64, bool) {
				ph, n := of(v)
				sent, ok1 := ph.Counts.perRequest(n, "relay", countUDPRecv)
				received, ok2 := ph.Counts.perRequest(n, "edge", countUDPRecv)
				return []float64{sent, received}, ok1 && ok2
			})})
	default:
		rep.addIfAny(row{ID: scenario + "_tunnel_packets_per_request", Name: "  per request: tunnel packets, both ways (UDP datagrams on loopback)", Unit: "/req",
			Airlock: cellOf(rs.Airlock, false, func(v T) (float64, bool) {
				ph, n := of(v)
				return ph.Counts.perRequest(n, roleNet, countUDPIn)
			})})
	}
	for _, t := range cfg.targets() {
		o := *rs.of(t.Name)
		if !o.ran || o.err != nil {
			continue
		}
		ph, n := of(o.v)
		for _, p := range ph.Problems {
			rep.notef("%s %s: %s", scenario, t.Name, p)
		}
		// Without airlock's requests, its tunnel sends only a PING now and
		// then: more UDP means that the /proc/net/snmp figure is not the
		// tunnel's alone.
		udp := ph.Counts[counterKey{roleNet, countUDPIn}]
		switch {
		case t.Name != nameAirlock && udp > 10+0.01*float64(n) && !cfg.countsUDP() && cfg.TunnelTransport != "tcp":
			rep.notef("%s %s: %.0f UDP datagrams on loopback, more than airlock's idle tunnel sends: something else shares this network namespace, and the tunnel packet row counts it too", scenario, t.Name, udp)
		case t.Name == nameAirlock && ph.Counts[counterKey{roleNet, countUDPDrops}] > 0:
			rep.notef("%s %s: %.0f UDP datagrams on loopback dropped for a full socket receive buffer (/proc/net/snmp RcvbufErrors)", scenario, t.Name, ph.Counts[counterKey{roleNet, countUDPDrops}])
		}
	}
}

func benchSSE(ctx context.Context, cfg *benchConfig, rep *report) {
	p := cfg.SSE
	rs := onTargets(ctx, rep, "sse", cfg.targets(), func(ctx context.Context, t target) (sseResult, error) {
		return measureSSE(ctx, t, p)
	})
	name := fmt.Sprintf("SSE event delay (%d streams × %d events, %v apart)", p.Streams, p.Events, p.Interval)
	for i, q := range []quantile{p50, p99, pMax} {
		rep.add(rs.fill(row{ID: "sse_delay_" + q.label, Name: q.rowName(name, i), Unit: "ms", Compare: compareDelta},
			always(func(r sseResult) float64 { return ms(q.of(summarize(r.Delays))) })))
	}
	rep.add(rs.fill(row{ID: "sse_merged_reads", Name: "  merged events (Reads that completed >1 event)", Unit: "count", Compare: compareDelta},
		always(func(r sseResult) float64 { return float64(r.MergedReads) })))
	for _, t := range cfg.targets() {
		if o := *rs.of(t.Name); o.err == nil {
			rep.notef("sse %s: %d events in %d reads, %d reads held more than one event", t.Name, o.v.Events, o.v.Reads, o.v.MergedReads)
		}
	}
}

func benchBulk(ctx context.Context, cfg *benchConfig, rep *report) {
	rs := onTargets(ctx, rep, "bulk", cfg.targets(), func(ctx context.Context, t target) (bulkResult, error) {
		return measureBulk(ctx, t, cfg.BulkBytes)
	})
	size := fmt.Sprintf("%.0f MiB", mib(cfg.BulkBytes))
	rep.add(rs.fill(row{ID: "bulk_upload", Name: "bulk upload (" + size + ", 1 stream)", Unit: "MiB/s", Compare: compareRatio},
		always(func(r bulkResult) float64 { return r.Upload / (1 << 20) })))
	rep.add(rs.fill(row{ID: "bulk_download", Name: "bulk download (" + size + ", 1 stream)", Unit: "MiB/s", Compare: compareRatio},
		always(func(r bulkResult) float64 { return r.Download / (1 << 20) })))
}

// benchHold measures each proxy chain's memory with held streams. DIRECT
// is not measured: the upstream's memory is not the proxies' cost.
func benchHold(ctx context.Context, cfg *benchConfig, rep *report) {
	var targets []target
	for _, t := range cfg.proxies() {
		if len(cfg.procs(t, "edge", "relay")) > 0 {
			targets = append(targets, t)
		} else {
			rep.notef("rss %s: skipped, no edge or relay PID", t.Name)
		}
	}
	if len(targets) == 0 {
		return
	}
	if slices.ContainsFunc(targets, func(t target) bool { return t.Name == nameNginx }) {
		rep.notef("rss nginx: each nginx is its master and its worker with their RSS summed, so the pages they share count twice")
	}
	p := cfg.Hold
	rs := onTargets(ctx, rep, "rss", targets, func(ctx context.Context, t target) (holdResult, error) {
		p := p
		p.Procs = cfg.procs(t, "edge", "relay")
		return measureHold(ctx, t, p)
	})
	// The RSS figures were read even when some streams failed (the failure
	// is reported), so they are shown as measured.
	read := rs.measured()
	rep.add(rs.fill(row{ID: "hold_open_time", Name: fmt.Sprintf("time to open %d held streams (%d at once)", p.Streams, p.Parallel), Unit: "ms", Compare: compareDelta},
		always(func(r holdResult) float64 { return ms(r.OpenTime) })))
	for _, c := range []struct {
		id, label string
		names     []string
	}{
		{"edge", "edge", []string{"edge"}},
		{"relay", "relay", []string{"relay"}},
		{"edge_relay", "edge + relay", []string{"edge", "relay"}},
	} {
		rep.addIfAny(read.fill(row{ID: "rss_idle_" + c.id, Name: c.label + " RSS idle", Unit: "MiB", Compare: compareDelta},
			func(r holdResult) (float64, bool) { v, ok := sumOf(r.Idle, c.names); return mib(v), ok }))
		rep.addIfAny(read.fill(row{ID: "rss_held_" + c.id, Name: fmt.Sprintf("%s RSS with %d open streams", c.label, p.Streams), Unit: "MiB", Compare: compareDelta},
			func(r holdResult) (float64, bool) { v, ok := sumOf(r.Held, c.names); return mib(v), ok }))
		rep.addIfAny(read.fill(row{ID: "rss_per_stream_" + c.id, Name: "  " + c.label + " RSS per open stream", Unit: "KiB", Compare: compareDelta},
			func(r holdResult) (float64, bool) {
				idle, ok1 := sumOf(r.Idle, c.names)
				held, ok2 := sumOf(r.Held, c.names)
				if !ok1 || !ok2 || r.Open == 0 {
					return 0, false
				}
				return float64(held-idle) / 1024 / float64(r.Open), true
			}))
	}
}

// sumOf returns the sum of m's values for names, and false when one is
// missing.
func sumOf(m map[string]int64, names []string) (int64, bool) {
	var total int64
	for _, n := range names {
		v, ok := m[n]
		if !ok {
			return 0, false
		}
		total += v
	}
	return total, true
}

// quantile is one figure of a summary, as a report row shows it.
type quantile struct {
	label string
	of    func(summary) time.Duration
}

var (
	p50  = quantile{"p50", func(s summary) time.Duration { return s.P50 }}
	p90  = quantile{"p90", func(s summary) time.Duration { return s.P90 }}
	p99  = quantile{"p99", func(s summary) time.Duration { return s.P99 }}
	pMax = quantile{"max", func(s summary) time.Duration { return s.Max }}
)

// rowName is the name of the i-th row of a group of quantile rows: the
// group's name on the first, indented below it.
func (q quantile) rowName(group string, i int) string {
	if i == 0 {
		return group + " " + q.label
	}
	return "  " + q.label
}
