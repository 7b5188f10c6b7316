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
	cfg.KeyFile = relativeTo(path, cfg.KeyFile)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	srv, err := edge.NewServer(&cfg, logger)
	if err != nil {
		return err
	}
	return serveUntilSignal(srv, cfg.ShutdownGrace.Duration, logger)
}

func runRelay(args []string, _, stderr io.Writer) error {
	var cfg relay.Config
	logger, flushLog, path, err := loadRole("relay", args, stderr, &cfg)
	if err != nil {
		return err
	}
	defer flushLog()
	cfg.KeyFile = relativeTo(path, cfg.KeyFile)
	for i := range cfg.Upstreams {
		cfg.Upstreams[i].KeyFile = relativeTo(path, cfg.Upstreams[i].KeyFile)
		for j := range cfg.Upstreams[i].Keys {
			cfg.Upstreams[i].Keys[j].KeyFile = relativeTo(path, cfg.Upstreams[i].Keys[j].KeyFile)
		}
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	srv, err := relay.NewServer(&cfg, logger)
	if err != nil {
		return err
	}
	return serveUntilSignal(srv, cfg.ShutdownGrace.Duration, logger)
}

// loadRole parses the flags of `airlock edge|relay` and decodes the config
// file strictly into cfg.
// The returned function writes out buffered log lines; call it before
// returning.
func loadRole(name string, args []string, stderr io.Writer, cfg any) (*slog.Logger, func(), string, error) {
	fs := newFlagSet(name+" -config FILE", fmt.Sprintf("Run the %s with the configuration in FILE (TOML; see deploy/examples/%s.toml).\nSIGINT or SIGTERM drains and exits; a second signal exits at once.", name, name), stderr)
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
// it for at most grace. A second signal closes it at once.
func serveUntilSignal(r role, grace time.Duration, logger *slog.Logger) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Start(ctx); err != nil {
		r.Close()
		return err
	}
	sig := <-sigs
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
