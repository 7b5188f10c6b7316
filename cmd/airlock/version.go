package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/airlock-proxy/airlock/internal/buildinfo"

	"github.com/airlock-proxy/airlock/proto"
)

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "Print airlock's version, its wire protocol version and the Go version.", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "airlock %s (protocol %d, %s, %s/%s)\n", buildinfo.Version(), proto.ProtocolVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
