package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// smallRequest is the request of the latency and throughput scenarios.
type smallRequest struct {
	Method, Path string
	// Body is sent as JSON; nil: none.
	Body []byte
}

func (r smallRequest) String() string { return r.Method + " " + r.Path }

// latencyParams configure the latency scenario.
type latencyParams struct {
	// Request is the small request, e.g. a chat completion.
	Request smallRequest
	// Warmup requests are sent first and not measured.
	Warmup int
	// N requests are measured, one at a time.
	N int
	// Watch is what is read about the processes around the measured
	// requests.
	Watch watch
}

// latencyResult is what one latency run measured.
type latencyResult struct {
	// Samples holds each measured request's time from send to the end of
	// the body.
	Samples []time.Duration
	// Phase is what the watched processes did during the measured
	// requests.
	Phase phase
}

// requests returns the number of measured requests.
func (r latencyResult) requests() int64 { return int64(len(r.Samples)) }

// measureLatency sends p.Warmup then p.N requests one after another over
// one kept-alive connection and times each measured one. The first failure
// ends the scenario.
func measureLatency(ctx context.Context, t target, p latencyParams) (latencyResult, error) {
	c := newClient(1)
	defer closeClient(c)
	m := newMeter(ctx, p.Watch)
	defer m.close()
	for i := range p.Warmup {
		if err := do(ctx, c, t, p.Request); err != nil {
			return latencyResult{}, fmt.Errorf("warm-up request %d: %w", i+1, err)
		}
	}
	res := latencyResult{Samples: make([]time.Duration, 0, p.N)}
	m.begin(ctx)
	for i := range p.N {
		start := time.Now()
		if err := do(ctx, c, t, p.Request); err != nil {
			return res, fmt.Errorf("request %d: %w", i+1, err)
		}
		res.Samples = append(res.Samples, time.Since(start))
	}
	res.Phase = m.end(ctx)
	return res, nil
}

// throughputParams configure the throughput scenario.
type throughputParams struct {
	// Request is the small request, e.g. a chat completion.
	Request smallRequest
	// Concurrency is the number of workers, each with one request in flight.
	Concurrency int
	// Warmup is how long the workers run before measuring starts.
	Warmup time.Duration
	// Duration is how long new requests are started while measuring.
	Duration time.Duration
	// MaxRequests bounds the measured requests regardless of Duration.
	MaxRequests int64
	// Watch is what is read about the processes around the measured
	// phase.
	Watch watch
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
	// Phase is what the watched processes did while measuring.
	Phase phase
}

// perSecond returns successful requests per second.
func (r throughputResult) perSecond() float64 { return rate(float64(r.Requests), r.Elapsed) }

// requests returns the number of successful measured requests.
func (r throughputResult) requests() int64 { return r.Requests }

// measureThroughput runs p.Concurrency workers that send small requests back
// to back: first for p.Warmup (not counted), then for p.Duration. Requests in
// flight at the deadline finish and count, and Elapsed includes them.
func measureThroughput(ctx context.Context, t target, p throughputParams) (throughputResult, error) {
	c := newClient(p.Concurrency)
	defer closeClient(c)
	m := newMeter(ctx, p.Watch)
	defer m.close()

	// stage 0: warm-up, 1: measuring, 2: stop.
	var stage atomic.Int32
	var started, ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range p.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				ph := stage.Load()
				if ph == 2 {
					return
				}
				if ph == 1 && started.Add(1) > p.MaxRequests {
					return
				}
				err := do(ctx, c, t, p.Request)
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
	m.begin(ctx)
	start := time.Now()
	stage.Store(1)
	wait(p.Duration)
	stage.Store(2)
	<-done
	res := throughputResult{
		Requests: ok.Load(),
		Errors:   failed.Load(),
		Elapsed:  time.Since(start),
		Phase:    m.end(ctx),
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
