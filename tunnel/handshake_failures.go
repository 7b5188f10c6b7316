package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/airlock-proxy/airlock/proto"
)

// The relay logs a failed session attempt at WARN, at most
// handshakeLogBurst lines at once and then one line per
// handshakeLogInterval; the next line logged (or a last line when the
// server closes) says how many were left out, by reason. Every failure is
// counted in ServerStats.Failures whether logged or not. A scan of 1,000
// attempts a second thus writes 5 lines and then 6 a minute, while an edge
// with a wrong key, which redials with backoff, is logged on each of its
// first attempts.
const (
	handshakeLogBurst    = 5
	handshakeLogInterval = 10 * time.Second
)

// serverFailureReasons are the reasons, as indexes of FailureReasons, that
// a relay counts failed session attempts by (see ServerStats.Failures): the
// names are the edge's, for the same failure seen from the other side. A
// relay never sees proxy_auth.
var serverFailureReasons = []int{failTimeout, failNetwork, failPinMismatch, failUnauthorized, failProtocol}

// TLS alerts by which a peer refuses our certificate: an edge sends
// bad_certificate when the relay's key is not the one it pins; a TLS client
// that checks certificates against CAs sends one of the others.
var certRefusalAlerts = []tls.AlertError{
	alertBadCertificate, alertUnsupportedCertificate, alertCertificateRevoked,
	alertCertificateExpired, alertCertificateUnknown, alertUnknownCA,
}

// serverFailureReason classifies why an edge's session attempt failed on
// the relay, as one of serverFailureReasons. A TLS failure that is neither
// a key refusal (either way), a timeout nor a broken connection is a
// protocol error: plain text or garbage on the TCP port, another TLS
// version or ALPN, a malformed HELLO.
//
// Server.handshakeFailed runs it for every failure of a flood: QUIC errors
// are told apart by their codes, without errors.Is, since the Unwrap of
// *quic.TransportError allocates.
func serverFailureReason(err error) int {
	if te, ok := errors.AsType[*quic.TransportError](err); ok {
		return quicFailureReason(te)
	}
	switch {
	case errors.Is(err, ErrUnknownPeer):
		return failUnauthorized
	case peerAlert(err, certRefusalAlerts...):
		return failPinMismatch
	case errors.Is(err, proto.ErrProtocol), errors.Is(err, errVersion):
		return failProtocol
	case isTimeout(err):
		return failTimeout
	case brokenConnection(err):
		return failNetwork
	}
	return failProtocol
}

// quicFailureReason classifies the QUIC error that closed a connection in
// its handshake.
func quicFailureReason(te *quic.TransportError) int {
	if alert, ok := cryptoAlert(te.ErrorCode); ok {
		switch {
		case te.Remote && slices.Contains(certRefusalAlerts, alert):
			return failPinMismatch
		case !te.Remote && alert == alertAccessDenied:
			// Only serverTLSConfig's refusal of an unknown key sends it.
			return failUnauthorized
		}
		return failProtocol
	}
	if te.ErrorCode == quic.NoError || te.ErrorCode == quic.ConnectionRefused {
		return failNetwork
	}
	return failProtocol
}

// cryptoAlert returns the TLS alert of a QUIC CRYPTO_ERROR, 0x100+alert
// (RFC 9001, section 4.8).
func cryptoAlert(code quic.TransportErrorCode) (tls.AlertError, bool) {
	if code < 0x100 || code > 0x1ff {
		return 0, false
	}
	return tls.AlertError(code - 0x100), true
}

// peerAlert reports whether err is a TLS alert the peer sent, one of
// alerts: over QUIC a CRYPTO_ERROR from the peer, over TCP a "remote error"
// read from the TLS connection.
func peerAlert(err error, alerts ...tls.AlertError) bool {
	if te, ok := errors.AsType[*quic.TransportError](err); ok {
		alert, ok := cryptoAlert(te.ErrorCode)
		return ok && te.Remote && slices.Contains(alerts, alert)
	}
	// crypto/tls reports an alert it received as a *net.OpError around an
	// unexported type; its text is the one AlertError has.
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "remote error" && oe.Err != nil {
		for _, a := range alerts {
			if oe.Err.Error() == a.Error() {
				return true
			}
		}
	}
	return false
}

// isTimeout reports whether err is a deadline: the relay's handshake
// timeout, on either transport.
func isTimeout(err error) bool {
	if errors.Is(err, errHandshakeTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// brokenConnection reports whether err says that the connection ended or
// broke under the handshake, rather than that something was wrong in it.
func brokenConnection(err error) bool {
	if _, ok := errors.AsType[*quic.ApplicationError](err); ok {
		return true // the edge closed the connection
	}
	if _, ok := errors.AsType[*quic.StatelessResetError](err); ok {
		return true
	}
	for _, target := range []error{io.EOF, io.ErrUnexpectedEOF, net.ErrClosed,
		syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// handshakeFailed records an edge's failed session attempt over transport
// from remote: it counts it by reason and logs it, unless the throttle
// suppresses the line. The suppressed path does not allocate.
func (s *Server) handshakeFailed(transport string, remote net.Addr, err error) {
	reason := serverFailureReason(err)
	s.counts.failures[reason].Add(1)
	var suppressed [numFailureReasons]uint64
	ok, total := s.handshakeLog.allow(reason, suppressed[:])
	if !ok {
		return
	}
	msg := "tunnel: edge handshake failed"
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs, slog.String("reason", FailureReasons[reason]))
	switch reason {
	case failUnauthorized:
		if pe, ok := errors.AsType[*peerError](err); ok && pe.key != "" {
			msg = "tunnel: refused edge key " + pe.key
			attrs = append(attrs, slog.String("key", pe.key))
		}
	case failPinMismatch:
		msg = "tunnel: an edge refused this relay's key: it pins another one"
		attrs = append(attrs, slog.String("relay_key", s.opts.Identity.Fingerprint()))
	}
	var addr string
	if remote != nil {
		addr = remote.String()
	}
	attrs = append(attrs, slog.String("remote", addr), slog.String("transport", transport),
		slog.String("err", err.Error()))
	if total > 0 {
		attrs = append(attrs, suppressedAttrs(total, &suppressed)...)
	}
	s.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
}

// logSuppressedHandshakes logs how many handshake failure lines the
// throttle left out since its last line, if any: Close calls it last, so
// that a burst followed by silence is still reported.
func (s *Server) logSuppressedHandshakes() {
	var suppressed [numFailureReasons]uint64
	if total := s.handshakeLog.flush(suppressed[:]); total > 0 {
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "tunnel: edge handshake failures not logged",
			suppressedAttrs(total, &suppressed)...)
	}
}

// suppressedAttrs are the attributes that report suppressed lines: their
// number, and the number of each reason that has any.
func suppressedAttrs(total uint64, byReason *[numFailureReasons]uint64) []slog.Attr {
	var group []any
	for _, i := range serverFailureReasons {
		if n := byReason[i]; n > 0 {
			group = append(group, slog.Uint64(FailureReasons[i], n))
		}
	}
	return []slog.Attr{slog.Uint64("suppressed", total), slog.Group("suppressed_by_reason", group...)}
}

// A QUIC handshake that fails never reaches the listener's Accept, so the
// relay follows each QUIC connection from its first packet: the transport's
// ConnContext hook registers a quicAttempt, Serve marks it accepted when
// Accept returns the connection, and one that ends unaccepted is a failed
// attempt, counted and logged with the cause of its end. This is the only
// way the relay learns of an edge that refused the relay's key: that
// handshake fails on the edge, which only tells the relay with its
// CONNECTION_CLOSE.
type quicAttempt struct {
	remote net.Addr
	state  atomic.Int32 // attemptPending, then attemptAccepted or attemptFailed
}

const (
	attemptPending int32 = iota
	attemptAccepted
	attemptFailed
)

// quicAttemptKey is the context key of a connection's *quicAttempt.
type quicAttemptKey struct{}

// quicConnContext is the quic.Transport's ConnContext hook: it registers
// the attempt and has quicAttemptEnded called when the connection ends,
// which quic-go signals by cancelling ctx, whose cause says why. The
// callbacks are counted in s.attempts, for Close to wait for. Once the
// server closes or drains, it refuses new connections.
func (s *Server) quicConnContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.attempts.Add(1)
	s.mu.Unlock()
	a := &quicAttempt{remote: info.RemoteAddr}
	context.AfterFunc(ctx, func() {
		defer s.attempts.Done()
		s.quicAttemptEnded(a, context.Cause(ctx))
	})
	return context.WithValue(ctx, quicAttemptKey{}, a), nil
}

// quicAttemptEnded records the failure of an attempt that ended before
// Accept returned it, unless the relay is stopping (its listener then
// refuses the handshakes in flight itself) or refused the edge's key (which
// serverTLSConfig's check recorded).
func (s *Server) quicAttemptEnded(a *quicAttempt, cause error) {
	if !a.state.CompareAndSwap(attemptPending, attemptFailed) {
		return
	}
	s.mu.Lock()
	stopping := s.closed || s.draining
	s.mu.Unlock()
	if stopping || serverFailureReason(cause) == failUnauthorized {
		return // an unknown key was recorded where it was checked
	}
	s.handshakeFailed(TransportQUIC, a.remote, cause)
}

// quicAccepted marks the attempt of a connection that Accept returned. It
// reports false if the connection already ended and was counted as a failed
// attempt.
func quicAccepted(qc *quic.Conn) bool {
	a, ok := qc.Context().Value(quicAttemptKey{}).(*quicAttempt)
	return !ok || a.state.CompareAndSwap(attemptPending, attemptAccepted)
}
