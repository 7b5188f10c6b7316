// Package config holds what the edge and relay configurations share: strict
// TOML loading, in which an unknown key is an error naming the key and its
// line, a Duration type written as "3s" or "1m30s", and the [log] table.
//
// Each role's configuration struct lives with its owner (edge.Config,
// relay.Config); this package only decodes.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Log is the `[log]` table of both roles' configurations. Command-line flags
// (-log-level, -log-format) win over it.
type Log struct {
	// Level is debug, info, warn or error. Default: "info".
	Level string `toml:"level"`
	// Format is text or json. Default: "text".
	Format string `toml:"format"`
}

// Duration is a time.Duration written in TOML as a Go duration string such as
// "500ms", "3s" or "1h".
type Duration struct{ time.Duration }

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: want a number with a unit, like \"3s\" or \"500ms\"", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Decode decodes TOML from b into v strictly: a key that v has no field for is
// an error naming the key and its line. name labels errors (usually the
// file's path).
func Decode(name string, b []byte, v any) error {
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		return nil
	}
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		msgs := make([]string, 0, len(strict.Errors))
		for i := range strict.Errors {
			e := &strict.Errors[i]
			line, _ := e.Position()
			msgs = append(msgs, fmt.Sprintf("%s:%d: unknown key %q", name, line, strings.Join(e.Key(), ".")))
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		key := strings.Join(de.Key(), ".")
		if key != "" {
			return fmt.Errorf("%s:%d:%d: key %q: %s", name, line, col, key, de.Error())
		}
		return fmt.Errorf("%s:%d:%d: %s", name, line, col, de.Error())
	}
	return fmt.Errorf("%s: %w", name, err)
}

// Load reads the file at path and decodes it with [Decode].
func Load(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	return Decode(path, b, v)
}

// Setting is one setting of a running configuration and of a reloaded one,
// for Changed.
type Setting struct {
	// Key names the setting in the TOML file.
	Key string
	// Running and Reloaded are its two values.
	Running, Reloaded any
}

// Changed returns the keys of the settings whose values differ, for a
// reload to report what only a restart applies.
func Changed(settings ...Setting) []string {
	var keys []string
	for _, s := range settings {
		if !reflect.DeepEqual(s.Running, s.Reloaded) {
			keys = append(keys, s.Key)
		}
	}
	return keys
}
