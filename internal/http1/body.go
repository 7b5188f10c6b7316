package http1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
)

// How a response body is delimited (RFC 9112, section 6.3).
const (
	byLength  = iota // Content-Length, or no body at all (length 0)
	byChunks         // Transfer-Encoding: chunked
	byClosing        // neither: the body ends when the upstream closes
)

// errBodyClosed is what reads of a closed body return.
var errBodyClosed = errors.New("read on a closed response body")

// body is a response body read from its connection. When it has been read
// to its end, the connection goes back to the pool; closed before that, the
// connection is closed. It is read by one goroutine.
type body struct {
	c    *conn
	ctx  context.Context
	resp *http.Response
	stop func() bool // stops the watch that interrupts c when ctx ends

	mode      int
	remaining int64     // byLength: bytes still to read
	chunks    io.Reader // byChunks: the chunked decoder over c.br
	keepAlive bool

	done bool
	err  error // what reads return once done
}

// frame decides from the response head how its body is delimited, and sets
// resp.ContentLength as net/http would.
func (b *body) frame(req *Request) error {
	resp := b.resp
	h := resp.Header
	b.keepAlive = keepAlive(resp)
	te := h["Transfer-Encoding"]
	switch {
	case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified:
		resp.ContentLength = 0
	case req.Method == http.MethodHead:
		resp.ContentLength = -1
		if n, err := contentLength(h["Content-Length"]); err == nil {
			resp.ContentLength = n
		}
	case len(te) > 0:
		if len(te) != 1 || !strings.EqualFold(strings.TrimSpace(te[0]), "chunked") {
			return fmt.Errorf("unsupported response Transfer-Encoding %q", truncate(strings.Join(te, ", ")))
		}
		if _, ok := h["Content-Length"]; ok {
			// Both: the coding wins, and the connection is not to be
			// trusted with another request (RFC 9112, section 6.3).
			delete(h, "Content-Length")
			b.keepAlive = false
		}
		delete(h, "Transfer-Encoding")
		resp.TransferEncoding = []string{"chunked"}
		resp.ContentLength = -1
		b.mode = byChunks
		b.chunks = httputil.NewChunkedReader(b.c.br)
	case len(h["Content-Length"]) > 0:
		n, err := contentLength(h["Content-Length"])
		if err != nil {
			return err
		}
		resp.ContentLength = n
		b.remaining = n
	default:
		resp.ContentLength = -1
		b.mode = byClosing
		b.keepAlive = false
	}
	resp.Close = !b.keepAlive
	return nil
}

// contentLength parses Content-Length values, which must agree.
func contentLength(values []string) (int64, error) {
	if len(values) == 0 {
		return -1, errors.New("no Content-Length")
	}
	first := strings.TrimSpace(values[0])
	for _, v := range values[1:] {
		if strings.TrimSpace(v) != first {
			return -1, fmt.Errorf("conflicting response Content-Length values %q", truncate(strings.Join(values, ", ")))
		}
	}
	n, err := strconv.ParseUint(first, 10, 63)
	if err != nil || first == "" || first[0] == '+' {
		return -1, fmt.Errorf("malformed response Content-Length %q", truncate(first))
	}
	return int64(n), nil
}

// Read reads the body; at its end it returns io.EOF, possibly with the last
// bytes.
func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, b.err
	}
	var n int
	var err error
	switch b.mode {
	case byLength:
		if b.remaining == 0 {
			return 0, b.finish()
		}
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err = b.c.br.Read(p)
		b.remaining -= int64(n)
		switch {
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		case err == nil && b.remaining == 0:
			return n, b.finish()
		}
	case byChunks:
		n, err = b.chunks.Read(p)
		if err == io.EOF {
			if err = b.readTrailer(); err == nil {
				return n, b.finish()
			}
		}
	case byClosing:
		n, err = b.c.br.Read(p)
		if err == io.EOF {
			return n, b.finish()
		}
	}
	if err != nil {
		return n, b.fail(err)
	}
	return n, nil
}

// WaitReadable blocks until the connection has bytes for the body (or the
// body has ended), so that a caller can wait without a buffer of its own:
// the connection's read buffer takes them (proto.Writer.ReadFrom uses it).
// A failure ends the body, as it would in Read.
func (b *body) WaitReadable() error {
	if b.done || b.mode == byLength && b.remaining == 0 || b.c.br.Buffered() > 0 {
		return nil
	}
	if _, err := b.c.br.Peek(1); err != nil {
		if err == io.EOF && b.mode == byClosing {
			return nil // the body's end: Read says so
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return b.fail(err)
	}
	return nil
}

// TakeWhole appends to dst the rest of the body when its connection has
// read all of it already (a small response arrives with its head), and
// ends the body: the connection goes back to the pool before the caller
// passes the bytes on, so that a next request finds it there. It returns
// false, and takes nothing, when more is to come from the network or the
// body's length is not known.
func (b *body) TakeWhole(dst []byte) ([]byte, bool) {
	switch {
	case b.done || b.mode != byLength:
		return dst, false
	case int64(b.c.br.Buffered()) < b.remaining:
		return dst, false
	}
	p, err := b.c.br.Peek(int(b.remaining))
	if err != nil {
		return dst, false
	}
	dst = append(dst, p...)
	b.c.br.Discard(len(p))
	b.remaining = 0
	b.finish()
	return dst, true
}

// readTrailer reads the trailer section after the last chunk into
// resp.Trailer.
func (b *body) readTrailer() error {
	c := b.c
	max := int64(c.pool.opt.MaxHeaderBytes)
	c.lim.n = max
	defer func() { c.lim.n = -1 }()
	if p, err := c.br.Peek(2); err == nil && string(p) == "\r\n" {
		c.br.Discard(2)
		return nil
	}
	t, err := c.tp.ReadMIMEHeader()
	if err != nil {
		return c.headError("reading response trailer", err)
	}
	if len(t) > 0 {
		b.resp.Trailer = http.Header(t)
	}
	return nil
}

// finish ends a body read whole: its connection goes back to the pool if
// it may serve another request.
func (b *body) finish() error {
	b.done, b.err = true, io.EOF
	c := b.c
	finished, err := c.writer()
	if b.stop() && b.keepAlive && c.br.Buffered() == 0 && finished && err == nil {
		c.pool.put(c)
	} else {
		c.close()
	}
	return io.EOF
}

// fail ends a body cut short; the error says by what.
func (b *body) fail(err error) error {
	b.done = true
	b.stop()
	b.c.close()
	switch {
	case b.ctx.Err() != nil:
		err = context.Cause(b.ctx)
	default:
		if src := b.c.sourceFailure(); src != nil {
			b.err = src
			return b.err
		}
	}
	b.err = fmt.Errorf("reading response body: %w", err)
	return b.err
}

// Close ends the body. Unread, its connection is closed: draining it could
// take as long as the upstream likes.
func (b *body) Close() error {
	if b.done {
		return nil
	}
	if b.mode == byLength && b.remaining == 0 {
		b.finish()
		return nil
	}
	b.done, b.err = true, errBodyClosed
	b.stop()
	b.c.close()
	return nil
}
