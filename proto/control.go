package proto

import (
	"bufio"
	"fmt"
	"io"
	"sync"
)

// Message is one control-stream message: *Hello, *Welcome, *Ping, *Pong,
// *GoAway or *StreamReset.
type Message interface {
	frameType() FrameType
	appendTo(b []byte) []byte
}

// Hello is the edge's first message on the control stream.
type Hello struct {
	// Version is the edge's ProtocolVersion.
	Version uint64
	// EdgeName names the edge in the relay's logs.
	EdgeName string
	// Software is the edge's software version, for logs.
	Software string
	// Features lists optional features the edge supports.
	Features []string
}

// Welcome is the relay's answer to Hello: the session is ready.
type Welcome struct {
	// Version is the protocol version the relay speaks on this session.
	Version uint64
	// RelayName names the relay in the edge's logs.
	RelayName string
	// SessionID identifies the session in both sides' logs.
	SessionID string
	// Upstreams lists the upstream names this edge may use; the first is the
	// default.
	Upstreams []string
	// MaxStreams is how many exchange streams the relay accepts at once on
	// this session; 0 means no limit announced.
	MaxStreams uint64
}

// Ping asks the peer for a Pong with the same ID; the sender measures the
// round trip on its own clock.
type Ping struct{ ID uint64 }

// Pong answers a Ping.
type Pong struct{ ID uint64 }

// GoAway says that the sender is draining: the receiver opens no new streams
// on this session; streams in flight finish.
type GoAway struct {
	// Reason is a human-readable reason, for logs.
	Reason string
}

// StreamReset aborts one exchange stream of the session, on transports whose
// streams carry no reset code (yamux). Either side may send it.
type StreamReset struct {
	// StreamID is the transport's ID of the aborted stream.
	StreamID uint64
	// Code says why.
	Code ResetCode
	// StopSending says that the sender only stopped reading (QUIC's
	// STOP_SENDING): the receiver's writes fail, and what the sender wrote
	// before is still read to its end. Otherwise both directions are
	// aborted (RESET_STREAM and STOP_SENDING).
	StopSending bool
}

// Field tags of control messages.
const (
	tagHelloVersion  = 1
	tagHelloEdgeName = 2
	tagHelloSoftware = 3
	tagHelloFeature  = 4

	tagWelcomeVersion    = 1
	tagWelcomeRelayName  = 2
	tagWelcomeSessionID  = 3
	tagWelcomeUpstream   = 4
	tagWelcomeMaxStreams = 5

	tagPingID = 1

	tagGoAwayReason = 1

	tagStreamResetID          = 1
	tagStreamResetCode        = 2
	tagStreamResetStopSending = 3
)

// maxListItems bounds the repeated fields of control messages.
const maxListItems = 1024

func (*Hello) frameType() FrameType { return FrameHello }
func (m *Hello) appendTo(b []byte) []byte {
	e := fieldEncoder{b}
	e.uint(tagHelloVersion, m.Version)
	e.stringIfSet(tagHelloEdgeName, m.EdgeName)
	e.stringIfSet(tagHelloSoftware, m.Software)
	for _, f := range m.Features {
		e.string(tagHelloFeature, f)
	}
	return e.b
}

func (*Welcome) frameType() FrameType { return FrameWelcome }
func (m *Welcome) appendTo(b []byte) []byte {
	e := fieldEncoder{b}
	e.uint(tagWelcomeVersion, m.Version)
	e.stringIfSet(tagWelcomeRelayName, m.RelayName)
	e.stringIfSet(tagWelcomeSessionID, m.SessionID)
	for _, u := range m.Upstreams {
		e.string(tagWelcomeUpstream, u)
	}
	if m.MaxStreams > 0 {
		e.uint(tagWelcomeMaxStreams, m.MaxStreams)
	}
	return e.b
}

func (*Ping) frameType() FrameType { return FramePing }
func (m *Ping) appendTo(b []byte) []byte {
	e := fieldEncoder{b}
	e.uint(tagPingID, m.ID)
	return e.b
}

func (*Pong) frameType() FrameType { return FramePong }
func (m *Pong) appendTo(b []byte) []byte {
	e := fieldEncoder{b}
	e.uint(tagPingID, m.ID)
	return e.b
}

func (*GoAway) frameType() FrameType { return FrameGoAway }
func (m *GoAway) appendTo(b []byte) []byte {
	e := fieldEncoder{b}
	e.stringIfSet(tagGoAwayReason, m.Reason)
	return e.b
}

func (*StreamReset) frameType() FrameType { return FrameStreamReset }
func (m *StreamReset) appendTo(b []byte) []byte {
	e := fieldEncoder{b}
	e.uint(tagStreamResetID, m.StreamID)
	e.uint(tagStreamResetCode, uint64(m.Code))
	if m.StopSending {
		e.uint(tagStreamResetStopSending, 1)
	}
	return e.b
}

// DecodeMessage decodes the payload of a control frame of type t.
func DecodeMessage(t FrameType, p []byte) (Message, error) {
	if len(p) > MaxControlSize {
		return nil, protocolErrorf("%s of %d bytes exceeds the limit of %d", t, len(p), MaxControlSize)
	}
	d := fieldDecoder{b: p}
	var list []string
	addItem := func(what string) {
		if len(list) >= maxListItems {
			d.err = protocolErrorf("%s: more than %d %s", t, maxListItems, what)
			return
		}
		if !Printable(string(d.val)) || len(d.val) == 0 {
			d.err = protocolErrorf("%s: invalid %s %q", t, what, d.val)
			return
		}
		list = append(list, string(d.val))
	}
	var m Message
	switch t {
	case FrameHello:
		h := &Hello{}
		for d.next() {
			switch d.tag {
			case tagHelloVersion:
				h.Version = d.uint("HELLO: version")
			case tagHelloEdgeName:
				h.EdgeName = string(d.val)
			case tagHelloSoftware:
				h.Software = string(d.val)
			case tagHelloFeature:
				addItem("feature")
			}
		}
		h.Features = list
		m = h
	case FrameWelcome:
		w := &Welcome{}
		for d.next() {
			switch d.tag {
			case tagWelcomeVersion:
				w.Version = d.uint("WELCOME: version")
			case tagWelcomeRelayName:
				w.RelayName = string(d.val)
			case tagWelcomeSessionID:
				w.SessionID = string(d.val)
			case tagWelcomeUpstream:
				addItem("upstream")
			case tagWelcomeMaxStreams:
				w.MaxStreams = d.uint("WELCOME: max streams")
			}
		}
		w.Upstreams = list
		m = w
	case FramePing, FramePong:
		var id uint64
		for d.next() {
			if d.tag == tagPingID {
				id = d.uint(t.String() + ": id")
			}
		}
		if t == FramePing {
			m = &Ping{ID: id}
		} else {
			m = &Pong{ID: id}
		}
	case FrameGoAway:
		g := &GoAway{}
		for d.next() {
			if d.tag == tagGoAwayReason {
				g.Reason = string(d.val)
			}
		}
		m = g
	case FrameStreamReset:
		r := &StreamReset{}
		for d.next() {
			switch d.tag {
			case tagStreamResetID:
				r.StreamID = d.uint("STREAM_RESET: stream id")
			case tagStreamResetCode:
				c := d.uint("STREAM_RESET: code")
				if c > 1<<32-1 {
					return nil, protocolErrorf("STREAM_RESET: code %d out of range", c)
				}
				r.Code = ResetCode(c)
			case tagStreamResetStopSending:
				v := d.uint("STREAM_RESET: stop sending")
				if v > 1 {
					return nil, protocolErrorf("STREAM_RESET: stop sending = %d, want 0 or 1", v)
				}
				r.StopSending = v == 1
			}
		}
		m = r
	default:
		return nil, protocolErrorf("got %s frame on the control stream", t)
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

// ControlReader reads messages from a control stream.
type ControlReader struct{ br *bufio.Reader }

// NewControlReader returns a ControlReader on r.
func NewControlReader(r io.Reader) *ControlReader {
	return &ControlReader{br: bufio.NewReaderSize(r, 512)}
}

// ReadMessage reads the next message. It blocks until one arrives; the caller
// unblocks it by closing the stream. A clean end of the stream is io.EOF.
func (c *ControlReader) ReadMessage() (Message, error) {
	t, n, err := readFrameHeader(c.br, Limits{})
	if err != nil {
		return nil, err
	}
	p, err := readPayload(c.br, t, n)
	if err != nil {
		return nil, err
	}
	return DecodeMessage(t, p)
}

// ControlWriter writes messages to a control stream. It is safe for
// concurrent use: the ping loop and a drain may write at once.
type ControlWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// NewControlWriter returns a ControlWriter on w.
func NewControlWriter(w io.Writer) *ControlWriter { return &ControlWriter{w: w} }

// WriteMessage writes m as one frame in one Write.
func (c *ControlWriter) WriteMessage(m Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := m.appendTo(append(c.buf[:0], make([]byte, maxFrameHeaderLen)...))
	c.buf = b
	n := len(b) - maxFrameHeaderLen
	if n > MaxControlSize {
		return fmt.Errorf("writing %s: %d bytes exceed the limit of %d", m.frameType(), n, MaxControlSize)
	}
	if _, err := c.w.Write(frameInPlace(m.frameType(), b)); err != nil {
		return fmt.Errorf("writing %s: %w", m.frameType(), err)
	}
	return nil
}
