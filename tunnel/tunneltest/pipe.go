// Package tunneltest provides an in-memory tunnel.Stream pair, so that the
// edge and relay can each be tested against a peer written in the test,
// without a network.
package tunneltest

import (
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
// Read and Write fail with a *proto.ResetError carrying the code). Writes
// block until the peer reads them: there is no buffering.
func Pipe() (tunnel.Stream, tunnel.Stream) {
	ar, bw := io.Pipe()
	br, aw := io.Pipe()
	id := nextID.Add(1)
	return &end{r: ar, w: aw, id: id}, &end{r: br, w: bw, id: id}
}

type end struct {
	r       *io.PipeReader
	w       *io.PipeWriter
	id      int64
	aborted atomic.Bool
	once    sync.Once
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

func (e *end) CloseWrite() error { return e.w.Close() }

func (e *end) Abort(code proto.ResetCode) {
	e.once.Do(func() {
		e.aborted.Store(true)
		rst := &proto.ResetError{Code: code}
		e.w.CloseWithError(rst)
		e.r.CloseWithError(rst)
	})
}

func (e *end) Close() error {
	e.w.Close()
	e.r.Close()
	return nil
}

func (e *end) ID() int64 { return e.id }
