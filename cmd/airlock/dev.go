package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/airlock-proxy/airlock/internal/testkit/devstack"
	"github.com/airlock-proxy/airlock/tunnel"
)

func runDev(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev [flags]", `Run an edge, a relay and an OpenAI-compatible test upstream in one process,
joined by a real tunnel on loopback (QUIC; -transport tcp for TLS/TCP + yamux)
with fresh in-memory keys, and serve until Ctrl-C. With -upstream, the relay calls that API instead of the test
upstream, with the key from the environment variable named by -upstream-key-env.`, stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "`address` the edge listens on for clients")
	upstream := fs.String("upstream", "", "upstream base `URL` to call instead of the test upstream, e.g. https://api.openai.com/v1")
	keyEnv := fs.String("upstream-key-env", "", "environment `variable` holding the upstream's API key (with -upstream)")
	auth := fs.String("upstream-auth", "bearer", "how the upstream takes its key: bearer or api-key")
	transport := fs.String("transport", "quic", "tunnel `transport`: quic, tcp or auto")
	adminOn := fs.Bool("admin", false, "start the edge's and the relay's admin listeners (/healthz, /readyz, /metrics, and the profiler under /debug/pprof/) on loopback and print their URLs")
	var lf logFlags
	lf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, flushLog, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	defer flushLog()
	opts := devstack.Options{EdgeListen: *listen, UpstreamAuth: *auth, Transport: *transport, Admin: *adminOn, Logger: logger}
	switch {
	case *upstream == "" && *keyEnv != "":
		return fmt.Errorf("-upstream-key-env needs -upstream")
	case *upstream != "":
		if *keyEnv == "" {
			return fmt.Errorf("-upstream needs -upstream-key-env naming the variable that holds its API key")
		}
		opts.UpstreamURL = *upstream
		if opts.UpstreamKey = os.Getenv(*keyEnv); opts.UpstreamKey == "" {
			return fmt.Errorf("-upstream-key-env: environment variable %s is not set or empty", *keyEnv)
		}
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	startCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := devstack.Start(startCtx, opts)
	if err != nil {
		return err
	}
	defer st.Close()
	printDevBanner(stdout, st)
	if *adminOn {
		fmt.Fprintf(stdout, "Admin listeners (/healthz, /readyz, /metrics, /debug/pprof/):\n\n  edge:  %s\n  relay: %s\n\n", st.EdgeAdminURL, st.RelayAdminURLs[0])
	}
	<-sigs
	fmt.Fprintln(stdout, "\nstopping")
	return nil
}

func printDevBanner(w io.Writer, st *devstack.Stack) {
	upstream := st.UpstreamURL + " (built-in test upstream)"
	if st.Upstream == nil {
		upstream = st.UpstreamURL
	}
	fmt.Fprintf(w, `airlock dev is running: edge → %s tunnel → relay → %s

  base URL:   %s
  client key: %s

Try it:

  curl -N %s/chat/completions \
    -H "Authorization: Bearer %s" \
    -H "Content-Type: application/json" \
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello"}]}'

Or from an SDK:

  export OPENAI_BASE_URL=%s OPENAI_API_KEY=%s
  python3 -c 'from openai import OpenAI; print(OpenAI().chat.completions.create(model="gpt-4o-mini", messages=[{"role":"user","content":"Hello"}]).choices[0].message.content)'

Press Ctrl-C to stop.
`, transportName(st.Edge.Transport()), upstream, st.EdgeURL, st.ClientKey, st.EdgeURL, st.ClientKey, st.EdgeURL, st.ClientKey)
}

// transportName names a tunnel transport for people.
func transportName(t string) string {
	if t == tunnel.TransportTCP {
		return "TLS/TCP"
	}
	return strings.ToUpper(t)
}
