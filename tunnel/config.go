package tunnel

import (
	"fmt"
	"time"

	"github.com/airlock-proxy/airlock/internal/config"
)

// Config tunes a tunnel session's timeouts and reconnects. It is the
// `[tunnel]` table of the edge configuration. A zero field means its default;
// call SetDefaults, then Validate.
type Config struct {
	// HandshakeTimeout bounds one connection attempt: the QUIC and TLS
	// handshake plus HELLO and WELCOME on the control stream.
	// Default: 10s.
	HandshakeTimeout config.Duration `toml:"handshake_timeout"`
	// PingInterval is how often the edge sends a PING on the control stream
	// (and how often QUIC sends keep-alives). Default: 5s.
	PingInterval config.Duration `toml:"ping_interval"`
	// PingTimeout is how long the edge waits for the PONG to a PING; a PING
	// without a PONG in this time, with nothing else heard from the relay
	// either, kills the session, so a dead relay is noticed within
	// PingInterval + PingTimeout while a PONG held up behind busy streams
	// is only late. Default: 5s.
	PingTimeout config.Duration `toml:"ping_timeout"`
	// ReconnectMin is the shortest wait before the edge redials after a
	// failure. Waits double with each failed attempt, with full jitter, and
	// start over after a successful handshake. Default: 250ms.
	ReconnectMin config.Duration `toml:"reconnect_min"`
	// ReconnectMax caps the wait between two connection attempts.
	// Default: 30s.
	ReconnectMax config.Duration `toml:"reconnect_max"`
	// FallbackTimeout is how long transport "auto" waits for a QUIC
	// session before it tries TCP (UDP blocked or throttled). Default: 3s.
	FallbackTimeout config.Duration `toml:"fallback_timeout"`
	// Connections is how many sessions the edge keeps to each relay, each
	// with its own reconnects, so that one broken path never leaves the
	// edge without a tunnel. Default: 2.
	Connections int `toml:"connections"`
	// QUICProbeInterval is how often an "auto" tunnel that fell back to
	// TCP tries QUIC again (±20% jitter); new streams move to QUIC as soon
	// as it works. Default: 30s.
	QUICProbeInterval config.Duration `toml:"quic_probe_interval"`
}

// Defaults for Config.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultPingInterval     = 5 * time.Second
	DefaultPingTimeout      = 5 * time.Second
	DefaultReconnectMin     = 250 * time.Millisecond
	DefaultReconnectMax     = 30 * time.Second
	DefaultFallbackTimeout  = 3 * time.Second
	DefaultQUICProbe        = 30 * time.Second
)

// SetDefaults fills every zero field with its default. Negative values are
// left for Validate to report.
func (c *Config) SetDefaults() {
	if c.Connections == 0 {
		c.Connections = DefaultConnections
	}
	for _, f := range []struct {
		d   *config.Duration
		def time.Duration
	}{
		{&c.HandshakeTimeout, DefaultHandshakeTimeout},
		{&c.PingInterval, DefaultPingInterval},
		{&c.PingTimeout, DefaultPingTimeout},
		{&c.ReconnectMin, DefaultReconnectMin},
		{&c.ReconnectMax, DefaultReconnectMax},
		{&c.FallbackTimeout, DefaultFallbackTimeout},
		{&c.QUICProbeInterval, DefaultQUICProbe},
	} {
		if f.d.Duration == 0 {
			f.d.Duration = f.def
		}
	}
}

// Validate reports the first field out of range, named by its TOML key. It
// expects SetDefaults to have run: a zero duration is an error.
func (c *Config) Validate() error {
	for _, f := range []struct {
		key string
		d   time.Duration
	}{
		{"handshake_timeout", c.HandshakeTimeout.Duration},
		{"ping_interval", c.PingInterval.Duration},
		{"ping_timeout", c.PingTimeout.Duration},
		{"reconnect_min", c.ReconnectMin.Duration},
		{"reconnect_max", c.ReconnectMax.Duration},
		{"fallback_timeout", c.FallbackTimeout.Duration},
		{"quic_probe_interval", c.QUICProbeInterval.Duration},
	} {
		if f.d <= 0 {
			return fmt.Errorf("tunnel.%s = %s: want a positive duration", f.key, f.d)
		}
	}
	if c.Connections < 0 {
		return fmt.Errorf("tunnel.connections = %d: want a positive number", c.Connections)
	}
	if c.ReconnectMax.Duration < c.ReconnectMin.Duration {
		return fmt.Errorf("tunnel.reconnect_max = %s: want at least tunnel.reconnect_min (%s)",
			c.ReconnectMax.Duration, c.ReconnectMin.Duration)
	}
	return nil
}

// withDefaults returns a copy of c with SetDefaults applied, validated.
func (c Config) withDefaults() (Config, error) {
	c.SetDefaults()
	return c, c.Validate()
}

// idleTimeout is the QUIC idle timeout: a peer silent for this long is dead.
// The edge pings every PingInterval, so a live session is never idle that
// long; the relay relies on it to drop edges that vanished. quic-go never
// accepts less than 5s from a peer, and more than two minutes would keep dead
// sessions around for too long.
func (c *Config) idleTimeout() time.Duration {
	d := c.PingInterval.Duration + c.PingTimeout.Duration
	return min(max(d, 5*time.Second), 2*time.Minute)
}
