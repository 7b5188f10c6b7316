package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// holdParams configure the open-streams memory scenario.
type holdParams struct {
	// Streams is the number of concurrent /airlock-test/hold requests.
	Streams int
	// Parallel bounds how many requests wait for their response headers at
	// once, so that thousands of dials do not overflow the listen backlog.
	Parallel int
	// Timeout bounds the wait for every stream's response headers.
	Timeout time.Duration
	// Procs are the processes whose RSS is read (the edge and the relay).
	Procs []proc
}

// holdResult is what the open-streams scenario measured.
type holdResult struct {
	// Open is the number of streams that had response headers when RSS was
	// read.
	Open int
	// OpenTime is how long it took until Open streams had headers.
	OpenTime time.Duration
	// Idle and Held are each process's RSS in bytes before the streams were
	// opened and while they were open.
	Idle, Held map[string]int64
}

// measureHold opens p.Streams concurrent GET /airlock-test/hold requests,
// waits until all have response headers, reads each process's RSS, then
// cancels the requests and waits for them to end.
func measureHold(ctx context.Context, t target, p holdParams) (holdResult, error) {
	res := holdResult{Idle: map[string]int64{}, Held: map[string]int64{}}
	for _, pr := range p.Procs {
		v, err := pr.rss()
		if err != nil {
			return res, err
		}
		res.Idle[pr.Name] = v
	}

	c := newClient(p.Streams)
	defer closeClient(c)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel: every request has ended
	defer cancel()

	headers := make(chan error, p.Streams) // one value per stream, never blocks
	sem := make(chan struct{}, max(p.Parallel, 1))
	start := time.Now()
	for range p.Streams {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				headers <- ctx.Err()
				return
			}
			req, err := t.request(ctx, "GET", "/airlock-test/hold", nil)
			if err != nil {
				<-sem
				headers <- err
				return
			}
			resp, err := c.Do(req)
			<-sem
			if err == nil {
				err = checkStatus(resp)
			}
			headers <- err
			if err != nil {
				return
			}
			// Hold the stream open until cancel, or until the server ends it.
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}

	timer := time.NewTimer(p.Timeout)
	defer timer.Stop()
	var firstErr error
	failed := 0
wait:
	for got := 0; got < p.Streams; got++ {
		select {
		case err := <-headers:
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			res.Open++
		case <-timer.C:
			break wait
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	res.OpenTime = time.Since(start)
	for _, pr := range p.Procs {
		v, err := pr.rss()
		if err != nil {
			return res, err
		}
		res.Held[pr.Name] = v
	}
	switch {
	case failed > 0:
		return res, fmt.Errorf("%d of %d streams failed, first: %w", failed, p.Streams, firstErr)
	case res.Open < p.Streams:
		return res, fmt.Errorf("only %d of %d streams had response headers after %v", res.Open, p.Streams, p.Timeout)
	}
	return res, nil
}
