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

// limitReader is the connection as its read buffer sees it: while n is not
// negative, at most n more bytes (a head being read), then errHeadTooLarge.
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
// unknown, and sends the result on c.writeDone. A body that cannot be read
// interrupts c: the upstream would wait for the rest forever. A failed
// write does not: the upstream may have answered and closed, and its
// answer is still to be read.
func (c *conn) writeBody(req *Request) {
	bp := getBuffer()
	defer putBuffer(bp)
	if cap(*bp) < copyBufferSize {
		*bp = make([]byte, 0, copyBufferSize)
	}
	buf := (*bp)[:copyBufferSize]
	var err error
	switch wt, ok := req.Body.(io.WriterTo); {
	case ok:
		err = c.writeBodyTo(wt, req.ContentLength)
	case req.chunked():
		err = c.writeChunked(req.Body, buf)
	default:
		err = c.writeLength(req.Body, req.ContentLength, buf)
	}
	// The result goes out first, so that a reader cut by the interrupt
	// finds what cut it.
	c.writeDone <- err
	if _, ok := errors.AsType[*sourceError](err); ok {
		c.interrupt()
	}
}

// copyBufferSize is the buffer a streamed body is copied through.
const copyBufferSize = 32 << 10

// sourceError is a failure to read the request body.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return "reading request body: " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// writeLength copies a body of n bytes, and checks that it ends there.
func (c *conn) writeLength(r io.Reader, n int64, buf []byte) error {
	for n > 0 {
		m, err := r.Read(buf[:min(int64(len(buf)), n)])
		if m > 0 {
			if _, werr := c.nc.Write(buf[:m]); werr != nil {
				return fmt.Errorf("writing request body: %w", werr)
			}
			n -= int64(m)
		}
		switch {
		case err == io.EOF && n > 0:
			return &sourceError{errors.New("shorter than its Content-Length")}
		case err != nil && err != io.EOF:
			return &sourceError{err}
		}
	}
	for range maxEmptyReads {
		switch m, err := r.Read(buf[:1]); {
		case m > 0:
			return &sourceError{errors.New("longer than its Content-Length")}
		case err == io.EOF:
			return nil
		case err != nil:
			return &sourceError{err}
		}
	}
	return &sourceError{io.ErrNoProgress}
}

// writeBodyTo lets a body that knows how to copy itself (io.WriterTo, such
// as a tunnel stream's frames) write to the connection, each of its writes
// one write (or one chunk) on the wire; n is its length, -1 for chunked.
func (c *conn) writeBodyTo(body io.WriterTo, n int64) error {
	w := &bodyWriter{nc: c.nc, left: n}
	_, err := body.WriteTo(w)
	switch {
	case w.err != nil:
		return w.err
	case err != nil:
		return &sourceError{err}
	case n > 0 && w.left > 0:
		return &sourceError{errors.New("shorter than its Content-Length")}
	case n < 0:
		if _, err := c.nc.Write([]byte("0\r\n\r\n")); err != nil {
			return fmt.Errorf("writing request body: %w", err)
		}
	}
	return nil
}

// bodyWriter is the connection as a body's WriteTo sees it: it checks a
// body of known length against it, or writes each Write as one chunk.
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

// crlf ends a chunk.
var crlf = []byte("\r\n")

// chunkRoom is the room kept before a chunk for its size line.
const chunkRoom = len("ffffffffffffffff\r\n")

// writeChunked copies a body of unknown length in chunked coding, each read
// as one chunk in one write.
func (c *conn) writeChunked(r io.Reader, buf []byte) error {
	data := buf[chunkRoom : len(buf)-2]
	for {
		m, err := r.Read(data)
		if m > 0 {
			size := strconv.AppendUint(buf[:0:chunkRoom], uint64(m), 16)
			size = append(size, "\r\n"...)
			start := chunkRoom - len(size)
			copy(buf[start:], size)
			end := chunkRoom + m
			buf[end], buf[end+1] = '\r', '\n'
			if _, werr := c.nc.Write(buf[start : end+2]); werr != nil {
				return fmt.Errorf("writing request body: %w", werr)
			}
		}
		if err == io.EOF {
			if _, werr := c.nc.Write([]byte("0\r\n\r\n")); werr != nil {
				return fmt.Errorf("writing request body: %w", werr)
			}
			return nil
		}
		if err != nil {
			return &sourceError{err}
		}
	}
}

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
