// Package tunneltest provides an in-memory tunnel.Stream pair, so that the
// edge and relay can each be tested against a peer written in the test,
// without a network.
package tunneltest

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
)

// ErrLocalAbort is returned by a Stream's Read and Write after its own Abort.
var ErrLocalAbort = errors.New("tunneltest: stream aborted locally")

var nextID atomic.Int64

// Pipe returns the two ends of an in-memory stream. Like a QUIC stream, each
// direction ends with CloseWrite (the peer reads io.EOF) or Abort (the peer's
// Read and Write fail with a *proto.ResetError carrying the code, and its
// Context is cancelled). Writes block until the peer reads them: there is no
// buffering. SetReadDeadline works as on a tunnel stream: a Read waiting
// past the deadline fails with os.ErrDeadlineExceeded.
func Pipe() (tunnel.Stream, tunnel.Stream) {
	ab, ba := newPipe(), newPipe() // a writes ab, b writes ba
	id := nextID.Add(1)
	a := &end{r: ba, w: ab, id: id}
	b := &end{r: ab, w: ba, id: id, peer: a}
	a.peer = b
	a.ctx, a.cancel = context.WithCancel(context.Background())
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return a, b
}

type end struct {
	r       *pipe // the direction this end reads
	w       *pipe // the direction this end writes
	id      int64
	peer    *end
	aborted atomic.Bool
	once    sync.Once
	ctx     context.Context
	cancel  context.CancelFunc // of ctx: the send direction ended
}

func (e *end) Read(p []byte) (int, error) {
	n, err := e.r.read(p)
	if err != nil && e.aborted.Load() {
		return n, ErrLocalAbort
	}
	return n, err
}

func (e *end) Write(p []byte) (int, error) {
	n, err := e.w.write(p)
	if err != nil && e.aborted.Load() {
		return n, ErrLocalAbort
	}
	return n, err
}

func (e *end) CloseWrite() error {
	e.cancel()
	e.w.closeWrite(nil)
	return nil
}

func (e *end) Abort(code proto.ResetCode) {
	e.once.Do(func() {
		e.aborted.Store(true)
		rst := &proto.ResetError{Code: code}
		e.w.closeWrite(rst)
		e.r.closeRead(rst)
		// The contexts end last, so that whoever wakes on them finds
		// the stream already reset, as with QUIC's STOP_SENDING.
		e.cancel()
		e.peer.cancel()
	})
}

func (e *end) Close() error {
	e.cancel()
	e.w.closeWrite(nil)
	e.r.closeRead(nil)
	return nil
}

// SetReadDeadline bounds this end's Reads. After Abort, Reads fail with
// ErrLocalAbort whatever the deadline.
func (e *end) SetReadDeadline(t time.Time) error {
	e.r.deadline.set(t)
	return nil
}

func (e *end) ID() int64 { return e.id }

func (e *end) Context() context.Context { return e.ctx }

// pipe is one direction of a Pipe: io.Pipe's synchronous hand-over, with a
// read deadline.
type pipe struct {
	wrMu sync.Mutex  // one Write at a time
	wrCh chan []byte // a Write's bytes, offered to Read
	rdCh chan int    // how many of them Read took

	once sync.Once     // closes done
	done chan struct{} // closed by the first close of either side

	mu   sync.Mutex
	rerr error // the reading side's close error, the first one
	werr error // the writing side's close error, the first one

	deadline deadline
}

func newPipe() *pipe {
	return &pipe{
		wrCh:     make(chan []byte),
		rdCh:     make(chan int),
		done:     make(chan struct{}),
		deadline: deadline{passed: make(chan struct{})},
	}
}

func (p *pipe) read(b []byte) (int, error) {
	select {
	case <-p.done:
		return 0, p.readCloseError()
	default:
	}
	select {
	case <-p.deadline.wait():
		return 0, os.ErrDeadlineExceeded
	default:
	}
	select {
	case bw := <-p.wrCh:
		n := copy(b, bw)
		p.rdCh <- n
		return n, nil
	case <-p.done:
		return 0, p.readCloseError()
	case <-p.deadline.wait():
		return 0, os.ErrDeadlineExceeded
	}
}

func (p *pipe) write(b []byte) (n int, err error) {
	select {
	case <-p.done:
		return 0, p.writeCloseError()
	default:
	}
	p.wrMu.Lock()
	defer p.wrMu.Unlock()
	for once := true; once || len(b) > 0; once = false {
		select {
		case p.wrCh <- b:
			nw := <-p.rdCh
			b = b[nw:]
			n += nw
		case <-p.done:
			return n, p.writeCloseError()
		}
	}
	return n, nil
}

// closeWrite ends the direction from the writing side: Reads return err,
// io.EOF when nil, and Writes io.ErrClosedPipe.
func (p *pipe) closeWrite(err error) {
	if err == nil {
		err = io.EOF
	}
	p.close(&p.werr, err)
}

// closeRead ends the direction from the reading side: Writes return err,
// io.ErrClosedPipe when nil, and Reads io.ErrClosedPipe.
func (p *pipe) closeRead(err error) {
	if err == nil {
		err = io.ErrClosedPipe
	}
	p.close(&p.rerr, err)
}

// close records err as one side's close error, unless it has one, and ends
// the direction.
func (p *pipe) close(side *error, err error) {
	p.mu.Lock()
	if *side == nil {
		*side = err
	}
	p.mu.Unlock()
	p.once.Do(func() { close(p.done) })
}

func (p *pipe) readCloseError() error  { return p.closeError(&p.rerr, &p.werr) }
func (p *pipe) writeCloseError() error { return p.closeError(&p.werr, &p.rerr) }

// closeError is what one side's calls return once the direction has ended:
// the other side's close error, unless this side closed it too.
func (p *pipe) closeError(own, other *error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if *own == nil && *other != nil {
		return *other
	}
	return io.ErrClosedPipe
}

// deadline is a read deadline: passed is closed once it has passed.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	passed chan struct{}
}

// set moves the deadline to t; the zero time removes it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.passed // the timer fired: wait until it has closed passed
	}
	d.timer = nil
	closed := isClosed(d.passed)
	if t.IsZero() {
		if closed {
			d.passed = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.passed = make(chan struct{})
		}
		passed := d.passed
		d.timer = time.AfterFunc(dur, func() { close(passed) })
		return
	}
	if !closed {
		close(d.passed)
	}
}

// wait returns a channel closed once the deadline has passed.
func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passed
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
