package tunnel

import (
	"sync"
	"time"
)

// logThrottle bounds how many lines a flood of one kind of event writes to
// the log: a token bucket of burst lines, one more line allowed every
// interval, checked on each event. A suppressed line only bumps a counter,
// by key (a small index such as a failure reason); the next allowed line
// takes those counts, so that it can say how many lines were left out, and
// whoever owns the throttle flushes the rest when it stops (issue 8: 1,000
// failed TLS handshakes wrote 938 WARN lines).
//
// It runs no goroutine and no timer: a burst followed by silence is reported
// by the next allowed line or by flush. golang.org/x/time/rate would replace
// the few lines of the bucket but not the counts of suppressed lines, and
// its float tokens and reservations are more than "may I log now" needs.
//
// A logThrottle is safe for concurrent use. allow does not allocate.
type logThrottle struct {
	burst    int
	interval time.Duration
	now      func() time.Time // time.Now; tests inject a clock

	mu         sync.Mutex
	tokens     int       // lines that may be logged now
	last       time.Time // when the tokens were last topped up
	suppressed []uint64  // lines suppressed since the last one allowed, by key
}

// newLogThrottle returns a throttle that allows burst lines at once, then
// one line per interval, for events of keys 0 to keys-1. burst and interval
// must be positive.
func newLogThrottle(burst int, interval time.Duration, keys int) *logThrottle {
	return &logThrottle{
		burst:      burst,
		interval:   interval,
		now:        time.Now,
		tokens:     burst,
		suppressed: make([]uint64, keys),
	}
}

// allow reports whether a line about an event of key may be logged now. If
// it may, it moves the counts of the lines suppressed since the last allowed
// one into suppressed (indexed by key, at least as long as the number of
// keys) and returns their sum as well; if not, it counts this line as
// suppressed.
func (t *logThrottle) allow(key int, suppressed []uint64) (ok bool, total uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if t.tokens < t.burst {
		if n := now.Sub(t.last) / t.interval; n > 0 {
			t.tokens = int(min(int64(t.burst), int64(t.tokens)+int64(n)))
			t.last = t.last.Add(n * t.interval)
		}
	}
	if t.tokens == 0 {
		t.suppressed[key]++
		return false, 0
	}
	if t.tokens == t.burst {
		// A full bucket gains nothing while it waits: the next token is
		// due one interval after this line.
		t.last = now
	}
	t.tokens--
	return true, t.takeLocked(suppressed)
}

// flush moves the counts of the lines suppressed since the last allowed one
// into suppressed, as allow does, and returns their sum: the owner logs a
// last summary when it stops.
func (t *logThrottle) flush(suppressed []uint64) (total uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.takeLocked(suppressed)
}

func (t *logThrottle) takeLocked(dst []uint64) (total uint64) {
	for i, n := range t.suppressed {
		dst[i] = n
		total += n
	}
	clear(t.suppressed)
	return total
}
