// Package clientheader names the request headers by which a client inside
// the restricted network gives itself away, its credentials and its network
// addresses, and removes them. Both roles use it: the edge before a request
// head or its trailers enter the tunnel, and the relay again (defence in
// depth) before it sets the upstream's own key. With one list the two can
// never disagree about what a credential is (DESIGN.md, data path rule 3;
// issue 8, section 3).
//
// It is apart from package hopheader because the rule is another one:
// hop-by-hop headers belong to one connection and are dropped at every hop,
// in both directions; these are end-to-end request headers, dropped because
// of where they come from. Credentials never go upstream; addresses go only
// when the relay is configured to forward them (forward_client_address).
//
// Names match whatever their case, and "_" matches "-": CGI-style servers
// read both X-Api-Key and X_Api_Key as HTTP_X_API_KEY (RFC 3875, section
// 4.1.18), and so do nginx with underscores_in_headers and many frameworks
// built that way, so a credential spelled with underscores would otherwise
// reach such an upstream under its real name.
//
// The lists are principled, not exhaustive: each entry is a header that a
// standard, or a widely used API, SDK, gateway or proxy, defines to carry a
// secret or a client's address, with a comment naming who sends it. A
// transparent proxy cannot drop every header it does not know (SDKs send
// X-Stainless-*, OpenAI-Beta and more that upstreams need), so a secret
// under a private name of the client's own choosing is forwarded as it is.
package clientheader

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// credentials carry a client's secret. They never go upstream: the relay
// sets the upstream's own key.
var credentials = []string{
	// RFC 9110, section 11.6.2: OpenAI SDKs send "Bearer <key>"; any
	// other scheme (Basic, Digest, AWS SigV4) is as secret.
	"Authorization",
	// RFC 9110, section 11.7.2: credentials for a proxy. Also hop-by-hop
	// (package hopheader), listed here because it is a credential
	// whichever hop it was meant for.
	"Proxy-Authorization",
	// RFC 6265: browser sessions of services inside the restricted
	// network. OpenAI-compatible APIs use no cookies.
	"Cookie",
	// Azure OpenAI: its SDKs and the OpenAI SDKs' Azure clients.
	"Api-Key",
	// Anthropic, AWS API Gateway API keys, LiteLLM and many self-hosted
	// OpenAI-compatible servers.
	"X-Api-Key",
	// OpenStack Keystone tokens, and the convention of many self-hosted
	// APIs.
	"X-Auth-Token",
	// Google APIs, Gemini included.
	"X-Goog-Api-Key",
	// Azure API Management and Azure AI services.
	"Ocp-Apim-Subscription-Key",
	// The session token of temporary AWS credentials, sent beside a SigV4
	// Authorization (Bedrock).
	"X-Amz-Security-Token",
	// LLM gateways that OpenAI clients are set up for with a default
	// header, which stays when the base URL is pointed at airlock:
	// Cloudflare AI Gateway,
	"Cf-Aig-Authorization",
	// Helicone,
	"Helicone-Auth",
	// and Portkey.
	"X-Portkey-Api-Key",
}

// addresses carry the address or host name of a client or proxy inside the
// restricted network.
var addresses = []string{
	// RFC 7239: for=, by= and host= of each proxy.
	"Forwarded",
	// The de facto form of RFC 7239; the edge itself appends its
	// client's address.
	"X-Forwarded-For",
	// nginx (ngx_http_realip_module) and the proxies that follow it.
	"X-Real-Ip",
	// RFC 9110, section 7.6.3: each proxy the request passed, often by
	// host name.
	"Via",
	// Akamai, and Cloudflare Enterprise.
	"True-Client-Ip",
	// Several load balancers and WAFs.
	"X-Client-Ip",
	// Cloudflare.
	"Cf-Connecting-Ip",
	// Rackspace and Riverbed (Zeus) load balancers.
	"X-Cluster-Client-Ip",
	// Fastly.
	"Fastly-Client-Ip",
	// ingress-nginx: the X-Forwarded-For it received from a proxy in
	// front of it.
	"X-Original-Forwarded-For",
	// The de facto host= of RFC 7239: the internal name the client used.
	"X-Forwarded-Host",
	// Apache mod_proxy and Traefik: the proxy's own host name.
	"X-Forwarded-Server",
	// Envoy and Istio: the client's address as the mesh trusts it.
	"X-Envoy-External-Address",
}

// keyProtocolPrefix starts the WebSocket subprotocol in which a browser,
// which cannot set Authorization on a WebSocket, sends an OpenAI key to the
// Realtime API ("openai-insecure-api-key.<key>").
const keyProtocolPrefix = "openai-insecure-api-key."

var (
	credentialSet = setOf(credentials)
	addressSet    = setOf(addresses)
)

func setOf(names []string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		if key(n) != n {
			panic("clientheader: " + n + " is not canonical")
		}
		m[n] = struct{}{}
	}
	return m
}

// Credentials returns the credential header names, canonical, in a new
// slice.
func Credentials() []string { return slices.Clone(credentials) }

// Addresses returns the client address header names, canonical, in a new
// slice.
func Addresses() []string { return slices.Clone(addresses) }

// IsCredential reports whether name, in any case and with "_" for "-", is a
// client credential header.
func IsCredential(name string) bool {
	_, ok := credentialSet[key(name)]
	return ok
}

// IsAddress reports whether name, in any case and with "_" for "-", is a
// client address header.
func IsAddress(name string) bool {
	_, ok := addressSet[key(name)]
	return ok
}

// RemoveCredentials deletes, in place, every credential header of h (see
// IsCredential), and from Sec-WebSocket-Protocol the subprotocol that
// carries an OpenAI key; the other subprotocols stay, and the field goes
// when none is left. It applies to request headers and trailers alike and
// does not allocate unless it rewrites Sec-WebSocket-Protocol.
func RemoveCredentials(h http.Header) {
	for name, v := range h {
		k := key(name)
		if _, ok := credentialSet[k]; ok {
			delete(h, name)
			continue
		}
		if k == "Sec-Websocket-Protocol" {
			if v = withoutKeyProtocol(v); len(v) == 0 {
				delete(h, name)
			} else {
				h[name] = v
			}
		}
	}
}

// RemoveAddresses deletes, in place, every client address header of h (see
// IsAddress).
func RemoveAddresses(h http.Header) {
	for name := range h {
		if IsAddress(name) {
			delete(h, name)
		}
	}
}

// withoutKeyProtocol returns the Sec-WebSocket-Protocol values vs without
// the key subprotocol, or vs itself when none has it.
func withoutKeyProtocol(vs []string) []string {
	if !slices.ContainsFunc(vs, hasKeyProtocol) {
		return vs
	}
	var out []string
	for _, v := range vs {
		var kept []string
		for p := range strings.SplitSeq(v, ",") {
			if p = textproto.TrimString(p); p != "" && !isKeyProtocol(p) {
				kept = append(kept, p)
			}
		}
		if len(kept) > 0 {
			out = append(out, strings.Join(kept, ", "))
		}
	}
	return out
}

func hasKeyProtocol(v string) bool {
	for p := range strings.SplitSeq(v, ",") {
		if isKeyProtocol(textproto.TrimString(p)) {
			return true
		}
	}
	return false
}

// isKeyProtocol reports whether the subprotocol p carries a key; subprotocol
// names compare case-sensitively (RFC 6455, section 4.1), but a lenient
// server may not, so this matches any case.
func isKeyProtocol(p string) bool {
	return len(p) >= len(keyProtocolPrefix) && strings.EqualFold(p[:len(keyProtocolPrefix)], keyProtocolPrefix)
}

// key returns name in canonical MIME form with each "_" read as "-", the
// form of the sets' keys. A name already in that form, as every name
// net/http and proto decode is unless it has "_", is returned without
// allocating.
func key(name string) string {
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '_' || (upper && 'a' <= c && c <= 'z') || (!upper && 'A' <= c && c <= 'Z') {
			return foldKey(name)
		}
		upper = c == '-'
	}
	return name
}

func foldKey(name string) string {
	b := []byte(name)
	upper := true
	for i, c := range b {
		switch {
		case c == '_':
			c = '-'
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b[i] = c
		upper = c == '-'
	}
	return string(b)
}
