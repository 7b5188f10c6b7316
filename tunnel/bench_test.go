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
func BenchmarkStreamRoundTrip(b *testing.B) {
	_, e := pair(b, HandlerFunc(func(_ context.Context, _ *Peer, s Stream) {
		buf := make([]byte, 128)
		n, _ := io.ReadFull(s, buf[:100])
		s.Write(buf[:n])
		s.Close()
	}))
	ctx := context.Background()
	msg := make([]byte, 100)
	buf := make([]byte, 128)
	e.mu.Lock()
	conn := e.sess.conn
	e.mu.Unlock()
	before := conn.ConnectionStats()
	b.ReportAllocs()
	defer func() {
		after := conn.ConnectionStats()
		n := float64(b.N)
		b.ReportMetric(float64(after.PacketsSent-before.PacketsSent)/n, "sent-pkts/op")
		b.ReportMetric(float64(after.PacketsReceived-before.PacketsReceived)/n, "recv-pkts/op")
	}()
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
