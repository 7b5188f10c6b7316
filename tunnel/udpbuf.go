package tunnel

import (
	"log/slog"
	"net"
	"sync"
)

// udpBufferSize is the socket buffer QUIC wants for each direction: what
// quic-go asks for, so that a burst at high bandwidth is not dropped by the
// kernel before quic-go reads it.
const udpBufferSize = 7 << 20

// udpBufferWarning makes the warning about small UDP buffers appear once per
// process, however many sockets are opened.
var udpBufferWarning sync.Once

// tuneUDPBuffers asks for udpBufferSize in both directions of c and logs one
// warning per process, naming the sysctl that fixes it, when the kernel
// grants less. quic-go does the same and would print its own warning with
// the standard logger; cmd/airlock turns that one off
// (QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING) in favour of this structured one.
func tuneUDPBuffers(c *net.UDPConn, log *slog.Logger) {
	rcv, snd, err := setUDPBuffers(c, udpBufferSize)
	if err != nil {
		log.Debug("tunnel: cannot check UDP buffer sizes", "err", err)
		return
	}
	if rcv >= udpBufferSize && snd >= udpBufferSize {
		return
	}
	udpBufferWarning.Do(func() {
		log.Warn("tunnel: UDP socket buffers are smaller than QUIC needs at high bandwidth; "+
			"raise the limits with: sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000",
			"receive_kib", rcv>>10, "send_kib", snd>>10, "want_kib", udpBufferSize>>10)
	})
}
