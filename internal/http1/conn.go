package http1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// errServerClosed: the upstream closed a connection without a byte of
// answer, which is what a connection it closed while idle looks like.
var errServerClosed = errors.New("the upstream closed the connection before answering")

// errHeadTooLarge: a response head or trailer section passed the limit.
var errHeadTooLarge = errors.New("larger than the limit")

// aLongTimeAgo is a deadline in the past: setting it makes every blocked
// and future read and write of a connection fail at once.
var aLongTimeAgo = time.Unix(1, 0)

// conn is one connection to the origin, used by one round trip at a time.
type conn struct {
	pool *Pool
	nc   net.Conn
	tcp  *net.TCPConn // under nc, for the liveness peek; nil if not TCP
	lim  limitReader
	br   *bufio.Reader // reads lim
	tp   textproto.Reader

	reused    bool      // taken from the pool
	idleSince time.Time // when it was last put back

	// writeDone receives the result of the goroutine that writes a
	// streamed request body; nil when the body went with the head, or
	// once writeErr holds the result.
	writeDone chan error
	writeErr  error
}

// limitReader is a connection as its read buffer sees it (the client's and
// the server's): while n is not negative, at most n more bytes (a head being
// read), then errHeadTooLarge.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// interrupt makes every blocked and future read and write of c fail; c is
// not used again. It is what a round trip's context does when it ends.
func (c *conn) interrupt() { c.nc.SetDeadline(aLongTimeAgo) }

func (c *conn) close() { c.nc.Close() }

// roundTrip sends msg (the request head, with a small body) and a streamed
// body, and reads the response head. On error c is closed.
func (c *conn) roundTrip(ctx context.Context, req *Request, msg []byte) (*http.Response, error) {
	// The head's deadline is set before the watch on ctx starts, so that
	// it can never undo the watch's interrupt.
	if t := c.pool.opt.ResponseHeaderTimeout; t > 0 {
		c.nc.SetReadDeadline(time.Now().Add(t))
	}
	stop := context.AfterFunc(ctx, c.interrupt)
	resp, err := c.send(ctx, req, msg, stop)
	if err != nil {
		stop()
		c.close()
		if ctx.Err() != nil {
			cause := fmt.Errorf("upstream request: %w", context.Cause(ctx))
			if Unsent(err) {
				return nil, &unsentError{cause}
			}
			return nil, cause
		}
		return nil, err
	}
	return resp, nil
}

func (c *conn) send(ctx context.Context, req *Request, msg []byte, stop func() bool) (*http.Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, &unsentError{err}
	}
	if n, err := c.nc.Write(msg); err != nil {
		err = fmt.Errorf("writing request: %w", err)
		if n == 0 {
			return nil, &unsentError{err}
		}
		return nil, err
	}
	if req.streamed() {
		c.writeDone, c.writeErr = make(chan error, 1), nil
		go c.writeBody(req)
	}
	resp, err := c.readResponse(req)
	if err != nil {
		return nil, err
	}
	if c.pool.opt.ResponseHeaderTimeout > 0 {
		c.nc.SetReadDeadline(time.Time{})
		// An interrupt between the head and here was undone by the
		// line above; the context tells.
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	b := &body{c: c, ctx: ctx, resp: resp, stop: stop}
	if err := b.frame(req); err != nil {
		return nil, err
	}
	resp.Body = b
	return resp, nil
}

// readResponse reads response heads until a final one.
func (c *conn) readResponse(req *Request) (*http.Response, error) {
	max := int64(c.pool.opt.MaxHeaderBytes)
	for interim := 0; ; interim++ {
		c.lim.n = max
		line, err := c.tp.ReadLine()
		if err != nil {
			if interim == 0 && c.lim.n == max && c.br.Buffered() == 0 && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
				return nil, errServerClosed
			}
			return nil, c.headError("reading response status line", err)
		}
		resp, err := parseStatusLine(line)
		if err != nil {
			return nil, err
		}
		h, err := c.tp.ReadMIMEHeader()
		if err != nil {
			return nil, c.headError("reading response header", err)
		}
		c.lim.n = -1
		resp.Header = http.Header(h)
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errors.New("the upstream switched protocols (101), which a request without Upgrade cannot accept")
		case resp.StatusCode < 200 && interim < max1xx:
			continue
		case resp.StatusCode < 200:
			return nil, fmt.Errorf("more than %d interim (1xx) responses", max1xx)
		}
		return resp, nil
	}
}

// headError wraps a failure to read a head. A head that reached the limit
// is named as too large, whatever the parser made of its cut last line. A
// streamed body that could not be read is named as the cause: its failure
// cut the connection.
func (c *conn) headError(what string, err error) error {
	if err := c.sourceFailure(); err != nil {
		return err
	}
	switch {
	case c.lim.n == 0 || errors.Is(err, errHeadTooLarge):
		return fmt.Errorf("%s: the head is larger than %d bytes", what, c.pool.opt.MaxHeaderBytes)
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: %w", what, err)
}

// sourceFailure returns the failure to read a streamed request body, if
// that is what ended the body writer.
func (c *conn) sourceFailure() error {
	if finished, err := c.writer(); finished {
		if _, ok := errors.AsType[*sourceError](err); ok {
			return err
		}
	}
	return nil
}

// parseStatusLine parses "HTTP/1.x NNN reason".
func parseStatusLine(line string) (*http.Response, error) {
	version, rest, ok := strings.Cut(line, " ")
	major, minor, vok := http.ParseHTTPVersion(version)
	if !ok || !vok || major != 1 {
		return nil, fmt.Errorf("malformed response status line %q", truncate(line))
	}
	code, _, _ := strings.Cut(rest, " ")
	n, err := strconv.Atoi(code)
	if len(code) != 3 || err != nil || n < 100 {
		return nil, fmt.Errorf("malformed response status code %q", truncate(code))
	}
	return &http.Response{
		Status:     rest,
		StatusCode: n,
		Proto:      version,
		ProtoMajor: major,
		ProtoMinor: minor,
	}, nil
}

// truncate shortens s for an error message.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// writeBody writes a streamed request body, chunked when its length is
// unknown, and sends the result on c.writeDone. A body that knows how to
// copy itself (io.WriterTo, such as a tunnel stream's frames) writes to the
// connection directly; any other is read through a pooled buffer. Either
// way each write of the body is one write (or one chunk) on the wire.
//
// A body that cannot be read interrupts c: the upstream would wait for the
// rest forever. A failed write does not: the upstream may have answered and
// closed, and its answer is still to be read.
func (c *conn) writeBody(req *Request) {
	w := &bodyWriter{nc: c.nc, left: req.ContentLength}
	var err error
	if wt, ok := req.Body.(io.WriterTo); ok {
		_, err = wt.WriteTo(w)
	} else {
		bp := getBuffer()
		if cap(*bp) < copyBufferSize {
			*bp = make([]byte, 0, copyBufferSize)
		}
		// Wrapped, so that CopyBuffer reads into buf rather than
		// asking the body how to copy itself.
		_, err = io.CopyBuffer(w, struct{ io.Reader }{req.Body}, (*bp)[:copyBufferSize])
		putBuffer(bp)
	}
	err = w.end(err)
	// The result goes out first, so that a reader cut by the interrupt
	// finds what cut it.
	c.writeDone <- err
	if _, ok := errors.AsType[*sourceError](err); ok {
		c.interrupt()
	}
}

// copyBufferSize is the buffer a body without WriteTo is copied through.
const copyBufferSize = 32 << 10

// sourceError is a failure to read the request body.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return "reading request body: " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// bodyWriter is the connection as a streamed body is copied to it: it
// checks a body of known length against its length, or writes each Write as
// one chunk.
type bodyWriter struct {
	nc   net.Conn
	left int64 // bytes still due; negative: chunked
	hdr  [chunkRoom]byte
	err  error // the first failure, the writer's own
}

func (w *bodyWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.left < 0 {
		if len(p) == 0 {
			// A chunk of no data is the last chunk: it would end the
			// body here.
			return 0, nil
		}
		size := strconv.AppendUint(w.hdr[:0], uint64(len(p)), 16)
		bufs := net.Buffers{append(size, "\r\n"...), p, crlf}
		if _, err := bufs.WriteTo(w.nc); err != nil {
			w.err = fmt.Errorf("writing request body: %w", err)
			return 0, w.err
		}
		return len(p), nil
	}
	if int64(len(p)) > w.left {
		w.err = &sourceError{errors.New("longer than its Content-Length")}
		return 0, w.err
	}
	n, err := w.nc.Write(p)
	w.left -= int64(n)
	if err != nil {
		w.err = fmt.Errorf("writing request body: %w", err)
	}
	return n, w.err
}

// end finishes the body once the copy returned err: the writer's own
// failure if it had one, a failure to read the body, a body shorter than
// its length, or the last chunk written.
func (w *bodyWriter) end(err error) error {
	switch {
	case w.err != nil:
		return w.err
	case err != nil:
		return &sourceError{err}
	case w.left > 0:
		return &sourceError{errors.New("shorter than its Content-Length")}
	case w.left < 0:
		if _, err := w.nc.Write([]byte("0\r\n\r\n")); err != nil {
			return fmt.Errorf("writing request body: %w", err)
		}
	}
	return nil
}

// crlf ends a chunk.
var crlf = []byte("\r\n")

// chunkRoom is the room for a chunk's size line.
const chunkRoom = len("ffffffffffffffff\r\n")

// writer reports whether the goroutine writing a streamed request body
// has finished, and with what error; with no such goroutine, it has, with
// none.
func (c *conn) writer() (finished bool, err error) {
	if c.writeDone != nil {
		select {
		case c.writeErr = <-c.writeDone:
			c.writeDone = nil
		default:
			return false, nil
		}
	}
	return true, c.writeErr
}

// keepAlive reports whether the connection may serve another request after
// resp, by its version and Connection header.
func keepAlive(resp *http.Response) bool {
	return resp.ProtoAtLeast(1, 1) && !httpguts.HeaderValuesContainsToken(resp.Header["Connection"], "close")
}
