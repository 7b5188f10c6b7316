package proto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// CopyBufferSize is the size of the buffers [Writer.ReadFrom] and
// [Reader.WriteTo] copy through: each read from the source becomes one DATA
// frame at once. Over TLS/TCP every frame costs yamux a hand-off to its send
// loop, and 128 KiB moved a single stream about 20% faster than 32 KiB
// (scripts/bench -transport tcp); over QUIC it made no difference. Only a
// copy whose reads keep filling its small buffer takes one, and a copy that
// waits gives it back.
const CopyBufferSize = 128 << 10

// SmallBufferSize is the size of the buffer a copy starts with; the first
// read that fills it moves the copy to CopyBufferSize. Most SSE events fit
// in it. A copy that waits for its next bytes holds neither.
const SmallBufferSize = 2 << 10

// Buffer pools for the copies of this package and of its users: each buffer
// has room for a frame header in front of the payload.
var (
	smallBufPool = sync.Pool{New: func() any {
		b := make([]byte, maxFrameHeaderLen+SmallBufferSize)
		return &b
	}}
	copyBufPool = sync.Pool{New: func() any {
		b := make([]byte, maxFrameHeaderLen+CopyBufferSize)
		return &b
	}}
)

// copyBuffer is a pooled read buffer that starts small and grows once to
// CopyBufferSize when a read fills it, so that a trickle of SSE events is
// copied through 2 KiB while a bulk transfer reads CopyBufferSize at a time.
// It takes its buffer from the pool at first use and gives it back at idle,
// so that a copy waiting for its next bytes holds none: thousands of open
// streams that are waiting hold none of them. Its zero value holds nothing;
// call idle when done.
type copyBuffer struct {
	bp  *[]byte // nil while idle
	big bool
}

// withHeaderRoom returns the whole buffer, frame header room included,
// taking it from its pool if the copy was idle.
func (c *copyBuffer) withHeaderRoom() []byte {
	if c.bp == nil {
		if c.big {
			c.bp = copyBufPool.Get().(*[]byte)
		} else {
			c.bp = smallBufPool.Get().(*[]byte)
		}
	}
	return *c.bp
}

// bytes returns the buffer to read into, after room for a frame header.
func (c *copyBuffer) bytes() []byte { return c.withHeaderRoom()[maxFrameHeaderLen:] }

// grow moves to the large buffer if a read of n bytes filled the small one.
func (c *copyBuffer) grow(n int) {
	if c.big || n < SmallBufferSize {
		return
	}
	c.idle()
	c.big = true
}

// idle gives the buffer back to its pool while the copy waits, or when it
// is done; the next bytes takes one of the same size again.
func (c *copyBuffer) idle() {
	if c.bp == nil {
		return
	}
	if c.big {
		copyBufPool.Put(c.bp)
	} else {
		smallBufPool.Put(c.bp)
	}
	c.bp = nil
}

type direction uint8

const (
	wantHead direction = iota
	inBody
	ended
)

// Writer writes one direction of an exchange stream: a HEAD, DATA frames,
// then END or RESET. Each Write is sent as frames at once; Writer buffers
// nothing. A Writer is not safe for concurrent use.
type Writer struct {
	w     io.Writer
	lim   Limits
	state direction
	buf   []byte                  // scratch for heads and small frames
	hdr   [maxFrameHeaderLen]byte // DATA frame header; a field so that it does not escape per Write
}

// NewWriter returns a Writer on w with the given limits (zero means default).
func NewWriter(w io.Writer, lim Limits) *Writer {
	return &Writer{w: w, lim: lim.withDefaults()}
}

// WriteRequestHead writes the HEAD of a request. It must be the first frame.
func (w *Writer) WriteRequestHead(h *RequestHead) error {
	return w.writeHead(AppendRequestHead(w.frameStart(), h))
}

// WriteWholeRequest writes the HEAD of a request, its whole body (none if
// empty) as DATA frames, and END, in one Write, so that a small request
// travels in one packet (QUIC) or one TLS record (TCP).
func (w *Writer) WriteWholeRequest(h *RequestHead, body []byte) error {
	return w.writeWhole(AppendRequestHead(w.frameStart(), h), body)
}

// WriteWholeResponse is WriteWholeRequest for a response whose whole body is
// at hand.
func (w *Writer) WriteWholeResponse(h *ResponseHead, body []byte) error {
	return w.writeWhole(AppendResponseHead(w.frameStart(), h), body)
}

// writeWhole writes a HEAD whose payload is b[maxFrameHeaderLen:], body and
// END in one Write.
func (w *Writer) writeWhole(b, body []byte) error {
	if err := w.checkHead(b); err != nil {
		return err
	}
	start := len(b) - len(frameInPlace(FrameHead, b))
	for p := body; len(p) > 0; {
		chunk := p[:min(len(p), w.lim.MaxDataSize)]
		b = append(b, byte(FrameData))
		b = binary.AppendUvarint(b, uint64(len(chunk)))
		b = append(b, chunk...)
		p = p[len(chunk):]
	}
	b = append(b, byte(FrameEnd), 0)
	w.buf, w.state = b, ended
	_, err := w.w.Write(b[start:])
	w.dropLargeBuffer()
	if err != nil {
		return fmt.Errorf("writing HEAD, body and END: %w", err)
	}
	return nil
}

// WriteResponseHead writes the HEAD of a response. It must be the first frame.
func (w *Writer) WriteResponseHead(h *ResponseHead) error {
	return w.writeHead(AppendResponseHead(w.frameStart(), h))
}

// frameStart returns the scratch buffer with room for a frame header.
func (w *Writer) frameStart() []byte {
	return append(w.buf[:0], make([]byte, maxFrameHeaderLen)...)
}

func (w *Writer) writeHead(b []byte) error {
	if err := w.checkHead(b); err != nil {
		return err
	}
	w.state = inBody
	err := w.writeFramed(FrameHead, b)
	w.dropLargeBuffer()
	return err
}

// keptBufferSize is the most scratch buffer a Writer keeps after a head:
// a long head's buffer is dropped rather than held by a stream that may
// stay open for minutes (thousands of held streams: issue 9).
const keptBufferSize = 256

func (w *Writer) dropLargeBuffer() {
	if cap(w.buf) > keptBufferSize {
		w.buf = nil
	}
}

// checkHead keeps b as the scratch buffer and checks that a HEAD whose
// payload is b[maxFrameHeaderLen:] may be written now.
func (w *Writer) checkHead(b []byte) error {
	w.buf = b
	if w.state != wantHead {
		return fmt.Errorf("writing HEAD: %w", ErrFrameOrder)
	}
	if len(b)-maxFrameHeaderLen > w.lim.MaxHeadSize {
		return fmt.Errorf("writing HEAD: %d bytes exceed the limit of %d", len(b)-maxFrameHeaderLen, w.lim.MaxHeadSize)
	}
	return nil
}

// frameInPlace writes the header of a frame of type t whose payload is
// b[maxFrameHeaderLen:] just in front of the payload and returns the whole
// frame, so that it goes out in one Write without a copy.
func frameInPlace(t FrameType, b []byte) []byte {
	n := len(b) - maxFrameHeaderLen
	start := maxFrameHeaderLen - 1 - uvarintLen(uint64(n))
	b[start] = byte(t)
	binary.PutUvarint(b[start+1:], uint64(n))
	return b[start:]
}

// writeFramed writes a frame whose payload is b[maxFrameHeaderLen:], putting
// the header just in front of the payload so that the frame goes out in one
// Write.
func (w *Writer) writeFramed(t FrameType, b []byte) error {
	if _, err := w.w.Write(frameInPlace(t, b)); err != nil {
		return fmt.Errorf("writing %s: %w", t, err)
	}
	return nil
}

// Write sends p as DATA frames of at most Limits.MaxDataSize bytes. An empty p
// writes nothing.
func (w *Writer) Write(p []byte) (int, error) {
	if w.state != inBody {
		return 0, fmt.Errorf("writing DATA: %w", ErrFrameOrder)
	}
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), w.lim.MaxDataSize)]
		w.hdr[0] = byte(FrameData)
		hl := 1 + binary.PutUvarint(w.hdr[1:], uint64(len(chunk)))
		if len(chunk) <= 4<<10 {
			// Small frames go out in one Write so that a peer never sees
			// a header without its payload in a separate packet.
			w.buf = append(append(w.buf[:0], w.hdr[:hl]...), chunk...)
			if _, err := w.w.Write(w.buf); err != nil {
				return written, fmt.Errorf("writing DATA: %w", err)
			}
		} else {
			if _, err := w.w.Write(w.hdr[:hl]); err != nil {
				return written, fmt.Errorf("writing DATA: %w", err)
			}
			if _, err := w.w.Write(chunk); err != nil {
				return written, fmt.Errorf("writing DATA: %w", err)
			}
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

// ReadFrom copies src as DATA frames until src returns io.EOF, one frame per
// read, so that whatever src yields is on the wire before the next read
// blocks. It implements io.ReaderFrom, so io.Copy uses it. Errors from src
// are returned wrapped in a [*SourceError]; other errors are from writing.
// ReadFrom does not write END. When src has a method WaitReadable() error
// that blocks until a Read would not, ReadFrom calls it instead of reading
// into a buffer whenever the last read was short (under SmallBufferSize),
// so that a stream waiting for its next event holds no copy buffer.
func (w *Writer) ReadFrom(src io.Reader) (int64, error) {
	if w.state != inBody {
		return 0, fmt.Errorf("writing DATA: %w", ErrFrameOrder)
	}
	waiter, _ := src.(readWaiter)
	var cb copyBuffer
	defer cb.idle()
	var total int64
	for filled := false; ; {
		if waiter != nil && !filled {
			// The last read took all there was: wait for more without
			// holding a buffer.
			cb.idle()
			if err := waiter.WaitReadable(); err != nil {
				return total, &SourceError{Err: err}
			}
		}
		buf := cb.withHeaderRoom()
		limit := min(len(buf), maxFrameHeaderLen+w.lim.MaxDataSize)
		n, rerr := src.Read(buf[maxFrameHeaderLen:limit])
		// A read of a small buffer's worth or more says the bytes are
		// flowing (a source that waited returns at most its own
		// buffer's worth: 4 KiB for an upstream body): read on.
		filled = n >= min(SmallBufferSize, limit-maxFrameHeaderLen)
		if n > 0 {
			if err := w.writeFramed(FrameData, buf[:maxFrameHeaderLen+n]); err != nil {
				return total, err
			}
			total += int64(n)
			cb.grow(n)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, &SourceError{Err: rerr}
		}
	}
}

// End writes END with optional trailers, the clean end of this direction.
func (w *Writer) End(trailer http.Header) error {
	if w.state != inBody {
		return fmt.Errorf("writing END: %w", ErrFrameOrder)
	}
	b := appendTrailer(w.frameStart(), trailer)
	w.buf = b
	if len(b)-maxFrameHeaderLen > w.lim.MaxHeadSize {
		return fmt.Errorf("writing END: trailers of %d bytes exceed the limit of %d", len(b)-maxFrameHeaderLen, w.lim.MaxHeadSize)
	}
	w.state = ended
	return w.writeFramed(FrameEnd, b)
}

// Reset writes RESET with a code and a message, the abnormal end of this
// direction. It may be sent instead of a HEAD (a refusal) or after it. A
// Reset after END or another Reset writes nothing and returns nil.
func (w *Writer) Reset(code ResetCode, msg string) error {
	if w.state == ended {
		return nil
	}
	w.state = ended
	b := appendReset(w.frameStart(), code, msg)
	w.buf = b
	return w.writeFramed(FrameReset, b)
}

// Ended reports whether END or RESET was written.
func (w *Writer) Ended() bool { return w.state == ended }

// Reader reads one direction of an exchange stream: a HEAD, then the body as
// an io.Reader. A Reader is not safe for concurrent use.
type Reader struct {
	br        *bufio.Reader
	lim       Limits
	state     direction
	remaining int // bytes left in the current DATA frame
	trailer   http.Header
	err       error // sticky: io.EOF after END, a *ResetError, or a failure
}

// readBufferSize is the Reader's buffer for frame headers and small frames.
// Large payloads bypass it (bufio reads straight into the caller's buffer),
// so it stays small: thousands of open streams each hold one.
const readBufferSize = 1 << 10

// NewReader returns a Reader on r with the given limits (zero means default).
func NewReader(r io.Reader, lim Limits) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, readBufferSize), lim: lim.withDefaults()}
}

// readFrameHeader reads a frame's type and length and checks the length
// against the limit for that type.
func (r *Reader) readFrameHeader() (FrameType, int, error) {
	return readFrameHeader(r.br, r.lim)
}

func readFrameHeader(br *bufio.Reader, lim Limits) (FrameType, int, error) {
	tb, err := br.ReadByte()
	if err != nil {
		if err == io.EOF {
			return 0, 0, io.EOF
		}
		return 0, 0, fmt.Errorf("reading frame: %w", err)
	}
	t := FrameType(tb)
	n, err := binary.ReadUvarint(br)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, fmt.Errorf("reading %s frame length: %w", t, io.ErrUnexpectedEOF)
		}
		return 0, 0, protocolErrorf("%s frame: bad length: %v", t, err)
	}
	if max := lim.payloadLimit(t); n > uint64(max) {
		return 0, 0, protocolErrorf("%s frame of %d bytes exceeds the limit of %d", t, n, max)
	}
	return t, int(n), nil
}

// readPayload reads a whole payload of n bytes.
func readPayload(br *bufio.Reader, t FrameType, n int) ([]byte, error) {
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		return nil, fmt.Errorf("reading %s payload: %w", t, unexpected(err))
	}
	return p, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readHead reads the first frame, which must be HEAD or RESET.
func (r *Reader) readHead() ([]byte, error) {
	if r.state != wantHead {
		return nil, fmt.Errorf("reading HEAD: %w", ErrFrameOrder)
	}
	t, n, err := r.readFrameHeader()
	if err != nil {
		if err == io.EOF {
			err = fmt.Errorf("reading HEAD: stream ended before the head: %w", io.ErrUnexpectedEOF)
		}
		return nil, r.fail(err)
	}
	// Reject any other frame from its header, before reading (and
	// allocating) a payload that is allowed only later.
	if t != FrameHead && t != FrameReset {
		return nil, r.fail(protocolErrorf("got %s frame, want HEAD", t))
	}
	p, err := readPayload(r.br, t, n)
	if err != nil {
		return nil, r.fail(err)
	}
	if t == FrameReset {
		return nil, r.fail(r.resetFrom(p))
	}
	r.state = inBody
	return p, nil
}

// ReadRequestHead reads and validates the HEAD of a request. A RESET instead
// of a HEAD is returned as a *ResetError.
func (r *Reader) ReadRequestHead() (*RequestHead, error) {
	p, err := r.readHead()
	if err != nil {
		return nil, err
	}
	h, err := DecodeRequestHead(p, r.lim)
	if err != nil {
		return nil, r.fail(err)
	}
	return h, nil
}

// ReadResponseHead reads and validates the HEAD of a response. A RESET
// instead of a HEAD (the relay refused the stream) is returned as a
// *ResetError.
func (r *Reader) ReadResponseHead() (*ResponseHead, error) {
	p, err := r.readHead()
	if err != nil {
		return nil, err
	}
	h, err := DecodeResponseHead(p, r.lim)
	if err != nil {
		return nil, r.fail(err)
	}
	return h, nil
}

// Read reads body bytes. Each call returns bytes of at most one DATA frame,
// so a reader that writes out what it gets never merges two frames' worth of
// waiting. It returns io.EOF after END, a *ResetError after RESET, and an
// error wrapping io.ErrUnexpectedEOF when the stream ends without either: a
// cut stream never looks complete.
func (r *Reader) Read(p []byte) (int, error) {
	if err := r.waitFrame(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := io.ReadFull(r.br, p[:min(len(p), r.remaining)])
	r.remaining -= n
	if err != nil {
		return n, r.fail(fmt.Errorf("reading DATA payload: %w", unexpected(err)))
	}
	return n, nil
}

// WriteTo writes the body to w until END, each DATA frame's bytes as soon
// as they are read, so that no frame waits for a later one. It implements
// io.WriterTo, so io.Copy uses it. Its buffer comes from a pool (see
// copyBuffer): small while the body trickles, large once a read fills it.
//
// When w has a method Flush() error (a writer that buffers, such as a
// response writer), WriteTo calls it after a write unless the next frame is
// already buffered (see [Reader.Ready]): frames that arrived together leave
// together, and none is held back for one that has not arrived, so an SSE
// event is never merged with a later one. WriteTo does not flush at END or
// on a failure: whoever owns w finishes it.
//
// WriteTo returns nil at END. Otherwise it returns what Read returned: a
// *ResetError, an error wrapping [ErrProtocol] or io.ErrUnexpectedEOF, or a
// failure of the stream; failures of w's Write or Flush are returned wrapped
// in a [*SinkError]. The count is of the bytes written to w.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	f, _ := w.(flusher)
	var cb copyBuffer
	defer cb.idle()
	var total int64
	for {
		if !r.Ready() {
			// The next frame is not here yet: wait for its header
			// without holding a buffer.
			cb.idle()
			if err := r.waitFrame(); err != nil {
				if err == io.EOF {
					return total, nil
				}
				return total, err
			}
		}
		buf := cb.bytes()
		n, rerr := r.Read(buf)
		if n > 0 {
			nw, werr := w.Write(buf[:n])
			if nw < 0 || nw > n {
				nw = 0
				if werr == nil {
					werr = errInvalidWrite
				}
			}
			total += int64(nw)
			if werr == nil && nw < n {
				werr = io.ErrShortWrite
			}
			if werr == nil && f != nil && !r.Ready() {
				werr = f.Flush()
			}
			if werr != nil {
				return total, &SinkError{Err: werr}
			}
			cb.grow(n)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// waitFrame waits until the current DATA frame has payload left to read,
// reading the headers of the frames before it (END and RESET end the body,
// as for Read).
func (r *Reader) waitFrame() error {
	if r.err != nil {
		return r.err
	}
	if r.state != inBody {
		return fmt.Errorf("reading DATA: %w", ErrFrameOrder)
	}
	for r.remaining == 0 {
		if err := r.nextBodyFrame(); err != nil {
			return err
		}
	}
	return nil
}

// readWaiter is a source of [Writer.ReadFrom] that can wait for its next
// bytes without a buffer to read them into (an upstream response body with
// a read buffer of its own). An error ends the copy as a read error would.
type readWaiter interface{ WaitReadable() error }

// flusher is a destination of [Reader.WriteTo] that buffers what it is
// written until it is flushed.
type flusher interface{ Flush() error }

// errInvalidWrite is a Write that claimed more bytes than it was given, or
// fewer than none (as io.Copy says).
var errInvalidWrite = errors.New("invalid write result")

// nextBodyFrame reads the next frame header in the body and handles END and
// RESET, which end the direction.
func (r *Reader) nextBodyFrame() error {
	t, n, err := r.readFrameHeader()
	if err != nil {
		if err == io.EOF {
			err = fmt.Errorf("reading body: stream ended without END: %w", io.ErrUnexpectedEOF)
		}
		return r.fail(err)
	}
	switch t {
	case FrameData:
		if n == 0 {
			return r.fail(protocolErrorf("empty DATA frame"))
		}
		r.remaining = n
		return nil
	case FrameEnd:
		p, err := readPayload(r.br, t, n)
		if err != nil {
			return r.fail(err)
		}
		if r.trailer, err = decodeTrailer(p, r.lim); err != nil {
			return r.fail(err)
		}
		r.state = ended
		return r.fail(io.EOF)
	case FrameReset:
		p, err := readPayload(r.br, t, n)
		if err != nil {
			return r.fail(err)
		}
		return r.fail(r.resetFrom(p))
	}
	return r.fail(protocolErrorf("got %s frame in a body", t))
}

func (r *Reader) resetFrom(p []byte) error {
	rst, err := decodeReset(p)
	if err != nil {
		return err
	}
	return rst
}

// fail records err as the sticky end of this direction.
func (r *Reader) fail(err error) error {
	r.state = ended
	r.err = err
	return err
}

// Ready reports whether the next Read would return without waiting for the
// network: the rest of the current DATA frame, or the whole next frame
// header (and END or RESET payload), is already buffered. A proxy uses it to
// flush only when no more bytes are at hand, which coalesces writes of
// frames that arrived together without ever delaying one that did not.
func (r *Reader) Ready() bool {
	if r.err != nil {
		return true
	}
	n := r.br.Buffered()
	if n == 0 {
		return false
	}
	if r.remaining > 0 {
		return true
	}
	b, _ := r.br.Peek(n) // never blocks: n bytes are buffered
	length, k := binary.Uvarint(b[1:])
	if k <= 0 {
		return false
	}
	if FrameType(b[0]) == FrameData {
		return n > 1+k
	}
	return uint64(n-1-k) >= length
}

// Trailer returns the trailers sent with END, or nil. It is valid after Read
// returned io.EOF.
func (r *Reader) Trailer() http.Header { return r.trailer }

// Interface guards.
var (
	_ io.ReaderFrom = (*Writer)(nil)
	_ io.WriterTo   = (*Reader)(nil)
)
