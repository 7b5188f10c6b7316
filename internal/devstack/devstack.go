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
	"github.com/airlock-proxy/airlock/internal/testupstream"
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
	// Logger receives all three components' logs. Nil discards.
	Logger *slog.Logger
}

// Stack is a running edge, relay and upstream.
type Stack struct {
	// EdgeURL is the base URL clients use, "http://127.0.0.1:PORT/v1".
	EdgeURL string
	// ClientKey is the one client key the edge accepts.
	ClientKey string
	// UpstreamURL is the base URL the relay calls.
	UpstreamURL string
	// Upstream is the built-in test upstream, nil with a real upstream.
	Upstream *testupstream.Server
	// Edge and Relay are the two roles.
	Edge  *edge.Server
	Relay *relay.Server

	upstreamSrv *http.Server
	upstreamLn  net.Listener
	upstreamErr chan error
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

	relayID, err := tunnel.GenerateIdentity()
	if err != nil {
		return nil, err
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

	rcfg := &relay.Config{
		Name:        "dev-relay",
		Listen:      "127.0.0.1:0",
		AdminListen: "off",
		Identity:    relayID,
		Edges:       []relay.EdgeConfig{{Name: "dev-edge", Key: edgeID.Fingerprint()}},
		Upstreams: []relay.UpstreamConfig{{
			Name: "default", BaseURL: st.UpstreamURL, Auth: upstreamAuth, Key: upstreamKey,
		}},
	}
	rcfg.SetDefaults()
	if err := rcfg.Validate(); err != nil {
		return nil, fmt.Errorf("dev relay config: %w", err)
	}
	if st.Relay, err = relay.NewServer(rcfg, logger.With("role", "relay")); err != nil {
		return nil, err
	}
	if err := st.Relay.Start(ctx); err != nil {
		return nil, err
	}

	listen := opts.EdgeListen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ecfg := &edge.Config{
		Name:        "dev-edge",
		Listen:      listen,
		AdminListen: "off",
		Identity:    edgeID,
		Clients:     []edge.ClientConfig{{Name: "dev", KeyHash: clientHash}},
		Relays:      []edge.RelayConfig{{Address: st.Relay.Addr().String(), Key: relayID.Fingerprint()}},
		Tunnel:      opts.Tunnel,
		Transport:   opts.Transport,
	}
	ecfg.SetDefaults()
	if err := ecfg.Validate(); err != nil {
		return nil, fmt.Errorf("dev edge config: %w", err)
	}
	if st.Edge, err = edge.NewServer(ecfg, logger.With("role", "edge")); err != nil {
		return nil, err
	}
	if err := st.Edge.Start(ctx); err != nil {
		return nil, err
	}
	st.EdgeURL = "http://" + st.Edge.Addr().String() + "/v1"

	if err := st.Edge.WaitReady(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// Close stops the edge, the relay and the upstream, in that order, and waits
// for them. It is safe to call on a partly started Stack.
func (st *Stack) Close() error {
	var errs []error
	if st.Edge != nil {
		errs = append(errs, st.Edge.Close())
	}
	if st.Relay != nil {
		errs = append(errs, st.Relay.Close())
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
