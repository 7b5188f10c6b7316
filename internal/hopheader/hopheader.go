// Package hopheader holds the HTTP header rules that every hop of airlock
// applies in the same way, the edge towards its clients and the relay towards
// the upstream: which headers belong to one connection and never cross a hop
// (RFC 9110, section 7.6.1), and how an upgrade request is recognised.
//
// Keeping them in one place means the edge and the relay can never disagree
// about what a hop-by-hop header is. Client credentials and client addresses
// are end-to-end headers, dropped for where they come from rather than per
// connection: package clientheader holds those.
package hopheader

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"github.com/airlock-proxy/airlock/proto"

	"golang.org/x/net/http/httpguts"
)

// Fixed lists the headers that belong to one HTTP connection and are dropped
// at every hop, besides the fields named in Connection. Alt-Svc is among them:
// it advertises the sender's endpoints, which mean nothing past the hop.
// Upgrade is added back for upgrade requests and 101 responses.
var Fixed = []string{
	"Connection",
	"Proxy-Connection", // non-standard, sent by some clients
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",      // canonical form of "TE"
	"Trailer", // not Trailers (RFC 9110, section 6.6.2)
	"Transfer-Encoding",
	"Upgrade",
	"Alt-Svc",
}

// Remove deletes, in place, every header named in any Connection value and
// then the Fixed list. It applies to request headers, response headers and
// trailers alike.
func Remove(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, name := range Fixed {
		h.Del(name)
	}
}

// IsFixed reports whether a canonical header name is in the Fixed list.
func IsFixed(name string) bool { return slices.Contains(Fixed, name) }

// UpgradeType returns the protocol h asks to switch to: the Upgrade value
// when Connection has the token "upgrade", else "" (also when Upgrade is
// absent: nothing to switch to). ok is false when the value is not printable
// ASCII without spaces (checklist: reject it).
func UpgradeType(h http.Header) (typ string, ok bool) {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return "", true
	}
	if typ = h.Get("Upgrade"); typ == "" {
		return "", true
	}
	return typ, proto.Printable(typ)
}
