package relay

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/config"
	"github.com/airlock-proxy/airlock/internal/keyfile"
	"github.com/airlock-proxy/airlock/tunnel"
)

const envKeyVar = "AIRLOCK_RELAY_TEST_KEY"

// validConfig returns a config that passes Validate after SetDefaults.
func validConfig() *Config {
	return &Config{
		KeyFile: "relay.key",
		Edges: []EdgeConfig{
			{Name: "office", Key: testEdgeKey, Upstreams: []string{"openai"}},
			{Name: "lab", Key: fakeFingerprint("edge lab")},
		},
		Upstreams: []UpstreamConfig{
			{Name: "openai", BaseURL: "https://api.openai.com/v1", Key: testKey},
			{Name: "azure", BaseURL: "https://x.openai.azure.com/openai/v1", Auth: "api-key", KeyEnv: envKeyVar,
				Headers: map[string]string{"OpenAI-Beta": "assistants=v2"}},
			{Name: "local", BaseURL: "http://127.0.0.1:8000/v1", Auth: "none"},
		},
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.Upstreams = []UpstreamConfig{{Name: "u"}}
	c.SetDefaults()
	for _, tt := range []struct {
		name string
		got  any
		want any
	}{
		{"name", c.Name, "relay"},
		{"listen", c.Listen, "0.0.0.0:7443"},
		{"admin_listen", c.AdminListen, "127.0.0.1:9091"},
		{"shutdown_grace", c.ShutdownGrace.Duration, 30 * time.Second},
		{"forward_client_address", c.ForwardClientAddress, false},
		{"admin_pprof", c.AdminPprof, false},
		{"upstream.auth", c.Upstreams[0].Auth, "bearer"},
		{"upstream.response_header_timeout", c.Upstreams[0].ResponseHeaderTimeout.Duration, 10 * time.Minute},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestConfigDecodeExample(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", testKey)
	t.Setenv("OPENAI_KEY_TEAM_A", testKey)
	b, err := os.ReadFile("../deploy/examples/relay.toml")
	if err != nil {
		t.Skipf("no example config: %v", err)
	}
	var c Config
	if err := config.Decode("relay.toml", b, &c); err != nil {
		t.Fatalf("decoding the example: %v", err)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("the example does not validate: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Setenv(envKeyVar, "  "+testKey+"\n")
	t.Setenv("AIRLOCK_RELAY_EMPTY", "")
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string // substring of the error; "" = valid
	}{
		{"valid", func(c *Config) {}, ""},
		{"identity instead of key_file", func(c *Config) { c.KeyFile = ""; c.Identity = mustIdentity(t) }, ""},
		{"no key_file", func(c *Config) { c.KeyFile = "" }, "key_file: required"},
		{"negative grace", func(c *Config) { c.ShutdownGrace.Duration = -time.Second }, "shutdown_grace"},
		{"no upstreams", func(c *Config) { c.Upstreams = nil; c.Edges[0].Upstreams = nil }, "upstream: at least one"},
		{"no edges", func(c *Config) { c.Edges = nil }, "edge: at least one"},
		{"ftp base_url", func(c *Config) { c.Upstreams[0].BaseURL = "ftp://x" },
			`upstream "openai": base_url "ftp://x": scheme must be http or https`},
		{"empty base_url", func(c *Config) { c.Upstreams[0].BaseURL = "" }, `upstream "openai": base_url "": required`},
		{"base_url with query", func(c *Config) { c.Upstreams[0].BaseURL = "https://h/v1?a=b" }, "base_url \"https://h/v1?a=[redacted]\": must not contain a query"},
		{"base_url with empty query", func(c *Config) { c.Upstreams[0].BaseURL = "https://h/v1?" }, "must not contain a query"},
		{"base_url with fragment", func(c *Config) { c.Upstreams[0].BaseURL = "https://h/v1#x" }, "must not contain a fragment"},
		{"base_url with userinfo", func(c *Config) { c.Upstreams[0].BaseURL = "https://u:pw@h/v1" }, "must not contain userinfo"},
		{"base_url without host", func(c *Config) { c.Upstreams[0].BaseURL = "https:///v1" }, "base_url"},
		{"base_url opaque", func(c *Config) { c.Upstreams[0].BaseURL = "https:h" }, "base_url"},
		{"base_url with ..", func(c *Config) { c.Upstreams[0].BaseURL = "https://h/v1/../admin" },
			`upstream "openai": base_url "https://h/v1/../admin": path must not contain a "." or ".." segment`},
		{"base_url ending in ..", func(c *Config) { c.Upstreams[0].BaseURL = "https://h/v1/.." }, `path must not contain a "." or ".." segment`},
		{"base_url with .", func(c *Config) { c.Upstreams[0].BaseURL = "https://h/./v1" }, `upstream "openai": base_url "https://h/./v1": path must not contain`},
		{"base_url ending in .", func(c *Config) { c.Upstreams[0].BaseURL = "https://h/v1/." }, `path must not contain a "." or ".." segment`},
		{"base_url with %2e%2e", func(c *Config) { c.Upstreams[0].BaseURL = "https://h/v1/%2e%2e/admin" }, `base_url "https://h/v1/%2e%2e/admin": path must not contain`},
		{"base_url with %2E.", func(c *Config) { c.Upstreams[0].BaseURL = "https://h/v1/%2E./admin" }, `path must not contain a "." or ".." segment`},
		{"base_url with %2e", func(c *Config) { c.Upstreams[0].BaseURL = "https://h/%2e/v1" }, `path must not contain a "." or ".." segment`},
		{"base_url with dots in a name", func(c *Config) { c.Upstreams[0].BaseURL = "https://h/v1.../..x/a.b" }, ""},
		{"duplicate upstream", func(c *Config) { c.Upstreams[1].Name = "openai" }, `upstream "openai": name: duplicate`},
		{"unnamed upstream", func(c *Config) { c.Upstreams[1].Name = "" }, "upstream: name: must not be empty"},
		{"bad auth", func(c *Config) { c.Upstreams[0].Auth = "basic" }, `upstream "openai": auth "basic"`},
		{"two key sources", func(c *Config) { c.Upstreams[0].KeyFile = "k" }, `upstream "openai": key: set exactly one of key, key_file and key_env`},
		{"no key", func(c *Config) { c.Upstreams[0].Key = "" }, `upstream "openai": key: set one of key, key_file and key_env, or [[upstream.keys]]`},
		{"key and keys", func(c *Config) { c.Upstreams[0].Keys = []KeyConfig{{Name: "a", Key: "k"}} }, `upstream "openai": key: set key, key_file or key_env, or [[upstream.keys]], not both`},
		{"keys", func(c *Config) {
			c.Upstreams[0].Key = ""
			c.Upstreams[0].Keys = []KeyConfig{{Name: "a", Key: "k1"}, {Name: "b", Key: "k2"}}
		}, ""},
		{"unnamed key", func(c *Config) { c.Upstreams[0].Key = ""; c.Upstreams[0].Keys = []KeyConfig{{Key: "k1"}} }, `upstream "openai": keys: name "": want printable ASCII`},
		{"key named twice", func(c *Config) {
			c.Upstreams[0].Key = ""
			c.Upstreams[0].Keys = []KeyConfig{{Name: "a", Key: "k1"}, {Name: "a", Key: "k2"}}
		}, `upstream "openai": keys: name "a": used twice`},
		{"key with two sources", func(c *Config) {
			c.Upstreams[0].Key = ""
			c.Upstreams[0].Keys = []KeyConfig{{Name: "a", Key: "k1", KeyEnv: "X"}}
		}, `upstream "openai": key "a": set exactly one of key, key_file and key_env`},
		{"key with auth none", func(c *Config) { c.Upstreams[2].Key = "x" }, `upstream "local": key: must not be set with auth = "none"`},
		{"unset key_env", func(c *Config) { c.Upstreams[1].KeyEnv = "AIRLOCK_RELAY_UNSET_VAR" },
			`upstream "azure": key_env: environment variable AIRLOCK_RELAY_UNSET_VAR is unset or empty`},
		{"empty key_env", func(c *Config) { c.Upstreams[1].KeyEnv = "AIRLOCK_RELAY_EMPTY" }, "AIRLOCK_RELAY_EMPTY is unset or empty"},
		{"bad header name", func(c *Config) { c.Upstreams[0].Headers = map[string]string{"Bad Name": "x"} }, `upstream "openai": headers: "Bad Name"`},
		{"bad header value", func(c *Config) { c.Upstreams[0].Headers = map[string]string{"X-A": "a\nb"} }, `upstream "openai": headers: the value of "X-A"`},
		{"reserved header", func(c *Config) { c.Upstreams[0].Headers = map[string]string{"authorization": "Bearer x"} }, `upstream "openai": headers: "authorization" cannot be set here`},
		{"hop-by-hop header", func(c *Config) { c.Upstreams[0].Headers = map[string]string{"Connection": "close"} }, `headers: "Connection" cannot be set`},
		{"negative response_header_timeout", func(c *Config) { c.Upstreams[0].ResponseHeaderTimeout.Duration = -1 }, `upstream "openai": response_header_timeout`},
		{"bad edge key", func(c *Config) { c.Edges[0].Key = "sha256:short" }, `edge "office": key: key fingerprint "sha256:short"`},
		{"edge key not sha256", func(c *Config) { c.Edges[0].Key = "AAAA" }, `edge "office": key:`},
		{"duplicate edge", func(c *Config) { c.Edges[1].Name = "office" }, `edge "office": name: duplicate`},
		{"duplicate edge key", func(c *Config) { c.Edges[1].Key = testEdgeKey }, `edge "lab": key: same key as edge "office"`},
		{"unnamed edge", func(c *Config) { c.Edges[1].Name = "" }, "edge #2: name: must not be empty"},
		{"edge with unknown upstream", func(c *Config) { c.Edges[0].Upstreams = []string{"nope"} }, `edge "office": upstreams: no [[upstream]] named "nope"`},
		{"edge upstream twice", func(c *Config) { c.Edges[0].Upstreams = []string{"openai", "openai"} }, `edge "office": upstreams: "openai" listed twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.modify(c)
			c.SetDefaults()
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("error %q contains the key", err)
			}
		})
	}
}

func mustIdentity(t *testing.T) *tunnel.Identity {
	t.Helper()
	id, err := tunnel.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestNewHandlerKeyErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	if err := os.WriteFile(good, []byte("\n"+testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.key")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	twoLines := filepath.Join(dir, "two.key")
	if err := os.WriteFile(twoLines, []byte(testKey+"\n"+testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		up   UpstreamConfig
		want string // "" = NewHandler succeeds
	}{
		{"key_file", UpstreamConfig{Name: "u", BaseURL: "http://h/v1", KeyFile: good}, ""},
		{"missing key_file", UpstreamConfig{Name: "u", BaseURL: "http://h/v1", KeyFile: filepath.Join(dir, "nope")}, `upstream "u": key_file: open`},
		{"empty key_file", UpstreamConfig{Name: "u", BaseURL: "http://h/v1", KeyFile: empty}, "the key is empty"},
		{"key_file with two lines", UpstreamConfig{Name: "u", BaseURL: "http://h/v1", KeyFile: twoLines}, "characters not allowed in a header"},
		{"inline key with a newline", UpstreamConfig{Name: "u", BaseURL: "http://h/v1", Key: testKey + "\r\nX-Evil: 1"}, `upstream "u": key: the key contains characters`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := NewHandler(testConfig(tt.up), nil, nil)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				if got := h.peers.Load().upstreams["u"].keys[0].secret.reveal(); got != testKey {
					t.Errorf("key = %d bytes, want the trimmed key", len(got))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("error %q contains the key", err)
			}
		})
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	t.Setenv(envKeyVar, testKey)
	c := validConfig()
	c.SetDefaults()
	var logs bytes.Buffer
	for _, lg := range []*slog.Logger{
		slog.New(slog.NewTextHandler(&logs, nil)),
		slog.New(slog.NewJSONHandler(&logs, nil)),
	} {
		lg.Info("config", "upstream", c.Upstreams[0], "upstreams", c.Upstreams)
	}
	h, err := NewHandler(c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.closeIdle()
	up := h.peers.Load().upstreams["openai"]
	outputs := []string{
		fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c),
		fmt.Sprint(*c), fmt.Sprintf("%+v", *c), fmt.Sprintf("%#v", *c),
		fmt.Sprint(c.Upstreams[0]), fmt.Sprintf("%#v", c.Upstreams[0]),
		fmt.Sprint(up), fmt.Sprintf("%+v", up), fmt.Sprintf("%#v", up),
		fmt.Sprint(up.keys[0]), fmt.Sprintf("%#v", up.keys[0]), fmt.Sprintf("%+v", up.keys[0]),
		logs.String(),
	}
	for i, s := range outputs {
		if strings.Contains(s, testKey) {
			t.Errorf("output %d shows the key: %s", i, s)
		}
	}
	if !strings.Contains(fmt.Sprint(c.Upstreams[0]), "openai") {
		t.Errorf("String() = %q, want the upstream's name in it", fmt.Sprint(c.Upstreams[0]))
	}
}

func TestConfigClone(t *testing.T) {
	c := validConfig()
	n := c.Clone()
	n.Edges[0].Upstreams[0] = "changed"
	n.Upstreams[1].Headers["OpenAI-Beta"] = "changed"
	if c.Edges[0].Upstreams[0] != "openai" || c.Upstreams[1].Headers["OpenAI-Beta"] != "assistants=v2" {
		t.Errorf("Clone shares slices or maps with the original")
	}
	if (*Config)(nil).Clone() != nil {
		t.Errorf("nil.Clone() != nil")
	}
}

func TestAuthorize(t *testing.T) {
	t.Setenv(envKeyVar, testKey)
	h, err := NewHandler(validConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.closeIdle()
	tests := []struct {
		name      string
		key       string
		wantName  string
		wantUps   []string
		wantError error
	}{
		{"restricted edge", testEdgeKey, "office", []string{"openai"}, nil},
		{"edge allowed all, in config order", fakeFingerprint("edge lab"), "lab", []string{"openai", "azure", "local"}, nil},
		{"unknown key", fakeFingerprint("stranger"), "", nil, tunnel.ErrUnknownPeer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, ups, err := h.Authorize(tt.key)
			if !errors.Is(err, tt.wantError) {
				t.Fatalf("got error %v, want %v", err, tt.wantError)
			}
			if name != tt.wantName || fmt.Sprint(ups) != fmt.Sprint(tt.wantUps) {
				t.Errorf("got %q %v, want %q %v", name, ups, tt.wantName, tt.wantUps)
			}
		})
	}
	// The returned slice is the caller's.
	_, ups, _ := h.Authorize(fakeFingerprint("edge lab"))
	ups[0] = "changed"
	if _, again, _ := h.Authorize(fakeFingerprint("edge lab")); again[0] != "openai" {
		t.Errorf("Authorize returned the handler's own slice")
	}
}

// TestBaseURLErrorsHideSecrets: a base_url that is refused is named in the
// error without what may be a secret in it: query values, userinfo, the
// fragment (issue 8, section 4).
func TestBaseURLErrorsHideSecrets(t *testing.T) {
	const secret = "SECRET"
	urls := []string{
		"https://h/v1?key=SECRET",
		"https://h/v1/../x?key=SECRET",
		"https://h/v1/%2e%2e/x?api-version=1&key=SECRET",
		"https://h/./v1?SECRET",
		"https://h/v1?key=SECRET#frag",
		"https://h/v1#SECRET",
		"https://SECRET@h/v1",
		"https://user:SECRET@h/v1",
		"https://user:SECRET@h/v1/../x",
		"https://user:SECRET?x@h/v1",
		"https://user:SECRET#x@h/v1",
		"ftp://user:SECRET@h/v1?key=SECRET",
		"https://h/%zz?key=SECRET",      // does not parse
		"https://user:SECRET@h:port/v1", // does not parse
		"https:user:SECRET@h/v1",        // opaque
	}
	for _, raw := range urls {
		t.Run(raw, func(t *testing.T) {
			c := validConfig()
			c.Upstreams[0].BaseURL = raw
			c.SetDefaults()
			err := c.Validate()
			if err == nil {
				t.Fatal("got no error, want base_url refused")
			}
			_, upErr := newUpstream(&c.Upstreams[0])
			var logs bytes.Buffer
			slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "upstream", c.Upstreams[0])
			for _, got := range []string{err.Error(), upErr.Error()} {
				if !strings.Contains(got, `upstream "openai": base_url "`) {
					t.Errorf("got %q, want it to name the upstream and base_url", got)
				}
			}
			for _, got := range []string{err.Error(), upErr.Error(), logs.String()} {
				if strings.Contains(got, secret) {
					t.Errorf("got %q, which shows the secret", got)
				}
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "https://api.openai.com/v1", "https://api.openai.com/v1"},
		{"query values", "https://h/v1?api-version=2024&key=s", "https://h/v1?api-version=[redacted]&key=[redacted]"},
		{"bare query", "https://h/v1?s", "https://h/v1?[redacted]"},
		{"empty query", "https://h/v1?", "https://h/v1?"},
		{"empty value", "https://h/v1?key=", "https://h/v1?key=[redacted]"},
		{"fragment", "https://h/v1#s", "https://h/v1#[redacted]"},
		{"user", "https://u@h/v1", "https://[redacted]@h/v1"},
		{"user and password", "https://u:p@h:8443/v1", "https://[redacted]@h:8443/v1"},
		{"@ in the path stays", "https://h/v1/a@b", "https://h/v1/a@b"},
		{"no scheme", "u:p@h/v1?k=s", "[redacted]@h/v1?k=[redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := redactURL(tt.in); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestUpstreamKeyFilePermissions: like the tunnel key, an upstream key_file
// that group or others may read or write is refused, by Validate and by
// NewHandler, with the chmod that fixes it (issue 8, section 4).
func TestUpstreamKeyFilePermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("mode bits are not checked on Windows")
	}
	dir := t.TempDir()
	writeKey := func(name string, perm os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(testKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, perm); err != nil {
			t.Fatal(err)
		}
		return path
	}
	private, readOnly := writeKey("private.key", 0o600), writeKey("readonly.key", 0o400)
	worldReadable, groupReadable := writeKey("world.key", 0o644), writeKey("group.key", 0o640)
	otherReadable := writeKey("other.key", 0o604)
	up := func(keyFile string) UpstreamConfig {
		return UpstreamConfig{Name: "u", BaseURL: "http://h/v1", KeyFile: keyFile}
	}
	keys := func(keyFile string) UpstreamConfig {
		return UpstreamConfig{Name: "u", BaseURL: "http://h/v1", Keys: []KeyConfig{{Name: "a", Key: "k"}, {Name: "b", KeyFile: keyFile}}}
	}
	tests := []struct {
		name string
		up   UpstreamConfig
		want string // substring of the error; "" = accepted
	}{
		{"0600", up(private), ""},
		{"0400", up(readOnly), ""},
		{"[[upstream.keys]] 0600", keys(private), ""},
		{"0644", up(worldReadable), `upstream "u": key_file: key file ` + worldReadable + " has mode 0644: readable or writable by group or others; run: chmod 600 " + worldReadable},
		{"0640", up(groupReadable), "mode 0640"},
		{"0604", up(otherReadable), "mode 0604"},
		{"[[upstream.keys]] 0640", keys(groupReadable), `upstream "u": key "b": key_file: key file ` + groupReadable + " has mode 0640"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(tt.up)
			c.SetDefaults()
			errs := map[string]error{"Validate": c.Validate()}
			h, err := NewHandler(c, nil, nil)
			if err == nil {
				h.closeIdle()
			}
			errs["NewHandler"] = err
			for op, err := range errs {
				if tt.want == "" {
					if err != nil {
						t.Errorf("%s: got %v, want no error", op, err)
					}
					continue
				}
				if !errors.Is(err, keyfile.ErrTooOpen) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s: got %v, want keyfile.ErrTooOpen containing %q", op, err, tt.want)
				}
				if err != nil && strings.Contains(err.Error(), testKey) {
					t.Errorf("%s: error %q contains the key", op, err)
				}
			}
		})
	}
}

// TestValidateMissingKeyFile: Validate checks a key_file's permissions but
// leaves a missing file to NewHandler, so that a config (the example) can be
// checked away from its key files.
func TestValidateMissingKeyFile(t *testing.T) {
	c := testConfig(UpstreamConfig{Name: "u", BaseURL: "http://h/v1", KeyFile: filepath.Join(t.TempDir(), "nope.key")})
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: got %v, want no error", err)
	}
}
