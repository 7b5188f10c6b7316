package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/airlock-proxy/airlock/internal/testkit/testlog"
	"github.com/airlock-proxy/airlock/proto"
)

// handshakeAttempt makes one failed session attempt on the relay.
type handshakeAttempt func(t *testing.T, r *testRelay) error

// tlsAttempt makes a TLS handshake with conf over transport, then waits for
// the relay to end the connection: a handshake that succeeds on our side
// (TLS 1.3 lets the client finish first) may still be refused.
func tlsAttempt(transport string, conf *tls.Config) handshakeAttempt {
	return func(t *testing.T, r *testRelay) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if transport == TransportQUIC {
			c, err := quic.DialAddr(ctx, r.Addr().String(), conf, &quic.Config{})
			if err != nil {
				return nil
			}
			select {
			case <-c.Context().Done():
				return nil
			case <-ctx.Done():
				c.CloseWithError(0, "")
				return errors.New("the relay did not close the connection")
			}
		}
		raw, err := net.Dial("tcp", r.TCPAddr().String())
		if err != nil {
			return err
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Client(raw, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil
		}
		if _, err := tc.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("read after the handshake: %v, want the relay's alert", err)
		}
		return nil
	}
}

// plainTextAttempt sends an HTTP request to the TLS/TCP port.
func plainTextAttempt(t *testing.T, r *testRelay) error {
	raw, err := net.Dial("tcp", r.TCPAddr().String())
	if err != nil {
		return err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(raw, "GET /v1/models HTTP/1.1\r\nHost: relay\r\n\r\n"); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, raw) // until the relay closes
	return err
}

// TestHandshakeFailuresThrottledAndCounted (issue 8): 1,000 failed
// handshakes wrote 938 WARN lines on the relay, and an edge that pins
// another relay key was neither logged nor counted there. Now every failed
// attempt is counted by reason, a handful of lines are logged, and the lines
// plus the suppressed counts they report account for every attempt.
func TestHandshakeFailuresThrottledAndCounted(t *testing.T) {
	const perKind = 200
	forEachTransport(t, func(t *testing.T, transport string) {
		relayID, edgeID, otherID := mustIdentity(t), mustIdentity(t), mustIdentity(t)
		logs := &testlog.Buffer{}
		r := startRelay(t, relayID, "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), echo, func(o *ServerOptions) {
			o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
		})
		garbage := plainTextAttempt
		if transport == TransportQUIC {
			// Garbage datagrams never make a QUIC connection; a client
			// of another protocol does.
			h3 := clientTLSConfig(edgeID, relayID.Fingerprint())
			h3.NextProtos = []string{"h3"}
			garbage = tlsAttempt(transport, h3)
		}
		kinds := []struct {
			name, reason string
			attempt      handshakeAttempt
		}{
			{"garbage", "protocol", garbage},
			{"unknown edge key", "unauthorized", tlsAttempt(transport, clientTLSConfig(otherID, relayID.Fingerprint()))},
			{"edge pins another key", "pin_mismatch", tlsAttempt(transport, clientTLSConfig(edgeID, otherID.Fingerprint()))},
		}

		start := time.Now()
		want := map[string]uint64{"timeout": 0, "network": 0, "protocol": 0, "unauthorized": 0, "pin_mismatch": 0}
		for _, k := range kinds {
			runAttempts(t, r, perKind, k.attempt)
			want[k.reason] += perKind
		}
		// The relay learns of a QUIC failure when the connection ends,
		// just after the edge's side returns.
		for deadline := time.Now().Add(5 * time.Second); !maps.Equal(r.Stats().Failures, want) && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		elapsed := time.Since(start)
		if got := r.Stats().Failures; !maps.Equal(got, want) {
			t.Errorf("Stats().Failures = %v, want %v", got, want)
		}
		r.Close() // logs the lines suppressed since the last one

		var lines, summaries, incomplete int
		accounted := map[string]uint64{}
		for _, l := range logs.Lines(t) {
			msg, _ := l["msg"].(string)
			switch {
			case msg == "tunnel: edge handshake failures not logged":
				summaries++
			case l["level"] == "WARN" && (strings.Contains(msg, "handshake") || strings.Contains(msg, "refused")):
				lines++
				reason, _ := l["reason"].(string)
				accounted[reason]++
				if reason == "" || l["transport"] != transport || l["remote"] == "" {
					incomplete++
				}
			default:
				continue
			}
			byReason, _ := l["suppressed_by_reason"].(map[string]any)
			var sum float64
			for reason, n := range byReason {
				accounted[reason] += uint64(n.(float64))
				sum += n.(float64)
			}
			if n, _ := l["suppressed"].(float64); n != sum {
				t.Errorf("line %v: suppressed = %v, want the sum by reason, %v", l, n, sum)
			}
		}
		if incomplete > 0 {
			t.Errorf("%d of %d lines lack the reason, the transport %s or the remote address", incomplete, lines, transport)
		}
		// The burst, then one line per interval.
		maxLines := handshakeLogBurst + int(elapsed/handshakeLogInterval) + 1
		t.Logf("%d attempts in %v: %d lines, %d summary lines", 3*perKind, elapsed.Round(time.Millisecond), lines, summaries)
		if lines > maxLines {
			t.Errorf("%d lines for %d failed attempts in %v, want at most %d", lines, 3*perKind, elapsed, maxLines)
		}
		// Close reports the lines suppressed after the last one (the
		// accounting below fails if it does not).
		if summaries > 1 {
			t.Errorf("%d summary lines at Close, want at most 1", summaries)
		}
		for _, k := range kinds {
			if accounted[k.reason] != perKind {
				t.Errorf("%s: lines and suppressed counts account for %d attempts, want %d", k.reason, accounted[k.reason], perKind)
			}
		}
	})
}

// runAttempts makes n attempts, a few at a time.
func runAttempts(t *testing.T, r *testRelay, n int, attempt handshakeAttempt) {
	t.Helper()
	const workers = 8
	var wg sync.WaitGroup
	next := make(chan struct{})
	errs := make(chan error, n)
	for range workers {
		wg.Go(func() {
			for range next {
				if err := attempt(t, r); err != nil {
					errs <- err
				}
			}
		})
	}
	for range n {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestHandshakeFailureLines: each reason's line says what to fix, and names
// the key concerned.
func TestHandshakeFailureLines(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		relayID, edgeID, otherID := mustIdentity(t), mustIdentity(t), mustIdentity(t)
		r := startRelay(t, relayID, "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), echo)
		for _, tt := range []struct {
			name    string
			attempt handshakeAttempt
			want    []string
		}{
			{"unknown edge key", tlsAttempt(transport, clientTLSConfig(otherID, relayID.Fingerprint())),
				[]string{"refused edge key " + otherID.Fingerprint(), "reason=unauthorized key=" + otherID.Fingerprint()}},
			{"edge pins another key", tlsAttempt(transport, clientTLSConfig(edgeID, otherID.Fingerprint())),
				[]string{"an edge refused this relay's key: it pins another one", "reason=pin_mismatch relay_key=" + relayID.Fingerprint()}},
		} {
			if err := tt.attempt(t, r); err != nil {
				t.Fatal(err)
			}
			for _, want := range tt.want {
				eventually(t, 5*time.Second, tt.name+" logged", func() bool { return strings.Contains(r.logs.String(), want) })
			}
		}
	})
}

// TestEdgePinningAnotherKeyCounted: a real edge that pins another key is
// counted on the relay as pin_mismatch, over both transports.
func TestEdgePinningAnotherKeyCounted(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		relayID, edgeID, otherID := mustIdentity(t), mustIdentity(t), mustIdentity(t)
		_, r := refusedEdge(t, transport, relayID, edgeID, edgeID.Fingerprint(), otherID.Fingerprint(), ErrPinMismatch, "does not match the pinned key")
		eventually(t, 5*time.Second, "pin_mismatch counted on the relay", func() bool {
			return r.Stats().Failures["pin_mismatch"] > 0
		})
		if f := r.Stats().Failures; f["network"]+f["protocol"]+f["timeout"]+f["unauthorized"] != 0 {
			t.Errorf("relay Stats().Failures = %v, want pin_mismatch only", f)
		}
	})
}

func TestServerFailureReason(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"edge key refused", fmt.Errorf("TLS handshake: %w", &peerError{msg: "x", sentinel: ErrUnknownPeer, alert: alertAccessDenied}), "unauthorized"},
		{"quic: edge refused our key", &quic.TransportError{Remote: true, ErrorCode: 0x100 + alertBadCertificate}, "pin_mismatch"},
		{"tcp: edge refused our key", &net.OpError{Op: "remote error", Err: tls.AlertError(alertBadCertificate)}, "pin_mismatch"},
		{"tcp: a CA-checking client", &net.OpError{Op: "remote error", Err: tls.AlertError(alertUnknownCA)}, "pin_mismatch"},
		{"tcp: another remote alert", &net.OpError{Op: "remote error", Err: tls.AlertError(70)}, "protocol"},
		{"quic: our alert, wrong ALPN", &quic.TransportError{ErrorCode: 0x100 + 120}, "protocol"},
		{"quic: protocol violation", &quic.TransportError{Remote: true, ErrorCode: quic.ProtocolViolation}, "protocol"},
		{"tcp: plain text", fmt.Errorf("TLS handshake: %w", tls.RecordHeaderError{Msg: "tls: first record does not look like a TLS handshake"}), "protocol"},
		{"tcp: another TLS version", errors.New("tls: client offered only unsupported versions: [303]"), "protocol"},
		{"bad HELLO", fmt.Errorf("reading HELLO: %w", proto.ErrProtocol), "protocol"},
		{"another version", fmt.Errorf("%w: edge", errVersion), "protocol"},
		{"quic: handshake timeout", &quic.HandshakeTimeoutError{}, "timeout"},
		{"tcp: handshake timeout", fmt.Errorf("TLS handshake: %w", context.DeadlineExceeded), "timeout"},
		{"no HELLO in time", fmt.Errorf("%w: read: %w", errHandshakeTimeout, os.ErrDeadlineExceeded), "timeout"},
		{"tcp: edge went away", fmt.Errorf("TLS handshake: %w", io.EOF), "network"},
		{"tcp: reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, "network"},
		{"quic: edge closed", &quic.ApplicationError{Remote: true}, "network"},
		{"quic: refused for load", &quic.TransportError{ErrorCode: quic.ConnectionRefused}, "network"},
	} {
		if got := FailureReasons[serverFailureReason(tt.err)]; got != tt.want {
			t.Errorf("%s: serverFailureReason(%v) = %q, want %q", tt.name, tt.err, got, tt.want)
		}
	}
}

// TestHandshakeFailedSuppressedDoesNotAllocate: a flood of failed attempts
// costs the relay no allocation per suppressed line. (Over TCP, a peer's
// alert or a refused key costs one or two for the classification, next to
// the many of the TLS handshake that brought it.)
func TestHandshakeFailedSuppressedDoesNotAllocate(t *testing.T) {
	s, err := NewServer(ServerOptions{Identity: mustIdentity(t), Authorize: edgeAuth("")}, echo)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	remote := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4433}
	errs := []error{
		&quic.TransportError{Remote: true, ErrorCode: 0x100 + alertBadCertificate},
		&quic.TransportError{ErrorCode: 0x100 + alertAccessDenied},
		&quic.TransportError{ErrorCode: 0x100 + 120},
		&quic.HandshakeTimeoutError{},
		fmt.Errorf("TLS handshake: %w", tls.RecordHeaderError{Msg: "tls: first record does not look like a TLS handshake"}),
		fmt.Errorf("TLS handshake: %w", io.EOF),
	}
	for range handshakeLogBurst {
		s.handshakeFailed(TransportQUIC, remote, errs[0])
	}
	for _, e := range errs {
		if allocs := testing.AllocsPerRun(100, func() { s.handshakeFailed(TransportQUIC, remote, e) }); allocs != 0 {
			t.Errorf("a suppressed %v costs %v allocations, want 0", e, allocs)
		}
	}
}
