package main

import (
	"fmt"
	"io"

	"github.com/airlock-proxy/airlock/edge"
	"github.com/airlock-proxy/airlock/tunnel"
)

func runKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keygen (-out FILE | -show FILE | -client)", `Make a tunnel key pair and write its private key to FILE (mode 0600), printing
the public key's fingerprint to pin on the other side; or print the fingerprint
of an existing key file; or make a client key for the edge's [[client]] list,
printing the key (give it to the client) and its hash (put it in edge.toml).`, stderr)
	out := fs.String("out", "", "write a new tunnel private key to `FILE`")
	show := fs.String("show", "", "print the fingerprint of the tunnel key in `FILE`")
	client := fs.Bool("client", false, "make a client key and print it with its key_hash")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	chosen := 0
	for _, set := range []bool{*out != "", *show != "", *client} {
		if set {
			chosen++
		}
	}
	if chosen != 1 {
		fmt.Fprintln(stderr, "airlock keygen: give exactly one of -out, -show or -client")
		fs.Usage()
		return errUsage
	}
	switch {
	case *client:
		key, hash, err := edge.NewClientKey()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "client key: %s\nkey_hash = %q\n", key, hash)
	case *show != "":
		id, err := tunnel.LoadIdentity(*show)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, id.Fingerprint())
	default:
		id, err := tunnel.GenerateIdentity()
		if err != nil {
			return err
		}
		if err := id.Save(*out); err != nil {
			return err
		}
		fmt.Fprintln(stdout, id.Fingerprint())
	}
	return nil
}
