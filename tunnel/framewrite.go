package tunnel

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
)

// The yamux frame header (hashicorp/yamux v0.1.2, const.go): version (one
// byte, 0), type (one byte), flags (uint16), stream ID (uint32) and length
// (uint32), big-endian. A DATA frame's body, length bytes, follows its
// header.
const (
	yamuxHeaderSize  = 12
	yamuxVersion     = 0
	yamuxTypeData    = 0
	yamuxLengthField = 8 // offset of the length in the header
)

// frameBufSize is the size of a frameWriter's buffer, header included:
// 16 KiB, a TLS record's largest plaintext. A DATA frame that fits goes out
// as one Write and so one record; a longer body is sent as the header with
// the first 16 KiB - 12 bytes of it, a full record, then the rest, which
// costs the same records as one Write of it all would, without a buffer as
// large as yamux's frames (up to yamuxMaxStreamWindow) per connection.
const frameBufSize = 16 << 10

// frameWriter is the connection yamux writes to (issue 9). yamux's send loop
// writes each frame as two Writes, the 12-byte header and then the body, and
// on a tls.Conn every Write is a TLS record of its own and a write syscall,
// so each DATA frame cost two of both. frameWriter holds a DATA frame's
// header (type DATA, length > 0: yamux writes its body next, from the same
// goroutine) and sends it with the body in one Write. Every other Write goes
// out at once, after any header held: window updates, pings, go-aways, the
// header of a DATA frame with no body (one with only flags), and anything
// unexpected, such as a Write that is not the body the held header
// announced. So no frame waits for a later one. Reads, Close, addresses and
// deadlines are the wrapped connection's.
//
// A Write that sends a held header returns that Write's error, and the
// header's own Write cannot fail: so a failed combined Write is reported as
// the body's failure, which yamux treats as the connection's end, as it does
// a failed header.
//
// yamux writes from its send loop only (its pings and go-aways queue there
// too) and closes the connection from other goroutines, which needs no lock
// here; the mutex keeps the held header consistent should another writer
// appear.
type frameWriter struct {
	net.Conn

	mu      sync.Mutex
	held    bool   // buf[:yamuxHeaderSize] is a DATA frame's header not yet sent
	bodyLen uint32 // the held header's length: its body's size
	buf     [frameBufSize]byte
}

func newFrameWriter(c net.Conn) *frameWriter { return &frameWriter{Conn: c} }

// Write writes p, holding it if it is the header of a DATA frame with a body
// (see frameWriter).
func (f *frameWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held {
		f.held = false
		if uint64(len(p)) == uint64(f.bodyLen) {
			return f.writeFrame(p)
		}
		// Not the body the header announced: the header goes alone.
		if err := f.writeAll(f.buf[:yamuxHeaderSize]); err != nil {
			return 0, err
		}
		return f.Conn.Write(p)
	}
	if len(p) == yamuxHeaderSize && p[0] == yamuxVersion && p[1] == yamuxTypeData {
		if n := binary.BigEndian.Uint32(p[yamuxLengthField:]); n > 0 {
			copy(f.buf[:], p)
			f.bodyLen = n
			f.held = true
			return len(p), nil
		}
	}
	return f.Conn.Write(p)
}

// writeFrame sends the held header with body, as one Write when they fit in
// the buffer. It returns how much of body was written.
func (f *frameWriter) writeFrame(body []byte) (int, error) {
	n := copy(f.buf[yamuxHeaderSize:], body)
	w, err := f.Conn.Write(f.buf[:yamuxHeaderSize+n])
	if w < yamuxHeaderSize+n {
		if err == nil {
			err = io.ErrShortWrite
		}
		return max(w-yamuxHeaderSize, 0), err
	}
	if err != nil {
		return n, err
	}
	if n == len(body) {
		return n, nil
	}
	m, err := f.Conn.Write(body[n:])
	return n + m, err
}

// writeAll writes p, reporting a short Write as an error.
func (f *frameWriter) writeAll(p []byte) error {
	w, err := f.Conn.Write(p)
	if err == nil && w < len(p) {
		err = io.ErrShortWrite
	}
	return err
}
