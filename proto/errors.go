package proto

import (
	"errors"
	"fmt"
)

// ErrProtocol is wrapped by every error about a malformed or out-of-order
// frame, so that callers can tell a misbehaving peer (reset the stream with
// [CodeProtocol]) from an I/O failure.
var ErrProtocol = errors.New("protocol error")

// ErrFrameOrder is returned by a [Writer] asked to write a frame its state does
// not allow, such as DATA before HEAD or anything after END. It is a bug in the
// caller, not in the peer.
var ErrFrameOrder = errors.New("proto: frame out of order")

// protocolErrorf returns an error wrapping ErrProtocol.
func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// ResetCode says why a direction of a stream was reset. Codes travel in RESET
// frames and, on QUIC, as stream error codes.
type ResetCode uint32

// Reset codes.
const (
	// CodeCancel: the sender's side went away (client disconnected, or the
	// edge is no longer reading). The receiver stops work at once.
	CodeCancel ResetCode = 1
	// CodeRefused: the relay refused the stream before it started the
	// upstream call (draining, over capacity). Nothing was sent upstream, so
	// the edge may retry the request elsewhere.
	CodeRefused ResetCode = 2
	// CodeUpstreamError: the upstream call failed after it was started; the
	// request must not be retried by airlock.
	CodeUpstreamError ResetCode = 3
	// CodeUpstreamTimeout: the upstream did not answer in time.
	CodeUpstreamTimeout ResetCode = 4
	// CodeProtocol: the peer sent a malformed or out-of-order frame.
	CodeProtocol ResetCode = 5
	// CodeInternal: the sender hit a bug or resource failure.
	CodeInternal ResetCode = 6
)

// String names the code.
func (c ResetCode) String() string {
	switch c {
	case CodeCancel:
		return "cancel"
	case CodeRefused:
		return "refused"
	case CodeUpstreamError:
		return "upstream_error"
	case CodeUpstreamTimeout:
		return "upstream_timeout"
	case CodeProtocol:
		return "protocol_error"
	case CodeInternal:
		return "internal_error"
	}
	return fmt.Sprintf("code_%d", uint32(c))
}

// ResetError is a RESET frame: the peer ended its direction of the stream
// abnormally. It is returned by [Reader] methods when a RESET arrives.
type ResetError struct {
	Code    ResetCode
	Message string
}

// Error implements error.
func (e *ResetError) Error() string {
	if e.Message == "" {
		return "stream reset: " + e.Code.String()
	}
	return "stream reset: " + e.Code.String() + ": " + e.Message
}

// Is reports whether target is a *ResetError with the same code, so that
// errors.Is(err, &ResetError{Code: CodeRefused}) matches any refusal.
func (e *ResetError) Is(target error) bool {
	t, ok := target.(*ResetError)
	return ok && t.Code == e.Code
}

// SourceError wraps an error from the io.Reader a [Writer.ReadFrom] copied
// from, so that callers can tell "the body I was sending failed" from "the
// stream I was writing to failed".
type SourceError struct{ Err error }

// Error implements error.
func (e *SourceError) Error() string { return "reading body: " + e.Err.Error() }

// Unwrap returns the source's error.
func (e *SourceError) Unwrap() error { return e.Err }

// SinkError wraps an error from the io.Writer a [Reader.WriteTo] copied to,
// from its Write or its Flush, so that callers can tell "the destination of
// the body failed" from "the stream I was reading failed".
type SinkError struct{ Err error }

// Error implements error.
func (e *SinkError) Error() string { return "writing body: " + e.Err.Error() }

// Unwrap returns the destination's error.
func (e *SinkError) Unwrap() error { return e.Err }
