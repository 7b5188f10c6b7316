// Package buildinfo says which airlock this is, in one place: the CLI prints
// it, and the edge and relay send it in HELLO and log it at start.
package buildinfo

import "runtime/debug"

// version is set at link time:
//
//	go build -ldflags "-X github.com/airlock-proxy/airlock/internal/buildinfo.version=v1.2.3"
var version = ""

// Version returns the link-time version, else the module version of an
// installed build (go install ...@v1.2.3), else "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Software names this build to a peer: "airlock/<version>".
func Software() string { return "airlock/" + Version() }
