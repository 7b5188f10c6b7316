// Package devstack runs a whole airlock path in one process: an OpenAI-
// compatible test upstream (or a real upstream), a relay and an edge, joined
// by a real tunnel (QUIC, or TLS/TCP) on loopback with fresh in-memory keys.
//
// It is what `airlock dev` runs, and what the end-to-end tests build on, so
// that both exercise exactly the same wiring as a two-host deployment.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/airlock-proxy/airlock/edge"
	"github.com/airlock-proxy/airlock/internal/testkit/testupstream"
	"github.com/airlock-proxy/airlock/relay"
	"github.com/airlock-proxy/airlock/tunnel"
)

// Options configure a Stack. The zero value runs everything on random
// loopback ports against the built-in test upstream.
type Options struct {
	// EdgeListen is the edge's client-facing address. Default: "127.0.0.1:0".
	EdgeListen string
	// UpstreamURL is a real upstream base URL (e.g.
	// "https://api.openai.com/v1"); empty runs the built-in test upstream.
	UpstreamURL string
	// UpstreamKey is the real upstream's API key; used only with UpstreamURL.
	UpstreamKey string
	// UpstreamAuth is "bearer" (default) or "api-key".
	UpstreamAuth string
	// TestUpstream configures the built-in test upstream; its APIKey is
	// always replaced by a fresh one that only the relay knows.
	TestUpstream testupstream.Options
	// Tunnel overrides tunnel settings of the edge (zero fields: defaults).
	Tunnel tunnel.Config
	// Transport is the edge's tunnel transport: "auto" (default), "quic"
	// or "tcp".
	Transport string
	// ProxyURL is the edge's proxy_url (an HTTP CONNECT proxy for the TCP
	// transport).
	ProxyURL string
	// Admin, when set, starts the edge's and the relays' admin listeners
	// (/healthz, /readyz, /metrics) on loopback ports, with Go's profiler
	// under /debug/pprof/ as well (admin_pprof): they are for the developer
	// on this host; see Stack.EdgeAdminURL and RelayAdminURLs.
	Admin bool
	// Relays is how many relays to run (default 1), each with its own key,
	// all calling the same upstream; the edge keeps sessions to all.
	Relays int
	// Route, when set, is called once a relay listens, with its UDP and
	// TCP addresses, and returns the addresses the edge dials instead, so
	// that a test can put a fault-injecting proxy on the path.
	Route func(udp, tcp net.Addr) (udpAddr, tcpAddr string)
	// Logger receives all three components' logs. Nil discards.
	Logger *slog.Logger
	// EdgeConfig, when set, may change the edge's configuration (limits,
	// timeouts, more clients) after devstack filled it and before the edge
	// starts.
	EdgeConfig func(*edge.Config)
}

// Stack is a running edge, relay and upstream.
type Stack struct {
	// EdgeURL is the base URL clients use, "http://127.0.0.1:PORT/v1".
	EdgeURL string
	// EdgeAdminURL and RelayAdminURLs are the admin listeners' base URLs,
	// "http://127.0.0.1:PORT", with Options.Admin; empty otherwise.
	EdgeAdminURL   string
	RelayAdminURLs []string
	// ClientKey is the one client key the edge accepts.
	ClientKey string
	// UpstreamURL is the base URL the relay calls.
	UpstreamURL string
	// Upstream is the built-in test upstream, nil with a real upstream.
	Upstream *testupstream.Server
	// Edge and Relay are the two roles; Relay is the first of Relays.
	Edge   *edge.Server
	Relay  *relay.Server
	Relays []*relay.Server

	upstreamSrv *http.Server
	upstreamLn  net.Listener
	upstreamErr chan error
	relayCfgs   []*relay.Config
	relayLog    *slog.Logger
}

// Start starts the upstream (unless external), the relay and the edge, and
// waits until the edge's tunnel is up or ctx ends.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	st := &Stack{}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()

	upstreamKey, upstreamAuth := opts.UpstreamKey, opts.UpstreamAuth
	if upstreamAuth == "" {
		upstreamAuth = "bearer"
	}
	st.UpstreamURL = opts.UpstreamURL
	if st.UpstreamURL == "" {
		if upstreamKey, _, err = edge.NewClientKey(); err != nil {
			return nil, err
		}
		upOpts := opts.TestUpstream
		upOpts.APIKey, upOpts.Auth = upstreamKey, upstreamAuth
		st.Upstream = testupstream.New(upOpts)
		if st.upstreamLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("test upstream: %w", err)
		}
		st.upstreamSrv = &http.Server{
			Handler:           st.Upstream,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
		st.upstreamErr = make(chan error, 1)
		go func() { st.upstreamErr <- st.upstreamSrv.Serve(st.upstreamLn) }()
		st.UpstreamURL = "http://" + st.upstreamLn.Addr().String() + "/v1"
	}

	edgeID, err := tunnel.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	clientKey, clientHash, err := edge.NewClientKey()
	if err != nil {
		return nil, err
	}
	st.ClientKey = clientKey

	st.relayLog = logger.With("role", "relay")
	admin := "off"
	if opts.Admin {
		admin = "127.0.0.1:0"
	}
	var routes []edge.RelayConfig
	for i := range max(opts.Relays, 1) {
		relayID, err := tunnel.GenerateIdentity()
		if err != nil {
			return nil, err
		}
		rcfg := &relay.Config{
			Name:        fmt.Sprintf("dev-relay-%d", i+1),
			Listen:      "127.0.0.1:0",
			AdminListen: admin,
			AdminPprof:  opts.Admin,
			Identity:    relayID,
			Edges:       []relay.EdgeConfig{{Name: "dev-edge", Key: edgeID.Fingerprint()}},
			Upstreams: []relay.UpstreamConfig{{
				Name: "default", BaseURL: st.UpstreamURL, Auth: upstreamAuth, Key: upstreamKey,
			}},
		}
		r, err := relay.NewServer(rcfg, st.relayLog)
		if err != nil {
			return nil, fmt.Errorf("dev relay config: %w", err)
		}
		st.Relays = append(st.Relays, r)
		st.relayCfgs = append(st.relayCfgs, rcfg)
		if err := r.Start(ctx); err != nil {
			return nil, err
		}
		routes = append(routes, relayRoute(r, relayID, opts.Route))
		if opts.Admin {
			st.RelayAdminURLs = append(st.RelayAdminURLs, "http://"+r.AdminAddr().String())
		}
	}
	st.Relay = st.Relays[0]

	listen := opts.EdgeListen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ecfg := &edge.Config{
		Name:        "dev-edge",
		Listen:      listen,
		AdminListen: admin,
		AdminPprof:  opts.Admin,
		Identity:    edgeID,
		Clients:     []edge.ClientConfig{{Name: "dev", KeyHash: clientHash}},
		Relays:      routes,
		Tunnel:      edge.NewTunnelConfig(opts.Tunnel),
		Transport:   opts.Transport,
		ProxyURL:    opts.ProxyURL,
	}
	if opts.EdgeConfig != nil {
		opts.EdgeConfig(ecfg)
	}
	if st.Edge, err = edge.NewServer(ecfg, logger.With("role", "edge")); err != nil {
		return nil, fmt.Errorf("dev edge config: %w", err)
	}
	if err := st.Edge.Start(ctx); err != nil {
		return nil, err
	}
	st.EdgeURL = "http://" + st.Edge.Addr().String() + "/v1"
	if opts.Admin {
		st.EdgeAdminURL = "http://" + st.Edge.AdminAddr().String()
	}

	if err := st.Edge.WaitReady(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// StopRelay closes the (first) relay at once, as a relay process does on
// its second signal: streams that have not reached the upstream are
// refused, the others fail, and the sessions close.
func (st *Stack) StopRelay() error {
	return st.Relay.Close()
}

// StartRelay starts a new (first) relay, with the same key and
// configuration, on the addresses the stopped one had: a restarted relay
// process.
func (st *Stack) StartRelay(ctx context.Context) error {
	c := st.relayCfgs[0].Clone()
	c.Listen, c.ListenTCP = st.Relay.Addr().String(), st.Relay.TCPAddr().String()
	r, err := relay.NewServer(c, st.relayLog)
	if err != nil {
		return err
	}
	if err := r.Start(ctx); err != nil {
		return err
	}
	st.Relay, st.Relays[0] = r, r
	return nil
}

// relayRoute is the edge's [[relay]] entry for r: its own addresses, or
// those route gives.
func relayRoute(r *relay.Server, id *tunnel.Identity, route func(udp, tcp net.Addr) (string, string)) edge.RelayConfig {
	rc := edge.RelayConfig{Address: r.Addr().String(), Key: id.Fingerprint()}
	if route != nil {
		rc.Address, rc.TCPAddress = route(r.Addr(), r.TCPAddr())
	}
	return rc
}

// Close stops the edge, the relay and the upstream, in that order, and waits
// for them. It is safe to call on a partly started Stack.
func (st *Stack) Close() error {
	var errs []error
	if st.Edge != nil {
		errs = append(errs, st.Edge.Close())
	}
	for _, r := range st.Relays {
		errs = append(errs, r.Close())
	}
	if st.upstreamSrv != nil {
		errs = append(errs, st.upstreamSrv.Close())
		if err := <-st.upstreamErr; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
		st.upstreamSrv = nil
	}
	return errors.Join(errs...)
}
