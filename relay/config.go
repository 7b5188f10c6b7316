package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/airlock-proxy/airlock/proto"

	"golang.org/x/net/http/httpguts"

	"github.com/airlock-proxy/airlock/internal/config"
	"github.com/airlock-proxy/airlock/internal/keyfile"
	"github.com/airlock-proxy/airlock/tunnel"
)

// Defaults of the relay configuration.
const (
	DefaultName                  = "relay"
	DefaultListen                = "0.0.0.0:7443"
	DefaultAdminListen           = "127.0.0.1:9091"
	DefaultShutdownGrace         = 30 * time.Second
	DefaultResponseHeaderTimeout = 10 * time.Minute
)

// AdminOff as admin_listen disables the admin listener.
const AdminOff = "off"

// Upstream auth styles.
const (
	AuthBearer = "bearer"  // Authorization: Bearer KEY
	AuthAPIKey = "api-key" // api-key: KEY (Azure OpenAI)
	AuthNone   = "none"    // no credentials are sent
)

// EdgeConfig is one `[[edge]]` table: an edge allowed to open tunnels.
type EdgeConfig struct {
	// Name identifies the edge in logs. Required, unique.
	Name string `toml:"name"`
	// Key is the edge's public key fingerprint, "sha256:<base64url>"
	// (`airlock keygen -show edge.key` prints it). Required, unique.
	Key string `toml:"key"`
	// Upstreams lists the upstream names this edge may use, the first being
	// its default. Empty: every upstream, in config order.
	Upstreams []string `toml:"upstreams"`
}

// UpstreamConfig is one `[[upstream]]` table: an API the relay calls.
//
// It holds a secret (Key); its String, GoString and LogValue methods redact
// it, so that printing or logging a config never shows the key.
type UpstreamConfig struct {
	// Name is what edges and clients call this upstream
	// (the Airlock-Upstream header). Required, unique.
	Name string `toml:"name"`
	// BaseURL is the upstream's base URL including its version prefix,
	// e.g. "https://api.openai.com/v1". The client's path below /v1 is
	// joined under it. Scheme http or https; no query, fragment or
	// userinfo. Required.
	BaseURL string `toml:"base_url"`
	// Auth is how the key is sent: "bearer" (Authorization: Bearer KEY),
	// "api-key" (api-key: KEY, as Azure OpenAI wants) or "none".
	// Default: "bearer".
	Auth string `toml:"auth"`
	// Key is the API key itself. Exactly one of Key, KeyFile and KeyEnv is
	// set, or Keys, unless Auth is "none" (then none of them).
	Key string `toml:"key"`
	// KeyFile names a file holding only the key (surrounding white space is
	// ignored). Relative to the config file. Like ssh, the relay refuses a
	// file that group or others may read or write (mode 0600 or 0400; 0640
	// when owned by root and read through its group); the error gives the
	// chmod. Not checked on Windows.
	KeyFile string `toml:"key_file"`
	// KeyEnv names an environment variable holding the key. It must be set
	// and non-empty when the relay starts.
	KeyEnv string `toml:"key_env"`
	// Keys are several keys, used in turn (`[[upstream.keys]]`), instead of
	// Key, KeyFile or KeyEnv. A key the upstream answers with 429 rests for
	// the Retry-After time (30s without one), one it answers with 401 or
	// 403 for 5 minutes; requests go to the others meanwhile.
	Keys []KeyConfig `toml:"keys"`
	// Headers are extra request headers sent to this upstream, replacing
	// any the client sent under the same name. Default: none.
	Headers map[string]string `toml:"headers"`
	// ResponseHeaderTimeout is the longest wait for the upstream's response
	// headers after the request was sent (not for the body, which may
	// stream for many minutes). Default: 10m. Zero means the default;
	// negative is an error.
	ResponseHeaderTimeout config.Duration `toml:"response_header_timeout"`
	// HTTP2 lets requests to an https upstream use HTTP/2 when the upstream
	// offers it, through Go's net/http client. Default: false, HTTP/1.1 on
	// kept-alive connections, the way nginx and the official SDKs talk to
	// the API, at about half the relay's CPU per request (issue 9). An
	// upstream reached through a proxy from the environment (HTTPS_PROXY)
	// uses net/http whatever this says, and so does every WebSocket.
	HTTP2 bool `toml:"http2"`
}

// KeyConfig is one of an upstream's keys, a `[[upstream.keys]]` table.
type KeyConfig struct {
	// Name names the key in logs and metrics (never the key itself).
	// Required, unique within the upstream.
	Name string `toml:"name"`
	// Key, KeyFile and KeyEnv are as for the upstream: exactly one is set.
	Key     string `toml:"key"`
	KeyFile string `toml:"key_file"`
	KeyEnv  string `toml:"key_env"`
}

// defaultKeyName names the key of an upstream with a single key.
const defaultKeyName = "default"

// keySources returns the upstream's keys: Keys, or its single key named
// "default"; none with auth "none".
func (u *UpstreamConfig) keySources() []KeyConfig {
	if len(u.Keys) > 0 {
		return u.Keys
	}
	if u.Key == "" && u.KeyFile == "" && u.KeyEnv == "" {
		return nil
	}
	return []KeyConfig{{Name: defaultKeyName, Key: u.Key, KeyFile: u.KeyFile, KeyEnv: u.KeyEnv}}
}

// Config is the relay's configuration file.
type Config struct {
	// Name identifies this relay in logs, here and on the edges.
	// Default: "relay".
	Name string `toml:"name"`
	// Listen is the UDP address for QUIC tunnels from edges, and the TCP
	// address of the TLS/TCP fallback unless ListenTCP says otherwise.
	// Default: "0.0.0.0:7443".
	Listen string `toml:"listen"`
	// ListenTCP is the TCP address of the TLS/TCP fallback, for edges
	// whose network blocks UDP (e.g. "0.0.0.0:443"). Default: "" (the
	// host and port of listen); "off" serves QUIC only.
	ListenTCP string `toml:"listen_tcp"`
	// AdminListen is the TCP address of /healthz and /readyz (and /metrics).
	// Default: "127.0.0.1:9091"; "off" disables the admin listener. Nothing
	// there asks for credentials: an address other than loopback is logged
	// as a warning at start.
	AdminListen string `toml:"admin_listen"`
	// AdminPprof serves Go's profiler under /debug/pprof/ on the admin
	// listener. It shows the command line and memory contents and a CPU
	// profile loads the relay, so enable it only while you profile, on a
	// listener only operators reach. Default: false (the paths answer 404).
	AdminPprof bool `toml:"admin_pprof"`
	// KeyFile is this relay's tunnel private key (PEM, Ed25519). Required
	// unless Identity is set. Its permissions are checked as an upstream's
	// key_file's are.
	KeyFile string `toml:"key_file"`
	// ForwardClientAddress sends the client address headers
	// (X-Forwarded-For, Forwarded, X-Real-Ip, Via, True-Client-Ip and the
	// others listed in package clientheader) upstream. Default: false, so
	// that addresses and host names from inside the restricted network
	// stay there.
	ForwardClientAddress bool `toml:"forward_client_address"`
	// ShutdownGrace is how long a drain waits for in-flight streams before
	// closing them. Default: 30s. Zero means the default; negative is an
	// error.
	ShutdownGrace config.Duration `toml:"shutdown_grace"`
	// Edges are the edges allowed to connect. At least one.
	Edges []EdgeConfig `toml:"edge"`
	// Upstreams are the APIs the relay calls. At least one.
	Upstreams []UpstreamConfig `toml:"upstream"`
	// Log sets the log level and format; the -log-level and -log-format
	// flags win over it.
	Log config.Log `toml:"log"`
	// Identity is an in-memory tunnel key (dev mode, tests); when set it
	// is used instead of KeyFile.
	Identity *tunnel.Identity `toml:"-"`
}

// SetDefaults fills every unset field with its default. Call it after
// decoding and before Validate.
func (c *Config) SetDefaults() {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.ShutdownGrace.Duration == 0 {
		c.ShutdownGrace.Duration = DefaultShutdownGrace
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Auth == "" {
			u.Auth = AuthBearer
		}
		if u.ResponseHeaderTimeout.Duration == 0 {
			u.ResponseHeaderTimeout.Duration = DefaultResponseHeaderTimeout
		}
	}
}

// Clone returns a deep copy of c. The Identity is shared: it is immutable.
func (c *Config) Clone() *Config {
	if c == nil {
		return nil
	}
	n := *c
	n.Edges = slices.Clone(c.Edges)
	for i := range n.Edges {
		n.Edges[i].Upstreams = slices.Clone(n.Edges[i].Upstreams)
	}
	n.Upstreams = slices.Clone(c.Upstreams)
	for i := range n.Upstreams {
		n.Upstreams[i].Headers = maps.Clone(n.Upstreams[i].Headers)
		n.Upstreams[i].Keys = slices.Clone(n.Upstreams[i].Keys)
	}
	return &n
}

// populated returns a copy of cfg with its defaults filled in, checked by
// validate: Validate for a Server, validatePeers for a Handler alone. It is
// what the public constructors (and reloads) hand down; nothing below them
// fills or validates the copy again.
func populated(cfg *Config, validate func(*Config) error) (*Config, error) {
	if cfg == nil {
		return nil, errors.New("relay: no configuration")
	}
	c := cfg.Clone()
	c.SetDefaults()
	if err := validate(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate reports the first problem with c, naming the TOML key. It does
// not fill defaults; call SetDefaults first. It checks that every key_env
// variable is set and that no upstream key_file that exists is open to group
// or others (see internal/keyfile), but it reads no key file (NewHandler
// does, and reports a missing one).
func (c *Config) Validate() error {
	if c.Name == "" {
		return errors.New("name: must not be empty")
	}
	if c.Listen == "" {
		return errors.New("listen: must not be empty")
	}
	if c.AdminListen == "" {
		return errors.New(`admin_listen: must not be empty (use "off" to disable)`)
	}
	if c.Identity == nil && c.KeyFile == "" {
		return errors.New("key_file: required (the relay's tunnel key; `airlock keygen` writes one)")
	}
	if c.ShutdownGrace.Duration < 0 {
		return fmt.Errorf("shutdown_grace %q: must not be negative", c.ShutdownGrace.Duration)
	}
	return c.validatePeers()
}

// validatePeers checks the [[upstream]] and [[edge]] tables, all that a
// Handler needs.
func (c *Config) validatePeers() error {
	if len(c.Upstreams) == 0 {
		return errors.New("upstream: at least one [[upstream]] is required")
	}
	upstreams := make(map[string]bool, len(c.Upstreams))
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if err := u.validate(); err != nil {
			return err
		}
		if upstreams[u.Name] {
			return fmt.Errorf("upstream %q: name: duplicate upstream name", u.Name)
		}
		upstreams[u.Name] = true
	}
	if len(c.Edges) == 0 {
		return errors.New("edge: at least one [[edge]] is required")
	}
	names := make(map[string]bool, len(c.Edges))
	keys := make(map[string]string, len(c.Edges))
	for i := range c.Edges {
		e := &c.Edges[i]
		if e.Name == "" {
			return fmt.Errorf("edge #%d: name: must not be empty", i+1)
		}
		if !proto.Printable(e.Name) {
			return fmt.Errorf("edge %q: name: must be printable ASCII without spaces", e.Name)
		}
		if names[e.Name] {
			return fmt.Errorf("edge %q: name: duplicate edge name", e.Name)
		}
		names[e.Name] = true
		fp, err := tunnel.ParseFingerprint(e.Key)
		if err != nil {
			return fmt.Errorf("edge %q: key: %w", e.Name, err)
		}
		if other, dup := keys[fp]; dup {
			return fmt.Errorf("edge %q: key: same key as edge %q", e.Name, other)
		}
		keys[fp] = e.Name
		seen := make(map[string]bool, len(e.Upstreams))
		for _, name := range e.Upstreams {
			if !upstreams[name] {
				return fmt.Errorf("edge %q: upstreams: no [[upstream]] named %q", e.Name, name)
			}
			if seen[name] {
				return fmt.Errorf("edge %q: upstreams: %q listed twice", e.Name, name)
			}
			seen[name] = true
		}
	}
	return nil
}

// validate checks one upstream table. Errors never contain the key.
func (u *UpstreamConfig) validate() error {
	if u.Name == "" {
		return errors.New("upstream: name: must not be empty")
	}
	if !proto.Printable(u.Name) {
		return fmt.Errorf("upstream %q: name: must be printable ASCII without spaces", u.Name)
	}
	if _, err := parseBaseURL(u.BaseURL); err != nil {
		return fmt.Errorf("upstream %q: base_url %q: %w", u.Name, redactURL(u.BaseURL), err)
	}
	single := u.Key != "" || u.KeyFile != "" || u.KeyEnv != ""
	switch u.Auth {
	case AuthBearer, AuthAPIKey:
		if single && len(u.Keys) > 0 {
			return fmt.Errorf("upstream %q: key: set key, key_file or key_env, or [[upstream.keys]], not both", u.Name)
		}
		if !single && len(u.Keys) == 0 {
			return fmt.Errorf("upstream %q: key: set one of key, key_file and key_env, or [[upstream.keys]] (auth = %q)", u.Name, u.Auth)
		}
	case AuthNone:
		if single || len(u.Keys) > 0 {
			return fmt.Errorf("upstream %q: key: must not be set with auth = \"none\"", u.Name)
		}
	default:
		return fmt.Errorf("upstream %q: auth %q: want \"bearer\", \"api-key\" or \"none\"", u.Name, u.Auth)
	}
	names := map[string]bool{}
	for _, k := range u.keySources() {
		if err := k.validate(u.Name, names); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(u.Headers)) {
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("upstream %q: headers: %q is not a valid header name", u.Name, name)
		}
		if !httpguts.ValidHeaderFieldValue(u.Headers[name]) {
			return fmt.Errorf("upstream %q: headers: the value of %q is not a valid header value", u.Name, name)
		}
		if reservedHeader(http.CanonicalHeaderKey(name)) {
			return fmt.Errorf("upstream %q: headers: %q cannot be set here (hop-by-hop, or set by the relay)", u.Name, name)
		}
	}
	if u.ResponseHeaderTimeout.Duration <= 0 {
		return fmt.Errorf("upstream %q: response_header_timeout %q: must be positive", u.Name, u.ResponseHeaderTimeout.Duration)
	}
	return nil
}

// validate checks one key of upstream up; names holds the names seen so far.
// Errors never contain the key.
func (k *KeyConfig) validate(up string, names map[string]bool) error {
	what := keyWhat(up, k.Name)
	if !proto.Printable(k.Name) || k.Name == "" {
		return fmt.Errorf("upstream %q: keys: name %q: want printable ASCII without spaces", up, k.Name)
	}
	if names[k.Name] {
		return fmt.Errorf("upstream %q: keys: name %q: used twice", up, k.Name)
	}
	names[k.Name] = true
	set := 0
	for _, s := range []string{k.Key, k.KeyFile, k.KeyEnv} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("%s: set exactly one of key, key_file and key_env", what)
	}
	if k.KeyEnv != "" && strings.TrimSpace(os.Getenv(k.KeyEnv)) == "" {
		return fmt.Errorf("%s: key_env: environment variable %s is unset or empty", strings.TrimSuffix(what, ": key"), k.KeyEnv)
	}
	// A missing file is reported where it is read (NewHandler), so that a
	// config can be checked away from its key files.
	if k.KeyFile != "" {
		if err := keyfile.Check(k.KeyFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: key_file: %w", strings.TrimSuffix(what, ": key"), err)
		}
	}
	return nil
}

// keyWhat names a key in errors: `upstream "u": key` for an upstream's
// single key, `upstream "u": key "name"` for one of its keys.
func keyWhat(up, name string) string {
	if name == defaultKeyName {
		return fmt.Sprintf("upstream %q: key", up)
	}
	return fmt.Sprintf("upstream %q: key %q", up, name)
}

// parseBaseURL parses and checks an upstream base URL.
func parseBaseURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, errors.New("not a valid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, errors.New("scheme must be http or https")
	case u.Opaque != "" || u.Host == "":
		return nil, errors.New("want scheme://host[:port]/path")
	case u.User != nil:
		return nil, errors.New("must not contain userinfo (use key, key_file or key_env)")
	case u.RawQuery != "" || u.ForceQuery:
		return nil, errors.New("must not contain a query")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return nil, errors.New("must not contain a fragment")
	}
	// url.Parse keeps dot segments; an upstream (or a proxy before it)
	// would resolve them and call a path the operator did not mean.
	for seg := range strings.SplitSeq(u.EscapedPath(), "/") {
		if dec, err := url.PathUnescape(seg); err == nil && (dec == "." || dec == "..") {
			return nil, errPathDot
		}
	}
	if _, err := joinPath(u, "/"); err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	return u, nil
}

// redactURL returns a base URL for an error message or a log line without
// what may hold a secret: the userinfo (user name too: some APIs take the key
// there), each query value and the fragment are replaced by a marker. It
// works on the raw string, so that a URL that does not parse is redacted
// as well.
func redactURL(s string) string {
	// The authority runs from "//" (or, in a URL without one, from the
	// start) to the first "/"; its userinfo ends at its last "@". This is
	// done before "#" and "?" are cut off, so that a password holding
	// either is redacted too.
	prefix, after := "", s
	if i := strings.Index(s, "://"); i >= 0 {
		prefix, after = s[:i+3], s[i+3:]
	}
	authority, path := after, ""
	if i := strings.IndexByte(after, '/'); i >= 0 {
		authority, path = after[:i], after[i:]
	}
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		s = prefix + redacted + authority[i:] + path
	}
	rest, frag, hasFrag := strings.Cut(s, "#")
	rest, query, hasQuery := strings.Cut(rest, "?")
	var b strings.Builder
	b.WriteString(rest)
	if hasQuery {
		b.WriteByte('?')
		for i, pair := range strings.Split(query, "&") {
			if i > 0 {
				b.WriteByte('&')
			}
			// Keep a parameter's name, which helps ("api-version"), unless
			// there is no "=": then the whole pair may be the secret.
			if name, _, ok := strings.Cut(pair, "="); ok {
				b.WriteString(name + "=")
			}
			if pair != "" {
				b.WriteString(redacted)
			}
		}
	}
	if hasFrag {
		b.WriteString("#")
		if frag != "" {
			b.WriteString(redacted)
		}
	}
	return b.String()
}

const redacted = "[redacted]"

// redactedCopy returns u with any key replaced by a marker.
func (u UpstreamConfig) redactedCopy() upstreamConfigNoMethods {
	if u.Key != "" {
		u.Key = redacted
	}
	if u.Keys != nil {
		keys := make([]KeyConfig, len(u.Keys))
		for i, k := range u.Keys {
			keys[i] = KeyConfig(k.redactedCopy())
		}
		u.Keys = keys
	}
	return upstreamConfigNoMethods(u)
}

// redactedCopy returns k with its key replaced by a marker.
func (k KeyConfig) redactedCopy() keyConfigNoMethods {
	if k.Key != "" {
		k.Key = redacted
	}
	return keyConfigNoMethods(k)
}

// keyConfigNoMethods has KeyConfig's fields without its methods.
type keyConfigNoMethods KeyConfig

// String formats the key's settings with the key redacted.
func (k KeyConfig) String() string { return fmt.Sprintf("%+v", k.redactedCopy()) }

// GoString formats the key's settings with the key redacted, for %#v.
func (k KeyConfig) GoString() string { return fmt.Sprintf("%#v", k.redactedCopy()) }

// MarshalJSON encodes the key's settings with the key redacted.
func (k KeyConfig) MarshalJSON() ([]byte, error) { return json.Marshal(k.redactedCopy()) }

// LogValue logs the key's name and source, never the key.
func (k KeyConfig) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("name", k.Name)}
	return slog.GroupValue(append(attrs, keySourceAttr(k.Key, k.KeyFile, k.KeyEnv)...)...)
}

// keySourceAttr describes where a key comes from, redacting an inline key.
func keySourceAttr(key, file, env string) []slog.Attr {
	switch {
	case key != "":
		return []slog.Attr{slog.String("key", redacted)}
	case file != "":
		return []slog.Attr{slog.String("key_file", file)}
	case env != "":
		return []slog.Attr{slog.String("key_env", env)}
	}
	return nil
}

// upstreamConfigNoMethods has UpstreamConfig's fields without its methods,
// for formatting.
type upstreamConfigNoMethods UpstreamConfig

// String formats the upstream with its key redacted.
func (u UpstreamConfig) String() string { return fmt.Sprintf("%+v", u.redactedCopy()) }

// GoString formats the upstream with its key redacted, for %#v.
func (u UpstreamConfig) GoString() string { return fmt.Sprintf("%#v", u.redactedCopy()) }

// MarshalJSON encodes the upstream with its key redacted, so that a JSON log
// handler given a slice of upstreams shows no key either.
func (u UpstreamConfig) MarshalJSON() ([]byte, error) { return json.Marshal(u.redactedCopy()) }

// LogValue logs the upstream without its key.
func (u UpstreamConfig) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("name", u.Name),
		slog.String("base_url", redactURL(u.BaseURL)),
		slog.String("auth", u.Auth),
	}
	attrs = append(attrs, keySourceAttr(u.Key, u.KeyFile, u.KeyEnv)...)
	for i, k := range u.Keys {
		attrs = append(attrs, slog.Any(fmt.Sprintf("keys.%d", i), k))
	}
	return slog.GroupValue(attrs...)
}

// Interface guards.
var (
	_ fmt.Stringer   = UpstreamConfig{}
	_ fmt.GoStringer = UpstreamConfig{}
	_ slog.LogValuer = UpstreamConfig{}
	_ json.Marshaler = UpstreamConfig{}
	_ fmt.Stringer   = KeyConfig{}
	_ fmt.GoStringer = KeyConfig{}
	_ slog.LogValuer = KeyConfig{}
	_ json.Marshaler = KeyConfig{}
)

// LogSettings returns the [log] table, for the command that builds the
// logger.
func (c *Config) LogSettings() config.Log { return c.Log }
