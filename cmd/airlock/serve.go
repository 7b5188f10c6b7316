package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/airlock-proxy/airlock/edge"
	"github.com/airlock-proxy/airlock/internal/config"
	"github.com/airlock-proxy/airlock/relay"
)

// role is a long-running edge or relay.
type role interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
	Close() error
}

func runEdge(args []string, _, stderr io.Writer) error {
	var cfg edge.Config
	logger, flushLog, path, err := loadRole("edge", args, stderr, &cfg)
	if err != nil {
		return err
	}
	defer flushLog()
	srv, err := newEdge(path, &cfg, logger)
	if err != nil {
		return err
	}
	reload := func() error {
		var c edge.Config
		if err := config.Load(path, &c); err != nil {
			return err
		}
		resolveEdgeFiles(path, &c)
		return inFile(path, srv.Reload(&c))
	}
	return serveUntilSignal(srv, srv.ShutdownGrace(), reload, logger)
}

// newEdge builds the edge of cfg, decoded from path. edge.NewServer fills in
// the defaults and validates it; its errors name path.
func newEdge(path string, cfg *edge.Config, logger *slog.Logger) (*edge.Server, error) {
	resolveEdgeFiles(path, cfg)
	srv, err := edge.NewServer(cfg, logger)
	return srv, inFile(path, err)
}

// resolveEdgeFiles makes the file names of an edge config decoded from path
// relative to it.
func resolveEdgeFiles(path string, cfg *edge.Config) {
	cfg.KeyFile = relativeTo(path, cfg.KeyFile)
}

func runRelay(args []string, _, stderr io.Writer) error {
	var cfg relay.Config
	logger, flushLog, path, err := loadRole("relay", args, stderr, &cfg)
	if err != nil {
		return err
	}
	defer flushLog()
	srv, err := newRelay(path, &cfg, logger)
	if err != nil {
		return err
	}
	reload := func() error {
		var c relay.Config
		if err := config.Load(path, &c); err != nil {
			return err
		}
		resolveRelayFiles(path, &c)
		return inFile(path, srv.Reload(&c))
	}
	return serveUntilSignal(srv, srv.ShutdownGrace(), reload, logger)
}

// newRelay builds the relay of cfg, decoded from path. relay.NewServer fills
// in the defaults and validates it; its errors name path.
func newRelay(path string, cfg *relay.Config, logger *slog.Logger) (*relay.Server, error) {
	resolveRelayFiles(path, cfg)
	srv, err := relay.NewServer(cfg, logger)
	return srv, inFile(path, err)
}

// resolveRelayFiles makes the file names of a relay config decoded from
// path relative to it.
func resolveRelayFiles(path string, cfg *relay.Config) {
	cfg.KeyFile = relativeTo(path, cfg.KeyFile)
	for i := range cfg.Upstreams {
		cfg.Upstreams[i].KeyFile = relativeTo(path, cfg.Upstreams[i].KeyFile)
		for j := range cfg.Upstreams[i].Keys {
			cfg.Upstreams[i].Keys[j].KeyFile = relativeTo(path, cfg.Upstreams[i].Keys[j].KeyFile)
		}
	}
}

// inFile prefixes err, if any, with the config file's path.
func inFile(path string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", path, err)
}

// loadRole parses the flags of `airlock edge|relay` and decodes the config
// file strictly into cfg.
// The returned function writes out buffered log lines; call it before
// returning.
func loadRole(name string, args []string, stderr io.Writer, cfg any) (*slog.Logger, func(), string, error) {
	fs := newFlagSet(name+" -config FILE", fmt.Sprintf("Run the %s with the configuration in FILE (TOML; see deploy/examples/%s.toml).\nSIGINT or SIGTERM drains and exits; a second signal exits at once.\nSIGHUP reloads the parts of FILE that can change while running (see the README).", name, name), stderr)
	path := fs.String("config", "", "path to the `FILE` with the "+name+" configuration (required)")
	var lf logFlags
	lf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return nil, nil, "", err
	}
	if *path == "" {
		fmt.Fprintf(stderr, "airlock %s: -config is required\n", name)
		fs.Usage()
		return nil, nil, "", errUsage
	}
	if err := config.Load(*path, cfg); err != nil {
		return nil, nil, "", err
	}
	if c, ok := cfg.(interface{ LogSettings() config.Log }); ok {
		lf.fromConfig(fs, c.LogSettings())
	}
	logger, flushLog, err := lf.logger(stderr)
	if err != nil {
		return nil, nil, "", err
	}
	return logger, flushLog, *path, nil
}

// relativeTo resolves a file named in a config file relative to that file's
// directory, so that a config and its key files can move together.
func relativeTo(configPath, file string) string {
	if file == "" || filepath.IsAbs(file) {
		return file
	}
	return filepath.Join(filepath.Dir(configPath), file)
}

// serveUntilSignal starts r and runs it until SIGINT or SIGTERM, then drains
// it for at most grace. A second signal closes it at once. SIGHUP calls
// reload; a failed reload is logged and changes nothing.
func serveUntilSignal(r role, grace time.Duration, reload func() error, logger *slog.Logger) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Start(ctx); err != nil {
		r.Close()
		return err
	}
	var sig os.Signal
	for sig == nil {
		select {
		case sig = <-sigs:
		case <-hups:
			if err := reload(); err != nil {
				logger.Error("reload failed; the running configuration stays", "err", err)
			}
		}
	}
	logger.Info("draining", "signal", sig.String(), "grace", grace.String())
	drainCtx, stop := context.WithTimeout(context.Background(), grace)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.Shutdown(drainCtx) }()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			logger.Warn("drain ended with an error", "err", err)
		}
	case sig := <-sigs:
		logger.Warn("second signal: exiting now", "signal", sig.String())
		stop()
		<-done
	}
	return r.Close()
}
