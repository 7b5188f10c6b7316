package edge

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"time"

	"github.com/airlock-proxy/airlock/proto"

	"github.com/airlock-proxy/airlock/internal/config"
	"github.com/airlock-proxy/airlock/tunnel"
)

// Defaults of [Config].
const (
	DefaultName                = "edge"
	DefaultListen              = "127.0.0.1:8080"
	DefaultAdminListen         = "127.0.0.1:9090"
	DefaultMaxRequestBodyBytes = 512 << 20
	DefaultShutdownGrace       = 30 * time.Second
	// The client-facing limits; nginx's defaults where it has the same
	// setting (client_header_timeout, client_body_timeout, send_timeout,
	// keepalive_timeout), shorter for the head.
	DefaultClientHeaderTimeout  = 10 * time.Second
	DefaultClientBodyTimeout    = 60 * time.Second
	DefaultClientSendTimeout    = 60 * time.Second
	DefaultClientIdleTimeout    = 60 * time.Second
	DefaultMaxClientConnections = 10000
	DefaultMaxConcurrent        = 256
)

// Auth modes of [Config.Auth].
const (
	// AuthKeys requires every request to carry a client key listed in
	// [Config.Clients].
	AuthKeys = "keys"
	// AuthNone lets every request through without a key. It is meant for a
	// listener that only trusted processes can reach (loopback, a sidecar).
	AuthNone = "none"
)

// adminOff as AdminListen disables the admin listener.
const adminOff = "off"

// ClientConfig is one `[[client]]` table: an application allowed to use the
// edge, identified by its own key.
type ClientConfig struct {
	// Name identifies the client in logs and in the request head the relay
	// sees. Required, unique, printable ASCII without spaces.
	Name string `toml:"name"`
	// KeyHash is "sha256:" and the lowercase hex SHA-256 of the client's key
	// (see [HashClientKey]); the edge stores no key itself. Required.
	KeyHash string `toml:"key_hash"`
	// Upstreams lists the upstream names this client may use. Empty means
	// any upstream the relay lets this edge use. When the client sends no
	// Airlock-Upstream header, it gets the edge's Upstream if that is in
	// this list, else the first name of this list.
	Upstreams []string `toml:"upstreams"`
	// MaxConcurrent is how many exchanges this client may have in flight
	// at once; more are answered with 429. Default: 0, the edge's
	// max_concurrent. Negative is invalid.
	MaxConcurrent int `toml:"max_concurrent"`
}

// RelayConfig is one `[[relay]]` table: a relay the edge keeps a tunnel to.
type RelayConfig struct {
	// Address is the relay's host:port: UDP for QUIC and, unless
	// TCPAddress says otherwise, TCP for the fallback. Required.
	Address string `toml:"address"`
	// TCPAddress is the relay's TCP host:port for the TLS/TCP transport,
	// when it differs from Address (e.g. port 443, which firewalls let
	// through). Default: "" (Address).
	TCPAddress string `toml:"tcp_address"`
	// Key is the relay's pinned public key fingerprint,
	// "sha256:<43 base64url characters>". Required.
	Key string `toml:"key"`
}

// TunnelConfig is the `[tunnel]` table: the TOML form of [tunnel.Config],
// whose field docs say what each setting does. A zero field means its
// default; negative is invalid.
type TunnelConfig struct {
	// HandshakeTimeout bounds one connection attempt, handshakes, HELLO
	// and WELCOME included. Default: 10s.
	HandshakeTimeout config.Duration `toml:"handshake_timeout"`
	// PingInterval is how often the edge sends a PING. Default: 5s.
	PingInterval config.Duration `toml:"ping_interval"`
	// PingTimeout is how long a PING may wait for its PONG while nothing
	// else is heard from the relay either. Default: 5s.
	PingTimeout config.Duration `toml:"ping_timeout"`
	// ReconnectMin is the shortest wait before a redial. Default: 250ms.
	ReconnectMin config.Duration `toml:"reconnect_min"`
	// ReconnectMax caps the wait between two connection attempts; at
	// least ReconnectMin. Default: 30s.
	ReconnectMax config.Duration `toml:"reconnect_max"`
	// FallbackTimeout is how long transport "auto" waits for QUIC before
	// it tries TCP. Default: 3s.
	FallbackTimeout config.Duration `toml:"fallback_timeout"`
	// Connections is how many sessions the edge keeps to each relay.
	// Default: 2.
	Connections int `toml:"connections"`
	// QUICProbeInterval is how often an "auto" tunnel on TCP tries QUIC
	// again. Default: 30s.
	QUICProbeInterval config.Duration `toml:"quic_probe_interval"`
}

// NewTunnelConfig returns c as a `[tunnel]` table, for a program that
// builds an edge Config in Go.
func NewTunnelConfig(c tunnel.Config) TunnelConfig {
	d := func(v time.Duration) config.Duration { return config.Duration{Duration: v} }
	return TunnelConfig{
		HandshakeTimeout:  d(c.HandshakeTimeout),
		PingInterval:      d(c.PingInterval),
		PingTimeout:       d(c.PingTimeout),
		ReconnectMin:      d(c.ReconnectMin),
		ReconnectMax:      d(c.ReconnectMax),
		FallbackTimeout:   d(c.FallbackTimeout),
		Connections:       c.Connections,
		QUICProbeInterval: d(c.QUICProbeInterval),
	}
}

// Options returns the table as the tunnel package's Config.
func (t *TunnelConfig) Options() tunnel.Config {
	return tunnel.Config{
		HandshakeTimeout:  t.HandshakeTimeout.Duration,
		PingInterval:      t.PingInterval.Duration,
		PingTimeout:       t.PingTimeout.Duration,
		ReconnectMin:      t.ReconnectMin.Duration,
		ReconnectMax:      t.ReconnectMax.Duration,
		FallbackTimeout:   t.FallbackTimeout.Duration,
		Connections:       t.Connections,
		QUICProbeInterval: t.QUICProbeInterval.Duration,
	}
}

// SetDefaults fills every zero field with the tunnel package's default.
func (t *TunnelConfig) SetDefaults() {
	c := t.Options()
	c.SetDefaults()
	*t = NewTunnelConfig(c)
}

// Validate reports the first field out of range, named by its key
// ("tunnel.ping_interval"). Call SetDefaults first: a zero duration is an
// error.
func (t *TunnelConfig) Validate() error {
	c := t.Options()
	return c.ValidateNamed(tunnelKey)
}

// tunnelKey names a tunnel.Config field by its key in the `[tunnel]` table:
// the TOML tag of the TunnelConfig field of the same name.
func tunnelKey(field string) string {
	f, ok := reflect.TypeFor[TunnelConfig]().FieldByName(field)
	if !ok {
		return "tunnel." + field // a field the table does not set
	}
	return "tunnel." + f.Tag.Get("toml")
}

// Config is the edge's configuration, decoded from TOML. A zero field means
// its default. NewServer fills in the defaults and validates a copy itself;
// SetDefaults and then Validate check a Config without building a server.
type Config struct {
	// Name is the edge's name, sent to the relay in HELLO.
	// Default: "edge".
	Name string `toml:"name"`
	// Listen is the client-facing TCP address. Default: "127.0.0.1:8080".
	// Port 0 picks a free port (see [Server.Addr]).
	Listen string `toml:"listen"`
	// AdminListen is the address of /healthz, /readyz and /metrics.
	// Default: "127.0.0.1:9090". "off" disables the admin listener.
	AdminListen string `toml:"admin_listen"`
	// KeyFile is the path of the edge's tunnel private key (PEM, written by
	// airlock init or airlock keygen). Required unless Identity is set.
	KeyFile string `toml:"key_file"`
	// Auth is "keys" (every request needs a client key listed in Clients) or
	// "none" (no key is checked; Clients are ignored). Default: "keys".
	// "none" on a Listen address that is not loopback is refused unless
	// AllowAnonymousNetwork is set: anyone who reaches the edge would
	// spend the upstream's key.
	Auth string `toml:"auth"`
	// AllowAnonymousNetwork lets auth = "none" listen on an address other
	// than loopback. Default: false.
	AllowAnonymousNetwork bool `toml:"allow_anonymous_network"`
	// AdminPprof serves Go's profiler under /debug/pprof/ on the admin
	// listener. Default: false.
	AdminPprof bool `toml:"admin_pprof"`
	// ClientHeaderTimeout is how long a client may take to send a request
	// head. Default: 10s.
	ClientHeaderTimeout config.Duration `toml:"client_header_timeout"`
	// ClientBodyTimeout is how long a client may send no bytes of a
	// request body it announced; then the request fails with 408 (or is
	// cut, once the response has started) and the upstream call is
	// cancelled. It bounds each wait, not the whole body. Default: 60s.
	ClientBodyTimeout config.Duration `toml:"client_body_timeout"`
	// ClientSendTimeout is how long a client may accept no bytes of its
	// response while the edge has some to send; then the exchange is
	// aborted and the upstream call cancelled. It bounds each wait, not the
	// whole download; "no bytes" is what the kernel sees, so a client that
	// reads far slower than its receive buffer fills (its TCP window stays
	// shut) counts as stalled too. Default: 60s (nginx's send_timeout).
	ClientSendTimeout config.Duration `toml:"client_send_timeout"`
	// ClientIdleTimeout is how long a kept-alive client connection may wait
	// for its next request. Default: 60s.
	ClientIdleTimeout config.Duration `toml:"client_idle_timeout"`
	// MaxClientConnections caps the open client connections; a connection
	// beyond it gets a 503 and is closed at once. Default: 10000; the edge
	// warns at start when its open-file limit is lower.
	MaxClientConnections int `toml:"max_client_connections"`
	// MaxConcurrent is how many exchanges one client (one key; all
	// anonymous requests together with auth = "none") may have in flight
	// at once, unless its [[client]] table says otherwise; more are
	// answered with 429. It bounds what one client can hold of the
	// tunnel's streams and memory. Default: 256.
	MaxConcurrent int `toml:"max_concurrent"`
	// Upstream is the upstream name used when a request carries no
	// Airlock-Upstream header. Default: "" (the relay's default for this
	// edge).
	Upstream string `toml:"upstream"`
	// MaxRequestBodyBytes is the largest request body accepted; a larger one
	// is answered with 413. Default: 512 MiB. Zero means the default;
	// negative is invalid.
	MaxRequestBodyBytes int64 `toml:"max_request_body_bytes"`
	// ShutdownGrace is how long a shutdown waits for in-flight requests
	// before it cuts them. Default: 30s. Zero means the default.
	ShutdownGrace config.Duration `toml:"shutdown_grace"`
	// Clients are the applications allowed in when Auth is "keys".
	Clients []ClientConfig `toml:"client"`
	// Transport is how the edge reaches its relays: "auto" (QUIC, falling
	// back to TLS/TCP when UDP is blocked, and back to QUIC once it works),
	// "quic" or "tcp". Default: "auto".
	Transport string `toml:"transport"`
	// ProxyURL is an HTTP CONNECT proxy the TCP transport goes out through,
	// "http://user:pass@proxy:3128" (or https://). Default: "" (the
	// HTTPS_PROXY and NO_PROXY environment variables when set, else
	// direct). QUIC never goes through it.
	ProxyURL string `toml:"proxy_url"`
	// Relays lists the relays to keep tunnels to, tunnel.connections
	// sessions to each; each request goes to the healthiest session. At
	// least one.
	Relays []RelayConfig `toml:"relay"`
	// Tunnel tunes the tunnel's timers and sessions per relay.
	Tunnel TunnelConfig `toml:"tunnel"`
	// Log sets the log level and format; the -log-level and -log-format
	// flags win over it.
	Log config.Log `toml:"log"`
	// Identity is an in-memory tunnel key (dev mode, tests). When set it is
	// used instead of KeyFile.
	Identity *tunnel.Identity `toml:"-"`
}

// SetDefaults fills every zero field that has a default.
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
	if c.Auth == "" {
		c.Auth = AuthKeys
	}
	if c.MaxRequestBodyBytes == 0 {
		c.MaxRequestBodyBytes = DefaultMaxRequestBodyBytes
	}
	if c.ShutdownGrace.Duration == 0 {
		c.ShutdownGrace.Duration = DefaultShutdownGrace
	}
	for _, d := range []struct {
		v   *config.Duration
		def time.Duration
	}{
		{&c.ClientHeaderTimeout, DefaultClientHeaderTimeout},
		{&c.ClientBodyTimeout, DefaultClientBodyTimeout},
		{&c.ClientSendTimeout, DefaultClientSendTimeout},
		{&c.ClientIdleTimeout, DefaultClientIdleTimeout},
	} {
		if d.v.Duration == 0 {
			d.v.Duration = d.def
		}
	}
	if c.MaxClientConnections == 0 {
		c.MaxClientConnections = DefaultMaxClientConnections
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.Transport == "" {
		c.Transport = tunnel.TransportAuto
	}
	c.Tunnel.SetDefaults()
}

// Validate reports the first invalid field, naming its TOML key. It does not
// change c; call SetDefaults first.
func (c *Config) Validate() error {
	if err := checkName("name", c.Name); err != nil {
		return err
	}
	if err := checkHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen = %q: %w", c.Listen, err)
	}
	if c.AdminListen != adminOff {
		if err := checkHostPort(c.AdminListen); err != nil {
			return fmt.Errorf("admin_listen = %q: %w (or \"off\")", c.AdminListen, err)
		}
	}
	if c.KeyFile == "" && c.Identity == nil {
		return errors.New("key_file: required: the path of the edge's tunnel key (airlock init writes one)")
	}
	if c.ShutdownGrace.Duration < 0 {
		return fmt.Errorf("shutdown_grace = %s: want a positive duration", c.ShutdownGrace.Duration)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"client_header_timeout", c.ClientHeaderTimeout.Duration},
		{"client_body_timeout", c.ClientBodyTimeout.Duration},
		{"client_send_timeout", c.ClientSendTimeout.Duration},
		{"client_idle_timeout", c.ClientIdleTimeout.Duration},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s = %s: want a positive duration", d.key, d.v)
		}
	}
	if c.MaxClientConnections < 0 {
		return fmt.Errorf("max_client_connections = %d: want a positive number", c.MaxClientConnections)
	}
	if err := c.validateAccess(); err != nil {
		return err
	}
	if c.Auth == AuthNone && !c.AllowAnonymousNetwork && !isLoopback(c.Listen) {
		return fmt.Errorf("auth = \"none\" with listen = %q: anyone who can reach this address would use the upstream's key "+
			"without a client key; listen on loopback (127.0.0.1 or [::1]), use auth = \"keys\", "+
			"or set allow_anonymous_network = true if the network itself is trusted", c.Listen)
	}
	switch c.Transport {
	case tunnel.TransportAuto, tunnel.TransportQUIC, tunnel.TransportTCP:
	default:
		return fmt.Errorf("transport = %q: want %q, %q or %q",
			c.Transport, tunnel.TransportAuto, tunnel.TransportQUIC, tunnel.TransportTCP)
	}
	if c.ProxyURL != "" {
		if _, err := tunnel.NewProxyDialer(c.ProxyURL, false); err != nil {
			return fmt.Errorf("proxy_url: %w", err)
		}
	}
	if len(c.Relays) == 0 {
		return errors.New("relay: no [[relay]] is configured: add one with address and key (airlock init writes one)")
	}
	seen := make(map[string]int, len(c.Relays))
	for i, r := range c.Relays {
		if r.Address == "" {
			return fmt.Errorf("relay[%d].address: required: the relay's host:port", i)
		}
		if err := checkHostPort(r.Address); err != nil {
			return fmt.Errorf("relay[%d].address = %q: %w", i, r.Address, err)
		}
		if j, dup := seen[r.Address]; dup {
			return fmt.Errorf("relay[%d].address = %q: relay[%d] has it too; raise tunnel.connections for more sessions to one relay", i, r.Address, j)
		}
		seen[r.Address] = i
		if r.TCPAddress != "" {
			if err := checkHostPort(r.TCPAddress); err != nil {
				return fmt.Errorf("relay[%d].tcp_address = %q: %w", i, r.TCPAddress, err)
			}
		}
		if r.Key == "" {
			return fmt.Errorf("relay[%d].key: required: the relay's key fingerprint, \"sha256:...\" (airlock init writes it)", i)
		}
		if _, err := tunnel.ParseFingerprint(r.Key); err != nil {
			return fmt.Errorf("relay[%d].key: %w", i, err)
		}
	}
	return c.Tunnel.Validate()
}

// validateAccess checks what the request handler uses: auth, clients,
// upstream and limits. NewHandler needs only these.
func (c *Config) validateAccess() error {
	switch c.Auth {
	case AuthKeys, AuthNone:
	default:
		return fmt.Errorf("auth = %q: want %q or %q", c.Auth, AuthKeys, AuthNone)
	}
	if c.MaxRequestBodyBytes <= 0 {
		return fmt.Errorf("max_request_body_bytes = %d: want a positive number of bytes", c.MaxRequestBodyBytes)
	}
	if c.MaxConcurrent < 0 {
		return fmt.Errorf("max_concurrent = %d: want a positive number", c.MaxConcurrent)
	}
	if c.Upstream != "" {
		if err := checkName("upstream", c.Upstream); err != nil {
			return err
		}
	}
	names := make(map[string]bool, len(c.Clients))
	hashes := make(map[[32]byte]string, len(c.Clients))
	for i, cl := range c.Clients {
		if cl.Name == "" {
			return fmt.Errorf("client[%d].name: required", i)
		}
		if err := checkName(fmt.Sprintf("client[%d].name", i), cl.Name); err != nil {
			return err
		}
		if names[cl.Name] {
			return fmt.Errorf("client %q: name: used by two [[client]] tables", cl.Name)
		}
		names[cl.Name] = true
		sum, err := parseKeyHash(cl.KeyHash)
		if err != nil {
			return fmt.Errorf("client %q: key_hash: %w", cl.Name, err)
		}
		if other, ok := hashes[sum]; ok {
			return fmt.Errorf("client %q: key_hash: same as client %q's: every client needs its own key", cl.Name, other)
		}
		hashes[sum] = cl.Name
		if cl.MaxConcurrent < 0 {
			return fmt.Errorf("client %q: max_concurrent = %d: want a positive number (0: the edge's max_concurrent)", cl.Name, cl.MaxConcurrent)
		}
		for j, u := range cl.Upstreams {
			if err := checkName(fmt.Sprintf("client %q: upstreams[%d]", cl.Name, j), u); err != nil {
				return err
			}
		}
	}
	if c.Auth == AuthKeys && len(c.Clients) == 0 {
		return errors.New(`auth = "keys" but no [[client]] is configured: add one (airlock init writes one) or set auth = "none"`)
	}
	return nil
}

// Clone returns a deep copy of c (the Identity is shared).
func (c *Config) Clone() *Config {
	n := *c
	n.Clients = make([]ClientConfig, len(c.Clients))
	for i, cl := range c.Clients {
		cl.Upstreams = append([]string(nil), cl.Upstreams...)
		n.Clients[i] = cl
	}
	n.Relays = append([]RelayConfig(nil), c.Relays...)
	return &n
}

// populated returns a copy of cfg with its defaults filled in, checked by
// validate: Validate for a Server, validateAccess for a handler alone. It is
// what the public constructors (and reloads) hand down; nothing below them
// fills or validates the copy again. Errors start with what.
func populated(cfg *Config, what string, validate func(*Config) error) (*Config, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%s: nil config", what)
	}
	c := cfg.Clone()
	c.SetDefaults()
	if err := validate(c); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return c, nil
}

// checkName checks a name that travels in a proto head or HELLO: printable
// ASCII without spaces.
func checkName(key, v string) error {
	if v == "" {
		return fmt.Errorf("%s: must not be empty", key)
	}
	if !proto.Printable(v) {
		return fmt.Errorf("%s = %q: want printable ASCII without spaces", key, v)
	}
	return nil
}

// checkHostPort checks a "host:port" address; the host may be empty (all
// interfaces) and the port 0 (any free port).
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("invalid port %q", port)
	}
	return nil
}

// isLoopback reports whether a listen address binds loopback only: a
// loopback IP or "localhost". An empty host, 0.0.0.0 and [::] listen on
// every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// LogSettings returns the [log] table, for the command that builds the
// logger.
func (c *Config) LogSettings() config.Log { return c.Log }
