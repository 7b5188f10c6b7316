package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// compare says how the difference column relates AIRLOCK to DIRECT.
type compare int

const (
	// compareNone leaves the difference column empty.
	compareNone compare = iota
	// compareDelta shows airlock − direct in the row's unit.
	compareDelta
	// compareRatio shows airlock as a percentage of direct.
	compareRatio
)

// cell is one measured figure. A nil *cell means "not applicable".
type cell struct {
	Value  float64 `json:"value"`
	Failed bool    `json:"failed,omitempty"`
}

// row is one line of the report.
type row struct {
	// ID is a stable key for JSON consumers, e.g. "latency_p50".
	ID      string  `json:"id"`
	Name    string  `json:"name"`
	Unit    string  `json:"unit"`
	Direct  *cell   `json:"direct,omitempty"`
	Airlock *cell   `json:"airlock,omitempty"`
	Compare compare `json:"-"`
}

// failure is a measurement that did not complete.
type failure struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	Error    string `json:"error"`
}

// machine describes where the benchmark ran.
type machine struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUModel   string `json:"cpu_model,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	GoVersion  string `json:"go_version"`
	Date       string `json:"date"`
}

// report collects the rows, notes and failures of one run.
type report struct {
	Label    string    `json:"label,omitempty"`
	Machine  machine   `json:"machine"`
	Direct   string    `json:"direct_url"`
	Airlock  string    `json:"airlock_url"`
	Quick    bool      `json:"quick"`
	Rows     []row     `json:"rows"`
	Notes    []string  `json:"notes,omitempty"`
	Failures []failure `json:"failures,omitempty"`
}

func newReport(cfg *benchConfig) *report {
	return &report{
		Label:   cfg.Label,
		Machine: machineInfo(),
		Direct:  cfg.Direct.BaseURL,
		Airlock: cfg.Airlock.BaseURL,
		Quick:   cfg.Quick,
	}
}

func (r *report) add(x row) { r.Rows = append(r.Rows, x) }

func (r *report) notef(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (r *report) fail(scenario, target string, err error) {
	r.Failures = append(r.Failures, failure{Scenario: scenario, Target: target, Error: err.Error()})
}

// machineInfo reads what it can about this host; missing pieces stay empty.
func machineInfo() machine {
	m := machine{
		CPUs:       runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
		Date:       time.Now().UTC().Format(time.RFC3339),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = runtime.GOOS + " " + strings.TrimSpace(string(b))
	}
	return m
}

// writeJSON prints the report as indented JSON.
func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeTable prints the report as a plain text table.
func (r *report) writeTable(w io.Writer) error {
	var b strings.Builder
	title := "airlock whole-path benchmark"
	if r.Quick {
		title += " (-quick: smoke-test sizes, figures are not meaningful)"
	}
	fmt.Fprintln(&b, title)
	if r.Label != "" {
		fmt.Fprintln(&b, r.Label)
	}
	m := r.Machine
	fmt.Fprintf(&b, "date:    %s\n", m.Date)
	fmt.Fprintf(&b, "host:    %d CPUs (GOMAXPROCS %d)", m.CPUs, m.GOMAXPROCS)
	if m.CPUModel != "" {
		fmt.Fprintf(&b, ", %s", m.CPUModel)
	}
	if m.Kernel != "" {
		fmt.Fprintf(&b, ", %s", m.Kernel)
	}
	fmt.Fprintf(&b, "\ngo:      %s\n", m.GoVersion)
	fmt.Fprintf(&b, "direct:  %s (the test upstream)\n", r.Direct)
	fmt.Fprintf(&b, "airlock: %s (edge → tunnel → relay → the same upstream)\n", r.Airlock)
	fmt.Fprintln(&b, "loadgen, edge, relay and upstream share this host's CPUs.")
	fmt.Fprintln(&b)

	// Text columns are left-aligned by tabwriter; the figures are padded
	// to a fixed width first so that they line up on the right.
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\tunit\t%*s\t%*s\tdifference\n", figureWidth, "direct", figureWidth, "airlock")
	for _, x := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%*s\t%*s\t%s\n", x.Name, x.Unit,
			figureWidth, formatCell(x.Direct, x.Unit), figureWidth, formatCell(x.Airlock, x.Unit), difference(x))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(&b, "\nnotes:")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	if len(r.Failures) > 0 {
		fmt.Fprintln(&b, "\nFAILED:")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "  %s/%s: %s\n", f.Scenario, f.Target, f.Error)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// figureWidth is the width the direct and airlock figures are padded to.
const figureWidth = 10

// precision is the number of decimals shown for each unit.
var precision = map[string]int{
	"ms": 3, "µs": 1, "req/s": 0, "MiB/s": 1, "MiB": 1, "KiB": 1, "count": 0,
}

// formatValue prints v with the unit's precision.
func formatValue(v float64, unit string) string {
	return fmt.Sprintf("%.*f", precision[unit], v)
}

// formatCell prints a cell: "-" when not applicable, "FAILED" when it
// failed.
func formatCell(c *cell, unit string) string {
	switch {
	case c == nil:
		return "-"
	case c.Failed:
		return "FAILED"
	}
	return formatValue(c.Value, unit)
}

// difference prints the difference column of x.
func difference(x row) string {
	d, a := x.Direct, x.Airlock
	if d == nil || a == nil || d.Failed || a.Failed {
		return ""
	}
	switch x.Compare {
	case compareDelta:
		delta := a.Value - d.Value
		sign := "+"
		if delta < 0 {
			sign = "-"
			delta = -delta
		}
		return sign + formatValue(delta, x.Unit) + " " + x.Unit
	case compareRatio:
		if d.Value == 0 {
			return ""
		}
		return fmt.Sprintf("%.1f%% of direct", 100*a.Value/d.Value)
	}
	return ""
}
