package tunnel

import (
	"context"
	"io"
	"testing"
)

// BenchmarkStreamRoundTrip measures one small exchange on a fresh stream:
// open, send 100 bytes and FIN, read 100 bytes back to EOF, close. Its
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
	b.ReportAllocs()
	for b.Loop() {
		s, _, err := e.OpenStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf[:100]); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
