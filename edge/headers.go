package edge

import (
	"net"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/airlock-proxy/airlock/internal/clientheader"
	"github.com/airlock-proxy/airlock/internal/hopheader"

	"golang.org/x/net/http/httpguts"
)

// airlockHeaderPrefix starts the headers that talk to airlock itself
// (Airlock-Upstream); none of them is forwarded.
const airlockHeaderPrefix = "Airlock-"

// Headers the edge reads or sets.
const (
	headerUpstream  = "Airlock-Upstream"
	headerRequestID = "Airlock-Request-Id"
	// headerOverhead carries the time airlock itself added before the
	// first byte: the edge's time to the response head less the time the
	// upstream took, as the relay measured it, in milliseconds.
	headerOverhead = "Airlock-Overhead-Ms"
)

// requestHeader makes r's headers those to send in the request head, in
// place, and returns them: without hop-by-hop fields, client credentials
// (clientheader, so that a client's key never enters the tunnel),
// Content-Length and Airlock-* fields, with the client's address appended
// to X-Forwarded-For and, for an upgrade, Connection and Upgrade added back.
// Client addresses stay in the head: the relay drops them
// (clientheader.RemoveAddresses) unless it is configured to forward them.
// In place, not a copy (a copy was a tenth of the edge's allocations per
// small request): the exchange has read the key, Airlock-Upstream and
// Upgrade by then, and Origin, which the answer's CORS headers need, stays.
// It is called once per request.
func requestHeader(r *http.Request, upgrade string) http.Header {
	h := r.Header
	if h == nil {
		h = make(http.Header)
		r.Header = h
	}
	// Te is hop-by-hop, but "trailers" says the client can take trailers,
	// which the relay needs to know for gRPC-style upstreams (Go issue 21096).
	trailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	hopheader.Remove(h)
	clientheader.RemoveCredentials(h)
	// The head's ContentLength is the one source of the length.
	h.Del("Content-Length")
	for k := range h {
		if strings.HasPrefix(k, airlockHeaderPrefix) {
			delete(h, k)
		}
	}
	if trailers {
		h.Set("Te", "trailers")
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := h["X-Forwarded-For"]; len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		h.Set("X-Forwarded-For", ip)
	}
	if upgrade != "" {
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", upgrade)
	}
	return h
}

// isEventStream reports whether a Content-Type is text/event-stream, with or
// without parameters such as charset. It reads only the media type, which
// costs nothing per response; mime.ParseMediaType would build a map of the
// parameters.
func isEventStream(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// escapeQuery percent-encodes the bytes of a raw query that proto does not
// carry in a path (controls, spaces, non-ASCII). Such bytes can reach us from
// lenient clients; encoding them keeps the query's meaning.
func escapeQuery(q string) string {
	i := 0
	for i < len(q) && q[i] > ' ' && q[i] < 0x7f {
		i++
	}
	if i == len(q) {
		return q
	}
	const hexDigits = "0123456789ABCDEF"
	b := make([]byte, 0, len(q)+16)
	b = append(b, q[:i]...)
	for ; i < len(q); i++ {
		c := q[i]
		if c > ' ' && c < 0x7f {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hexDigits[c>>4], hexDigits[c&0xf])
	}
	return string(b)
}

// CORS.
//
// Browsers send a preflight OPTIONS without credentials before a cross-origin
// request that carries Authorization, so the edge answers preflights itself,
// without a key: a preflight reveals nothing and reaches no upstream, and the
// real request that follows still needs a valid key. Responses allow any
// origin ("*"): the edge authenticates by key, never by cookie, so a
// wildcard origin grants a page nothing its key does not.

// corsAllowHeaders are allowed when a preflight names none; a preflight's
// Access-Control-Request-Headers are echoed back instead, so that SDK headers
// such as X-Stainless-* or OpenAI-Beta pass (a CORS wildcard never covers
// Authorization, so listing is required).
const corsAllowHeaders = "Authorization, Content-Type, Api-Key, OpenAI-Organization, OpenAI-Project, OpenAI-Beta, Airlock-Upstream, X-Request-Id"

const corsAllowMethods = "GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD"

// isPreflight reports whether r is a CORS preflight request.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != ""
}

// setCORS adds the headers a cross-origin response needs to be readable.
func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", "*")
}

// writePreflight answers a CORS preflight with 204.
func writePreflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", corsAllowMethods)
	allow := corsAllowHeaders
	if req := r.Header.Values("Access-Control-Request-Headers"); len(req) > 0 {
		allow = strings.Join(req, ", ")
		if !validTokenList(allow) {
			allow = corsAllowHeaders
		}
	}
	h.Set("Access-Control-Allow-Headers", allow)
	h.Set("Access-Control-Max-Age", "7200")
	h.Add("Vary", "Access-Control-Request-Headers")
	w.WriteHeader(http.StatusNoContent)
}

// validTokenList reports whether s is a comma-separated list of HTTP tokens,
// so that echoing it cannot inject anything into a header.
func validTokenList(s string) bool {
	for f := range strings.SplitSeq(s, ",") {
		f = textproto.TrimString(f)
		if f == "" {
			continue
		}
		if !httpguts.ValidHeaderFieldName(f) {
			return false
		}
	}
	return true
}
