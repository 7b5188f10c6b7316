package tunnel

import "sync"

// maxCreditBatch is the most stream credit a relay session holds back to
// return in one batch.
//
// quic-go grants the edge a new stream (a MAX_STREAMS frame) the moment one
// of its streams completes, and sends that frame in a packet of its own.
// With one request at a time, that was a packet from the relay and an ACK
// back from the edge for every request: two of the four datagrams of a
// small exchange, each a syscall and a couple of goroutine hand-offs on
// either side (issue 9). The relay therefore sets
// quic.Config.RequireStreamCreditRelease and returns the credit of finished
// streams in batches, the oldest first, once they have long completed; the
// batch's MAX_STREAMS frames leave in one packet.
const maxCreditBatch = 32

// creditBatch returns to the edge the stream credit of a QUIC session's
// finished exchange streams in batches. The session's stream limit is
// raised by the most it may hold (heldCredit), and the relay counts open
// streams against MaxStreams itself, so the edge can always open as many
// as MaxStreams allows. It is safe for concurrent use.
type creditBatch struct {
	mu    sync.Mutex
	size  int      // streams released at a time; 0 releases each at once
	ended []stream // finished streams whose credit is held, oldest first
}

// creditBatchSize is the batch for a relay that allows maxStreams exchange
// streams per session: at most a quarter of them may wait in a batch
// (twice the size is held at most), and none for tiny limits.
func creditBatchSize(maxStreams int) int {
	return min(maxCreditBatch, maxStreams/8)
}

// heldCredit is the most stream credit a batch of the given size holds.
func heldCredit(size int) int { return 2 * size }

// finished records that st's exchange is over. Once twice the batch size
// is held, the oldest batch gets its credit back: those streams ended a
// batch of exchanges ago and have completed (their last frames
// acknowledged), so quic-go grants the credit at once, in one packet. A
// stream that has not completed yet gets it when it does, as it would
// without batching.
func (b *creditBatch) finished(st stream) {
	if b.size == 0 {
		st.releaseCredit()
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ended = append(b.ended, st)
	if len(b.ended) < heldCredit(b.size) {
		return
	}
	for _, old := range b.ended[:b.size] {
		old.releaseCredit()
	}
	n := copy(b.ended, b.ended[b.size:])
	clear(b.ended[n:])
	b.ended = b.ended[:n]
}
