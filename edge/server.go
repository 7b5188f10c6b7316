package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/airlock-proxy/airlock/internal/admin"
	"github.com/airlock-proxy/airlock/internal/buildinfo"
	"github.com/airlock-proxy/airlock/internal/config"
	"github.com/airlock-proxy/airlock/internal/metrics"
	"github.com/airlock-proxy/airlock/tunnel"
)

// HTTP server settings. There is no WriteTimeout or ReadTimeout: a streamed
// completion or an upload may rightly take many minutes. Stalled clients are
// cut by client_send_timeout (clientConn) and client_body_timeout (each read
// of a body) instead, which bound each wait rather than the whole exchange.
const (
	// fdReserve is how many descriptors besides the client connections
	// the edge wants under its open-file limit: tunnel sockets, listeners,
	// log files.
	fdReserve = 64
	// maxHeaderBytes keeps every request head within proto's head limit
	// (64 KiB), so that no well-formed request fails on the wire.
	maxHeaderBytes = 48 << 10
	// upgradeCloseWait bounds how long a shutdown waits for upgraded
	// connections' exchanges to end after closing them.
	upgradeCloseWait = 5 * time.Second
)

// Server is a running edge: the client-facing HTTP listener with the /v1
// proxy, the tunnel client that keeps a session to the relay, and the admin
// listener (/healthz, /readyz).
type Server struct {
	cfg     *Config
	logger  *slog.Logger
	client  *tunnel.Pool
	handler *handler
	front   *frontDoor
	clients *clientListener // the client listener, bound by Start
	admin   *admin.Server   // nil when admin_listen = "off"

	mu        sync.Mutex
	ln        net.Listener
	started   bool
	closed    bool
	cancelRun context.CancelFunc
	wg        sync.WaitGroup // the HTTP serve loops and the tunnel's Run

	stopOnce sync.Once
	stopErr  error
}

// NewServer checks cfg: a copy is completed with defaults and validated,
// here and only here, and the parts are built from that copy. It loads the
// tunnel identity (cfg.Identity, else cfg.KeyFile). It binds nothing: call
// Start. A nil logger discards logs.
func NewServer(cfg *Config, logger *slog.Logger) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("edge: nil config")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c, err := populated(cfg, "edge config", (*Config).Validate)
	if err != nil {
		return nil, err
	}
	id := c.Identity
	if id == nil {
		if id, err = tunnel.LoadIdentity(c.KeyFile); err != nil {
			return nil, fmt.Errorf("edge config: key_file: %w", err)
		}
	}
	// proxy_url, or else HTTPS_PROXY and NO_PROXY.
	dialer, err := tunnel.NewProxyDialer(c.ProxyURL, true)
	if err != nil {
		return nil, fmt.Errorf("edge config: proxy_url: %w", err)
	}
	relays := make([]tunnel.RelayTarget, len(c.Relays))
	for i, r := range c.Relays {
		relays[i] = tunnel.RelayTarget{Addr: r.Address, TCPAddr: r.TCPAddress, Key: r.Key}
	}
	client, err := tunnel.NewPool(tunnel.PoolOptions{
		Client: tunnel.ClientOptions{
			Config:    c.Tunnel.Options(),
			Identity:  id,
			Transport: c.Transport,
			Dialer:    dialer,
			EdgeName:  c.Name,
			Software:  buildinfo.Software(),
			Logger:    logger.With("component", "tunnel"),
		},
		Relays: relays,
	})
	if err != nil {
		return nil, err
	}
	reg := metrics.NewRegistry()
	reg.MustRegister(newTunnelCollector(client))
	clients := &clientListener{max: int64(c.MaxClientConnections), sendTimeout: c.ClientSendTimeout.Duration}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: metrics.Namespace, Subsystem: "edge", Name: "client_connections",
			Help: "Client connections open now.",
		}, func() float64 { return float64(clients.open.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "edge", Name: "client_connections_refused_total",
			Help: "Client connections turned away because max_client_connections were open.",
		}, func() float64 { return float64(clients.refused.Load()) }),
	)
	h, err := newHandler(c, client, logger, reg)
	if err != nil {
		client.Close()
		return nil, err
	}
	s := &Server{cfg: c, logger: logger, client: client, handler: h, clients: clients, front: newFrontDoor(h, c, logger)}
	if c.AdminListen != adminOff {
		s.admin = admin.New(c.AdminListen, s.readyErr, logger.With("component", "admin"))
		if c.AdminPprof {
			s.admin.EnablePprof()
		}
		s.admin.Handle("GET /metrics", metrics.Handler(reg))
	}
	return s, nil
}

// Start binds the client listener (and the admin listener) and starts
// serving and keeping the tunnel up, in goroutines that Shutdown and Close
// stop. It does not wait for the tunnel (see Ready): until a session is up,
// requests get 503 with Retry-After. ctx bounds the start only; the server
// runs until Shutdown or Close.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("edge: start: server closed")
	case s.started:
		return errors.New("edge: start: already started")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("edge: start: %w", err)
	}
	tcp, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("edge listener: %w", err)
	}
	s.clients.Listener = tcp
	ln := net.Listener(s.clients)
	// Go raises the soft limit to the hard one at start; what is left must
	// hold the client connections and the edge's own descriptors. Past the
	// limit, accept fails and a client waits unanswered; under the cap it
	// gets its 503 at once, so the cap shrinks to fit.
	if limit, ok := openFileLimit(); ok && limit < uint64(s.cfg.MaxClientConnections)+fdReserve && limit > 2*fdReserve {
		s.clients.max = int64(limit - fdReserve)
		s.logger.Warn("edge: the open-file limit is below max_client_connections; serving fewer connections: "+
			"raise LimitNOFILE (systemd) or ulimit -n to allow more",
			"open_file_limit", limit, "max_client_connections", s.cfg.MaxClientConnections, "serving", s.clients.max)
	}
	if s.admin != nil {
		if err := s.admin.Start(); err != nil {
			ln.Close()
			return err
		}
	}
	s.ln, s.started = ln, true
	// The tunnel must outlive a cancelled start context: during a drain,
	// in-flight requests still need it.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancelRun = cancel
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.front.serve(ln); err != nil {
			s.logger.Error("edge listener stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		err := s.client.Run(runCtx)
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, tunnel.ErrClosed) {
			s.logger.Error("tunnel client stopped", "err", err)
		}
	}()
	s.logger.Info("edge listening", "addr", ln.Addr().String(), "relays", len(s.cfg.Relays),
		"connections_per_relay", s.cfg.Tunnel.Connections, "transport", s.cfg.Transport, "auth", s.cfg.Auth)
	return nil
}

// ShutdownGrace returns shutdown_grace as the server runs with it: how long
// a caller's drain should give Shutdown.
func (s *Server) ShutdownGrace() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.ShutdownGrace.Duration
}

// Addr is the client listener's address; nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// AdminAddr is the admin listener's address; nil before Start or when
// admin_listen = "off".
func (s *Server) AdminAddr() net.Addr {
	if s.admin == nil {
		return nil
	}
	return s.admin.Addr()
}

// Transport returns the transport new requests go over ("quic" or "tcp"),
// or "" while no tunnel session is up.
func (s *Server) Transport() string { return s.client.Transport() }

// Ready reports whether a tunnel session to a relay is up.
func (s *Server) Ready() bool { return s.client.Ready() }

// WaitReady blocks until a tunnel session is up or ctx ends. Valid after
// Start.
func (s *Server) WaitReady(ctx context.Context) error {
	err := s.client.WaitReady(ctx)
	if err == nil {
		return nil
	}
	if last := s.client.LastError(); last != nil {
		// Both wrapped: callers can tell a deadline from, say, a pin
		// mismatch with errors.Is.
		return fmt.Errorf("waiting for the tunnel: %w (last error: %w)", err, last)
	}
	return fmt.Errorf("waiting for the tunnel: %w", err)
}

// readyErr is /readyz's check: ready while a tunnel session is up, saying
// how many are up and over which transports.
func (s *Server) readyErr() (string, error) {
	if s.client.Ready() {
		return s.client.Summary(), nil
	}
	if err := s.client.LastError(); err != nil {
		return "", fmt.Errorf("no tunnel session to a relay: %w", err)
	}
	return "", errors.New("no tunnel session to a relay yet")
}

// Shutdown drains the edge: it stops accepting, waits for in-flight requests
// until they end or ctx is done (then cuts the rest), closes upgraded
// (WebSocket) connections, which cannot be drained, then closes the tunnel
// and the admin listener. It waits for every goroutine the Server started.
// Later calls return the first call's result.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.stop(ctx, true)
}

// Close stops the edge at once: in-flight requests are cut. It is
// idempotent, waits for every goroutine the Server started, and may be
// called during a Shutdown to end it early.
func (s *Server) Close() error {
	// Cutting the connections first makes a running Shutdown return.
	s.front.close()
	return s.stop(context.Background(), false)
}

func (s *Server) stop(ctx context.Context, graceful bool) error {
	s.stopOnce.Do(func() { s.stopErr = s.teardown(ctx, graceful) })
	return s.stopErr
}

func (s *Server) teardown(ctx context.Context, graceful bool) error {
	s.mu.Lock()
	s.closed = true
	cancelRun := s.cancelRun
	s.mu.Unlock()

	var errs []error
	if graceful {
		// Shutdown does not count hijacked connections as in flight.
		if err := s.front.shutdown(ctx); err != nil {
			errs = append(errs, err)
			s.front.close()
		}
	} else {
		s.front.close()
	}
	wctx, cancel := context.WithTimeout(context.Background(), upgradeCloseWait)
	if err := s.handler.closeUpgraded(wctx); err != nil {
		errs = append(errs, err)
	}
	cancel()
	if cancelRun != nil {
		cancelRun()
	}
	if err := s.client.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing the tunnel: %w", err))
	}
	if s.admin != nil {
		if err := s.admin.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// Reload applies the parts of cfg that can change while the edge runs: the
// clients, their keys, allowed upstreams and max_concurrent, auth, the
// default upstream, max_request_body_bytes and client_body_timeout, for the
// requests that start from now on (exchanges in flight still count against
// the new caps). The other settings (addresses, key file, relays,
// transport, proxy, tunnel, the client listener's timeouts and connection
// cap, log, shutdown grace) need a restart: Reload keeps the running
// values and logs which of them differ. An invalid cfg changes nothing and is
// returned as an error.
func (s *Server) Reload(cfg *Config) error {
	c, err := populated(cfg, "edge config", (*Config).Validate)
	if err != nil {
		return err
	}
	if err := s.handler.setAccess(c); err != nil {
		return err
	}
	s.mu.Lock()
	old := s.cfg
	fresh := *old
	fresh.Auth, fresh.Clients, fresh.Upstream, fresh.MaxRequestBodyBytes = c.Auth, c.Clients, c.Upstream, c.MaxRequestBodyBytes
	fresh.AllowAnonymousNetwork, fresh.MaxConcurrent, fresh.ClientBodyTimeout = c.AllowAnonymousNetwork, c.MaxConcurrent, c.ClientBodyTimeout
	s.cfg = &fresh
	s.mu.Unlock()
	keys := config.Changed(
		config.Setting{Key: "name", Running: old.Name, Reloaded: c.Name},
		config.Setting{Key: "listen", Running: old.Listen, Reloaded: c.Listen},
		config.Setting{Key: "admin_listen", Running: old.AdminListen, Reloaded: c.AdminListen},
		config.Setting{Key: "admin_pprof", Running: old.AdminPprof, Reloaded: c.AdminPprof},
		config.Setting{Key: "key_file", Running: old.KeyFile, Reloaded: c.KeyFile},
		config.Setting{Key: "transport", Running: old.Transport, Reloaded: c.Transport},
		config.Setting{Key: "proxy_url", Running: old.ProxyURL, Reloaded: c.ProxyURL},
		config.Setting{Key: "shutdown_grace", Running: old.ShutdownGrace, Reloaded: c.ShutdownGrace},
		config.Setting{Key: "client_header_timeout", Running: old.ClientHeaderTimeout, Reloaded: c.ClientHeaderTimeout},
		config.Setting{Key: "client_send_timeout", Running: old.ClientSendTimeout, Reloaded: c.ClientSendTimeout},
		config.Setting{Key: "client_idle_timeout", Running: old.ClientIdleTimeout, Reloaded: c.ClientIdleTimeout},
		config.Setting{Key: "max_client_connections", Running: old.MaxClientConnections, Reloaded: c.MaxClientConnections},
		config.Setting{Key: "relay", Running: old.Relays, Reloaded: c.Relays},
		config.Setting{Key: "tunnel", Running: old.Tunnel, Reloaded: c.Tunnel},
		config.Setting{Key: "log", Running: old.Log, Reloaded: c.Log},
	)
	if len(keys) > 0 {
		s.logger.Warn("edge: these settings changed but need a restart to apply", "keys", keys)
	}
	s.logger.Info("edge: configuration reloaded", "auth", c.Auth, "clients", len(c.Clients))
	return nil
}
