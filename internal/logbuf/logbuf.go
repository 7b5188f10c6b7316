// Package logbuf batches a process's log output: lines are collected in a
// buffer and written out when it fills or a short interval passes, instead
// of one write system call per line.
//
// The edge writes one access line per request; at tens of thousands of
// requests a second, a write per line cost several percent of the edge's CPU
// (scripts/bench profile). A line is still out within the interval, and
// Close writes whatever is left.
package logbuf

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// DefaultInterval is how long a line may wait in the buffer.
const DefaultInterval = 100 * time.Millisecond

// bufferSize is the buffer; a line that does not fit flushes it at once.
const bufferSize = 64 << 10

// Writer is an io.Writer safe for concurrent use that batches writes to an
// underlying writer. Its flusher goroutine runs until Close.
type Writer struct {
	mu     sync.Mutex
	bw     *bufio.Writer
	closed bool

	stop chan struct{}
	done chan struct{}
}

// New returns a Writer on w that flushes at least every interval (zero or
// negative means DefaultInterval). Call Close to stop it and flush.
func New(w io.Writer, interval time.Duration) *Writer {
	if interval <= 0 {
		interval = DefaultInterval
	}
	lw := &Writer{
		bw:   bufio.NewWriterSize(w, bufferSize),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go lw.flushEvery(interval)
	return lw
}

// Write buffers p; after Close it writes p straight through.
func (lw *Writer) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.closed {
		n, err := lw.bw.Write(p)
		if err == nil {
			err = lw.bw.Flush()
		}
		return n, err
	}
	return lw.bw.Write(p)
}

// Flush writes out what is buffered.
func (lw *Writer) Flush() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.bw.Flush()
}

func (lw *Writer) flushEvery(interval time.Duration) {
	defer close(lw.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-lw.stop:
			return
		case <-t.C:
			lw.Flush()
		}
	}
}

// Close stops the flusher, waits for it and flushes. Later writes go
// straight through. Close is idempotent.
func (lw *Writer) Close() error {
	lw.mu.Lock()
	if lw.closed {
		lw.mu.Unlock()
		return nil
	}
	lw.closed = true
	lw.mu.Unlock()
	close(lw.stop)
	<-lw.done
	return lw.Flush()
}
