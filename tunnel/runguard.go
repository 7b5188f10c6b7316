package tunnel

import (
	"context"
	"fmt"
	"sync"
)

// runGuard is the lifecycle a Client and a Pool share: one Run at a time,
// none after Close, and Close ends the Run that is running.
type runGuard struct {
	what string // names the owner in errors

	mu      sync.Mutex
	running bool
	closed  bool
	cancel  context.CancelFunc // ends the running Run's context
	wg      sync.WaitGroup     // the running Run
}

// start begins a Run, with a context that close cancels. It returns
// ErrClosed after close, and an error while another Run is running. The
// caller must call end when its Run returns.
func (g *runGuard) start(ctx context.Context) (context.Context, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return nil, ErrClosed
	case g.running:
		return nil, fmt.Errorf("%s: Run is already running", g.what)
	}
	ctx, g.cancel = context.WithCancel(ctx)
	g.running = true
	g.wg.Add(1)
	return ctx, nil
}

// end ends the Run that start began, and reports whether close was called.
func (g *runGuard) end() (closed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cancel()
	g.running, g.cancel = false, nil
	g.wg.Done()
	return g.closed
}

// close marks the owner closed, ends its Run's context, and reports whether
// this was the first call.
func (g *runGuard) close() (first bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	first = !g.closed
	g.closed = true
	if g.cancel != nil {
		g.cancel()
	}
	return first
}

// wait waits until no Run is running.
func (g *runGuard) wait() { g.wg.Wait() }
