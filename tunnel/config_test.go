package tunnel

import (
	"strings"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/config"
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
		{"handshake_timeout", c.HandshakeTimeout.Duration, 10 * time.Second},
		{"ping_interval", c.PingInterval.Duration, 5 * time.Second},
		{"ping_timeout", c.PingTimeout.Duration, 5 * time.Second},
		{"reconnect_min", c.ReconnectMin.Duration, 250 * time.Millisecond},
		{"reconnect_max", c.ReconnectMax.Duration, 30 * time.Second},
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
	d := func(v time.Duration) config.Duration { return config.Duration{Duration: v} }
	tests := []struct {
		name string
		mod  func(*Config)
		want string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"negative ping interval", func(c *Config) { c.PingInterval = d(-time.Second) }, "tunnel.ping_interval = -1s"},
		{"negative handshake", func(c *Config) { c.HandshakeTimeout = d(-1) }, "tunnel.handshake_timeout"},
		{"negative ping timeout", func(c *Config) { c.PingTimeout = d(-1) }, "tunnel.ping_timeout"},
		{"negative reconnect min", func(c *Config) { c.ReconnectMin = d(-1) }, "tunnel.reconnect_min"},
		{"max below min", func(c *Config) { c.ReconnectMin, c.ReconnectMax = d(time.Second), d(time.Millisecond) }, "tunnel.reconnect_max"},
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
	d := func(v time.Duration) config.Duration { return config.Duration{Duration: v} }
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
		c := Config{PingInterval: d(tt.interval), PingTimeout: d(tt.wait)}
		if got := c.idleTimeout(); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
}
