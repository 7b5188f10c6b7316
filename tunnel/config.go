package tunnel

import (
	"fmt"
	"time"
)

// Config tunes a tunnel session's timeouts and reconnects. A zero field
// means its default; a negative one is invalid. The constructors that take
// a Config ([NewClient], [NewPool], [NewServer]) fill in the defaults and
// validate it themselves; SetDefaults and Validate are for callers that
// want to check a Config before that (a configuration file's layer).
type Config struct {
	// HandshakeTimeout bounds one connection attempt: the QUIC and TLS
	// handshake plus HELLO and WELCOME on the control stream. On the relay
	// it bounds the QUIC and TLS handshakes and the wait for HELLO.
	// Default: 10s.
	HandshakeTimeout time.Duration
	// PingInterval is how often the edge sends a PING on the control stream
	// (and how often QUIC sends keep-alives). Default: 5s.
	PingInterval time.Duration
	// PingTimeout is how long the edge waits for the PONG to a PING; a PING
	// without a PONG in this time, with nothing else heard from the relay
	// either, kills the session, so a dead relay is noticed within
	// PingInterval + PingTimeout while a PONG held up behind busy streams
	// is only late. PingInterval + PingTimeout, kept between 5s and 2m,
	// is also the QUIC idle timeout and the time after which the relay
	// drops a silent edge. Default: 5s.
	PingTimeout time.Duration
	// ReconnectMin is the shortest wait before the edge redials after a
	// failure. Waits double with each failed attempt, with full jitter, and
	// start over after a successful handshake. Not used by the relay.
	// Default: 250ms.
	ReconnectMin time.Duration
	// ReconnectMax caps the wait between two connection attempts; it must
	// not be below ReconnectMin. Not used by the relay. Default: 30s.
	ReconnectMax time.Duration
	// FallbackTimeout is how long transport "auto" waits for a QUIC
	// session before it tries TCP (UDP blocked or throttled). Not used by
	// the relay. Default: 3s.
	FallbackTimeout time.Duration
	// Connections is how many sessions a [Pool] keeps to each relay, each
	// with its own reconnects, so that one broken path never leaves the
	// edge without a tunnel. Used only by a Pool. Default: 2.
	Connections int
	// QUICProbeInterval is how often an "auto" tunnel that fell back to
	// TCP tries QUIC again (±20% jitter); new streams move to QUIC as soon
	// as it works. Not used by the relay. Default: 30s.
	QUICProbeInterval time.Duration
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

// configDuration is one duration field of a Config.
type configDuration struct {
	field string // its Go name, for errors
	d     *time.Duration
	def   time.Duration
}

// durations lists c's duration fields with their defaults.
func (c *Config) durations() []configDuration {
	return []configDuration{
		{"HandshakeTimeout", &c.HandshakeTimeout, DefaultHandshakeTimeout},
		{"PingInterval", &c.PingInterval, DefaultPingInterval},
		{"PingTimeout", &c.PingTimeout, DefaultPingTimeout},
		{"ReconnectMin", &c.ReconnectMin, DefaultReconnectMin},
		{"ReconnectMax", &c.ReconnectMax, DefaultReconnectMax},
		{"FallbackTimeout", &c.FallbackTimeout, DefaultFallbackTimeout},
		{"QUICProbeInterval", &c.QUICProbeInterval, DefaultQUICProbe},
	}
}

// SetDefaults fills every zero field with its default. Negative values are
// left for Validate to report.
func (c *Config) SetDefaults() {
	if c.Connections == 0 {
		c.Connections = DefaultConnections
	}
	for _, f := range c.durations() {
		if *f.d == 0 {
			*f.d = f.def
		}
	}
}

// Validate reports the first field out of range, by its Go name
// ("Config.PingInterval = -1s: want a positive duration"). It expects
// SetDefaults to have run: a zero duration is an error.
func (c *Config) Validate() error {
	return c.ValidateNamed(func(field string) string { return "Config." + field })
}

// ValidateNamed is Validate for a layer that spells the fields its own way,
// such as a configuration file: name maps a field's Go name
// ("PingInterval") to the name its errors use ("tunnel.ping_interval").
func (c *Config) ValidateNamed(name func(field string) string) error {
	for _, f := range c.durations() {
		if *f.d <= 0 {
			return fmt.Errorf("%s = %s: want a positive duration", name(f.field), *f.d)
		}
	}
	if c.Connections < 0 {
		return fmt.Errorf("%s = %d: want a positive number", name("Connections"), c.Connections)
	}
	if c.ReconnectMax < c.ReconnectMin {
		return fmt.Errorf("%s = %s: want at least %s (%s)",
			name("ReconnectMax"), c.ReconnectMax, name("ReconnectMin"), c.ReconnectMin)
	}
	return nil
}

// populated returns a copy of c with its defaults filled in, validated: what
// the constructors keep and pass down. Nothing after a constructor fills or
// validates a Config again.
func (c Config) populated() (Config, error) {
	c.SetDefaults()
	return c, c.Validate()
}

// idleTimeout is the QUIC idle timeout: a peer silent for this long is dead.
// The edge pings every PingInterval, so a live session is never idle that
// long; the relay relies on it to drop edges that vanished. quic-go never
// accepts less than 5s from a peer, and more than two minutes would keep dead
// sessions around for too long.
func (c *Config) idleTimeout() time.Duration {
	d := c.PingInterval + c.PingTimeout
	return min(max(d, 5*time.Second), 2*time.Minute)
}
