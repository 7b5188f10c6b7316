package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// latencyParams configure the latency scenario.
type latencyParams struct {
	// Path is the small request, e.g. "/models".
	Path string
	// Warmup requests are sent first and not measured.
	Warmup int
	// N requests are measured, one at a time.
	N int
	// Procs are the processes whose CPU time is read around the measured
	// requests.
	Procs []proc
}

// latencyResult is what one latency run measured.
type latencyResult struct {
	// Samples holds each measured request's time from send to the end of
	// the body.
	Samples []time.Duration
	// CPU is the CPU time each watched process used during the measured
	// requests.
	CPU cpuSnapshot
}

// cpuPerRequest returns the named processes' CPU time together per
// measured request, and false when one of them was not measured.
func (r latencyResult) cpuPerRequest(names ...string) (time.Duration, bool) {
	return r.CPU.perRequest(int64(len(r.Samples)), names...)
}

// measureLatency sends p.Warmup then p.N requests one after another over
// one kept-alive connection and times each measured one. The first failure
// ends the scenario.
func measureLatency(ctx context.Context, t target, p latencyParams) (latencyResult, error) {
	c := newClient(1)
	defer closeClient(c)
	for i := range p.Warmup {
		if err := do(ctx, c, t, "GET", p.Path); err != nil {
			return latencyResult{}, fmt.Errorf("warm-up request %d: %w", i+1, err)
		}
	}
	res := latencyResult{Samples: make([]time.Duration, 0, p.N)}
	before := snapshotCPU(p.Procs)
	for i := range p.N {
		start := time.Now()
		if err := do(ctx, c, t, "GET", p.Path); err != nil {
			return res, fmt.Errorf("request %d: %w", i+1, err)
		}
		res.Samples = append(res.Samples, time.Since(start))
	}
	res.CPU = snapshotCPU(p.Procs).since(before)
	return res, nil
}

// throughputParams configure the throughput scenario.
type throughputParams struct {
	// Path is the small request, e.g. "/models".
	Path string
	// Concurrency is the number of workers, each with one request in flight.
	Concurrency int
	// Warmup is how long the workers run before measuring starts.
	Warmup time.Duration
	// Duration is how long new requests are started while measuring.
	Duration time.Duration
	// MaxRequests bounds the measured requests regardless of Duration.
	MaxRequests int64
	// Procs are the processes whose CPU time is read around the measured
	// phase.
	Procs []proc
}

// throughputResult is what one throughput run measured.
type throughputResult struct {
	// Requests is the number of measured requests that succeeded.
	Requests int64
	// Errors is the number of measured requests that failed.
	Errors int64
	// FirstError is the first failure, if any.
	FirstError error
	// Elapsed runs from the start of measuring until the last request
	// started before the deadline has finished.
	Elapsed time.Duration
	// CPU is the CPU time each watched process used while measuring.
	CPU cpuSnapshot
}

// perSecond returns successful requests per second.
func (r throughputResult) perSecond() float64 { return rate(float64(r.Requests), r.Elapsed) }

// cpuPerRequest returns the named processes' CPU time together per
// successful request, and false when one of them was not measured.
func (r throughputResult) cpuPerRequest(names ...string) (time.Duration, bool) {
	return r.CPU.perRequest(r.Requests, names...)
}

// measureThroughput runs p.Concurrency workers that send small requests back
// to back: first for p.Warmup (not counted), then for p.Duration. Requests in
// flight at the deadline finish and count, and Elapsed includes them.
func measureThroughput(ctx context.Context, t target, p throughputParams) (throughputResult, error) {
	c := newClient(p.Concurrency)
	defer closeClient(c)

	// phase 0: warm-up, 1: measuring, 2: stop.
	var phase atomic.Int32
	var started, ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range p.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				ph := phase.Load()
				if ph == 2 {
					return
				}
				if ph == 1 && started.Add(1) > p.MaxRequests {
					return
				}
				err := do(ctx, c, t, "GET", p.Path)
				if ph == 0 {
					continue
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	wait := func(d time.Duration) bool {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
			return true
		case <-done:
			return false
		case <-ctx.Done():
			return false
		}
	}
	wait(p.Warmup)
	before := snapshotCPU(p.Procs)
	start := time.Now()
	phase.Store(1)
	wait(p.Duration)
	phase.Store(2)
	<-done
	res := throughputResult{
		Requests: ok.Load(),
		Errors:   failed.Load(),
		Elapsed:  time.Since(start),
		CPU:      snapshotCPU(p.Procs).since(before),
	}
	if e := firstErr.Load(); e != nil {
		res.FirstError = *e
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if res.Requests == 0 {
		return res, fmt.Errorf("no request succeeded: %v", res.FirstError)
	}
	return res, nil
}
