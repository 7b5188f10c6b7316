package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// What one request costs each process, counted over a measured phase
// (issue 9): thread wake-ups (context switches), syscalls, goroutines
// created, heap allocations, and the tunnel's packets.

// Counter names: the second half of a tally's key.
const (
	// countCtxSwitches is voluntary plus nonvoluntary context switches
	// summed over the process's threads (/proc/PID/task/*/status): a thread
	// that blocks and is woken again counts one voluntary switch.
	countCtxSwitches = "ctxsw"
	// countSyscalls is syscalls entered (perf stat, syscallEvent).
	countSyscalls = "syscalls"
	// countUDPRecv is UDP datagrams read (perf stat, udpRecvEvent).
	countUDPRecv = "udp_recv"
	// countGoroutines, countAllocs and countAllocBytes are Go runtime
	// counters scraped from a role's /metrics (goMetrics).
	countGoroutines = "goroutines"
	countAllocs     = "allocs"
	countAllocBytes = "alloc_bytes"
	// countUDPIn and countUDPDrops are the network namespace's counters
	// from /proc/net/snmp, under roleNet: UDP datagrams delivered to
	// sockets (Udp InDatagrams; a GSO send of several datagrams counts
	// each, unlike OutDatagrams) and UDP datagrams dropped for a full
	// receive buffer (Udp RcvbufErrors).
	countUDPIn    = "udp_in"
	countUDPDrops = "udp_rcvbuf_errors"
)

// roleNet is the tally role of the loopback counters, which belong to no
// one process.
const roleNet = "net"

// goMetrics maps the Prometheus names of the Go runtime counters that
// airlock's /metrics exports (internal/metrics.RuntimeCounters) to counter
// names.
var goMetrics = map[string]string{
	"go_sched_goroutines_created_goroutines_total": countGoroutines, // /sched/goroutines-created:goroutines
	"go_gc_heap_allocs_objects_total":              countAllocs,     // /gc/heap/allocs:objects
	"go_gc_heap_allocs_bytes_total":                countAllocBytes, // /gc/heap/allocs:bytes
}

// snmpCounters maps the /proc/net/snmp counters a meter reads, as
// "Group.Name", to counter names.
var snmpCounters = map[string]string{
	"Udp.InDatagrams":  countUDPIn,
	"Udp.RcvbufErrors": countUDPDrops,
}

// counterKey names one counter of one role, e.g. {"edge", countSyscalls}.
type counterKey struct{ Role, Name string }

// tally holds counter readings, or their deltas over a phase.
type tally map[counterKey]float64

// add stores the values of m (counter name → value) under role.
func (t tally) add(role string, m map[string]float64) {
	for name, v := range m {
		t[counterKey{role, name}] = v
	}
}

// since returns the change of every counter read both before and in t.
func (t tally) since(before tally) tally { return delta(t, before) }

// perRequest returns a counter's change divided by requests, and false
// when it was not read or there were no requests.
func (t tally) perRequest(requests int64, role, name string) (float64, bool) {
	v, ok := t[counterKey{role, name}]
	if !ok || requests <= 0 {
		return 0, false
	}
	return v / float64(requests), true
}

// watch says what is read about the processes that serve a target around
// a measured phase.
type watch struct {
	// Procs are the processes whose CPU time and context switches are
	// read.
	Procs []proc
	// Metrics maps a role to the URL of its Prometheus /metrics, scraped
	// for the Go runtime counters; roles without one are not scraped.
	Metrics map[string]string
	// Perf are the roles among Procs that perf stat counts PerfEvents of.
	Perf       []string
	PerfEvents []perfEvent
	// Net reads the UDP counters of /proc/net/snmp.
	Net bool
}

// phase is what the watched processes did during a measured phase.
type phase struct {
	// CPU is the CPU time each process used.
	CPU cpuSnapshot
	// Counts are the counters' changes.
	Counts tally
	// Problems say which counters could not be read, and why.
	Problems []string
}

// cpuPerRequest returns the named processes' CPU time together per
// request, and false when one of them was not measured.
func (p phase) cpuPerRequest(requests int64, names ...string) (time.Duration, bool) {
	return p.CPU.perRequest(requests, names...)
}

// meter reads a watch's counters around one measured phase: newMeter
// before the warm-up (perf takes a moment to attach), begin and end around
// the phase, close in any case.
//
// The Go runtime counters are read by a scrape of /metrics, which itself
// allocates and may start a goroutine in the process, partly after the
// runtime counters are read: the end's scrape before it reads them, the
// begin's after. Those are one scrape's worth, which begin measures with a
// scrape just before its own (scrapeCost) and end takes off.
type meter struct {
	w          watch
	client     *http.Client
	perf       map[string]*perfStat
	before     tally
	scrapeCost tally
	cpu        cpuSnapshot
	// problems are those met before end.
	problems []string
}

// newMeter starts what must be running before the phase begins: one perf
// stat per process, its counting held off until begin.
func newMeter(ctx context.Context, w watch) *meter {
	// Uncompressed: promhttp's gzip writer would allocate more than the
	// rest of the scrape.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableCompression: true}}
	m := &meter{w: w, client: client, perf: map[string]*perfStat{}}
	for _, p := range w.Procs {
		if !slices.Contains(w.Perf, p.Name) || len(w.PerfEvents) == 0 {
			continue
		}
		pids, err := p.pids()
		if err == nil {
			var ps *perfStat
			if ps, err = startPerfStat(ctx, pids, w.PerfEvents); err == nil {
				m.perf[p.Name] = ps
				continue
			}
		}
		m.problems = append(m.problems, fmt.Sprintf("%s perf stat: %v", p.Name, err))
	}
	return m
}

// begin reads the counters at the start of the phase and starts counting
// syscalls.
func (m *meter) begin(ctx context.Context) {
	first, _ := m.scrape(ctx)
	var problems []string
	m.before, problems = m.read(ctx)
	m.problems = append(m.problems, problems...)
	m.scrapeCost = m.before.since(first) // only the scraped counters are in both
	for name, ps := range m.perf {
		if err := ps.enable(); err != nil {
			m.problems = append(m.problems, fmt.Sprintf("%s perf stat: %v", name, err))
			ps.kill()
			delete(m.perf, name)
		}
	}
	m.cpu = snapshotCPU(m.w.Procs)
}

// end reads the counters at the end of the phase and returns their
// changes.
func (m *meter) end(ctx context.Context) phase {
	ph := phase{CPU: snapshotCPU(m.w.Procs).since(m.cpu)}
	var problems []string
	for name, ps := range m.perf {
		if err := ps.disable(); err != nil {
			problems = append(problems, fmt.Sprintf("%s perf stat: %v", name, err))
			ps.kill()
			delete(m.perf, name)
		}
	}
	after, more := m.read(ctx)
	ph.Counts = after.since(m.before)
	for k, c := range m.scrapeCost {
		if v, ok := ph.Counts[k]; ok {
			ph.Counts[k] = max(v-c, 0)
		}
	}
	problems = append(append(m.problems, problems...), more...)
	for _, name := range slices.Sorted(maps.Keys(m.perf)) {
		counts, err := m.perf[name].finish()
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s perf stat: %v", name, err))
		}
		for counter, n := range counts {
			ph.Counts[counterKey{name, counter}] = float64(n)
		}
	}
	m.perf = nil
	// A counter that cannot be read at the start cannot at the end either,
	// mostly: say so once.
	for _, p := range problems {
		if !slices.Contains(ph.Problems, p) {
			ph.Problems = append(ph.Problems, p)
		}
	}
	return ph
}

// close stops any perf stat still running (after a failed phase).
func (m *meter) close() {
	for _, ps := range m.perf {
		ps.kill()
	}
	m.perf = nil
	m.client.CloseIdleConnections()
}

// scrape reads the Go runtime counters of every role with /metrics; what
// cannot be read is left out and said in problems.
func (m *meter) scrape(ctx context.Context) (tally, []string) {
	t := tally{}
	var problems []string
	for _, role := range slices.Sorted(maps.Keys(m.w.Metrics)) {
		v, err := scrapeGoMetrics(ctx, m.client, m.w.Metrics[role])
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s /metrics: %v", role, err))
		}
		t.add(role, v)
	}
	return t, problems
}

// read reads every counter but perf's; what cannot be read is left out and
// said in problems.
func (m *meter) read(ctx context.Context) (tally, []string) {
	t, problems := m.scrape(ctx)
	for _, p := range m.w.Procs {
		n, err := p.ctxSwitches()
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		t.add(p.Name, map[string]float64{countCtxSwitches: float64(n)})
	}
	if m.w.Net {
		v, err := readNetCounters()
		if err != nil {
			problems = append(problems, err.Error())
		}
		t.add(roleNet, v)
	}
	return t, problems
}

// ctxSwitches returns the voluntary plus nonvoluntary context switches of
// every thread of the process (with p.Tree, of its tree). Threads that
// exit while they are read, or between two readings, are left out.
func (p proc) ctxSwitches() (int64, error) {
	return p.sum("context switches", func(pid int) (int64, error) {
		paths, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		if err != nil || len(paths) == 0 {
			return 0, fmt.Errorf("no threads of process %d", pid)
		}
		var total int64
		for _, path := range paths {
			b, err := os.ReadFile(path)
			if err != nil {
				continue // the thread exited
			}
			n, err := parseCtxSwitches(b)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", path, err)
			}
			total += n
		}
		return total, nil
	})
}

// parseCtxSwitches returns voluntary_ctxt_switches plus
// nonvoluntary_ctxt_switches from the text of /proc/PID/task/TID/status.
func parseCtxSwitches(status []byte) (int64, error) {
	var total int64
	found := 0
	for line := range bytes.Lines(status) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch string(k) {
		case "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches":
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", k, err)
			}
			total += n
			found++
		}
	}
	if found != 2 {
		return 0, fmt.Errorf("want voluntary_ctxt_switches and nonvoluntary_ctxt_switches, found %d of them", found)
	}
	return total, nil
}

// readNetCounters reads snmpCounters from /proc/net/snmp.
func readNetCounters() (map[string]float64, error) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return nil, fmt.Errorf("UDP datagrams: %w", err)
	}
	all, err := parseSNMP(b)
	if err != nil {
		return nil, fmt.Errorf("UDP datagrams: %w", err)
	}
	out := map[string]float64{}
	for key, name := range snmpCounters {
		v, ok := all[key]
		if !ok {
			return out, fmt.Errorf("UDP datagrams: /proc/net/snmp has no %s", key)
		}
		out[name] = float64(v)
	}
	return out, nil
}

// parseSNMP parses the text of /proc/net/snmp, where each group is a line
// of names and a line of values ("Udp: InDatagrams NoPorts ..." then
// "Udp: 36454571 3123 ..."), into values keyed "Group.Name".
func parseSNMP(b []byte) (map[string]int64, error) {
	out := map[string]int64{}
	var names []string
	group := ""
	for line := range strings.Lines(string(b)) {
		g, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			if strings.TrimSpace(line) == "" {
				continue
			}
			return nil, fmt.Errorf("snmp: line %q has no group", strings.TrimSpace(line))
		}
		f := strings.Fields(rest)
		if names == nil {
			group, names = g, f
			continue
		}
		if g != group {
			return nil, fmt.Errorf("snmp: %s has names and no values", group)
		}
		if len(f) != len(names) {
			return nil, fmt.Errorf("snmp: %s has %d names and %d values", g, len(names), len(f))
		}
		for i, s := range f {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("snmp: %s.%s: %w", g, names[i], err)
			}
			out[g+"."+names[i]] = v
		}
		names = nil
	}
	if names != nil {
		return nil, fmt.Errorf("snmp: %s has names and no values", group)
	}
	return out, nil
}

// scrapeGoMetrics reads goMetrics from the Prometheus text at url, by
// counter name; the error names those missing.
func scrapeGoMetrics(ctx context.Context, client *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// The Prometheus text format, not OpenMetrics.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	return parsePromCounters(body)
}

// parsePromCounters reads goMetrics from Prometheus text by counter name,
// summing a metric's series; the error names the metrics it lacks (an
// airlock whose /metrics predates them).
func parsePromCounters(body []byte) (map[string]float64, error) {
	out := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 {
			continue
		}
		name, ok := goMetrics[line[:end]]
		if !ok {
			continue
		}
		rest := line[end:]
		if rest[0] == '{' {
			i := strings.LastIndexByte(rest, '}')
			if i < 0 {
				return out, fmt.Errorf("malformed line %q", line)
			}
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return out, fmt.Errorf("no value in line %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return out, fmt.Errorf("line %q: %w", line, err)
		}
		out[name] += v
	}
	var missing []string
	for prom, name := range goMetrics {
		if _, ok := out[name]; !ok {
			missing = append(missing, prom)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return out, fmt.Errorf("no %s (an airlock built before it exported them?)", strings.Join(missing, ", "))
	}
	return out, nil
}
