package relay

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/airlock-proxy/airlock/internal/http1"
	"github.com/airlock-proxy/airlock/internal/keyfile"
)

// Transport settings shared by every upstream. There is deliberately no
// overall timeout: a generation may stream for many minutes, and the edge
// cancels the request when its client goes away.
const (
	dialTimeout         = 10 * time.Second
	tlsHandshakeTimeout = 10 * time.Second
	idleConnTimeout     = 90 * time.Second
	// maxIdleConnsPerHost keeps enough warm connections for bursts of
	// concurrent HTTP/1.1 requests (HTTP/2 multiplexes on one).
	maxIdleConnsPerHost = 256
	// h2PingAfter sends an HTTP/2 PING on a connection silent this long, so
	// that a dead upstream connection is noticed during a long generation.
	h2PingAfter   = 30 * time.Second
	h2PingTimeout = 15 * time.Second
)

// upstream is one configured API with its resolved keys and its own pooled
// clients.
type upstream struct {
	name    string
	base    *url.URL
	auth    string
	keys    []*apiKey // none with auth "none"
	next    atomic.Uint64
	headers http.Header
	// pool makes the upstream's requests, on HTTP/1.1 connections it
	// keeps; nil when the upstream takes HTTP/2 or is reached through a
	// proxy (see UpstreamConfig.HTTP2).
	pool *http1.Pool
	// transport makes the requests pool does not: every upgrade
	// (WebSocket), and all of them when pool is nil.
	transport *http.Transport
}

// close closes the upstream's idle connections, and those of the exchanges
// still using it as they finish.
func (u *upstream) close() {
	u.transport.CloseIdleConnections()
	if u.pool != nil {
		u.pool.Close()
	}
}

// How long a key rests after the upstream refused it: a rate limit without
// a Retry-After, the longest Retry-After honoured, and a key the upstream
// does not accept (401, 403: revoked, or out of quota).
const (
	keyRateLimitRest = 30 * time.Second
	keyMaxRest       = 10 * time.Minute
	keyAuthRest      = 5 * time.Minute
)

// apiKey is one key of an upstream.
type apiKey struct {
	name   string
	secret secret
	// restUntil is when the key may be used again, in Unix nanoseconds;
	// 0 while it is not resting.
	restUntil atomic.Int64
}

// pickKey returns the upstream's next key in turn that is not resting or,
// when every key rests, the one whose rest ends first (a request is better
// tried than refused). nil when the upstream takes no key.
func (u *upstream) pickKey(now time.Time) *apiKey {
	n := uint64(len(u.keys))
	if n == 0 {
		return nil
	}
	start := u.next.Add(1) - 1
	var soonest *apiKey
	for i := range n {
		k := u.keys[(start+i)%n]
		until := k.restUntil.Load()
		if until <= now.UnixNano() {
			return k
		}
		if soonest == nil || until < soonest.restUntil.Load() {
			soonest = k
		}
	}
	return soonest
}

// keyRest returns how long a key should rest after the upstream answered a
// request made with it with status (and the value of its Retry-After
// header), or 0 when the answer says nothing against the key.
func keyRest(status int, retryAfter string) time.Duration {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return keyAuthRest
	case http.StatusTooManyRequests:
		if s, err := strconv.Atoi(strings.TrimSpace(retryAfter)); err == nil && s > 0 {
			return min(time.Duration(s)*time.Second, keyMaxRest)
		}
		return keyRateLimitRest
	}
	return 0
}

// rest makes k rest for d from now; it reports false if k was already
// resting at least that long.
func (k *apiKey) rest(now time.Time, d time.Duration) bool {
	until := now.Add(d).UnixNano()
	for {
		old := k.restUntil.Load()
		if old >= until {
			return false
		}
		if k.restUntil.CompareAndSwap(old, until) {
			return old <= now.UnixNano()
		}
	}
}

// String names the upstream; it never shows the key.
func (u *upstream) String() string { return u.name }

// LogValue logs the upstream's name only.
func (u *upstream) LogValue() slog.Value { return slog.StringValue(u.name) }

// newUpstream resolves the key of a validated upstream config and builds its
// transport. Errors name the upstream and the key's source, never the key.
func newUpstream(c *UpstreamConfig) (*upstream, error) {
	base, err := parseBaseURL(c.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: base_url %q: %w", c.Name, redactURL(c.BaseURL), err)
	}
	u := &upstream{
		name:      c.Name,
		base:      base,
		auth:      c.Auth,
		headers:   make(http.Header, len(c.Headers)),
		transport: newTransport(c.ResponseHeaderTimeout.Duration),
	}
	for _, kc := range c.keySources() {
		s, err := resolveKey(c.Name, &kc)
		if err != nil {
			return nil, err
		}
		u.keys = append(u.keys, &apiKey{name: kc.Name, secret: s})
	}
	for name, v := range c.Headers {
		u.headers.Set(name, v)
	}
	if !c.HTTP2 && !proxied(base) {
		u.pool = newPool(base, c.ResponseHeaderTimeout.Duration, nil)
	}
	return u, nil
}

// proxied reports whether the environment sends requests to base through a
// proxy (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), which only net/http speaks.
func proxied(base *url.URL) bool {
	p, err := http.ProxyFromEnvironment(&http.Request{URL: base})
	return err != nil || p != nil
}

// newPool returns the HTTP/1.1 connection pool of the upstream at base, with
// the same bounds as its transport. roots are the CAs a TLS upstream's
// certificate must chain to; nil: the system's.
func newPool(base *url.URL, responseHeaderTimeout time.Duration, roots *x509.CertPool) *http1.Pool {
	port := base.Port()
	opt := http1.Options{
		DialTimeout:           dialTimeout,
		HandshakeTimeout:      tlsHandshakeTimeout,
		KeepAlive:             30 * time.Second,
		ResponseHeaderTimeout: responseHeaderTimeout,
		IdleTimeout:           idleConnTimeout,
		MaxIdle:               maxIdleConnsPerHost,
	}
	if base.Scheme == "https" {
		if port == "" {
			port = "443"
		}
		opt.TLS = &tls.Config{
			ServerName: base.Hostname(),
			RootCAs:    roots,
			MinVersion: tls.VersionTLS12,
			// Resumed sessions skip the certificate exchange when
			// the pool grows or replaces a connection.
			ClientSessionCache: tls.NewLRUClientSessionCache(0),
		}
	} else if port == "" {
		port = "80"
	}
	opt.Addr = net.JoinHostPort(base.Hostname(), port)
	return http1.NewPool(opt)
}

// newTransport returns a pooled transport that tries HTTP/2, never
// decompresses (the client gets the bytes the upstream sent) and bounds every
// step before the response head, but not the body.
func newTransport(responseHeaderTimeout time.Duration) *http.Transport {
	return &http.Transport{
		// A relay VM may reach the internet only through a proxy; the
		// environment (HTTPS_PROXY, NO_PROXY) says so, as for any Go client.
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   dialTimeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   maxIdleConnsPerHost,
		IdleConnTimeout:       idleConnTimeout,
		TLSHandshakeTimeout:   tlsHandshakeTimeout,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: responseHeaderTimeout,
		DisableCompression:    true,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: h2PingAfter,
			PingTimeout:     h2PingTimeout,
		},
	}
}

// resolveKey reads one key of upstream up from its configured source. The
// key is trimmed of surrounding white space and must be a valid header
// value. Errors name the upstream, the key's name and its source, never the
// key.
func resolveKey(up string, c *KeyConfig) (secret, error) {
	what := strings.TrimSuffix(keyWhat(up, c.Name), ": key")
	var v, source string
	switch {
	case c.Key != "":
		v, source = c.Key, "key"
	case c.KeyFile != "":
		source = fmt.Sprintf("key_file %q", c.KeyFile)
		b, err := keyfile.Read(c.KeyFile)
		if err != nil {
			// An *os.PathError names the file, never its contents.
			return secret{}, fmt.Errorf("%s: key_file: %w", what, err)
		}
		v = string(b)
	case c.KeyEnv != "":
		source = "key_env " + c.KeyEnv
		v = os.Getenv(c.KeyEnv)
	default:
		return secret{}, fmt.Errorf("%s: key: set one of key, key_file and key_env", what)
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return secret{}, fmt.Errorf("%s: %s: the key is empty", what, source)
	}
	if !httpguts.ValidHeaderFieldValue(v) {
		return secret{}, fmt.Errorf("%s: %s: the key contains characters not allowed in a header", what, source)
	}
	return newSecret(v), nil
}

// secret holds an API key. Every way of printing or logging it shows a
// marker; only reveal returns the key, for the one header that carries it.
// The key sits behind a pointer so that even fmt's raw printing of a struct
// holding a secret in an unexported field (where no String method is
// called) shows an address, not the key.
type secret struct{ p *string }

func newSecret(v string) secret { return secret{p: &v} }

func (s secret) reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// String implements fmt.Stringer without the key.
func (s secret) String() string { return redacted }

// GoString implements fmt.GoStringer without the key.
func (s secret) GoString() string { return redacted }

// LogValue implements slog.LogValuer without the key.
func (s secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText keeps the key out of JSON and other text encodings.
func (s secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Path errors, answered with 400 before anything is sent upstream.
var (
	errPathStart     = errors.New("path must start with \"/\"")
	errPathFragment  = errors.New("path must not contain \"#\"")
	errPathBackslash = errors.New("path must not contain a backslash")
	errPathEmpty     = errors.New("path must not contain an empty segment (\"//\")")
	errPathEncSlash  = errors.New("path must not contain an encoded slash or backslash")
	errPathEscape    = errors.New("path has an invalid percent-encoding")
	errPathDot       = errors.New("path must not contain a \".\" or \"..\" segment")
	errPathControl   = errors.New("path must not contain control characters")
	errPathQuery     = errors.New("query string does not parse")
)

// joinPath joins target, the head's path in escaped form with an optional
// "?query", under base's path. Scheme, host and port always come from base:
// target is never parsed as a URL of its own, and any segment that could
// climb out of base's path or be read differently by another parser is an
// error. A trailing slash is kept.
func joinPath(base *url.URL, target string) (*url.URL, error) {
	if !strings.HasPrefix(target, "/") {
		return nil, errPathStart
	}
	if strings.Contains(target, "#") {
		return nil, errPathFragment
	}
	rawPath, rawQuery, _ := strings.Cut(target, "?")
	if strings.Contains(rawPath, `\`) {
		return nil, errPathBackslash
	}
	segments := strings.Split(rawPath[1:], "/")
	for i, seg := range segments {
		if seg == "" {
			if i == len(segments)-1 {
				continue // "/" alone, or a trailing slash
			}
			return nil, errPathEmpty
		}
		if containsFold(seg, "%2f") || containsFold(seg, "%5c") {
			return nil, errPathEncSlash
		}
		dec, err := url.PathUnescape(seg)
		if err != nil {
			return nil, errPathEscape
		}
		if dec == "." || dec == ".." {
			return nil, errPathDot
		}
		for j := 0; j < len(dec); j++ {
			if dec[j] < ' ' || dec[j] == 0x7f {
				return nil, errPathControl
			}
		}
	}
	if rawQuery != "" {
		if _, err := url.ParseQuery(rawQuery); err != nil {
			return nil, errPathQuery
		}
	}
	decPath, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, errPathEscape
	}
	return &url.URL{
		Scheme:   base.Scheme,
		Host:     base.Host,
		Path:     strings.TrimSuffix(base.Path, "/") + decPath,
		RawPath:  strings.TrimSuffix(base.EscapedPath(), "/") + rawPath,
		RawQuery: rawQuery,
	}, nil
}

// containsFold reports whether s contains the lower-case ASCII substr in any
// case.
func containsFold(s, substr string) bool {
	for i := 0; i+len(substr) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(substr)], substr) {
			return true
		}
	}
	return false
}
