package tunnel

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	const (
		lo = 250 * time.Millisecond
		hi = 30 * time.Second
	)
	lowest := func(int64) int64 { return 0 }
	highest := func(n int64) int64 { return n - 1 }
	tests := []struct {
		name     string
		attempt  int
		rnd      func(int64) int64
		min, max time.Duration
	}{
		{"first retry, lowest", 0, lowest, lo, lo},
		{"first retry, highest", 0, highest, 2 * lo, 2 * lo},
		{"third retry, highest", 2, highest, 8 * lo, 8 * lo},
		{"capped, highest", 10, highest, hi, hi},
		{"capped, lowest", 10, lowest, lo, lo},
		{"huge attempt", 1000, highest, hi, hi},
		{"attempt 62", 62, highest, hi, hi},
		{"random", 3, nil, lo, 16 * lo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 100 {
				got := backoff(lo, hi, tt.attempt, tt.rnd)
				if got < tt.min || got > tt.max {
					t.Fatalf("got %s, want %s to %s", got, tt.min, tt.max)
				}
			}
		})
	}
	if got := backoff(time.Second, time.Millisecond, 3, highest); got != time.Second {
		t.Errorf("hi below lo: got %s, want %s", got, time.Second)
	}
}
