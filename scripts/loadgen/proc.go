package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// proc is a process the benchmark watches through /proc (Linux only).
type proc struct {
	// Name is the process's role, "edge", "relay" or "upstream": figures of
	// one role are compared across targets.
	Name string
	PID  int
	// Tree counts the process's descendants with it, so that an nginx
	// master and its worker are one proxy. Their RSS is summed, which counts
	// the pages the worker shares with its master twice (a few MiB).
	Tree bool
}

// pids returns p.PID and, with p.Tree, its descendants.
func (p proc) pids() ([]int, error) {
	if !p.Tree {
		return []int{p.PID}, nil
	}
	parents, err := readParents()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Name, err)
	}
	if _, ok := parents[p.PID]; !ok {
		return nil, fmt.Errorf("%s: no process %d", p.Name, p.PID)
	}
	return descendants(p.PID, parents), nil
}

// readParents maps every process in /proc to its parent. Processes that
// exit while /proc is read are left out.
func readParents() (map[int]int, error) {
	paths, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	parents := make(map[int]int, len(paths))
	for _, path := range paths {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue // exited
		}
		if ppid, err := parseStatPPID(b); err == nil {
			parents[pid] = ppid
		}
	}
	return parents, nil
}

// descendants returns root followed by every process below it in parents
// (pid → parent pid), parents before children.
func descendants(root int, parents map[int]int) []int {
	children := map[int][]int{}
	for pid, ppid := range parents {
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		kids := children[out[i]]
		slices.Sort(kids)
		out = append(out, kids...)
	}
	return out
}

// sum returns the sum of read over the process and, with p.Tree, its
// tree; what names the figure in errors.
func (p proc) sum(what string, read func(pid int) (int64, error)) (int64, error) {
	pids, err := p.pids()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	var total int64
	for _, pid := range pids {
		v, err := read(pid)
		if err != nil {
			return 0, fmt.Errorf("%s %s: %w", p.Name, what, err)
		}
		total += v
	}
	return total, nil
}

// rss returns the process's resident set size (VmRSS) in bytes; with
// p.Tree, the sum over its tree.
func (p proc) rss() (int64, error) {
	return p.sum("rss", func(pid int) (int64, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, err
		}
		return parseVmRSS(b)
	})
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
			return 0, fmt.Errorf("unexpected VmRSS line %q", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS: %w", err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS line")
}

// cpu returns the user plus system CPU time the process has used; with
// p.Tree, the sum over its tree.
func (p proc) cpu() (time.Duration, error) {
	total, err := p.sum("cpu", func(pid int) (int64, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		d, err := parseStatCPU(b)
		return int64(d), err
	})
	return time.Duration(total), err
}

// statFields returns the fields of /proc/PID/stat after the command name,
// starting with state (field 3). The name (field 2) may hold spaces and
// parentheses, so fields are counted after the last ')'.
func statFields(stat []byte) ([]string, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed stat")
	}
	return strings.Fields(string(stat[i+1:])), nil
}

// parseStatPPID returns the parent PID (field 4) from the text of
// /proc/PID/stat.
func parseStatPPID(stat []byte) (int, error) {
	f, err := statFields(stat)
	if err != nil {
		return 0, fmt.Errorf("ppid: %w", err)
	}
	if len(f) < 2 {
		return 0, fmt.Errorf("ppid: stat has %d fields after the name, want at least 2", len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, fmt.Errorf("ppid: %w", err)
	}
	return ppid, nil
}

// parseStatCPU returns utime+stime (fields 14 and 15) from the text of
// /proc/PID/stat.
func parseStatCPU(stat []byte) (time.Duration, error) {
	f, err := statFields(stat)
	if err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("stat has %d fields after the name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
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

// perRequest returns the CPU time the named processes used together,
// divided by requests, and false when one of them was not measured.
func (s cpuSnapshot) perRequest(requests int64, names ...string) (time.Duration, bool) {
	if requests <= 0 || len(names) == 0 {
		return 0, false
	}
	var total time.Duration
	for _, n := range names {
		d, ok := s[n]
		if !ok {
			return 0, false
		}
		total += d
	}
	return total / time.Duration(requests), true
}

// since returns the CPU time each process used between before and s.
func (s cpuSnapshot) since(before cpuSnapshot) cpuSnapshot { return delta(s, before) }

// delta returns after − before for every key in both.
func delta[M ~map[K]V, K comparable, V ~int64 | ~float64](after, before M) M {
	out := make(M, len(after))
	for k, v := range after {
		if b, ok := before[k]; ok {
			out[k] = v - b
		}
	}
	return out
}
