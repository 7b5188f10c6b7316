// Command kubecheck checks airlock's Kubernetes manifests without a cluster.
//
// It reads every YAML document of the given files, decodes each strictly
// into the official Go type of its apiVersion and kind (k8s.io/api apps/v1,
// core/v1, policy/v1, ..., and the Prometheus Operator's
// monitoring.coreos.com/v1), and rejects unknown kinds, unknown or duplicate
// fields and YAML errors. Then it checks the set as a whole: every
// Deployment's selector matches its pod labels, every Service selects pods
// that have its target ports, probe ports name container ports, referenced
// ConfigMaps, Secrets, keys and volumes exist, PodDisruptionBudgets and
// ServiceMonitors select something, every container is hardened (non-root,
// read-only root, no capabilities, seccomp, resources), and the termination
// grace period outlasts airlock's shutdown_grace. kustomization.yaml files
// are checked loosely: the files they list exist, and no YAML file beside
// them is left out.
//
// Usage:
//
//	kubecheck [-q] PATH...
//
// A PATH is a YAML file, a directory (every *.yaml and *.yml below it), or
// "-" for standard input (e.g. the output of `kubectl kustomize DIR`). Each
// problem is printed on its own line as FILE:LINE: doc N (Kind name): what.
// Exit status: 0 no problem, 1 problems, 2 bad usage.
//
// It is a module of its own (tools/kubecheck) so that the airlock module does
// not depend on Kubernetes: go -C tools/kubecheck run . ../../deploy/kubernetes
package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/airlock-proxy/airlock/tools/kubecheck/internal/cli"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	paths, quiet, code, exit := cli.Parse("kubecheck", "Check Kubernetes manifests strictly against the official Go types, then as a set.\nPATH: a YAML file, a directory (its *.yaml and *.yml, recursively) or - for stdin.", args, stderr)
	if exit {
		return code
	}
	files, err := expand(paths)
	if err != nil {
		fmt.Fprintf(stderr, "kubecheck: %v\n", err)
		return 1
	}
	objs, errs := load(files, stdin)
	// A document that did not decode would make the set checks report its
	// absence (a Service selecting no Deployment, ...): those come after.
	decoded := len(errs) == 0
	if decoded {
		errs = check(objs)
	}
	for _, o := range objs {
		if o.GVK == kustomizationGVK {
			errs = append(errs, checkKustomization(o)...)
		}
	}
	for _, e := range errs {
		fmt.Fprintln(stderr, e)
	}
	if len(errs) > 0 {
		fmt.Fprintf(stderr, "kubecheck: %d problem(s)\n", len(errs))
		if !decoded {
			fmt.Fprintln(stderr, "kubecheck: checks across objects skipped until every document decodes")
		}
		return 1
	}
	if !quiet {
		fmt.Fprintf(stdout, "kubecheck: %d objects in %d files: ok\n", len(objs), len(files))
	}
	return 0
}

// expand turns the PATH arguments into a list of files: directories become
// their *.yaml and *.yml files, in lexical order.
func expand(paths []string) ([]string, error) {
	var files []string
	for _, p := range paths {
		if p == "-" {
			files = append(files, p)
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%s: no *.yaml or *.yml files", p)
		}
		slices.Sort(found)
		files = append(files, found...)
	}
	return files, nil
}

// load reads and decodes every file ("-" is stdin, named <stdin>).
func load(files []string, stdin io.Reader) ([]*Object, []error) {
	var objs []*Object
	var errs []error
	for _, f := range files {
		var data []byte
		var err error
		name := f
		if f == "-" {
			name = "<stdin>"
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		o, e := decodeFile(name, data)
		objs = append(objs, o...)
		errs = append(errs, e...)
	}
	return objs, errs
}
