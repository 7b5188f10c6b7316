package proto

import (
	"math"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// RequestHead opens the edge → relay direction of an exchange.
type RequestHead struct {
	// Method is the HTTP method, an HTTP token. Required.
	Method string
	// Path is the request target below the edge's /v1, with its query
	// ("/chat/completions?x=1"). It starts with "/". The relay joins it under
	// an upstream's base URL and never lets it name another host.
	Path string
	// Header holds the end-to-end request headers. Hop-by-hop headers and
	// client credentials are removed by the edge before it sends the head.
	Header http.Header
	// RequestID identifies the request in both sides' logs.
	RequestID string
	// Upstream names the relay upstream to use; empty means the relay's
	// default.
	Upstream string
	// Client names the edge's client, for the relay's logs only.
	Client string
	// ContentLength is the request body's length, or -1 when unknown.
	ContentLength int64
}

// ResponseHead opens the relay → edge direction of an exchange.
type ResponseHead struct {
	// Status is the HTTP status code, 100 to 599.
	Status int
	// Header holds the end-to-end response headers.
	Header http.Header
	// ContentLength is the response body's length, or -1 when unknown.
	ContentLength int64
	// UpstreamTime is how long the upstream took to send this head, as
	// the relay measured it (0: not measured, e.g. an answer of the relay's
	// own). The edge subtracts it from its own time to first byte to tell
	// what airlock added.
	UpstreamTime time.Duration
}

// Field tags of RequestHead.
const (
	tagReqMethod        = 1
	tagReqPath          = 2
	tagReqHeader        = 3
	tagReqRequestID     = 4
	tagReqUpstream      = 5
	tagReqClient        = 6
	tagReqContentLength = 7
)

// Field tags of ResponseHead.
const (
	tagRespStatus        = 1
	tagRespHeader        = 2
	tagRespContentLength = 3
	tagRespUpstreamTime  = 4 // microseconds
)

// Field tags of END and RESET payloads.
const (
	tagEndTrailer   = 1
	tagResetCode    = 1
	tagResetMessage = 2
)

// contentLengthField maps -1 ("unknown") to 0 on the wire and n to n+1.
func contentLengthField(n int64) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(n) + 1
}

func contentLengthValue(v uint64) int64 {
	if v == 0 || v-1 > 1<<62 {
		return -1
	}
	return int64(v - 1)
}

// AppendRequestHead appends the encoded head to b.
func AppendRequestHead(b []byte, h *RequestHead) []byte {
	e := fieldEncoder{b}
	e.string(tagReqMethod, h.Method)
	e.string(tagReqPath, h.Path)
	e.header(tagReqHeader, h.Header)
	e.stringIfSet(tagReqRequestID, h.RequestID)
	e.stringIfSet(tagReqUpstream, h.Upstream)
	e.stringIfSet(tagReqClient, h.Client)
	e.uint(tagReqContentLength, contentLengthField(h.ContentLength))
	return e.b
}

// DecodeRequestHead decodes and validates a HEAD payload from the edge.
func DecodeRequestHead(p []byte, lim Limits) (*RequestHead, error) {
	lim = lim.withDefaults()
	h := &RequestHead{ContentLength: -1}
	d := newHeadDecoder(p)
	count := 0
	for d.next() {
		switch d.tag {
		case tagReqMethod:
			h.Method = d.str()
		case tagReqPath:
			h.Path = d.str()
		case tagReqHeader:
			d.header(&h.Header, &count, lim, "request head")
		case tagReqRequestID:
			h.RequestID = d.str()
		case tagReqUpstream:
			h.Upstream = d.str()
		case tagReqClient:
			h.Client = d.str()
		case tagReqContentLength:
			h.ContentLength = contentLengthValue(d.uint("request head: content length"))
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if h.Method == "" || !isToken(h.Method) {
		return nil, protocolErrorf("request head: invalid method %q", h.Method)
	}
	if !strings.HasPrefix(h.Path, "/") || !Printable(h.Path) {
		return nil, protocolErrorf("request head: invalid path %q", h.Path)
	}
	for _, f := range []struct{ name, v string }{
		{"request id", h.RequestID}, {"upstream", h.Upstream}, {"client", h.Client},
	} {
		if !Printable(f.v) {
			return nil, protocolErrorf("request head: invalid %s %q", f.name, f.v)
		}
	}
	if h.Header == nil {
		h.Header = make(http.Header)
	}
	return h, nil
}

// AppendResponseHead appends the encoded head to b.
func AppendResponseHead(b []byte, h *ResponseHead) []byte {
	e := fieldEncoder{b}
	e.uint(tagRespStatus, uint64(h.Status))
	e.header(tagRespHeader, h.Header)
	e.uint(tagRespContentLength, contentLengthField(h.ContentLength))
	if h.UpstreamTime > 0 {
		e.uint(tagRespUpstreamTime, uint64(h.UpstreamTime/time.Microsecond))
	}
	return e.b
}

// DecodeResponseHead decodes and validates a HEAD payload from the relay.
func DecodeResponseHead(p []byte, lim Limits) (*ResponseHead, error) {
	lim = lim.withDefaults()
	h := &ResponseHead{ContentLength: -1}
	d := newHeadDecoder(p)
	count := 0
	var status uint64
	for d.next() {
		switch d.tag {
		case tagRespStatus:
			status = d.uint("response head: status")
		case tagRespHeader:
			d.header(&h.Header, &count, lim, "response head")
		case tagRespContentLength:
			h.ContentLength = contentLengthValue(d.uint("response head: content length"))
		case tagRespUpstreamTime:
			us := d.uint("response head: upstream time")
			if us > math.MaxInt64/uint64(time.Microsecond) {
				return nil, protocolErrorf("response head: upstream time %d µs out of range", us)
			}
			h.UpstreamTime = time.Duration(us) * time.Microsecond
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if status < 100 || status > 599 {
		return nil, protocolErrorf("response head: invalid status %d", status)
	}
	h.Status = int(status)
	if h.Header == nil {
		h.Header = make(http.Header)
	}
	return h, nil
}

// appendTrailer encodes an END payload.
func appendTrailer(b []byte, t http.Header) []byte {
	e := fieldEncoder{b}
	e.header(tagEndTrailer, t)
	return e.b
}

// decodeTrailer decodes an END payload; it returns nil for no trailers.
func decodeTrailer(p []byte, lim Limits) (http.Header, error) {
	var t http.Header
	d := newHeadDecoder(p)
	count := 0
	for d.next() {
		if d.tag == tagEndTrailer {
			d.header(&t, &count, lim, "trailers")
		}
	}
	return t, d.err
}

// appendReset encodes a RESET payload, truncating the message to fit.
func appendReset(b []byte, code ResetCode, msg string) []byte {
	const room = MaxResetSize - 16
	if len(msg) > room {
		msg = msg[:room]
	}
	e := fieldEncoder{b}
	e.uint(tagResetCode, uint64(code))
	e.stringIfSet(tagResetMessage, msg)
	return e.b
}

// decodeReset decodes a RESET payload.
func decodeReset(p []byte) (*ResetError, error) {
	r := &ResetError{}
	d := fieldDecoder{b: p}
	for d.next() {
		switch d.tag {
		case tagResetCode:
			c := d.uint("reset: code")
			if c > 1<<32-1 {
				return nil, protocolErrorf("reset: code %d out of range", c)
			}
			r.Code = ResetCode(c)
		case tagResetMessage:
			r.Message = strings.ToValidUTF8(string(d.val), "?")
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if r.Code == 0 {
		return nil, protocolErrorf("reset: missing code")
	}
	return r, nil
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) {
			return false
		}
	}
	return true
}

// Printable reports whether s has only bytes 0x21 to 0x7e (the empty string
// has none). Paths, ids and names in heads never carry spaces, control
// characters or non-ASCII bytes; edge and relay check names against it.
func Printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
