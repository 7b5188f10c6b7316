package http1

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Request is one request to a Pool's origin.
type Request struct {
	// Method is the request method, an HTTP token.
	Method string
	// Target is the request target in origin form: the escaped path and
	// an optional "?query". It must be printable ASCII without spaces.
	Target string
	// Host is the Host header's value.
	Host string
	// Header holds the header fields to send. Host, Content-Length,
	// Transfer-Encoding and Connection in it are ignored: the pool frames
	// the message itself.
	Header http.Header
	// Body is the request body; nil for none.
	Body io.Reader
	// ContentLength is Body's length, or -1 when unknown (the body is then
	// sent chunked). Without a Body it is ignored.
	ContentLength int64
}

// framingHeader reports whether the pool sets or drops the header itself.
func framingHeader(name string) bool {
	switch textproto.CanonicalMIMEHeaderKey(name) {
	case "Host", "Content-Length", "Transfer-Encoding", "Connection":
		return true
	}
	return false
}

// check validates what will be written on the wire: nothing in a request
// can add a line to it.
func (r *Request) check() error {
	// A method is a token, as a header name is.
	if !httpguts.ValidHeaderFieldName(r.Method) {
		return fmt.Errorf("invalid method %q", r.Method)
	}
	if r.Target == "" || r.Target[0] != '/' || strings.ContainsFunc(r.Target, notVisible) {
		return fmt.Errorf("invalid request target %q", r.Target)
	}
	if !httpguts.ValidHostHeader(r.Host) || r.Host == "" {
		return fmt.Errorf("invalid host %q", r.Host)
	}
	for name, values := range r.Header {
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("invalid header name %q", name)
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("invalid value for header %q", name)
			}
		}
	}
	return nil
}

// small reports whether the body goes out in the head's write.
func (r *Request) small() bool {
	return r.Body != nil && r.ContentLength >= 0 && r.ContentLength <= SmallBody
}

// chunked reports whether the body goes out chunked.
func (r *Request) chunked() bool { return r.Body != nil && r.ContentLength < 0 }

// streamed reports whether a goroutine of its own writes the body.
func (r *Request) streamed() bool { return r.Body != nil && !r.small() }

// replayable reports whether a request that may have reached the upstream
// can be sent again: without a body, with a method that is safe to repeat
// or a key that makes it so (net/http's rule).
func (r *Request) replayable() bool {
	if r.Body != nil {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := r.Header["Idempotency-Key"]
	_, b := r.Header["X-Idempotency-Key"]
	return a || b
}

// appendMessage appends the request head to b and, for a small body, the
// body read to its end. A failure to read the body is returned as is.
func (r *Request) appendMessage(b []byte) ([]byte, error) {
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = append(b, r.Target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, r.Host...)
	b = append(b, "\r\n"...)
	for name, values := range r.Header {
		if framingHeader(name) {
			continue
		}
		for _, v := range values {
			b = append(b, name...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	switch {
	case r.chunked():
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	case r.Body != nil:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, r.ContentLength, 10)
		b = append(b, "\r\n"...)
	case r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch:
		// What net/http sends for an empty body of a method that
		// expects one; some servers refuse such a request without it.
		b = append(b, "Content-Length: 0\r\n"...)
	}
	b = append(b, "\r\n"...)
	if !r.small() {
		return b, nil
	}
	start := len(b)
	b = append(b, make([]byte, r.ContentLength)...)
	if _, err := io.ReadFull(r.Body, b[start:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF && r.ContentLength > 0 {
			return b, fmt.Errorf("reading request body: shorter than its Content-Length of %d", r.ContentLength)
		}
		return b, fmt.Errorf("reading request body: %w", err)
	}
	// The body must end where its length says; reading its end also
	// takes the source's end-of-body marker off the wire.
	var one [1]byte
	for range maxEmptyReads {
		switch n, err := r.Body.Read(one[:]); {
		case n > 0:
			return b, fmt.Errorf("reading request body: longer than its Content-Length of %d", r.ContentLength)
		case err == io.EOF:
			return b, nil
		case err != nil:
			return b, fmt.Errorf("reading request body: %w", err)
		}
	}
	return b, fmt.Errorf("reading request body: %w", io.ErrNoProgress)
}

// maxEmptyReads is how many reads returning nothing and no error are taken
// before a body counts as broken (io.ErrNoProgress), as in bufio.
const maxEmptyReads = 100

// notVisible reports whether r is not a visible ASCII character (0x21 to
// 0x7e), which a request target must be made of.
func notVisible(r rune) bool { return r <= ' ' || r >= 0x7f }
