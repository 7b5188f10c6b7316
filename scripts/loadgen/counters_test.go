package main

import (
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestParseCtxSwitches(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr bool
	}{
		{"both", "Name:\tairlock\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n", 1290, false},
		{"spaces and no final newline", "voluntary_ctxt_switches:   7\nnonvoluntary_ctxt_switches: 0", 7, false},
		{"the other fields ignored", "VmRSS:\t  100 kB\nvoluntary_ctxt_switches:\t1\nSigQ:\t0/1\nnonvoluntary_ctxt_switches:\t2\n", 3, false},
		{"nonvoluntary missing", "voluntary_ctxt_switches:\t1\n", 0, true},
		{"none", "Name:\tx\n", 0, true},
		{"not a number", "voluntary_ctxt_switches:\tx\nnonvoluntary_ctxt_switches:\t2\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCtxSwitches([]byte(tt.status))
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("parseCtxSwitches = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// snmpSample is /proc/net/snmp of a Linux 6.18, shortened to three groups.
const snmpSample = `Ip: Forwarding DefaultTTL InReceives InHdrErrors
Ip: 2 64 46190802 0
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 233058 231855 1160 169807 0 39398991 39490775 72701 0 127708 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 36454571 3123 4124 6788688 4124 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
`

func TestParseSNMP(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    map[string]int64
		wantErr bool
	}{
		{"sample", snmpSample, map[string]int64{
			"Ip.Forwarding": 2, "Ip.DefaultTTL": 64, "Ip.InReceives": 46190802, "Ip.InHdrErrors": 0,
			"Tcp.RtoAlgorithm": 1, "Tcp.RtoMin": 200, "Tcp.RtoMax": 120000, "Tcp.MaxConn": -1, "Tcp.ActiveOpens": 233058,
			"Tcp.PassiveOpens": 231855, "Tcp.AttemptFails": 1160, "Tcp.EstabResets": 169807, "Tcp.CurrEstab": 0,
			"Tcp.InSegs": 39398991, "Tcp.OutSegs": 39490775, "Tcp.RetransSegs": 72701, "Tcp.InErrs": 0, "Tcp.OutRsts": 127708, "Tcp.InCsumErrors": 0,
			"Udp.InDatagrams": 36454571, "Udp.NoPorts": 3123, "Udp.InErrors": 4124, "Udp.OutDatagrams": 6788688, "Udp.RcvbufErrors": 4124,
			"Udp.SndbufErrors": 0, "Udp.InCsumErrors": 0, "Udp.IgnoredMulti": 0, "Udp.MemErrors": 0,
			"UdpLite.InDatagrams": 0, "UdpLite.NoPorts": 0, "UdpLite.InErrors": 0, "UdpLite.OutDatagrams": 0, "UdpLite.RcvbufErrors": 0,
			"UdpLite.SndbufErrors": 0, "UdpLite.InCsumErrors": 0, "UdpLite.IgnoredMulti": 0, "UdpLite.MemErrors": 0,
		}, false},
		{"blank lines", "\nUdp: InDatagrams\n\nUdp: 5\n", map[string]int64{"Udp.InDatagrams": 5}, false},
		{"fewer values than names", "Udp: InDatagrams NoPorts\nUdp: 5\n", nil, true},
		{"names without values", "Udp: InDatagrams NoPorts\n", nil, true},
		{"names followed by another group", "Udp: InDatagrams\nTcp: InSegs\nTcp: 3\n", nil, true},
		{"not a number", "Udp: InDatagrams\nUdp: x\n", nil, true},
		{"no group", "InDatagrams 5\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSNMP([]byte(tt.text))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseSNMP: error %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !maps.Equal(got, tt.want) {
				t.Errorf("parseSNMP = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParsePerfStat(t *testing.T) {
	both := []perfEvent{syscallEvent, udpRecvEvent}
	tests := []struct {
		name    string
		out     string
		events  []perfEvent
		want    map[string]int64
		wantErr string
	}{
		{"counted", "Events disabled\nEvents enabled\nEvents disabled\n123456,,raw_syscalls:sys_enter,5012345678,100.00,,\n",
			[]perfEvent{syscallEvent}, map[string]int64{countSyscalls: 123456}, ""},
		{"two events", "123456,,raw_syscalls:sys_enter,5012345678,100.00,,\n789,,sock:sock_recv_length,5012345678,100.00,,\n",
			both, map[string]int64{countSyscalls: 123456, countUDPRecv: 789}, ""},
		{"with a -o header", "# started on Sun Dec  6 06:49:16 2026\n\n13,,raw_syscalls:sys_enter,295952,100.00,,\n",
			[]perfEvent{syscallEvent}, map[string]int64{countSyscalls: 13}, ""},
		{"one line per thread, summed", "10,,raw_syscalls:sys_enter,1,100.00,,\n32,,raw_syscalls:sys_enter,1,100.00,,\n",
			[]perfEvent{syscallEvent}, map[string]int64{countSyscalls: 42}, ""},
		{"other events ignored", "5,,context-switches,1,100.00,,\n7,,raw_syscalls:sys_enter,1,100.00,,\n",
			[]perfEvent{syscallEvent}, map[string]int64{countSyscalls: 7}, ""},
		{"one not counted", "<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n3,,sock:sock_recv_length,1,100.00,,\n",
			both, map[string]int64{countUDPRecv: 3}, "perf: raw_syscalls:sys_enter <not counted>"},
		{"one missing", "3,,raw_syscalls:sys_enter,1,100.00,,\n",
			both, map[string]int64{countSyscalls: 3}, "perf: no count of sock:sock_recv_length"},
		{"not supported", "<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n",
			[]perfEvent{syscallEvent}, map[string]int64{}, "raw_syscalls:sys_enter <not supported>"},
		{"no permission", "Error:\nNo permission to enable raw_syscalls:sys_enter event.\n",
			[]perfEvent{syscallEvent}, map[string]int64{}, "no count of raw_syscalls:sys_enter: No permission to enable"},
		{"nothing", "", []perfEvent{syscallEvent}, map[string]int64{}, "(nothing)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePerfStat(tt.out, tt.events)
			if !maps.Equal(got, tt.want) {
				t.Errorf("parsePerfStat = %v, want %v", got, tt.want)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("parsePerfStat: error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// promSample is what airlock's /metrics serves, shortened.
const promSample = `# HELP go_gc_heap_allocs_bytes_total Cumulative sum of memory allocated to the heap by the application. Sourced from /gc/heap/allocs:bytes.
# TYPE go_gc_heap_allocs_bytes_total counter
go_gc_heap_allocs_bytes_total 2.012e+07
# HELP go_gc_heap_allocs_objects_total Cumulative count of heap allocations triggered by the application.
# TYPE go_gc_heap_allocs_objects_total counter
go_gc_heap_allocs_objects_total 61000
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 25
# HELP go_sched_goroutines_created_goroutines_total Count of goroutines created since program start.
# TYPE go_sched_goroutines_created_goroutines_total counter
go_sched_goroutines_created_goroutines_total 1500
airlock_tunnel_sent_bytes_total{relay="127.0.0.1:1"} 99
`

func TestParsePromCounters(t *testing.T) {
	all := map[string]float64{countAllocBytes: 2.012e7, countAllocs: 61000, countGoroutines: 1500}
	tests := []struct {
		name    string
		text    string
		want    map[string]float64
		wantErr string
	}{
		{"sample", promSample, all, ""},
		{"labels and a timestamp", "go_sched_goroutines_created_goroutines_total{a=\"x} y\"} 3 1700000000000\ngo_gc_heap_allocs_objects_total 1\ngo_gc_heap_allocs_bytes_total 2\n",
			map[string]float64{countGoroutines: 3, countAllocs: 1, countAllocBytes: 2}, ""},
		{"series summed", "go_gc_heap_allocs_objects_total{k=\"a\"} 1\ngo_gc_heap_allocs_objects_total{k=\"b\"} 2\ngo_gc_heap_allocs_bytes_total 0\ngo_sched_goroutines_created_goroutines_total 0\n",
			map[string]float64{countAllocs: 3, countAllocBytes: 0, countGoroutines: 0}, ""},
		{"a prefix of a name is not the name", "go_gc_heap_allocs_objects_total_x 9\n" + promSample, all, ""},
		{"an older airlock", "go_goroutines 25\ngo_memstats_mallocs_total 7\n", map[string]float64{},
			"no go_gc_heap_allocs_bytes_total, go_gc_heap_allocs_objects_total, go_sched_goroutines_created_goroutines_total"},
		{"one missing", "go_gc_heap_allocs_objects_total 1\ngo_gc_heap_allocs_bytes_total 2\n", map[string]float64{countAllocs: 1, countAllocBytes: 2},
			"no go_sched_goroutines_created_goroutines_total"},
		{"not a number", "go_gc_heap_allocs_objects_total x\n", map[string]float64{}, `line "go_gc_heap_allocs_objects_total x"`},
		{"no value", "go_gc_heap_allocs_objects_total{k=\"a\"}\n", map[string]float64{}, "no value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePromCounters([]byte(tt.text))
			if !maps.Equal(got, tt.want) {
				t.Errorf("parsePromCounters = %v, want %v", got, tt.want)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("parsePromCounters: error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestTally(t *testing.T) {
	before := tally{{"edge", countAllocs}: 100, {"relay", countAllocs}: 50, {"gone", countAllocs}: 1}
	after := tally{{"edge", countAllocs}: 1100, {"relay", countAllocs}: 250, {"new", countAllocs}: 9}
	d := after.since(before)
	want := tally{{"edge", countAllocs}: 1000, {"relay", countAllocs}: 200}
	if !maps.Equal(d, want) {
		t.Fatalf("since = %v, want %v", d, want)
	}
	tests := []struct {
		name     string
		requests int64
		role     string
		want     float64
		wantOK   bool
	}{
		{"edge", 100, "edge", 10, true},
		{"relay", 100, "relay", 2, true},
		{"read only after", 100, "new", 0, false},
		{"no requests", 0, "edge", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := d.perRequest(tt.requests, tt.role, countAllocs)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("perRequest(%d, %s) = %v, %v; want %v, %v", tt.requests, tt.role, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestMetricsURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "",
		"127.0.0.1:9090":         "http://127.0.0.1:9090/metrics",
		"http://127.0.0.1:9090/": "http://127.0.0.1:9090/metrics",
		"https://admin.example":  "https://admin.example/metrics",
	} {
		if got := metricsURL(in); got != want {
			t.Errorf("metricsURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMeter reads every counter of this process around some work: its
// context switches, /proc/net/snmp, and the runtime counters of a fake
// /metrics whose every scrape costs some allocations and goroutines, which
// the meter takes off.
func TestMeter(t *testing.T) {
	self := proc{Name: "edge", PID: selfPID(t)}
	var scrapes, work atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, w0 := scrapes.Add(1), work.Load()
		io.WriteString(w, strings.NewReplacer("1500", itoa(1500+3*n+w0), "61000", itoa(61000+700*n+10*w0)).Replace(promSample))
	}))
	defer srv.Close()
	broken := httptest.NewServer(http.NotFoundHandler())
	defer broken.Close()

	ctx := context.Background()
	m := newMeter(ctx, watch{Procs: []proc{self}, Metrics: map[string]string{"edge": srv.URL, "relay": broken.URL}, Net: true})
	defer m.close()
	m.begin(ctx)
	for range 20 {
		time.Sleep(time.Millisecond) // a voluntary context switch or more
	}
	work.Store(100)
	ph := m.end(ctx)

	if v, ok := ph.Counts.perRequest(10, "edge", countGoroutines); !ok || v != 10 {
		t.Errorf("goroutines per request = %v, %v; want 10, true", v, ok)
	}
	if v, ok := ph.Counts.perRequest(10, "edge", countAllocs); !ok || v != 100 {
		t.Errorf("allocations per request = %v, %v; want 100, true", v, ok)
	}
	if v, ok := ph.Counts.perRequest(1, "edge", countCtxSwitches); !ok || v < 1 {
		t.Errorf("context switches = %v, %v; want at least 1, true", v, ok)
	}
	if _, ok := ph.Counts[counterKey{roleNet, countUDPIn}]; !ok {
		if _, err := os.Stat("/proc/net/snmp"); err == nil {
			t.Errorf("no UDP datagram count from /proc/net/snmp")
		}
	}
	if _, ok := ph.Counts[counterKey{"relay", countAllocs}]; ok {
		t.Errorf("relay allocations counted from a /metrics that answers 404")
	}
	if len(ph.Problems) != 1 || !strings.Contains(ph.Problems[0], "relay /metrics: status 404") {
		t.Errorf("problems = %q, want the relay's 404, once", ph.Problems)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestMeterPerf counts this process's syscalls and UDP datagrams read
// with perf, where perf can.
func TestMeterPerf(t *testing.T) {
	ctx := context.Background()
	events, why := probePerf(ctx, []perfEvent{syscallEvent, udpRecvEvent})
	if len(events) == 0 {
		t.Skipf("perf cannot count here: %q", why)
	}
	a, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	self := proc{Name: "edge", PID: selfPID(t)}
	m := newMeter(ctx, watch{Procs: []proc{self}, Perf: []string{"edge"}, PerfEvents: events})
	defer m.close()
	m.begin(ctx)
	for range 100 {
		syscall.Getppid()
	}
	for range 3 {
		a.WriteTo([]byte("x"), a.LocalAddr())
		a.ReadFrom(make([]byte, 8))
	}
	ph := m.end(ctx)
	if len(ph.Problems) > 0 {
		t.Errorf("problems %q", ph.Problems)
	}
	if n, ok := ph.Counts[counterKey{"edge", countSyscalls}]; !ok || n < 100 {
		t.Errorf("syscalls = %v, %v; want at least 100, true", n, ok)
	}
	if n, ok := ph.Counts[counterKey{"edge", countUDPRecv}]; slices.Contains(events, udpRecvEvent) && (!ok || n != 3) {
		t.Errorf("UDP datagrams read = %v, %v; want 3, true", n, ok)
	}
}

// TestProbePerfWithoutPerf: with no perf, nothing is counted and the
// reason says so, for each event.
func TestProbePerfWithoutPerf(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	events, why := probePerf(context.Background(), []perfEvent{syscallEvent, udpRecvEvent})
	if len(events) != 0 || len(why) != 2 || !strings.Contains(why[0], "raw_syscalls:sys_enter: perf is not installed") {
		t.Errorf("probePerf = %v, %q; want none, perf is not installed for each", events, why)
	}
}
