package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// stampField is the JSON member the test upstream (-stamp-events) adds to
// every streamed event: its wall-clock send time in Unix nanoseconds.
const stampField = `"airlock_sent_unix_ns"`

// sseParams configure the SSE scenario.
type sseParams struct {
	// Events is the number of stamped events per stream.
	Events int
	// Interval is the upstream's pause between events.
	Interval time.Duration
	// Streams is the number of measured streams, read one after another
	// after one short warm-up stream.
	Streams int
}

// sseResult is what the SSE scenario measured.
type sseResult struct {
	// Delays holds, for each stamped event, its arrival time (when the Read
	// that completed it returned) minus its send time.
	Delays []time.Duration
	// Events is the number of stamped events received.
	Events int
	// Reads is the number of body Reads that returned data.
	Reads int
	// MergedReads is the number of Reads that completed more than one
	// stamped event: events the path held back and delivered together.
	MergedReads int
}

// maxSSEBytes bounds one stream's body so a misbehaving server cannot keep
// the scenario reading forever.
const maxSSEBytes = 64 << 20

// measureSSE reads one warm-up stream, then p.Streams measured streams of
// /airlock-test/sse, recording each event's delivery delay.
func measureSSE(ctx context.Context, t target, p sseParams) (sseResult, error) {
	c := newClient(1)
	defer closeClient(c)
	var warm sseResult
	if err := readSSE(ctx, c, t, min(p.Events, 10), p.Interval, &warm); err != nil {
		return sseResult{}, fmt.Errorf("warm-up stream: %w", err)
	}
	var res sseResult
	for i := range p.Streams {
		if err := readSSE(ctx, c, t, p.Events, p.Interval, &res); err != nil {
			return res, fmt.Errorf("stream %d: %w", i+1, err)
		}
	}
	return res, nil
}

// readSSE reads one stamped SSE stream of events events with plain Read
// calls, splits it into events itself (a bufio.Scanner would hide how the
// bytes arrived), and adds what it saw to res.
func readSSE(ctx context.Context, c *http.Client, t target, events int, interval time.Duration, res *sseResult) error {
	q := url.Values{"events": {strconv.Itoa(events)}, "interval": {interval.String()}}
	req, err := t.request(ctx, "GET", "/airlock-test/sse?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	if err := checkStatus(resp); err != nil {
		return err
	}
	defer resp.Body.Close()

	buf := make([]byte, 64<<10)
	filled, total, stamped := 0, 0, 0
	for {
		n, err := resp.Body.Read(buf[filled:])
		now := time.Now().UnixNano()
		if n > 0 {
			res.Reads++
			filled += n
			total += n
			off, inRead := 0, 0
			for {
				ev, adv := nextEvent(buf[off:filled])
				if adv == 0 {
					break
				}
				off += adv
				if sent, ok := parseStamp(ev); ok {
					inRead++
					res.Delays = append(res.Delays, time.Duration(now-sent))
				}
			}
			filled = copy(buf, buf[off:filled])
			stamped += inRead
			res.Events += inRead
			if inRead > 1 {
				res.MergedReads++
			}
			if filled == len(buf) {
				return fmt.Errorf("an event is larger than %d bytes", len(buf))
			}
			if total > maxSSEBytes {
				return fmt.Errorf("stream longer than %d bytes", maxSSEBytes)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the stream after %d events: %w", stamped, err)
		}
	}
	switch {
	case stamped == 0:
		return fmt.Errorf("no event carried %s (is the upstream run with -stamp-events?)", stampField)
	case stamped != events:
		return fmt.Errorf("got %d stamped events, want %d", stamped, events)
	}
	return nil
}

// nextEvent returns the first complete SSE event in b (without its
// terminating blank line) and how many bytes it and its terminator take. It
// returns adv == 0 when b holds no complete event. Events end at a blank
// line: "\n\n", "\r\n\r\n" or "\r\r" (the WHATWG grammar allows each).
func nextEvent(b []byte) (event []byte, adv int) {
	end, sep := -1, 0
	for _, s := range []string{"\n\n", "\r\n\r\n", "\r\r"} {
		if i := bytes.Index(b, []byte(s)); i >= 0 && (end < 0 || i < end) {
			end, sep = i, len(s)
		}
	}
	if end < 0 {
		return nil, 0
	}
	return b[:end], end + sep
}

// parseStamp returns the value of "airlock_sent_unix_ns" in an event's
// JSON data, without decoding the whole JSON.
func parseStamp(event []byte) (int64, bool) {
	i := bytes.Index(event, []byte(stampField))
	if i < 0 {
		return 0, false
	}
	rest := bytes.TrimLeft(event[i+len(stampField):], " \t")
	rest, ok := bytes.CutPrefix(rest, []byte(":"))
	if !ok {
		return 0, false
	}
	rest = bytes.TrimLeft(rest, " \t")
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	v, err := strconv.ParseInt(string(rest[:n]), 10, 64)
	if err != nil {
		return 0, false
	}
	return v, true
}
