package tunnel

import (
	"slices"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when the test says so.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestLogThrottle(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	th := newLogThrottle(3, time.Second, 3)
	th.now = clock.now
	for _, step := range []struct {
		name      string
		advance   time.Duration
		key       int
		want      bool
		wantTotal uint64
		wantByKey []uint64 // when want
	}{
		{name: "burst 1", key: 0, want: true, wantByKey: []uint64{0, 0, 0}},
		{name: "burst 2", key: 1, want: true, wantByKey: []uint64{0, 0, 0}},
		{name: "burst 3", key: 1, want: true, wantByKey: []uint64{0, 0, 0}},
		{name: "bucket empty", key: 0, want: false},
		{name: "still empty", key: 2, want: false},
		{name: "just before the next token", advance: 999 * time.Millisecond, key: 2, want: false},
		{name: "next token reports the suppressed lines", advance: time.Millisecond, key: 1, want: true,
			wantTotal: 3, wantByKey: []uint64{1, 0, 2}},
		{name: "counts start again", key: 1, want: false},
		{name: "a long pause refills the burst only", advance: time.Hour, key: 0, want: true,
			wantTotal: 1, wantByKey: []uint64{0, 1, 0}},
		{name: "refilled 2", key: 0, want: true, wantByKey: []uint64{0, 0, 0}},
		{name: "refilled 3", key: 0, want: true, wantByKey: []uint64{0, 0, 0}},
		{name: "empty after the burst", key: 2, want: false},
	} {
		clock.advance(step.advance)
		got := make([]uint64, 3)
		ok, total := th.allow(step.key, got)
		if ok != step.want {
			t.Fatalf("%s: allow = %v, want %v", step.name, ok, step.want)
		}
		if !ok {
			continue
		}
		if total != step.wantTotal || !slices.Equal(got, step.wantByKey) {
			t.Errorf("%s: suppressed %d %v, want %d %v", step.name, total, got, step.wantTotal, step.wantByKey)
		}
	}
	got := make([]uint64, 3)
	if total := th.flush(got); total != 1 || !slices.Equal(got, []uint64{0, 0, 1}) {
		t.Errorf("flush: %d %v, want 1 [0 0 1]", total, got)
	}
	if total := th.flush(got); total != 0 || !slices.Equal(got, []uint64{0, 0, 0}) {
		t.Errorf("second flush: %d %v, want 0 [0 0 0]", total, got)
	}
}

// TestLogThrottleSteadyRate: under a steady flood the throttle allows one
// line per interval after the burst, whatever the flood's rate.
func TestLogThrottleSteadyRate(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	th := newLogThrottle(5, 10*time.Second, 1)
	th.now = clock.now
	var allowed, suppressed uint64
	buf := make([]uint64, 1)
	for range 60_000 { // 1,000 events a second for a minute
		if ok, n := th.allow(0, buf); ok {
			allowed++
			suppressed += n
		}
		clock.advance(time.Millisecond)
	}
	suppressed += th.flush(buf)
	if want := uint64(5 + 5); allowed != want { // the burst, then one per 10s after the first
		t.Errorf("allowed %d lines, want %d", allowed, want)
	}
	if allowed+suppressed != 60_000 {
		t.Errorf("allowed %d + suppressed %d = %d, want 60000", allowed, suppressed, allowed+suppressed)
	}
}

func TestLogThrottleSuppressedDoesNotAllocate(t *testing.T) {
	th := newLogThrottle(1, time.Hour, numFailureReasons)
	var buf [numFailureReasons]uint64
	th.allow(0, buf[:])
	allocs := testing.AllocsPerRun(1000, func() {
		var suppressed [numFailureReasons]uint64
		if ok, _ := th.allow(failTimeout, suppressed[:]); ok {
			t.Fatal("allowed a line with an empty bucket")
		}
	})
	if allocs != 0 {
		t.Errorf("a suppressed line costs %v allocations, want 0", allocs)
	}
}
