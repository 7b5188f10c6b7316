package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// runPorts prints N loopback ports that were free for both TCP and UDP a
// moment ago, one line, space separated. The ports are held until all N are
// chosen, so they are distinct.
func runPorts(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen ports N", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	n, err := strconv.Atoi(fs.Arg(0))
	if err != nil || n < 1 || n > 100 {
		return fmt.Errorf("ports: count %q: want a number from 1 to 100", fs.Arg(0))
	}
	ports, err := freePorts(n)
	if err != nil {
		return err
	}
	for i, p := range ports {
		if i > 0 {
			fmt.Fprint(stdout, " ")
		}
		fmt.Fprint(stdout, p)
	}
	fmt.Fprintln(stdout)
	return nil
}

// freePorts returns n distinct 127.0.0.1 ports that were free for TCP and
// UDP. It tries at most 20n candidates.
func freePorts(n int) ([]int, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range 20 * n {
		if len(ports) == n {
			break
		}
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("ports: %w", err)
		}
		held = append(held, tl)
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken for UDP; keep the TCP one held so it is not offered again
		}
		held = append(held, ul)
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("ports: found %d free ports, want %d", len(ports), n)
	}
	return ports, nil
}

// runWait polls a URL until it answers 200 (or, with -any, any HTTP
// status), or until -timeout passes.
func runWait(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen wait [-any] [-timeout D] [-key-env VAR] URL", flag.ContinueOnError)
	fs.SetOutput(stderr)
	anyStatus := fs.Bool("any", false, "accept any HTTP status, not only 200")
	timeout := fs.Duration("timeout", 20*time.Second, "give up after this long")
	keyEnv := fs.String("key-env", "", "environment `variable` with a key to send as \"Authorization: Bearer\" (empty: none)")
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	var key string
	if *keyEnv != "" {
		if key = os.Getenv(*keyEnv); key == "" {
			return fmt.Errorf("wait: -key-env: environment variable %s is not set or empty", *keyEnv)
		}
	}
	return waitURL(ctx, fs.Arg(0), key, *anyStatus, *timeout)
}

// waitURL polls url every 50ms, with key as a bearer token unless it is
// empty, until it answers as wanted or timeout passes; the error names the
// last failure.
func waitURL(ctx context.Context, url, key string, anyStatus bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait: %w", err)
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if anyStatus || resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("status %s", resp.Status)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait: %s not ready after %v: %w", url, timeout, last)
		case <-tick.C:
		}
	}
}
