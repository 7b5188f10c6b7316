package gctune

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

// TestPercent checks the GOGC for heaps below, at and above the floor: the
// heap goal it gives (the larger of live plus GOGC of the scanned bytes and
// the runtime's scaled minimum) is live + floor, or GOGC=100's when that is
// more.
func TestPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name              string
		live, roots, want uint64
	}{
		{"nothing live yet: the runtime's minimum decides", 0, 0, 800},
		{"tiny heap: the runtime's minimum decides", 1 * mib, 0, 825},
		{"small heap", 8 * mib, 0, 400},
		{"stacks and globals count", 6 * mib, 2 * mib, 400},
		{"heap at the floor", 32 * mib, 0, 100},
		{"heap above the floor", 256 * mib, 0, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Percent(tt.live, tt.roots, DefaultFloor)
			if uint64(got) != tt.want {
				t.Fatalf("Percent(%d MiB, %d MiB) = %d, want %d", tt.live/mib, tt.roots/mib, got, tt.want)
			}
			scanned := tt.live + tt.roots
			goal := max(tt.live+scanned*uint64(got)/100, heapMinimum*uint64(got)/100)
			if want := max(tt.live+DefaultFloor, tt.live+scanned); goal < want-mib/16 || goal > want+mib/16 {
				t.Errorf("heap goal %d MiB, want %d MiB", goal/mib, want/mib)
			}
		})
	}
	if got := Percent(1, 0, 1<<40); got != maxPercent {
		t.Errorf("an enormous floor: GOGC %d, want the cap %d", got, maxPercent)
	}
}

// TestTunerFollowsCollections starts a tuner, lets collections run and
// checks that after one it set GOGC above 100 for this process's small
// heap, then
// that Stop puts back 100.
func TestTunerFollowsCollections(t *testing.T) {
	if _, set := os.LookupEnv("GOGC"); set {
		t.Skip("GOGC is set in the environment: the tuner stays off")
	}
	tu := Start(DefaultFloor)
	if tu == nil {
		t.Fatal("Start returned nil without GOGC in the environment")
	}
	defer tu.Stop()
	// Start tuned once; undo that, so that only a tuning after a
	// collection (the finalizer's) can raise GOGC again.
	tu.mu.Lock()
	tu.last = -1
	debug.SetGCPercent(minPercent)
	tu.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for gogc() <= minPercent {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC still %d after collections", gogc())
		}
		runtime.GC() // the armed sentinel's finalizer runs after it
		time.Sleep(time.Millisecond)
	}
	tu.Stop()
	if got := gogc(); got != minPercent {
		t.Errorf("after Stop GOGC = %d, want %d", got, minPercent)
	}
}

// gogc reads the GOGC in force.
func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestEnvironmentWins checks that a GOGC in the environment keeps the tuner
// off.
func TestEnvironmentWins(t *testing.T) {
	t.Setenv("GOGC", "150")
	if tu := Start(DefaultFloor); tu != nil {
		tu.Stop()
		t.Fatal("Start tuned GOGC although the environment sets it")
	}
}
