package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"text/template"

	"github.com/airlock-proxy/airlock/edge"
	"github.com/airlock-proxy/airlock/tunnel"
)

// initFiles are the files `airlock init` writes, in dir.
var initFiles = []string{"edge.toml", "edge.key", "relay.toml", "relay.key"}

func runInit(args []string, stdout, stderr io.Writer) error {
	fset := newFlagSet("init [flags]", `Write a matching pair of configurations into DIR: edge.toml and edge.key for
the edge (inside the restricted network), relay.toml and relay.key for the relay
(the cloud VM). Each side's public key is pinned in the other's config, and one
client key is made for the edge; it is printed once and only its hash is stored.`, stderr)
	dir := fset.String("dir", ".", "`directory` to write the files into")
	relayAddr := fset.String("relay-address", "", "the relay's public `host:port` as the edge will dial it (required), e.g. relay.example.com:7443")
	upstreamURL := fset.String("upstream-url", "https://api.openai.com/v1", "the upstream's base `URL`, with its version prefix")
	keyEnv := fset.String("upstream-key-env", "OPENAI_API_KEY", "environment `variable` the relay reads the upstream key from")
	force := fset.Bool("force", false, "overwrite existing files")
	if err := parseFlags(fset, args); err != nil {
		return err
	}
	if *relayAddr == "" {
		fmt.Fprintln(stderr, "airlock init: -relay-address is required (the address the edge dials, e.g. relay.example.com:7443)")
		fset.Usage()
		return errUsage
	}
	host, port, err := net.SplitHostPort(*relayAddr)
	if err != nil || host == "" {
		return fmt.Errorf("-relay-address %q: want host:port", *relayAddr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("-relay-address %q: port must be 1 to 65535", *relayAddr)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	for _, name := range initFiles {
		path := filepath.Join(*dir, name)
		_, err := os.Stat(path)
		switch {
		case err == nil && !*force:
			return fmt.Errorf("%s exists; use -force to overwrite", path)
		case err == nil:
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("init: %w", err)
			}
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("init: %w", err)
		}
	}

	edgeID, err := tunnel.GenerateIdentity()
	if err != nil {
		return err
	}
	relayID, err := tunnel.GenerateIdentity()
	if err != nil {
		return err
	}
	clientKey, clientHash, err := edge.NewClientKey()
	if err != nil {
		return err
	}
	data := initData{
		EdgeKey: edgeID.Fingerprint(), RelayKey: relayID.Fingerprint(),
		RelayAddress: *relayAddr, RelayPort: port, ClientHash: clientHash,
		UpstreamURL: *upstreamURL, UpstreamKeyEnv: *keyEnv,
	}
	if err := edgeID.Save(filepath.Join(*dir, "edge.key")); err != nil {
		return err
	}
	if err := relayID.Save(filepath.Join(*dir, "relay.key")); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		tmpl *template.Template
	}{{"edge.toml", edgeTemplate}, {"relay.toml", relayTemplate}} {
		if err := writeTemplate(filepath.Join(*dir, f.name), f.tmpl, data); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, `Wrote %s: edge.toml, edge.key, relay.toml, relay.key

Client key (shown once; edge.toml keeps only its hash):
  %s

Next steps:
  1. Copy relay.toml and relay.key to the relay VM (keep relay.key private), then there:
       export %s=sk-...            # the upstream API key
       airlock relay -config relay.toml
     Open port %s to the edge, UDP (QUIC) and TCP (the fallback where UDP is blocked).
  2. Here, inside the network:
       airlock edge -config edge.toml
  3. Point any OpenAI SDK at the edge (from this host; others use its name):
       OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=%s
`, *dir, clientKey, *keyEnv, port, clientKey)
	return nil
}

type initData struct {
	EdgeKey, RelayKey, RelayAddress, RelayPort, ClientHash, UpstreamURL, UpstreamKeyEnv string
}

func writeTemplate(path string, t *template.Template, data initData) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if err := t.Execute(f, data); err != nil {
		f.Close()
		return fmt.Errorf("init: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("init: writing %s: %w", path, err)
	}
	return nil
}

var edgeTemplate = template.Must(template.New("edge.toml").Parse(`# airlock edge, written by "airlock init". Reference: deploy/examples/edge.toml.
name = "edge"
# Where OpenAI SDKs connect: base URL http://<this host>:8080/v1. All
# interfaces, since apps elsewhere in the network use it; clients need a key.
listen = "0.0.0.0:8080"
admin_listen = "127.0.0.1:9090"
# This edge's tunnel key (relative paths are relative to this file).
key_file = "edge.key"
auth = "keys"
# QUIC, falling back to TLS over TCP where UDP is blocked (and back to QUIC
# when it works again). proxy_url = "http://user:pass@proxy:3128" sends the
# TCP transport through a corporate CONNECT proxy.
transport = "auto"

[[client]]
name = "default"
key_hash = "{{.ClientHash}}"

[[relay]]
address = "{{.RelayAddress}}"
# The relay's public key: the tunnel fails unless the relay presents it.
key = "{{.RelayKey}}"
`))

var relayTemplate = template.Must(template.New("relay.toml").Parse(`# airlock relay, written by "airlock init". Reference: deploy/examples/relay.toml.
name = "relay"
# Address for tunnels from edges: UDP for QUIC, and TCP for the fallback
# where UDP is blocked (listen_tcp to move it, e.g. to port 443).
listen = "0.0.0.0:{{.RelayPort}}"
admin_listen = "127.0.0.1:9091"
# This relay's tunnel key (relative paths are relative to this file).
key_file = "relay.key"

[[edge]]
name = "edge"
# The edge's public key: tunnels from any other key are refused.
key = "{{.EdgeKey}}"

[[upstream]]
name = "openai"
base_url = "{{.UpstreamURL}}"
auth = "bearer"
# The upstream API key is read from this environment variable at start.
key_env = "{{.UpstreamKeyEnv}}"
`))
