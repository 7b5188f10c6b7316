package http1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// maxBuffered is the most response bytes a connection holds before it
// writes them out without waiting for a flush; a longer write goes out
// without a copy.
const maxBuffered = 32 << 10

// writeBuffers holds response buffers: a connection takes one for the bytes
// of a response it has not written yet and gives it back at each flush, so
// that a stream waiting for its next event holds none.
var writeBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 4<<10)
	return &b
}}

// response is the http.ResponseWriter of one request. It writes the head
// only with the first body bytes, a flush or the handler's end, so that a
// small response leaves in one write. Its methods other than those of the
// request body are called by the handler's goroutine.
type response struct {
	c    *serverConn
	req  *http.Request
	body *requestBody

	header        http.Header
	status        int
	wroteHeader   bool  // the status is set
	contentLength int64 // declared by the handler; -1: none
	written       int64 // body bytes written
	chunked       bool
	noBody        bool // HEAD, 204, 304: no body bytes go out
	closeAfter    bool // the connection ends with this response
	buf           *[]byte
	err           error // the first write error; later writes return it
	aborted       bool  // the handler panicked
	hijacked      bool

	// mu orders the head with a "100 Continue" that the body's reader
	// may write from another goroutine.
	mu       sync.Mutex
	headSent bool // the head is in buf or written
}

// Header returns the response header, to be changed before WriteHeader. Keys
// with http.TrailerPrefix set by the end of the handler are sent as
// trailers of a chunked response.
func (w *response) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

// WriteHeader sets the status; the head goes out with the first body bytes,
// a flush, or the handler's end. Informational statuses (1xx other than
// 101) are written at once.
func (w *response) WriteHeader(code int) {
	if w.wroteHeader || w.hijacked {
		return
	}
	if code < 100 || code > 999 {
		panic("http1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInterim(code)
		return
	}
	w.wroteHeader, w.status = true, code
	if cl := w.Header().Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			w.header.Del("Content-Length")
		}
	}
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
}

// writeInterim writes a 1xx head with the header as it is now.
func (w *response) writeInterim(code int) {
	b := w.buffer()
	*b = appendStatusLine(*b, code)
	*b = appendHeader(*b, w.header)
	*b = append(*b, "\r\n"...)
	w.send(nil)
}

func (w *response) buffer() *[]byte {
	if w.buf == nil {
		w.buf = writeBuffers.Get().(*[]byte)
	}
	return w.buf
}

// Write writes body bytes, after the head.
func (w *response) Write(p []byte) (int, error) {
	switch {
	case w.hijacked:
		return 0, http.ErrHijacked
	case !w.wroteHeader:
		w.WriteHeader(http.StatusOK)
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	w.startHead(false)
	w.written += int64(len(p))
	b := w.buffer()
	if w.chunked {
		*b = strconv.AppendInt(*b, int64(len(p)), 16)
		*b = append(*b, "\r\n"...)
	}
	if len(*b)+len(p) > maxBuffered {
		if err := w.send(p); err != nil {
			return 0, err
		}
		b = w.buffer()
	} else {
		*b = append(*b, p...)
	}
	if w.chunked {
		*b = append(*b, "\r\n"...)
	}
	return len(p), nil
}

// send writes what is buffered, then p, and gives the buffer back.
func (w *response) send(p []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.buf != nil && len(*w.buf) > 0 {
		_, w.err = w.c.nc.Write(*w.buf)
	}
	w.releaseBuffer()
	if w.err == nil && len(p) > 0 {
		_, w.err = w.c.nc.Write(p)
	}
	return w.err
}

// FlushError writes the head, if it has not gone out, and what is buffered.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.startHead(false)
	return w.send(nil)
}

// Flush is FlushError without its error.
func (w *response) Flush() { w.FlushError() }

// SetReadDeadline sets the connection's read deadline (the request body's).
func (w *response) SetReadDeadline(t time.Time) error { return w.c.nc.SetReadDeadline(t) }

// SetWriteDeadline sets the connection's write deadline.
func (w *response) SetWriteDeadline(t time.Time) error { return w.c.nc.SetWriteDeadline(t) }

// EnableFullDuplex lets the handler read the body after the response has
// started, which this server always allows.
func (w *response) EnableFullDuplex() error { return nil }

// Hijack hands the connection to the handler, with a reader of the bytes
// read ahead of the request and a writer. Buffered response bytes are
// written first.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	c := w.c
	c.unwatch()
	if err := w.send(nil); err != nil {
		return nil, nil, err
	}
	w.mu.Lock()
	w.hijacked = true
	c.takeReader()
	br := c.br
	c.br = nil
	w.mu.Unlock()
	if c.early.hasByte {
		br.Peek(1) // the watcher's byte, into the buffer
	}
	return c.nc, bufio.NewReadWriter(br, bufio.NewWriterSize(c.nc, 512)), nil
}

// startHead puts the head in the buffer, once; framing tells how the body
// is delimited. At the handler's end (finishing), a response with no body
// bytes and no declared length gets Content-Length: 0.
func (w *response) startHead(finishing bool) {
	if w.headSent {
		return
	}
	h := w.Header()
	req := w.req
	delete(h, "Transfer-Encoding")
	switch {
	case w.status < 200 || w.status == http.StatusNoContent:
		delete(h, "Content-Length")
	case w.noBody || w.contentLength >= 0:
	case finishing && w.written == 0:
		h["Content-Length"] = zeroLength
	case req.ProtoAtLeast(1, 1):
		w.chunked = true
		h["Transfer-Encoding"] = chunkedCoding
	default:
		w.closeAfter = true // HTTP/1.0: the body ends with the connection
	}
	if req.Close || w.c.srv.draining.Load() || httpguts.HeaderValuesContainsToken(h["Connection"], "close") ||
		finishing && !w.body.eof.Load() {
		// A body the handler left unread ends the connection too.
		w.closeAfter = true
	}
	switch {
	case w.closeAfter && !httpguts.HeaderValuesContainsToken(h["Connection"], "close"):
		h["Connection"] = connectionClose
	case !w.closeAfter && !req.ProtoAtLeast(1, 1):
		h["Connection"] = connectionKeepAlive
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{httpDate()}
	}
	w.mu.Lock()
	w.headSent = true
	w.mu.Unlock()
	b := w.buffer()
	*b = appendStatusLine(*b, w.status)
	*b = appendHeader(*b, h)
	*b = append(*b, "\r\n"...)
}

var (
	zeroLength          = []string{"0"}
	chunkedCoding       = []string{"chunked"}
	connectionClose     = []string{"close"}
	connectionKeepAlive = []string{"keep-alive"}
)

// finish ends the response after the handler returned and reports whether
// the connection may carry another request.
func (w *response) finish() bool {
	if w.hijacked {
		return false
	}
	if w.aborted {
		// The handler cut the response: what it wrote goes out, its end
		// does not, and the connection closes, so that the client sees
		// a cut response.
		if w.headSent {
			w.send(nil)
		}
		w.releaseBuffer()
		return false
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.startHead(true)
	if w.chunked {
		b := w.buffer()
		*b = append(*b, "0\r\n"...)
		*b = appendTrailer(*b, w.header)
		*b = append(*b, "\r\n"...)
	}
	if !w.noBody && w.contentLength >= 0 && w.written < w.contentLength {
		// Short: only closing tells the client the body is incomplete.
		w.closeAfter = true
	}
	if w.send(nil) != nil {
		return false
	}
	return !w.closeAfter
}

func (w *response) releaseBuffer() {
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
		writeBuffers.Put(w.buf)
		w.buf = nil
	}
}

// writeContinue writes "100 Continue" unless the response has started.
// The body's reader calls it, on whatever goroutine reads the body.
func (w *response) writeContinue() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.headSent || w.hijacked {
		return
	}
	w.c.nc.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
}

func appendStatusLine(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	b = append(b, text...)
	return append(b, "\r\n"...)
}

// appendHeader appends h's fields, except trailers, empty ones and
// invalid names; CR and LF in values become spaces, as net/http does, so
// that no value can end the head early.
func appendHeader(b []byte, h http.Header) []byte {
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			b = appendField(b, k, v)
		}
	}
	return b
}

// appendTrailer appends the fields of h with http.TrailerPrefix, without
// it.
func appendTrailer(b []byte, h http.Header) []byte {
	for k, vv := range h {
		name, ok := strings.CutPrefix(k, http.TrailerPrefix)
		if !ok || !httpguts.ValidHeaderFieldName(name) {
			continue
		}
		for _, v := range vv {
			b = appendField(b, name, v)
		}
	}
	return b
}

func appendField(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	start := len(b)
	b = append(b, value...)
	for i := start; i < len(b); i++ {
		if b[i] == '\r' || b[i] == '\n' {
			b[i] = ' '
		}
	}
	return append(b, "\r\n"...)
}

// httpDate is the Date header's value now, made at most once a second.
func httpDate() string {
	now := time.Now()
	sec := now.Unix()
	if d := cachedDate.Load(); d != nil && d.sec == sec {
		return d.value
	}
	d := &dateValue{sec: sec, value: now.UTC().Format(http.TimeFormat)}
	cachedDate.Store(d)
	return d.value
}

type dateValue struct {
	sec   int64
	value string
}

var cachedDate atomic.Pointer[dateValue]

// requestBody is a request's body as the handler reads it. At its end the
// connection's read buffer is given back and the request may be watched
// for a client that leaves. It may be read by a goroutine other than the
// handler's, one at a time.
type requestBody struct {
	w            *response
	rc           io.ReadCloser
	eof          atomic.Bool
	closed       atomic.Bool
	sendContinue bool
}

func (b *requestBody) Read(p []byte) (int, error) {
	switch {
	case b.closed.Load():
		return 0, http.ErrBodyReadAfterClose
	case b.eof.Load():
		return 0, io.EOF
	}
	if b.sendContinue {
		b.sendContinue = false
		b.w.writeContinue()
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.ended()
	}
	return n, err
}

// ended records the body's end.
func (b *requestBody) ended() {
	b.eof.Store(true)
	w := b.w
	w.mu.Lock()
	if !w.hijacked {
		w.c.releaseReader(false)
	}
	w.mu.Unlock()
	w.c.watchable()
}

// Close makes later reads fail; what is left of the body is not read (the
// connection then closes after the response).
func (b *requestBody) Close() error {
	b.closed.Store(true)
	return nil
}

var (
	_ http.ResponseWriter = (*response)(nil)
	_ http.Flusher        = (*response)(nil)
	_ http.Hijacker       = (*response)(nil)
)
