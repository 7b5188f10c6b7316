package tunnel

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

// creditStream counts its releaseCredit calls; creditBatch calls nothing
// else.
type creditStream struct {
	stream
	released int
}

func (c *creditStream) releaseCredit() { c.released++ }

// TestCreditBatch: finished streams get their credit back a batch at a
// time, the oldest first, once twice the batch is held; a size of 0
// releases each at once.
func TestCreditBatch(t *testing.T) {
	tests := []struct {
		size, finished int
		want           string // released count of each stream, in order
	}{
		{0, 3, "111"},
		{2, 3, "000"},
		{2, 4, "1100"},
		{2, 7, "1111000"},
		{2, 8, "11111100"},
		{3, 6, "111000"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("size %d, %d finished", tt.size, tt.finished), func(t *testing.T) {
			b := &creditBatch{size: tt.size}
			streams := make([]*creditStream, tt.finished)
			for i := range streams {
				streams[i] = &creditStream{}
				b.finished(streams[i])
			}
			var got strings.Builder
			for _, s := range streams {
				fmt.Fprint(&got, s.released)
			}
			if got.String() != tt.want {
				t.Errorf("released %s, want %s", got.String(), tt.want)
			}
			if held := len(b.ended); held >= heldCredit(tt.size) && tt.size > 0 {
				t.Errorf("%d streams held, want fewer than %d", held, heldCredit(tt.size))
			}
		})
	}
}

// TestCreditBatchSize: no batching for small stream limits, and never more
// held back than a quarter of the limit.
func TestCreditBatchSize(t *testing.T) {
	for _, limit := range []int{1, 7, 8, 16, 100, 256, DefaultMaxStreams} {
		size := creditBatchSize(limit)
		if size < 0 || size > maxCreditBatch || heldCredit(size) > limit/4 {
			t.Errorf("creditBatchSize(%d) = %d: want 0..%d, holding at most %d", limit, size, maxCreditBatch, limit/4)
		}
	}
	if creditBatchSize(DefaultMaxStreams) != maxCreditBatch {
		t.Errorf("the default limit gets batches of %d, want %d", creditBatchSize(DefaultMaxStreams), maxCreditBatch)
	}
}

// TestStreamLimitWithHeldCredit: over QUIC, with credit held back in
// batches after many finished exchanges, the edge can still open
// MaxStreams streams at once, and the relay refuses the next one in-band
// (its credit allows more than MaxStreams) instead of serving it.
func TestStreamLimitWithHeldCredit(t *testing.T) {
	const maxStreams = 16 // batches of 2
	relayID, edgeID := mustIdentity(t), mustIdentity(t)
	r := startRelay(t, relayID, "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), echo,
		func(o *ServerOptions) { o.MaxStreams = maxStreams })
	e := startEdge(t, edgeID, r.Addr().String(), relayID.Fingerprint(), TransportQUIC)
	waitReady(t, e.Client)
	for range 11 {
		s, _, err := e.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := echoByte(s); err != nil {
			t.Fatal(err)
		}
		s.CloseWrite()
		s.Close()
	}
	var held []Stream
	defer func() {
		for _, s := range held {
			s.Close()
		}
	}()
	for i := range maxStreams {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, _, err := e.OpenStream(ctx)
		cancel()
		if err != nil {
			t.Fatalf("stream %d of %d: %v", i+1, maxStreams, err)
		}
		if err := echoByte(s); err != nil {
			t.Fatalf("stream %d of %d: %v", i+1, maxStreams, err)
		}
		held = append(held, s)
	}
	s, _, err := e.OpenStream(context.Background())
	if err != nil {
		t.Fatalf("a stream over the limit: %v, want it opened and refused", err)
	}
	defer s.Close()
	s.Write([]byte("x"))
	_, err = proto.NewReader(s, proto.Limits{}).ReadResponseHead()
	var rst *proto.ResetError
	if !errors.As(err, &rst) || rst.Code != proto.CodeRefused {
		t.Fatalf("stream %d: %v, want a RESET refused", maxStreams+1, err)
	}
}
