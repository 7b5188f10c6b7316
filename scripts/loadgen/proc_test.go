package main

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

func TestParseStatPPID(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    int
		wantErr bool
	}{
		{"plain", "4243 (nginx) S 4242 4242 4242 0 -1 4194560", 4242, false},
		{"name with parens and spaces", "4243 (nginx: worker) (x)) S 17 4242", 17, false},
		{"no name", "4243 nginx S 1", 0, true},
		{"too short", "4243 (nginx) S", 0, true},
		{"not a number", "4243 (nginx) S x", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatPPID([]byte(tt.stat))
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("parseStatPPID(%q) = %d, %v; want %d, error %v", tt.stat, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestDescendants(t *testing.T) {
	// 1 ─┬─ 10 (nginx master) ─┬─ 11 (worker)
	//    │                     └─ 12 (worker) ── 13
	//    └─ 20 (unrelated)
	parents := map[int]int{1: 0, 10: 1, 11: 10, 12: 10, 13: 12, 20: 1}
	tests := []struct {
		name string
		root int
		want []int
	}{
		{"master and workers", 10, []int{10, 11, 12, 13}},
		{"leaf", 11, []int{11}},
		{"unknown root is itself", 99, []int{99}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := descendants(tt.root, parents); !slices.Equal(got, tt.want) {
				t.Errorf("descendants(%d) = %v, want %v", tt.root, got, tt.want)
			}
		})
	}
}

func TestPerRequest(t *testing.T) {
	s := cpuSnapshot{"edge": 300 * time.Millisecond, "relay": 100 * time.Millisecond}
	tests := []struct {
		name     string
		requests int64
		names    []string
		want     time.Duration
		wantOK   bool
	}{
		{"one", 1000, []string{"edge"}, 300 * time.Microsecond, true},
		{"summed", 1000, []string{"edge", "relay"}, 400 * time.Microsecond, true},
		{"one missing", 1000, []string{"edge", "upstream"}, 0, false},
		{"no requests", 0, []string{"edge"}, 0, false},
		{"no names", 1000, nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := s.perRequest(tt.requests, tt.names...)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("perRequest(%d, %v) = %v, %v; want %v, %v", tt.requests, tt.names, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestProcTree counts a child process with its parent, as the bench counts
// an nginx worker with its master.
func TestProcTree(t *testing.T) {
	self := proc{Name: "self", PID: selfPID(t)}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start a child: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	tree := self
	tree.Tree = true
	pids, err := tree.pids()
	if err != nil {
		t.Fatalf("pids: %v", err)
	}
	if pids[0] != os.Getpid() || !slices.Contains(pids, cmd.Process.Pid) {
		t.Errorf("pids = %v, want %d first and child %d in it", pids, os.Getpid(), cmd.Process.Pid)
	}
	one, err := self.rss()
	if err != nil {
		t.Fatalf("rss: %v", err)
	}
	all, err := tree.rss()
	if err != nil || all <= one {
		t.Errorf("tree rss = %d, %v; want more than the process alone (%d), nil", all, err, one)
	}
	if _, err := tree.cpu(); err != nil {
		t.Errorf("tree cpu: %v", err)
	}
	gone := proc{Name: "gone", PID: cmd.Process.Pid, Tree: true}
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := gone.cpu(); err == nil {
		t.Errorf("cpu of an exited tree: got nil error, want one")
	}
}
