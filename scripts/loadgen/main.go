// Command loadgen is airlock's whole-path load generator. It runs the same
// scenarios against up to three base URLs in one run — DIRECT, the test
// upstream itself; NGINX, a two-hop nginx chain (edge nginx → HTTPS → relay
// nginx that injects the upstream key) in front of that same upstream, the
// peer baseline; and AIRLOCK, an edge whose relay calls that same upstream —
// and prints them side by side with AIRLOCK compared to DIRECT and to NGINX,
// so that the cost of the edge → tunnel → relay path, and how it stands
// against a peer doing the same job, can be read off one table.
//
// scripts/bench builds airlock and loadgen, starts a test upstream, a relay
// and an edge on loopback, and the nginx chain when nginx is available, and
// then runs
//
//	loadgen bench -direct URL -direct-key-env VAR -airlock URL -airlock-key-env VAR \
//	    -edge-pid PID -relay-pid PID -upstream-pid PID \
//	    -edge-admin ADDR -relay-admin ADDR -tunnel-transport quic|tcp \
//	    [-nginx URL -nginx-key-env VAR -nginx-edge-pid PID -nginx-relay-pid PID | -nginx-skipped WHY] \
//	    [scenario flags]
//
// The nginx PIDs are the two masters; each counts with its worker for CPU,
// RSS, context switches and syscalls. The admin addresses are the edge's
// and the relay's admin listeners, whose /metrics has the Go runtime
// counters read per request.
//
// The scenarios, in the order they run:
//
//	latency     small request (GET /models) latency at concurrency 1, and the
//	            edge's and relay's CPU time per request
//	throughput  small requests per second at concurrency 32 for a fixed time,
//	            with the CPU time each process spent per request
//	            (both: also the edge's and the relay's context switches,
//	            syscalls, goroutines created and heap allocations per
//	            request, and the QUIC tunnel's packets each way)
//	sse         per-event delivery delay of a stamped SSE stream, and how often
//	            a single Read returned more than one event (merged events)
//	rss         edge and relay resident memory with thousands of open streams
//	            (the proxy chains only: NGINX and AIRLOCK)
//	bulk        single-stream upload and download throughput
//
// Every loop is bounded in count and in time. Two helpers serve the runner:
//
//	loadgen ports N           print N free loopback ports (free for TCP and UDP)
//	loadgen wait [-any] [-key-env VAR] URL
//	                          poll URL (with a bearer key) until it answers 200
//	                          (or anything, -any)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch args[0] {
	case "bench":
		err = runBench(ctx, args[1:], stdout, stderr)
	case "ports":
		err = runPorts(args[1:], stdout, stderr)
	case "wait":
		err = runWait(ctx, args[1:], stderr)
	case "-h", "-help", "--help", "help":
		usage(stderr)
		return 0
	default:
		fmt.Fprintf(stderr, "loadgen: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "loadgen %s: %v\n", args[0], err)
		return 1
	}
}

// errUsage marks bad command-line arguments (exit code 2).
var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprint(w, `loadgen — airlock's whole-path load generator

Usage:
  loadgen bench [flags]       run the scenarios against DIRECT, NGINX and AIRLOCK
  loadgen ports N             print N free loopback ports
  loadgen wait [-any] [-key-env VAR] URL
                              wait until URL answers 200 (or anything)

Run 'loadgen bench -h' for the scenario flags.
`)
}

// parseFlags parses args into fs and rejects positional arguments unless
// positional allows them.
func parseFlags(fs *flag.FlagSet, args []string, positional int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() != positional {
		fmt.Fprintf(fs.Output(), "want %d positional argument(s), got %d\n", positional, fs.NArg())
		fs.Usage()
		return errUsage
	}
	return nil
}
