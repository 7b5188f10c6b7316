// Retry and replay: a request that a relay refused before it reached the
// upstream is sent again on another session, its body replayed from a
// recording kept until the response head arrives.

package edge

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/airlock-proxy/airlock/proto"
)

// maxRefusedRetries is how many times a request that a relay refused before
// it reached the upstream is sent again, each time on another session.
const maxRefusedRetries = 2

// maxReplay is the most of a request body kept for sending it again after a
// refusal; a request whose body grew past it before the refusal came is
// answered with the refusal (503) instead. Chat, embeddings and most other
// API bodies are far smaller; the recording is dropped as soon as the
// response head arrives.
const maxReplay = 1 << 20

// exchangeHeads opens a stream, sends the request and reads the response
// head. A refusal by the relay (RESET refused: it did not call the
// upstream) is retried on another session, up to maxRefusedRetries times,
// with the body replayed; once a relay has accepted the request, it is
// never sent again. On failure it answers the client and returns false.
func (ex *exchange) exchangeHeads(head *proto.RequestHead) (*proto.ResponseHead, bool) {
	var avoid []string
	for {
		if !ex.open(avoid) {
			return nil, false
		}
		err := ex.sendRequest(head)
		var resp *proto.ResponseHead
		if err == nil {
			resp, err = ex.pr.ReadResponseHead()
		}
		if err == nil {
			ex.replay.release()
			return resp, true
		}
		if ex.retries >= maxRefusedRetries || !refused(err) || !ex.rewind() {
			ex.failBeforeHead(err)
			return nil, false
		}
		ex.retries++
		ex.refusal = err
		avoid = append(avoid, ex.peer.SessionID)
	}
}

// refused reports whether err is the relay's refusal of a request it did not
// send upstream.
func refused(err error) bool {
	var rst *proto.ResetError
	return errors.As(err, &rst) && rst.Code == proto.CodeRefused
}

// rewind ends the refused stream and readies the request body to be sent
// again from its start. It reports false when that cannot be done: the
// client left, its body failed, or more of it than maxReplay was read.
func (ex *exchange) rewind() bool {
	if b := ex.body; b != nil {
		// The sender returns once its next write fails, which the abort
		// makes happen; a read of the client's body in progress
		// completes first, unless the client leaves meanwhile: then
		// release cuts it.
		ex.s.Abort(proto.CodeCancel)
		select {
		case <-b.done:
		case <-ex.r.Context().Done():
		}
	}
	ex.release(proto.CodeCancel)
	if ex.r.Context().Err() != nil {
		return false
	}
	if b := ex.body; b != nil {
		var se *proto.SourceError
		if errors.As(b.err, &se) {
			return false
		}
		ex.body = nil
	}
	if ex.replay == nil {
		return true // no body
	}
	next, ok := ex.replay.rewind()
	ex.replay = next
	return ok
}

// replayBody reads the client's request body and records what it read, up to
// maxReplay bytes, so that a request refused before it reached the upstream
// can be sent again.
type replayBody struct {
	src io.Reader

	mu   sync.Mutex
	buf  []byte
	over bool // more than maxReplay bytes were read, or released
}

func (r *replayBody) Read(p []byte) (int, error) {
	n, err := r.src.Read(p)
	if n > 0 {
		r.mu.Lock()
		if !r.over {
			if len(r.buf)+n > maxReplay {
				r.over, r.buf = true, nil
			} else {
				r.buf = append(r.buf, p[:n]...)
			}
		}
		r.mu.Unlock()
	}
	return n, err
}

// rewind returns a body that yields the recorded bytes and then the rest of
// the client's body, recording again; false if the recording is incomplete.
// The reader of r must have stopped.
func (r *replayBody) rewind() (*replayBody, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.over {
		return nil, false
	}
	return &replayBody{src: io.MultiReader(bytes.NewReader(r.buf), r.src)}, true
}

// release drops the recording once a relay has accepted the request. r may
// be nil.
func (r *replayBody) release() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.over, r.buf = true, nil
	r.mu.Unlock()
}
