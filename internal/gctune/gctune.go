// Package gctune keeps Go's garbage collector from running for every few
// MiB that a process with a small live heap allocates.
//
// The collector starts a cycle when the heap has grown by GOGC per cent of
// the live heap since the last one, and by at least 4 MiB. A proxy's live
// heap is small (a few MiB when its streams are short) while it allocates
// some 10 KiB per request, so at GOGC=100 the edge and the relay each ran a
// collection every few hundred requests, and each cycle's fixed work (waking
// a mark worker on every processor, the pauses, the sweep) cost more than
// the marking: at 32 clients, GOGC=400 took 15% off their CPU per request
// (scripts/bench, issue 9). A fixed higher GOGC would also multiply the heap
// of a process that holds thousands of streams. Instead, after every
// collection the tuner sets GOGC so that the heap may grow by at least a
// floor (DefaultFloor) before the next one, and by the usual 100% of the
// live heap once that is more: a process never holds more than the floor in
// garbage beyond what GOGC=100 would let it hold.
//
// An operator's GOGC (in the environment) is left alone.
package gctune

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// DefaultFloor is the least the heap may grow between two collections.
const DefaultFloor = 32 << 20

// Bounds of the GOGC the tuner sets: never below Go's default, and a cap
// that only a floor far above the default could reach.
const (
	minPercent = 100
	maxPercent = 5000
)

// The metrics the collector's goal is made of: the heap the last
// collection found reachable, and the stacks and globals it scanned, which
// GOGC counts too.
var goalMetrics = [...]string{"/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes"}

// heapMinimum is the runtime's least heap goal at GOGC=100; it scales with
// GOGC.
const heapMinimum = 4 << 20

// Tuner sets GOGC after each collection; Stop ends it.
type Tuner struct {
	floor   uint64
	stopped atomic.Bool

	mu      sync.Mutex
	samples [len(goalMetrics)]metrics.Sample
	last    int // the GOGC last set
}

// Start makes the collector let the heap grow by at least floor bytes
// between collections, from the next one on. It returns nil, and does
// nothing, when the environment sets GOGC.
func Start(floor uint64) *Tuner {
	if _, set := os.LookupEnv("GOGC"); set {
		return nil
	}
	t := &Tuner{floor: floor, last: -1}
	for i, name := range goalMetrics {
		t.samples[i].Name = name
	}
	t.tune()
	t.arm()
	return t
}

// Stop stops the tuner and puts GOGC back to 100. A nil Tuner does nothing.
func (t *Tuner) Stop() {
	if t == nil || t.stopped.Swap(true) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	debug.SetGCPercent(minPercent)
}

// sentinel is an object nothing refers to: its finalizer runs after the
// collection that found it unreachable, which is how the tuner hears of
// each cycle.
type sentinel struct{ t *Tuner }

// arm makes the next collection call tune.
func (t *Tuner) arm() {
	runtime.SetFinalizer(&sentinel{t: t}, func(s *sentinel) {
		if s.t.stopped.Load() {
			return
		}
		s.t.tune()
		s.t.arm()
	})
}

// tune sets GOGC for the live heap the last collection left.
func (t *Tuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped.Load() {
		return
	}
	metrics.Read(t.samples[:])
	var v [len(goalMetrics)]uint64
	for i, sm := range t.samples {
		if sm.Value.Kind() == metrics.KindUint64 {
			v[i] = sm.Value.Uint64()
		}
	}
	p := Percent(v[0], v[1]+v[2], t.floor)
	if p != t.last {
		debug.SetGCPercent(p)
		t.last = p
	}
}

// Percent is the GOGC that lets a heap of live bytes grow by floor bytes
// before the next collection, or by what GOGC=100 lets it grow if that is
// more, within [100, 5000]. roots are the stack and global bytes the
// collector scans, which GOGC's growth counts with the live heap. The heap
// goal is the larger of live + (live+roots)·GOGC/100 and the runtime's
// minimum, 4 MiB·GOGC/100: the smaller of the two GOGCs that make either
// equal live + floor makes the larger equal it.
func Percent(live, roots, floor uint64) int {
	p := (live + floor) * 100 / heapMinimum
	if scanned := live + roots; scanned > 0 {
		p = min(p, floor*100/scanned)
	}
	return int(min(max(p, minPercent), maxPercent))
}
