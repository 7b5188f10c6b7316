// Command airlock carries OpenAI-API traffic out of a restricted network: an
// edge inside the network accepts requests from any OpenAI SDK and sends them
// through one mutually authenticated QUIC tunnel to a relay outside, which
// calls the upstream API with keys that never leave it.
//
// Usage:
//
//	airlock edge -config edge.toml     run the edge
//	airlock relay -config relay.toml   run the relay
//	airlock dev                        edge + relay + test upstream on loopback
//	airlock init                       write a matching edge.toml and relay.toml
//	airlock keygen                     make a key pair, print its fingerprint
//	airlock testupstream               run the built-in OpenAI-compatible test upstream
//	airlock version                    print the version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/airlock-proxy/airlock/internal/config"
	"github.com/airlock-proxy/airlock/internal/logbuf"

	"github.com/airlock-proxy/airlock/internal/buildinfo"
)

// exit codes, as infrastructure tools use them.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"edge", "run the edge: accept OpenAI API requests and carry them to a relay", runEdge},
		{"relay", "run the relay: accept tunnels from edges and call the upstream APIs", runRelay},
		{"dev", "run edge, relay and a test upstream in one process on loopback", runDev},
		{"init", "write a matching edge.toml and relay.toml with fresh keys", runInit},
		{"keygen", "make a tunnel key pair or a client key and print its fingerprint", runKeygen},
		{"testupstream", "run the built-in OpenAI-compatible test upstream", runTestUpstream},
		{"version", "print the version", runVersion},
	}
}

func main() {
	// The tunnel checks UDP buffer sizes itself and logs one structured
	// warning naming the sysctl fix; quic-go's own unstructured warning on
	// stderr would only repeat it. An explicit setting wins.
	if _, set := os.LookupEnv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING"); !set {
		os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error that was caused by bad arguments: exit code 2.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.Is(err, errUsage):
			return exitUsage
		default:
			fmt.Fprintf(stderr, "airlock %s: %v\n", c.name, err)
			return exitError
		}
	}
	fmt.Fprintf(stderr, "airlock: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "airlock %s — OpenAI API access from restricted networks\n\nUsage:\n  airlock <command> [flags]\n\nCommands:\n", buildinfo.Version())
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'airlock <command> -h' for a command's flags.\n")
}

// newFlagSet returns a FlagSet whose usage shows the command's synopsis.
// Parse errors are returned (wrapped in errUsage) rather than exiting.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("airlock "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: airlock %s\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and rejects positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	return nil
}

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	level  string
	format string
	// levelFrom and formatFrom name where the values came from, for errors.
	levelFrom, formatFrom string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error (default: the config's log.level, else info)")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json (default: the config's log.format, else text)")
	l.levelFrom, l.formatFrom = "-log-level", "-log-format"
}

// fromConfig takes the config file's [log] values for the flags that were
// not given on the command line.
func (l *logFlags) fromConfig(fs *flag.FlagSet, c config.Log) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.Level != "" && !set["log-level"] {
		l.level, l.levelFrom = c.Level, "log.level"
	}
	if c.Format != "" && !set["log-format"] {
		l.format, l.formatFrom = c.Format, "log.format"
	}
}

// logger builds the process logger, writing to w through a logbuf.Writer
// (one write per batch of lines, not per line). Call the returned function
// before exiting: it writes out what is buffered.
func (l *logFlags) logger(w io.Writer) (*slog.Logger, func(), error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, nil, fmt.Errorf("%s %q: want debug, info, warn or error", l.levelFrom, l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	var newHandler func(io.Writer, *slog.HandlerOptions) slog.Handler
	switch strings.ToLower(l.format) {
	case "text":
		newHandler = func(w io.Writer, o *slog.HandlerOptions) slog.Handler { return slog.NewTextHandler(w, o) }
	case "json":
		newHandler = func(w io.Writer, o *slog.HandlerOptions) slog.Handler { return slog.NewJSONHandler(w, o) }
	default:
		return nil, nil, fmt.Errorf("%s %q: want text or json", l.formatFrom, l.format)
	}
	buf := logbuf.New(w, 0)
	return slog.New(newHandler(buf, opts)), func() { buf.Close() }, nil
}
