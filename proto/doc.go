// Package proto defines airlock's wire format, version 1: the frames that carry
// one HTTP exchange over one tunnel stream, and the messages of the control
// stream that opens every session.
//
// Every stream, in both directions, is a sequence of frames:
//
//	type (1 byte) · payload length (uvarint) · payload
//
// An exchange stream carries HEAD, DATA*, then END or RESET in each direction.
// The control stream carries HELLO, WELCOME, then PING/PONG, GOAWAY and, on
// transports without stream reset codes, STREAM_RESET.
//
// How a stream is reset depends on the transport. On QUIC, an abort is a
// RESET_STREAM and STOP_SENDING with the code as the application error code.
// yamux (the TCP fallback) has no reset with a code, so there an abort is a
// STREAM_RESET message on the control stream naming the stream, followed by
// an ordinary close of the stream; a reader that sees the stream end before
// the message arrives sees a truncated stream, which is an error just the
// same. On every transport, a side that is at a frame boundary when it gives
// up (the relay refusing a request, or an upstream failing mid-response)
// writes a RESET frame in-band first, so the code and message always arrive
// in order with the data.
//
// Heads and control messages are encoded as a list of fields, each
//
//	tag (uvarint) · length (uvarint) · value
//
// so that a later version may add fields that an older peer skips. Every
// length is checked against a limit before anything is allocated: a peer can
// never make the other side buffer more than [Limits] allows.
//
// The package does no I/O beyond the io.Reader and io.Writer it is given (and,
// for a [Pipe], closing the connection it is given), and imports no other
// package of the project. It also holds the two copy loops every user of a
// stream needs, so that they are written once: [Reader.WriteTo] (frames to
// bytes, flushed frame by frame) and [Pipe] (both ways, for an upgraded
// connection).
package proto

// ProtocolVersion is the version of the wire format this package speaks. It is
// sent in HELLO; a relay refuses a session whose version it does not know.
const ProtocolVersion = 1

// ALPN is the TLS application protocol negotiated on every tunnel connection,
// over QUIC and over TLS/TCP alike.
const ALPN = "airlock/1"

// FrameType is the first byte of every frame.
type FrameType byte

// Exchange frames, on every stream but the control stream.
const (
	// FrameHead opens each direction. Payload: an encoded [RequestHead]
	// (edge → relay) or [ResponseHead] (relay → edge).
	FrameHead FrameType = 0x01
	// FrameData carries body bytes. Payload: the bytes, 1 to Limits.MaxDataSize.
	// After a 101 response head, DATA carries the raw bytes of the upgraded
	// connection in both directions.
	FrameData FrameType = 0x02
	// FrameEnd ends a direction cleanly. Payload: encoded trailers, possibly
	// empty.
	FrameEnd FrameType = 0x03
	// FrameReset ends a direction abnormally. Payload: an encoded [ResetError]
	// (code and message).
	FrameReset FrameType = 0x04
)

// Control frames, on the first stream of a session only.
const (
	// FrameHello is the edge's first message. Payload: an encoded [Hello].
	FrameHello FrameType = 0x10
	// FrameWelcome is the relay's answer to HELLO. Payload: an encoded [Welcome].
	FrameWelcome FrameType = 0x11
	// FramePing asks for a PONG. Payload: an encoded [Ping].
	FramePing FrameType = 0x12
	// FramePong answers a PING with its ID. Payload: an encoded [Pong].
	FramePong FrameType = 0x13
	// FrameGoAway says the sender is draining: open no new streams, in-flight
	// ones finish. Payload: an encoded [GoAway].
	FrameGoAway FrameType = 0x14
	// FrameStreamReset aborts one exchange stream of the session with a
	// code, for transports whose streams cannot carry a reset code
	// themselves (yamux over TCP). Payload: an encoded [StreamReset].
	FrameStreamReset FrameType = 0x15
)

// String returns the frame type's name, as used in errors.
func (t FrameType) String() string {
	switch t {
	case FrameHead:
		return "HEAD"
	case FrameData:
		return "DATA"
	case FrameEnd:
		return "END"
	case FrameReset:
		return "RESET"
	case FrameHello:
		return "HELLO"
	case FrameWelcome:
		return "WELCOME"
	case FramePing:
		return "PING"
	case FramePong:
		return "PONG"
	case FrameGoAway:
		return "GOAWAY"
	case FrameStreamReset:
		return "STREAM_RESET"
	}
	return "UNKNOWN(0x" + hexByte(byte(t)) + ")"
}

func hexByte(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&0xf]})
}
