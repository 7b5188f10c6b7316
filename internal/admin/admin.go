// Package admin serves a role's operator endpoints on their own listener,
// loopback by default: /healthz (the process is alive), /readyz (it can serve:
// an edge has a tunnel session, a relay is listening), registered by the
// role, /metrics and, only when enabled, /debug/pprof/ (Go's profiler, for
// the operator who must find where CPU or memory goes).
//
// It is separate from the traffic listener so that probes and scrapes work
// when the traffic port is saturated, and so that it can stay on loopback:
// nothing here asks for credentials. The profiler is off by default because
// it shows the command line and memory contents and can load the CPU; and a
// listener bound to a non-loopback address is logged as a warning at Start.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"
)

// Server is an admin HTTP listener.
type Server struct {
	addr   string
	ready  func() (string, error)
	logger *slog.Logger
	mux    *http.ServeMux
	srv    *http.Server
	pprof  bool

	mu       sync.Mutex
	ln       net.Listener
	done     chan struct{}
	closeErr error
	closed   bool
}

// New returns an admin server for addr ("127.0.0.1:9090"; port 0 picks one).
// ready reports a nil error and a one-line state (e.g. the tunnel's
// transport) when the role can serve, or an error saying why not; it is
// called on every /readyz request and must be fast. A nil logger discards.
func New(addr string, ready func() (string, error), logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{addr: addr, ready: ready, logger: logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// Long enough for a 30 s CPU profile or trace.
		WriteTimeout: 2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	state, err := s.ready()
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	if state == "" {
		fmt.Fprintln(w, "ready")
		return
	}
	fmt.Fprintf(w, "ready: %s\n", state)
}

// Handle registers h for pattern (a net/http ServeMux pattern), e.g.
// "GET /metrics". Call it before Start.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// EnablePprof serves Go's profiler under /debug/pprof/ (the index, cmdline,
// profile, symbol and trace, and every named profile such as heap or
// goroutine). Without it those paths answer 404. Call it before Start; a
// second call does nothing.
//
// The profiler shows the process's command line and what its memory holds,
// and a CPU profile or trace loads the process while it runs: enable it
// (admin_pprof = true) only on a listener that only operators reach.
func (s *Server) EnablePprof() {
	if s.pprof {
		return
	}
	s.pprof = true
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// Start binds the listener and serves in a goroutine that Close stops. A
// listener that is not on a loopback address is logged as a warning: every
// endpoint is open to whoever reaches it.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	if !isLoopback(ln.Addr()) {
		exposed := "/metrics"
		if s.pprof {
			exposed = "/metrics and /debug/pprof/"
		}
		s.logger.Warn("admin listener is not on loopback: anyone who reaches it reads its endpoints without credentials; bind admin_listen to 127.0.0.1 unless a firewall or network policy guards it",
			"addr", ln.Addr().String(), "exposes", exposed)
	}
	s.mu.Lock()
	s.ln = ln
	s.done = make(chan struct{})
	s.mu.Unlock()
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("admin listener stopped", "err", err)
		}
	}()
	s.logger.Info("admin listening", "addr", ln.Addr().String())
	return nil
}

// isLoopback reports whether a bound listener address is on a loopback
// interface only. The bound address is the resolved one: "localhost:9090"
// binds 127.0.0.1, while ":9090", "0.0.0.0:9090" and "[::]:9090" bind every
// interface and are not loopback.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// Addr is the bound address; nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops the listener and waits for the serving goroutine. It is
// idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closeErr
	}
	s.closed = true
	done := s.done
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	if done != nil {
		<-done
	}
	s.mu.Lock()
	s.closeErr = err
	s.mu.Unlock()
	return err
}
