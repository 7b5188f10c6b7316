package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/airlock-proxy/airlock/internal/testkit/testupstream"
)

func runTestUpstream(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("testupstream [flags]", `Serve the built-in OpenAI-compatible test upstream (chat completions with SSE,
embeddings, models, audio transcriptions, files, and bulk/SSE test endpoints under
/v1/airlock-test/) until Ctrl-C. Its base URL is http://ADDRESS/v1.`, stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "`address` to listen on")
	keyEnv := fs.String("key-env", "", "environment `variable` with the API key to require (empty: no key check)")
	auth := fs.String("auth", "bearer", "how the key is sent: bearer or api-key")
	interval := fs.Duration("chunk-interval", 20*time.Millisecond, "pause between streamed chat chunks")
	stamp := fs.Bool("stamp-events", false, "add airlock_sent_unix_ns to every streamed chunk (for benchmarks)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts := testupstream.Options{Auth: *auth, ChunkInterval: *interval, StampEvents: *stamp}
	if *keyEnv != "" {
		if opts.APIKey = os.Getenv(*keyEnv); opts.APIKey == "" {
			return fmt.Errorf("-key-env: environment variable %s is not set or empty", *keyEnv)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: testupstream.New(opts), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "test upstream: http://%s/v1\n", ln.Addr())

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case <-sigs:
		srv.Close()
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
