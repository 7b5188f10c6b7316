// Package cli parses the command line both deploy checkers share:
// `NAME [-q] PATH...`.
package cli

import (
	"flag"
	"fmt"
	"io"
)

// Parse parses args of the checker name, whose usage text says what it does
// and what PATH may be. It returns the paths and whether -q (print nothing
// when all is well) was given; exit is true when the command must end now,
// with code (0 after -h, 2 for bad usage, having printed why).
func Parse(name, usage string, args []string, stderr io.Writer) (paths []string, quiet bool, code int, exit bool) {
	fl := flag.NewFlagSet(name, flag.ContinueOnError)
	fl.SetOutput(stderr)
	q := fl.Bool("q", false, "print nothing when there is no problem")
	fl.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s [-q] PATH...\n\n%s\n\nFlags:\n", name, usage)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, false, 0, true
		}
		return nil, false, 2, true
	}
	if fl.NArg() == 0 {
		fl.Usage()
		return nil, false, 2, true
	}
	return fl.Args(), *q, 0, false
}
