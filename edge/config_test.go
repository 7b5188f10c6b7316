package edge

import (
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/config"
	"github.com/airlock-proxy/airlock/tunnel"
)

const testRelayKey = "sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"

// validConfig returns a config that passes Validate after SetDefaults.
func validConfig() *Config {
	c := testConfig()
	c.KeyFile = "edge.key"
	c.Relays = []RelayConfig{{Address: "relay.example:7443", Key: testRelayKey}}
	return c
}

func TestConfigDefaults(t *testing.T) {
	c := validConfig()
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"name", c.Name, "edge"},
		{"listen", c.Listen, "127.0.0.1:8080"},
		{"admin_listen", c.AdminListen, "127.0.0.1:9090"},
		{"auth", c.Auth, "keys"},
		{"max_request_body_bytes", c.MaxRequestBodyBytes, int64(512 << 20)},
		{"shutdown_grace", c.ShutdownGrace.Duration.String(), "30s"},
		{"tunnel.ping_interval", c.Tunnel.PingInterval.Duration, tunnel.DefaultPingInterval},
		{"tunnel.quic_probe_interval", c.Tunnel.QUICProbeInterval.Duration, tunnel.DefaultQUICProbe},
		{"tunnel.connections", c.Tunnel.Connections, tunnel.DefaultConnections},
	} {
		if f.got != f.want {
			t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(c *Config)
		wantErr string // "" = valid
	}{
		{name: "valid", mod: func(c *Config) {}},
		{name: "identity instead of key file", mod: func(c *Config) {
			c.KeyFile = ""
			c.Identity, _ = tunnel.GenerateIdentity()
		}},
		{name: "auth none without clients", mod: func(c *Config) { c.Auth = AuthNone; c.Clients = nil }},
		{name: "admin off", mod: func(c *Config) { c.AdminListen = "off" }},
		{name: "no key file", mod: func(c *Config) { c.KeyFile = "" }, wantErr: "key_file: required"},
		{name: "keys without clients", mod: func(c *Config) { c.Clients = nil },
			wantErr: `auth = "keys" but no [[client]] is configured: add one (airlock init writes one) or set auth = "none"`},
		{name: "bad auth", mod: func(c *Config) { c.Auth = "basic" }, wantErr: `auth = "basic": want "keys" or "none"`},
		{name: "bad listen", mod: func(c *Config) { c.Listen = "8080" }, wantErr: `listen = "8080": want host:port`},
		{name: "bad port", mod: func(c *Config) { c.Listen = "127.0.0.1:http" }, wantErr: `listen = "127.0.0.1:http": invalid port`},
		{name: "bad admin", mod: func(c *Config) { c.AdminListen = "no" }, wantErr: `admin_listen = "no"`},
		{name: "bad name", mod: func(c *Config) { c.Name = "my edge" }, wantErr: `name = "my edge": want printable ASCII`},
		{name: "negative body limit", mod: func(c *Config) { c.MaxRequestBodyBytes = -1 }, wantErr: "max_request_body_bytes = -1"},
		{name: "negative grace", mod: func(c *Config) { c.ShutdownGrace = config.Duration{Duration: -1} }, wantErr: "shutdown_grace"},
		{name: "bad upstream", mod: func(c *Config) { c.Upstream = "a b" }, wantErr: `upstream = "a b"`},
		{name: "bad transport", mod: func(c *Config) { c.Transport = "udp" }, wantErr: `transport = "udp": want "auto", "quic" or "tcp"`},
		{name: "tcp transport", mod: func(c *Config) { c.Transport = "tcp" }},
		{name: "proxy url", mod: func(c *Config) { c.ProxyURL = "http://u:p@proxy.corp:3128" }},
		{name: "bad proxy scheme", mod: func(c *Config) { c.ProxyURL = "socks5://proxy:1080" }, wantErr: "proxy_url: "},
		{name: "bad tcp address", mod: func(c *Config) { c.Relays[0].TCPAddress = "relay:https" }, wantErr: `relay[0].tcp_address = "relay:https": invalid port`},
		{name: "client without name", mod: func(c *Config) { c.Clients[0].Name = "" }, wantErr: "client[0].name: required"},
		{name: "duplicate client", mod: func(c *Config) { c.Clients[1].Name = "alice" }, wantErr: `client "alice": name: used by two`},
		{name: "short key hash", mod: func(c *Config) { c.Clients[0].KeyHash = "sha256:abcd" },
			wantErr: `client "alice": key_hash: want "sha256:" and 64 hex digits`},
		{name: "key hash without prefix", mod: func(c *Config) { c.Clients[0].KeyHash = strings.Repeat("a", 64) },
			wantErr: `client "alice": key_hash: want "sha256:" and 64 hex digits`},
		{name: "key hash not hex", mod: func(c *Config) { c.Clients[0].KeyHash = "sha256:" + strings.Repeat("g", 64) },
			wantErr: `client "alice": key_hash: want "sha256:" and 64 hex digits`},
		{name: "shared key", mod: func(c *Config) { c.Clients[1].KeyHash = c.Clients[0].KeyHash },
			wantErr: `client "bob": key_hash: same as client "alice"'s`},
		{name: "bad client upstream", mod: func(c *Config) { c.Clients[1].Upstreams = []string{""} },
			wantErr: `client "bob": upstreams[0]: must not be empty`},
		{name: "no relay", mod: func(c *Config) { c.Relays = nil }, wantErr: "relay: no [[relay]] is configured"},
		{name: "same relay twice", mod: func(c *Config) { c.Relays = append(c.Relays, c.Relays[0]) },
			wantErr: `relay[1].address = "relay.example:7443": relay[0] has it too`},
		{name: "two relays", mod: func(c *Config) {
			c.Relays = append(c.Relays, RelayConfig{Address: "relay-b.example:443", Key: c.Relays[0].Key})
		}},
		{name: "second relay without key", mod: func(c *Config) {
			c.Relays = append(c.Relays, RelayConfig{Address: "relay-b.example:443"})
		}, wantErr: "relay[1].key: required"},
		{name: "negative connections", mod: func(c *Config) { c.Tunnel.Connections = -1 }, wantErr: "tunnel.connections = -1"},
		{name: "relay without address", mod: func(c *Config) { c.Relays[0].Address = "" }, wantErr: "relay[0].address: required"},
		{name: "relay bad address", mod: func(c *Config) { c.Relays[0].Address = "relay" }, wantErr: `relay[0].address = "relay"`},
		{name: "relay without key", mod: func(c *Config) { c.Relays[0].Key = "" }, wantErr: "relay[0].key: required"},
		{name: "relay bad key", mod: func(c *Config) { c.Relays[0].Key = "sha256:nope" }, wantErr: "relay[0].key: key fingerprint"},
		{name: "bad tunnel", mod: func(c *Config) { c.Tunnel.ReconnectMax = config.Duration{Duration: 1} },
			wantErr: "tunnel.reconnect_max = 1ns: want at least tunnel.reconnect_min (250ms)"},
		{name: "negative ping interval", mod: func(c *Config) { c.Tunnel.PingInterval = config.Duration{Duration: -time.Second} },
			wantErr: "tunnel.ping_interval = -1s: want a positive duration"},
		{name: "negative probe", mod: func(c *Config) { c.Tunnel.QUICProbeInterval = config.Duration{Duration: -time.Second} },
			wantErr: "tunnel.quic_probe_interval = -1s: want a positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mod(c)
			c.SetDefaults()
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("Validate() = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigDecode(t *testing.T) {
	const doc = `
name = "office"
listen = "0.0.0.0:8080"
key_file = "edge.key"
upstream = "openai"
max_request_body_bytes = 1048576
shutdown_grace = "5s"

[[client]]
name = "ci"
key_hash = "sha256:` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF" + `"
upstreams = ["openai"]

[[relay]]
address = "relay.example:7443"
key = "` + testRelayKey + `"

[tunnel]
ping_interval = "2s"
`
	var c Config
	if err := config.Decode("edge.toml", []byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if c.Name != "office" || c.Clients[0].Upstreams[0] != "openai" || c.ShutdownGrace.Seconds() != 5 ||
		c.Tunnel.PingInterval.Seconds() != 2 || c.MaxRequestBodyBytes != 1<<20 {
		t.Errorf("decoded %+v", c)
	}
}

// TestTunnelConfig: the [tunnel] table has a key for every field of
// tunnel.Config, under the same Go name, so that every setting reaches the
// tunnel and every error names its key; the two forms convert both ways.
func TestTunnelConfig(t *testing.T) {
	opts := reflect.TypeFor[tunnel.Config]()
	for i := range opts.NumField() {
		name := opts.Field(i).Name
		f, ok := reflect.TypeFor[TunnelConfig]().FieldByName(name)
		if !ok || f.Tag.Get("toml") == "" {
			t.Errorf("tunnel.Config.%s has no [tunnel] key", name)
		}
	}
	want := tunnel.Config{
		HandshakeTimeout: 1, PingInterval: 2, PingTimeout: 3, ReconnectMin: 4,
		ReconnectMax: 5, FallbackTimeout: 6, Connections: 7, QUICProbeInterval: 8,
	}
	table := NewTunnelConfig(want)
	if got := table.Options(); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestTunnelConfigDecode: every documented [tunnel] key decodes into the
// tunnel's Config.
func TestTunnelConfigDecode(t *testing.T) {
	const doc = `
[tunnel]
handshake_timeout = "1s"
ping_interval = "2s"
ping_timeout = "3s"
reconnect_min = "4s"
reconnect_max = "5s"
fallback_timeout = "6s"
connections = 7
quic_probe_interval = "8s"
`
	var c Config
	if err := config.Decode("edge.toml", []byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	want := tunnel.Config{
		HandshakeTimeout: time.Second, PingInterval: 2 * time.Second, PingTimeout: 3 * time.Second,
		ReconnectMin: 4 * time.Second, ReconnectMax: 5 * time.Second, FallbackTimeout: 6 * time.Second,
		Connections: 7, QUICProbeInterval: 8 * time.Second,
	}
	if got := c.Tunnel.Options(); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestConfigClone(t *testing.T) {
	c := validConfig()
	n := c.Clone()
	n.Clients[1].Upstreams[0] = "changed"
	n.Relays[0].Address = "changed:1"
	if c.Clients[1].Upstreams[0] != "azure" || c.Relays[0].Address != "relay.example:7443" {
		t.Error("Clone shares slices with the original")
	}
}

func TestClientKey(t *testing.T) {
	key, hash, err := NewClientKey()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^sk-airlock-[A-Za-z0-9_-]{43}$`).MatchString(key) {
		t.Errorf("key %q: want sk-airlock- and 43 base64url characters", key)
	}
	sum := sha256.Sum256([]byte(key))
	if want := "sha256:" + hex.EncodeToString(sum[:]); hash != want || HashClientKey(key) != want {
		t.Errorf("hash = %q, HashClientKey = %q; want %q", hash, HashClientKey(key), want)
	}
	if _, err := parseKeyHash(hash); err != nil {
		t.Errorf("parseKeyHash(%q): %v", hash, err)
	}
	// The hash from NewClientKey lets the key in, and nothing else.
	k, err := newKeyring([]ClientConfig{{Name: "ci", KeyHash: hash}, {Name: "other", KeyHash: HashClientKey("x")}}, 1, nil, counters{})
	if err != nil {
		t.Fatal(err)
	}
	if p := k.lookup(key); p == nil || p.name != "ci" {
		t.Errorf("lookup(key) = %v, want client ci", p)
	}
	if p := k.lookup(key + "x"); p != nil {
		t.Errorf("lookup(other key) = %v, want nil", p)
	}
	// Upper-case hex in key_hash is the same hash.
	up, err := newKeyring([]ClientConfig{{Name: "ci", KeyHash: "sha256:" + strings.ToUpper(hash[7:])}}, 1, nil, counters{})
	if err != nil || up.lookup(key) == nil {
		t.Errorf("upper-case key_hash: %v, lookup = %v", err, up.lookup(key))
	}
	key2, _, _ := NewClientKey()
	if key2 == key {
		t.Error("two keys are equal")
	}
}

func TestNewHandlerErrors(t *testing.T) {
	o := &fakeOpener{t: t}
	if _, err := NewHandler(nil, o, nil, nil); err == nil {
		t.Error("NewHandler(nil config) = nil error")
	}
	if _, err := NewHandler(testConfig(), nil, nil, nil); err == nil {
		t.Error("NewHandler(nil opener) = nil error")
	}
	if _, err := NewHandler(&Config{}, o, nil, nil); err == nil || !strings.Contains(err.Error(), "no [[client]]") {
		t.Errorf("NewHandler(no clients) = %v, want the fail-closed error", err)
	}
}
