package tunnel

import (
	"math/rand/v2"
	"time"
)

// backoff returns how long to wait before connection attempt number
// attempt+1, after attempt failures in a row (attempt 0: the first retry).
//
// It is exponential with full jitter ("Exponential Backoff And Jitter", AWS
// Architecture Blog, 2015): a uniform pick between lo and a cap that starts at
// 2·lo and doubles with each attempt up to hi. The jitter spreads the
// reconnects of many edges after a relay restart. rnd(n) returns a uniform
// value in [0, n); nil means math/rand/v2.
func backoff(lo, hi time.Duration, attempt int, rnd func(n int64) int64) time.Duration {
	if rnd == nil {
		rnd = rand.Int64N
	}
	if lo <= 0 {
		lo = 1
	}
	if hi < lo {
		hi = lo
	}
	ceil := hi
	// lo << (attempt+1), without overflowing.
	if attempt < 62 {
		if c := lo << (attempt + 1); c>>(attempt+1) == lo && c > 0 && c < hi {
			ceil = c
		}
	}
	return lo + time.Duration(rnd(int64(ceil-lo)+1))
}
