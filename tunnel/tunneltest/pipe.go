// Package tunneltest provides an in-memory tunnel.Stream pair, so that the
// edge and relay can each be tested against a peer written in the test,
// without a network.
package tunneltest

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/airlock-proxy/airlock/proto"
	"github.com/airlock-proxy/airlock/tunnel"
)

// ErrLocalAbort is returned by a Stream's Read and Write after its own Abort.
var ErrLocalAbort = errors.New("tunneltest: stream aborted locally")

var nextID atomic.Int64

// Pipe returns the two ends of an in-memory stream. Like a QUIC stream, each
// direction ends with CloseWrite (the peer reads io.EOF) or Abort (the peer's
// Read and Write fail with a *proto.ResetError carrying the code, and its
// Context is cancelled). Writes
// block until the peer reads them: there is no buffering.
func Pipe() (tunnel.Stream, tunnel.Stream) {
	ar, bw := io.Pipe()
	br, aw := io.Pipe()
	id := nextID.Add(1)
	a := &end{r: ar, w: aw, id: id}
	b := &end{r: br, w: bw, id: id, peer: a}
	a.peer = b
	a.ctx, a.cancel = context.WithCancel(context.Background())
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return a, b
}

type end struct {
	r       *io.PipeReader
	w       *io.PipeWriter
	id      int64
	peer    *end
	aborted atomic.Bool
	once    sync.Once
	ctx     context.Context
	cancel  context.CancelFunc // of ctx: the send direction ended
}

func (e *end) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && e.aborted.Load() {
		return n, ErrLocalAbort
	}
	return n, err
}

func (e *end) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil && e.aborted.Load() {
		return n, ErrLocalAbort
	}
	return n, err
}

func (e *end) CloseWrite() error {
	e.cancel()
	return e.w.Close()
}

func (e *end) Abort(code proto.ResetCode) {
	e.once.Do(func() {
		e.aborted.Store(true)
		rst := &proto.ResetError{Code: code}
		e.w.CloseWithError(rst)
		e.r.CloseWithError(rst)
		// The contexts end last, so that whoever wakes on them finds
		// the stream already reset, as with QUIC's STOP_SENDING.
		e.cancel()
		e.peer.cancel()
	})
}

func (e *end) Close() error {
	e.cancel()
	e.w.Close()
	e.r.Close()
	return nil
}

func (e *end) ID() int64 { return e.id }

func (e *end) Context() context.Context { return e.ctx }
