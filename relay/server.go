package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/airlock-proxy/airlock/internal/buildinfo"
	"github.com/airlock-proxy/airlock/internal/config"
	"github.com/airlock-proxy/airlock/internal/metrics"

	"github.com/airlock-proxy/airlock/internal/admin"
	"github.com/airlock-proxy/airlock/tunnel"
)

// Server is a running relay: a QUIC tunnel listener whose streams a Handler
// serves, and an admin listener (/healthz, /readyz). All methods are safe
// for concurrent use.
type Server struct {
	cfg     *Config
	logger  *slog.Logger
	id      *tunnel.Identity
	handler *Handler
	tun     *tunnel.Server
	admin   *admin.Server // nil when admin_listen = "off"

	mu      sync.Mutex
	started bool
	closed  bool
	serving chan struct{} // closed when the tunnel's Serve returned

	closeOnce sync.Once
}

// NewServer builds a relay from cfg: it loads the tunnel key (cfg.Identity,
// else cfg.KeyFile), resolves every upstream key and prepares the listeners
// without binding them. cfg is copied; defaults are filled in and it is
// validated, here and only here, and the parts are built from that copy. A
// nil logger discards.
func NewServer(cfg *Config, logger *slog.Logger) (*Server, error) {
	c, err := populated(cfg, (*Config).Validate)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	id := c.Identity
	if id == nil {
		if id, err = tunnel.LoadIdentity(c.KeyFile); err != nil {
			return nil, fmt.Errorf("key_file: %w", err)
		}
	}
	reg := metrics.NewRegistry()
	h, err := newHandler(c, logger, reg)
	if err != nil {
		return nil, err
	}
	tun, err := tunnel.NewServer(tunnel.ServerOptions{
		Identity:  id,
		Listen:    c.Listen,
		ListenTCP: c.ListenTCP,
		RelayName: c.Name,
		Authorize: h.Authorize,
		Logger:    logger,
		Software:  buildinfo.Software(),
	}, h)
	if err != nil {
		h.closeIdle()
		return nil, err
	}
	reg.MustRegister(newTunnelCollector(tun))
	s := &Server{cfg: c, logger: logger, id: id, handler: h, tun: tun, serving: make(chan struct{})}
	if c.AdminListen != AdminOff {
		s.admin = admin.New(c.AdminListen, s.ready, logger)
		if c.AdminPprof {
			s.admin.EnablePprof()
		}
		s.admin.Handle("GET /metrics", metrics.Handler(reg))
	}
	return s, nil
}

// ShutdownGrace returns shutdown_grace as the relay runs with it: how long a
// caller's drain should give Shutdown.
func (s *Server) ShutdownGrace() time.Duration { return s.cfg.ShutdownGrace.Duration }

// Start binds the tunnel listener (Addr is valid afterwards) and the admin
// listener, and serves tunnels in a goroutine that Shutdown and Close stop.
// It does not block. ctx bounds the start only, as for the edge: the relay
// runs until Shutdown or Close (a drain needs the sessions after the
// caller's context is gone).
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return tunnel.ErrClosed
	}
	if s.started {
		return errors.New("relay: already started")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("relay: start: %w", err)
	}
	if err := s.tun.Listen(); err != nil {
		return err
	}
	if s.admin != nil {
		if err := s.admin.Start(); err != nil {
			s.tun.Close()
			return err
		}
	}
	s.started = true
	go func() {
		defer close(s.serving)
		if err := s.tun.Serve(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, tunnel.ErrClosed) {
			s.logger.Error("relay: tunnel listener stopped", "err", err)
		}
	}()
	tcp := tunnel.ListenTCPOff
	if a := s.tun.TCPAddr(); a != nil {
		tcp = a.String()
	}
	s.logger.Info("relay started", "name", s.cfg.Name, "udp", s.tun.Addr().String(), "tcp", tcp,
		"key", s.id.Fingerprint(), "upstreams", len(s.cfg.Upstreams), "edges", len(s.cfg.Edges))
	return nil
}

// ready is the admin /readyz check: the relay is ready while it listens.
func (s *Server) ready() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return "", errors.New("relay is shutting down")
	case !s.started:
		return "", errors.New("relay is not listening yet")
	}
	tcp := "tcp off"
	if a := s.tun.TCPAddr(); a != nil {
		tcp = "tcp " + a.String()
	}
	return fmt.Sprintf("listening on udp %s, %s", s.tun.Addr(), tcp), nil
}

// Addr returns the tunnel's UDP address, or nil before Start.
func (s *Server) Addr() net.Addr { return s.tun.Addr() }

// Sessions returns how many edge sessions are up.
func (s *Server) Sessions() int { return s.tun.Sessions() }

// TCPAddr returns the TCP address of the tunnel's TLS/TCP transport, or nil
// before Start or when it is off.
func (s *Server) TCPAddr() net.Addr { return s.tun.TCPAddr() }

// AdminAddr returns the admin listener's address, or nil before Start or
// when it is off.
func (s *Server) AdminAddr() net.Addr {
	if s.admin == nil {
		return nil
	}
	return s.admin.Addr()
}

// Fingerprint returns the relay's public key fingerprint, which edges pin.
func (s *Server) Fingerprint() string { return s.id.Fingerprint() }

// Shutdown drains the relay: edges get GOAWAY and open no new streams,
// in-flight exchanges finish until ctx ends, then everything is closed as
// by Close. It returns ctx's error if the grace time ran out.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true // not ready any more
	s.mu.Unlock()
	err := s.tun.Shutdown(ctx)
	return errors.Join(err, s.Close())
}

// Close stops the relay at once: it closes the listeners, sends GOAWAY,
// refuses every exchange whose request has not reached the upstream (the
// edge retries those on another relay), cancels the upstream calls of the
// others and aborts their streams, closes the sessions, and waits for the
// server's goroutines. It is idempotent.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		started := s.started
		s.mu.Unlock()
		errs := []error{s.tun.Close()}
		if started {
			<-s.serving
		}
		if s.admin != nil {
			errs = append(errs, s.admin.Close())
		}
		s.handler.closeIdle()
		err = errors.Join(errs...)
	})
	return err
}

// Reload applies the parts of cfg that can change while the relay runs: the
// edges (their keys, names and allowed upstreams) and the upstreams (base
// URLs, keys, read again from their sources, headers, timeouts), for the
// exchanges that start from now on; exchanges in flight finish as they
// began. The sessions of edges no longer listed are closed. Other settings
// (addresses, key file, forward_client_address, shutdown grace, log) need a
// restart: Reload keeps the running values and logs which differ. An
// invalid cfg changes nothing and is returned as an error.
func (s *Server) Reload(cfg *Config) error {
	c, err := populated(cfg, (*Config).Validate)
	if err != nil {
		return err
	}
	if err := s.handler.reload(c); err != nil {
		return err
	}
	closed := s.tun.Reauthorize()
	keys := config.Changed(
		config.Setting{Key: "name", Running: s.cfg.Name, Reloaded: c.Name},
		config.Setting{Key: "listen", Running: s.cfg.Listen, Reloaded: c.Listen},
		config.Setting{Key: "listen_tcp", Running: s.cfg.ListenTCP, Reloaded: c.ListenTCP},
		config.Setting{Key: "admin_listen", Running: s.cfg.AdminListen, Reloaded: c.AdminListen},
		config.Setting{Key: "admin_pprof", Running: s.cfg.AdminPprof, Reloaded: c.AdminPprof},
		config.Setting{Key: "key_file", Running: s.cfg.KeyFile, Reloaded: c.KeyFile},
		config.Setting{Key: "forward_client_address", Running: s.cfg.ForwardClientAddress, Reloaded: c.ForwardClientAddress},
		config.Setting{Key: "shutdown_grace", Running: s.cfg.ShutdownGrace, Reloaded: c.ShutdownGrace},
		config.Setting{Key: "log", Running: s.cfg.Log, Reloaded: c.Log},
	)
	if len(keys) > 0 {
		s.logger.Warn("relay: these settings changed but need a restart to apply", "keys", keys)
	}
	s.logger.Info("relay: configuration reloaded", "edges", len(c.Edges), "upstreams", len(c.Upstreams),
		"sessions_closed", closed)
	return nil
}
