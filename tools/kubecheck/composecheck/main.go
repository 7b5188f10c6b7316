// Command composecheck validates Docker Compose files the way
// `docker compose config` does, without Docker: it loads them with
// compose-go, the loader of Docker Compose v2, which interpolates variables
// (from the environment and the .env file beside the first compose file),
// merges, and validates against the Compose specification's schema, so that
// unknown keys, wrong types and missing required variables are errors.
//
// Usage:
//
//	composecheck [-q] FILE...
//
// It prints the resolved configuration (like `docker compose config`), or
// nothing with -q. Exit status: 0 valid, 1 invalid, 2 bad usage.
// scripts/check-deploy runs it on deploy/compose/compose.yaml.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"

	checkcli "github.com/airlock-proxy/airlock/tools/kubecheck/internal/cli"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	paths, quiet, code, exit := checkcli.Parse("composecheck", "Validate Docker Compose files as `docker compose config` does, without Docker.", args, stderr)
	if exit {
		return code
	}
	opts, err := cli.NewProjectOptions(paths,
		cli.WithOsEnv,
		cli.WithEnvFiles(), // the .env beside the first compose file, if any
		cli.WithDotEnv,
	)
	if err != nil {
		fmt.Fprintf(stderr, "composecheck: %v\n", err)
		return 1
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintf(stderr, "composecheck: %v\n", err)
		return 1
	}
	if quiet {
		return 0
	}
	out, err := project.MarshalYAML()
	if err != nil {
		fmt.Fprintf(stderr, "composecheck: %v\n", err)
		return 1
	}
	stdout.Write(out)
	return 0
}
