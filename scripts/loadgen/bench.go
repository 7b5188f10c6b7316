package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// scenarioNames lists the scenarios in the order they run. rss runs before
// bulk so that its idle figure is not inflated by the bulk transfers' heap.
var scenarioNames = []string{"latency", "throughput", "sse", "rss", "bulk"}

// benchConfig is everything `loadgen bench` takes on its command line.
type benchConfig struct {
	// Direct and Airlock are the two base URLs, with their keys.
	Direct, Airlock target
	// EdgePID, RelayPID and UpstreamPID name the processes whose CPU time
	// and RSS are read; 0 leaves a process out.
	EdgePID, RelayPID, UpstreamPID int
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

	directKeyEnv, airlockKeyEnv, scenarios string // raw flag values
}

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
	cfg := &benchConfig{Direct: target{Name: "direct"}, Airlock: target{Name: "airlock"}}
	fs := flag.NewFlagSet("loadgen bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: loadgen bench -direct URL -direct-key-env VAR -airlock URL -airlock-key-env VAR [flags]\n\n"+
			"Runs the scenarios (%s) against both base URLs and prints one table.\n\nFlags:\n",
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
	fs.StringVar(&cfg.scenarios, "scenarios", strings.Join(scenarioNames, ","), "comma-separated `list` of scenarios to run")

	fs.StringVar(&cfg.Latency.Path, "latency-path", "/models", "small GET request `path` below the base URL (latency, throughput)")
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
	for _, k := range []struct {
		flag, env string
		dst       *string
	}{{"-direct-key-env", cfg.directKeyEnv, &cfg.Direct.Key}, {"-airlock-key-env", cfg.airlockKeyEnv, &cfg.Airlock.Key}} {
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
	cfg.Throughput.Path = cfg.Latency.Path
	return nil
}

// procs returns the watched processes among edge, relay and upstream that
// have a PID.
func (cfg *benchConfig) procs(names ...string) []proc {
	pids := map[string]int{"edge": cfg.EdgePID, "relay": cfg.RelayPID, "upstream": cfg.UpstreamPID}
	var out []proc
	for _, n := range names {
		if pids[n] > 0 {
			out = append(out, proc{Name: n, PID: pids[n]})
		}
	}
	return out
}

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
	for _, s := range cfg.Scenarios {
		if ctx.Err() != nil {
			rep.fail(s, "both", ctx.Err())
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

// outcome is one target's result of a scenario.
type outcome[T any] struct {
	v   T
	err error
}

// value returns f(v) as a cell, or a failed cell.
func value[T any](o outcome[T], f func(T) float64) *cell {
	if o.err != nil {
		return &cell{Failed: true}
	}
	return &cell{Value: f(o.v)}
}

// onBoth runs f against DIRECT, then AIRLOCK, and records failures.
func onBoth[T any](ctx context.Context, cfg *benchConfig, rep *report, scenario string, f func(context.Context, target) (T, error)) (direct, airlock outcome[T]) {
	for _, x := range []struct {
		t   target
		dst *outcome[T]
	}{{cfg.Direct, &direct}, {cfg.Airlock, &airlock}} {
		v, err := f(ctx, x.t)
		*x.dst = outcome[T]{v, err}
		if err != nil {
			rep.fail(scenario, x.t.Name, err)
		}
	}
	return direct, airlock
}

func benchLatency(ctx context.Context, cfg *benchConfig, rep *report) {
	d, a := onBoth(ctx, cfg, rep, "latency", func(ctx context.Context, t target) (summary, error) {
		s, err := measureLatency(ctx, t, cfg.Latency)
		return summarize(s), err
	})
	name := fmt.Sprintf("small request latency (GET %s, c=1, n=%d)", cfg.Latency.Path, cfg.Latency.N)
	for _, q := range []struct {
		label string
		f     func(summary) float64
	}{
		{"p50", func(s summary) float64 { return ms(s.P50) }},
		{"p90", func(s summary) float64 { return ms(s.P90) }},
		{"p99", func(s summary) float64 { return ms(s.P99) }},
	} {
		rep.add(row{ID: "latency_" + q.label, Name: name + " " + q.label, Unit: "ms", Direct: value(d, q.f), Airlock: value(a, q.f), Compare: compareDelta})
		name = " "
	}
}

func benchThroughput(ctx context.Context, cfg *benchConfig, rep *report) {
	p := cfg.Throughput
	d, a := onBoth(ctx, cfg, rep, "throughput", func(ctx context.Context, t target) (throughputResult, error) {
		p := p
		p.Procs = cfg.procs("upstream")
		if t.Name == "airlock" {
			p.Procs = cfg.procs("edge", "relay", "upstream")
		}
		return measureThroughput(ctx, t, p)
	})
	rep.add(row{
		ID: "throughput", Name: fmt.Sprintf("throughput (GET %s, c=%d, %v)", p.Path, p.Concurrency, p.Duration), Unit: "req/s",
		Direct: value(d, throughputResult.perSecond), Airlock: value(a, throughputResult.perSecond), Compare: compareRatio,
	})
	for _, o := range []outcome[throughputResult]{d, a} {
		if o.err == nil && o.v.Errors > 0 {
			rep.notef("throughput: %d failed requests, first: %v", o.v.Errors, o.v.FirstError)
		}
	}
	for _, name := range []string{"upstream", "edge", "relay"} {
		cpuCell := func(o outcome[throughputResult]) *cell {
			if o.err != nil {
				return &cell{Failed: true}
			}
			v, ok := o.v.cpuPerRequest(name)
			if !ok {
				return nil
			}
			return &cell{Value: float64(v) / float64(time.Microsecond)}
		}
		r := row{ID: "cpu_per_request_" + name, Name: "  CPU per request: " + name, Unit: "µs", Direct: cpuCell(d), Airlock: cpuCell(a), Compare: compareDelta}
		if r.Direct != nil || r.Airlock != nil {
			rep.add(r)
		}
	}
}

func benchSSE(ctx context.Context, cfg *benchConfig, rep *report) {
	p := cfg.SSE
	d, a := onBoth(ctx, cfg, rep, "sse", func(ctx context.Context, t target) (sseResult, error) {
		return measureSSE(ctx, t, p)
	})
	name := fmt.Sprintf("SSE event delay (%d streams × %d events, %v apart)", p.Streams, p.Events, p.Interval)
	for _, q := range []struct {
		label string
		f     func(summary) float64
	}{
		{"p50", func(s summary) float64 { return ms(s.P50) }},
		{"p99", func(s summary) float64 { return ms(s.P99) }},
		{"max", func(s summary) float64 { return ms(s.Max) }},
	} {
		f := func(r sseResult) float64 { return q.f(summarize(r.Delays)) }
		rep.add(row{ID: "sse_delay_" + q.label, Name: name + " " + q.label, Unit: "ms", Direct: value(d, f), Airlock: value(a, f), Compare: compareDelta})
		name = " "
	}
	merged := func(r sseResult) float64 { return float64(r.MergedReads) }
	rep.add(row{ID: "sse_merged_reads", Name: "  merged events (Reads that completed >1 event)", Unit: "count", Direct: value(d, merged), Airlock: value(a, merged), Compare: compareDelta})
	for _, o := range []struct {
		name string
		o    outcome[sseResult]
	}{{"direct", d}, {"airlock", a}} {
		if o.o.err == nil {
			rep.notef("sse %s: %d events in %d reads, %d reads held more than one event", o.name, o.o.v.Events, o.o.v.Reads, o.o.v.MergedReads)
		}
	}
}

func benchBulk(ctx context.Context, cfg *benchConfig, rep *report) {
	d, a := onBoth(ctx, cfg, rep, "bulk", func(ctx context.Context, t target) (bulkResult, error) {
		return measureBulk(ctx, t, cfg.BulkBytes)
	})
	size := fmt.Sprintf("%.0f MiB", mib(cfg.BulkBytes))
	up := func(r bulkResult) float64 { return r.Upload / (1 << 20) }
	down := func(r bulkResult) float64 { return r.Download / (1 << 20) }
	rep.add(row{ID: "bulk_upload", Name: "bulk upload (" + size + ", 1 stream)", Unit: "MiB/s", Direct: value(d, up), Airlock: value(a, up), Compare: compareRatio})
	rep.add(row{ID: "bulk_download", Name: "bulk download (" + size + ", 1 stream)", Unit: "MiB/s", Direct: value(d, down), Airlock: value(a, down), Compare: compareRatio})
}

func benchHold(ctx context.Context, cfg *benchConfig, rep *report) {
	p := cfg.Hold
	p.Procs = cfg.procs("edge", "relay")
	if len(p.Procs) == 0 {
		rep.notef("rss: skipped, no -edge-pid or -relay-pid")
		return
	}
	res, err := measureHold(ctx, cfg.Airlock, p)
	if err != nil {
		rep.fail("rss", "airlock", err)
	}
	rep.add(row{
		ID: "hold_open_time", Name: fmt.Sprintf("time to open %d held streams (%d at once)", p.Streams, p.Parallel), Unit: "ms",
		Compare: compareNone,
		Airlock: failedOr(err, func() float64 { return ms(res.OpenTime) }),
	})
	for _, pr := range p.Procs {
		idle, okIdle := res.Idle[pr.Name]
		held, okHeld := res.Held[pr.Name]
		rep.add(row{ID: "rss_idle_" + pr.Name, Name: pr.Name + " RSS idle", Unit: "MiB", Airlock: known(okIdle, mib(idle))})
		rep.add(row{
			ID: "rss_held_" + pr.Name, Name: fmt.Sprintf("%s RSS with %d open streams", pr.Name, res.Open), Unit: "MiB",
			Airlock: known(okHeld, mib(held)),
		})
		if res.Open > 0 {
			rep.add(row{
				ID: "rss_per_stream_" + pr.Name, Name: "  " + pr.Name + " RSS per open stream", Unit: "KiB",
				Airlock: known(okIdle && okHeld, float64(held-idle)/1024/float64(res.Open)),
			})
		}
	}
}

// known returns a cell with v, or a failed cell when !ok.
func known(ok bool, v float64) *cell {
	if !ok {
		return &cell{Failed: true}
	}
	return &cell{Value: v}
}

// failedOr returns a failed cell when err is set, else a cell with f().
func failedOr(err error, f func() float64) *cell {
	if err != nil {
		return &cell{Failed: true}
	}
	return &cell{Value: f()}
}
