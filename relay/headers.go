package relay

import (
	"net/http"
	"strings"

	"github.com/airlock-proxy/airlock/internal/clientheader"
	"github.com/airlock-proxy/airlock/internal/hopheader"

	"golang.org/x/net/http/httpguts"
)

// requestHeader builds the upstream request's headers from the edge's head:
// hop-by-hop headers, client credentials, client addresses (unless fwdAddr),
// Airlock-* headers, Host, Content-Length and Expect removed; Te: trailers,
// the upgrade headers and the client's User-Agent kept; Accept-Encoding kept
// or set to identity; the upstream's extra headers and key (nil: none) set.
// upgrade is the checked upgrade type of the request, "" for none. It edits
// in and returns it: the decoded head is the exchange's own, so a copy per
// request would only cost allocations (issue 9).
//
// The edge has removed the client's credentials already; they are removed
// again here (defence in depth: an edge of another version, or one with a
// bug, must not leak a client key to the upstream), from the same list
// (package clientheader), before the upstream's own are set. The
// upstream's configured extra headers may use credential names (x-api-key
// for an upstream that takes it): they are the relay's, not the client's.
func requestHeader(in http.Header, up *upstream, key *apiKey, fwdAddr bool, upgrade string) http.Header {
	// Te: trailers is read from the inbound head before stripping
	// (golang.org/issue/21096).
	teTrailers := httpguts.HeaderValuesContainsToken(in["Te"], "trailers")
	h := in
	if h == nil {
		h = make(http.Header)
	}
	hopheader.Remove(h)
	clientheader.RemoveCredentials(h)
	if !fwdAddr {
		clientheader.RemoveAddresses(h)
	}
	for name := range h {
		// Names are canonical (proto decodes them so), so "Airlock-" is
		// the only spelling; EqualFold keeps this true for hand-built heads.
		if len(name) >= len("Airlock-") && strings.EqualFold(name[:len("Airlock-")], "Airlock-") {
			delete(h, name)
		}
	}
	// The Host comes from the base URL, the length from the head.
	h.Del("Host")
	h.Del("Content-Length")
	// The edge's HTTP server has already answered the client's
	// "Expect: 100-continue" by reading the body; passed on, it would only
	// make the transport hold the body back for ExpectContinueTimeout.
	h.Del("Expect")
	if len(h["Accept-Encoding"]) == 0 {
		// Without this, Go's transport would ask for gzip and decompress
		// behind our back; the client gets the upstream's bytes as sent.
		h.Set("Accept-Encoding", "identity")
	}
	if teTrailers {
		h.Set("Te", "trailers")
	}
	if upgrade != "" {
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", upgrade)
	}
	for name, v := range up.headers {
		h[name] = append([]string(nil), v...)
	}
	if key != nil {
		switch up.auth {
		case AuthBearer:
			h.Set("Authorization", "Bearer "+key.secret.reveal())
		case AuthAPIKey:
			h.Set("Api-Key", key.secret.reveal())
		}
	}
	return h
}

// responseHeader returns the headers of the response head: the upstream's
// minus hop-by-hop headers and Content-Length (the head carries the length);
// for a 101, the upgrade headers are added back. It edits resp.Header in
// place, as net/http/httputil.ReverseProxy does: the transport hands the
// response over and reads its header no more.
func responseHeader(resp *http.Response, upgrade string) http.Header {
	h := resp.Header
	if h == nil {
		h = make(http.Header)
	}
	hopheader.Remove(h)
	h.Del("Content-Length")
	if resp.StatusCode == http.StatusSwitchingProtocols {
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", upgrade)
	}
	return h
}

// trailerOf returns the upstream's trailers for END, minus hop-by-hop
// headers, or nil.
func trailerOf(resp *http.Response) http.Header {
	if len(resp.Trailer) == 0 {
		return nil
	}
	t := resp.Trailer.Clone()
	hopheader.Remove(t)
	for name, v := range t {
		if len(v) == 0 {
			// Announced but never sent.
			delete(t, name)
		}
	}
	return t
}

// reservedHeader reports whether an extra configured header name (canonical)
// is one the relay controls or drops, so configuring it is a mistake.
func reservedHeader(name string) bool {
	switch name {
	case "Host", "Content-Length", "Authorization", "Api-Key":
		return true
	}
	return hopheader.IsFixed(name) || strings.HasPrefix(name, "Airlock-")
}
