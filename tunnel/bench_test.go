package tunnel

import (
	"context"
	"io"
	"testing"
)

// BenchmarkStreamRoundTrip measures one small exchange on a fresh stream:
// open, send 100 bytes and FIN, read the 100-byte answer (not waiting for
// the FIN: an exchange ends at END), close. This is an airlock exchange's
// pattern. Its
// ns/op is the tunnel's share of a small request's added latency.
// Over QUIC it also reports the packets each exchange costs.
func BenchmarkStreamRoundTrip(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr, func(b *testing.B) { benchmarkStreamRoundTrip(b, tr) })
	}
}

func benchmarkStreamRoundTrip(b *testing.B, transport string) {
	_, e := pair(b, transport, HandlerFunc(func(_ context.Context, _ *Peer, s Stream) {
		buf := make([]byte, 128)
		n, _ := io.ReadFull(s, buf[:100])
		s.Write(buf[:n])
		s.Close()
	}))
	ctx := context.Background()
	msg := make([]byte, 100)
	buf := make([]byte, 128)
	e.mu.Lock()
	qc, isQUIC := e.sess.conn.(quicConn)
	e.mu.Unlock()
	b.ReportAllocs()
	if isQUIC {
		before := qc.c.ConnectionStats()
		defer func() {
			after := qc.c.ConnectionStats()
			n := float64(b.N)
			b.ReportMetric(float64(after.PacketsSent-before.PacketsSent)/n, "sent-pkts/op")
			b.ReportMetric(float64(after.PacketsReceived-before.PacketsReceived)/n, "recv-pkts/op")
		}()
	}
	for b.Loop() {
		s, _, err := e.OpenStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Write(msg); err != nil {
			b.Fatal(err)
		}
		if err := s.CloseWrite(); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf[:100]); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
