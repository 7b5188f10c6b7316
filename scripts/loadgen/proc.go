package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// proc is a process the benchmark watches through /proc (Linux only).
type proc struct {
	Name string
	PID  int
}

// rss returns the process's resident set size (VmRSS) in bytes.
func (p proc) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return 0, fmt.Errorf("%s rss: %w", p.Name, err)
	}
	return parseVmRSS(b)
}

// parseVmRSS finds "VmRSS: N kB" in the text of /proc/PID/status.
func parseVmRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("rss: unexpected VmRSS line %q", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("rss: %w", err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("rss: no VmRSS line")
}

// cpu returns the user plus system CPU time the process has used.
func (p proc) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if err != nil {
		return 0, fmt.Errorf("%s cpu: %w", p.Name, err)
	}
	return parseStatCPU(b)
}

// parseStatCPU returns utime+stime from the text of /proc/PID/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted after the last ')': state is field 3, utime 14, stime 15.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu: malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu: stat has %d fields after the name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// cpuSnapshot is the CPU time of several processes at one moment.
type cpuSnapshot map[string]time.Duration

// snapshotCPU reads the CPU time of every process; ones that cannot be read
// are left out.
func snapshotCPU(procs []proc) cpuSnapshot {
	s := make(cpuSnapshot, len(procs))
	for _, p := range procs {
		if d, err := p.cpu(); err == nil {
			s[p.Name] = d
		}
	}
	return s
}

// since returns the CPU time each process used between before and s.
func (s cpuSnapshot) since(before cpuSnapshot) cpuSnapshot {
	out := make(cpuSnapshot, len(s))
	for name, d := range s {
		if b, ok := before[name]; ok {
			out[name] = d - b
		}
	}
	return out
}
