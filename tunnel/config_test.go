package tunnel

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	tests := []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"handshake_timeout", c.HandshakeTimeout, 10 * time.Second},
		{"ping_interval", c.PingInterval, 5 * time.Second},
		{"ping_timeout", c.PingTimeout, 5 * time.Second},
		{"reconnect_min", c.ReconnectMin, 250 * time.Millisecond},
		{"reconnect_max", c.ReconnectMax, 30 * time.Second},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, tt.got, tt.want)
		}
	}
	if got, want := c.idleTimeout(), 10*time.Second; got != want {
		t.Errorf("idle timeout: got %s, want %s", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"negative ping interval", func(c *Config) { c.PingInterval = -time.Second }, "Config.PingInterval = -1s: want a positive duration"},
		{"negative handshake", func(c *Config) { c.HandshakeTimeout = -1 }, "Config.HandshakeTimeout"},
		{"negative ping timeout", func(c *Config) { c.PingTimeout = -1 }, "Config.PingTimeout"},
		{"negative reconnect min", func(c *Config) { c.ReconnectMin = -1 }, "Config.ReconnectMin"},
		{"negative fallback", func(c *Config) { c.FallbackTimeout = -1 }, "Config.FallbackTimeout"},
		{"negative probe", func(c *Config) { c.QUICProbeInterval = -1 }, "Config.QUICProbeInterval"},
		{"negative connections", func(c *Config) { c.Connections = -1 }, "Config.Connections = -1: want a positive number"},
		{"max below min", func(c *Config) { c.ReconnectMin, c.ReconnectMax = time.Second, time.Millisecond },
			"Config.ReconnectMax = 1ms: want at least Config.ReconnectMin (1s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			tt.mod(&c)
			c.SetDefaults()
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestConfigIdleTimeoutBounds(t *testing.T) {
	tests := []struct {
		name           string
		interval, wait time.Duration
		want           time.Duration
	}{
		{"floor", 50 * time.Millisecond, 50 * time.Millisecond, 5 * time.Second},
		{"sum", 10 * time.Second, 5 * time.Second, 15 * time.Second},
		{"ceiling", time.Hour, time.Hour, 2 * time.Minute},
	}
	for _, tt := range tests {
		c := Config{PingInterval: tt.interval, PingTimeout: tt.wait}
		if got := c.idleTimeout(); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
}

// TestValidateNamed: a configuration file's layer gets its own names for
// the fields in every error, including the bound of ReconnectMax.
func TestValidateNamed(t *testing.T) {
	c := Config{ReconnectMin: time.Second, ReconnectMax: time.Millisecond}
	c.SetDefaults()
	key := func(field string) string { return "key:" + field }
	err := c.ValidateNamed(key)
	if want := "key:ReconnectMax = 1ms: want at least key:ReconnectMin (1s)"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

// TestPopulated: the constructors' copy is filled and checked, and the
// caller's Config is left as it was.
func TestPopulated(t *testing.T) {
	in := Config{PingInterval: time.Second}
	got, err := in.populated()
	if err != nil {
		t.Fatalf("populated: %v", err)
	}
	if got.PingInterval != time.Second || got.PingTimeout != DefaultPingTimeout || got.Connections != DefaultConnections {
		t.Errorf("got %+v, want PingInterval 1s and the defaults elsewhere", got)
	}
	if in.PingTimeout != 0 {
		t.Errorf("the caller's Config was changed: %+v", in)
	}
	if _, err := (Config{PingTimeout: -1}).populated(); err == nil {
		t.Error("populated accepted a negative PingTimeout")
	}
}
