package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Kustomization is the part of kustomize's kustomization.yaml that kubecheck
// checks: the files it refers to. Its other fields are left to kustomize
// itself (`kubectl kustomize DIR` builds it; scripts/check-deploy runs that
// where kubectl is installed), so they are decoded loosely here.
type Kustomization struct {
	Resources             []string `json:"resources"`
	Components            []string `json:"components"`
	PatchesStrategicMerge []string `json:"patchesStrategicMerge"`
	Patches               []struct {
		Path string `json:"path"`
	} `json:"patches"`
}

// kustomizationNames are the file names kustomize looks for in a directory.
var kustomizationNames = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// checkKustomization checks that every local resource a kustomization lists
// exists (a directory must hold a kustomization of its own), and that every
// YAML file beside it is referred to, so that a new manifest is not silently
// left out of `kubectl apply -k`.
func checkKustomization(o *Object) []error {
	k := o.Obj.(*Kustomization)
	dir := filepath.Dir(o.File)
	var errs []error
	referred := map[string]bool{filepath.Clean(o.File): true}
	for _, field := range []struct {
		name  string
		paths []string
	}{{"resources", k.Resources}, {"components", k.Components}, {"patchesStrategicMerge", k.PatchesStrategicMerge}} {
		for i, r := range field.paths {
			if isRemote(r) {
				continue
			}
			p := filepath.Join(dir, r)
			referred[filepath.Clean(p)] = true
			fi, err := os.Stat(p)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				errs = append(errs, problemf(o, "%s[%d] %q does not exist", field.name, i, r))
			case err != nil:
				errs = append(errs, problemf(o, "%s[%d] %q: %v", field.name, i, r, err))
			case fi.IsDir() && !hasKustomization(p):
				errs = append(errs, problemf(o, "%s[%d] %q: a directory without a kustomization.yaml", field.name, i, r))
			}
		}
	}
	for _, p := range k.Patches {
		if p.Path != "" {
			referred[filepath.Clean(filepath.Join(dir, p.Path))] = true
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return append(errs, problemf(o, "%v", err))
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		if !referred[filepath.Clean(filepath.Join(dir, name))] {
			errs = append(errs, problemf(o, "%s is beside this kustomization but not listed in its resources", filepath.Join(dir, name)))
		}
	}
	return errs
}

func hasKustomization(dir string) bool {
	return slices.ContainsFunc(kustomizationNames, func(n string) bool {
		_, err := os.Stat(filepath.Join(dir, n))
		return err == nil
	})
}

// isRemote reports whether a kustomize resource is a URL (a remote base),
// which kubecheck does not fetch.
func isRemote(r string) bool {
	return strings.Contains(r, "://") || strings.HasPrefix(r, "github.com/") || strings.HasPrefix(r, "git@")
}
