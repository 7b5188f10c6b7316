package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// compare says how the comparison columns relate AIRLOCK to DIRECT and to
// NGINX.
type compare int

const (
	// compareNone leaves the comparison columns empty.
	compareNone compare = iota
	// compareDelta shows airlock − the other in the row's unit.
	compareDelta
	// compareRatio shows airlock as a percentage of the other.
	compareRatio
)

// cell is one measured figure. A nil *cell means "not applicable".
type cell struct {
	Value float64 `json:"value"`
	// Parts are the figures of the row's parts, in the order of its Parts,
	// when it has them; Value is then their sum.
	Parts  []float64 `json:"parts,omitempty"`
	Failed bool      `json:"failed,omitempty"`
}

// row is one line of the report.
type row struct {
	// ID is a stable key for JSON consumers, e.g. "latency_p50".
	ID   string `json:"id"`
	Name string `json:"name"`
	Unit string `json:"unit"`
	// Parts name the figures of each cell when it has several, e.g.
	// "edge" and "relay"; the table shows them "edge / relay".
	Parts   []string `json:"parts,omitempty"`
	Direct  *cell    `json:"direct,omitempty"`
	Nginx   *cell    `json:"nginx,omitempty"`
	Airlock *cell    `json:"airlock,omitempty"`
	Compare compare  `json:"-"`
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
	Label   string  `json:"label,omitempty"`
	Machine machine `json:"machine"`
	Direct  string  `json:"direct_url"`
	// Nginx is the nginx chain's URL, empty when it was not measured;
	// NginxSkipped then says why.
	Nginx        string    `json:"nginx_url,omitempty"`
	NginxSkipped string    `json:"nginx_skipped,omitempty"`
	Airlock      string    `json:"airlock_url"`
	Quick        bool      `json:"quick"`
	Rows         []row     `json:"rows"`
	Notes        []string  `json:"notes,omitempty"`
	Failures     []failure `json:"failures,omitempty"`
}

func newReport(cfg *benchConfig) *report {
	return &report{
		Label:        cfg.Label,
		Machine:      machineInfo(),
		Direct:       cfg.Direct.BaseURL,
		Nginx:        cfg.Nginx.BaseURL,
		NginxSkipped: cfg.NginxSkipped,
		Airlock:      cfg.Airlock.BaseURL,
		Quick:        cfg.Quick,
	}
}

func (r *report) add(x row) { r.Rows = append(r.Rows, x) }

// addIfAny adds x unless none of its cells applies.
func (r *report) addIfAny(x row) {
	if x.Direct != nil || x.Nginx != nil || x.Airlock != nil {
		r.add(x)
	}
}

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
	nginx := r.Nginx != ""
	switch {
	case nginx:
		fmt.Fprintf(&b, "nginx:   %s (edge nginx → HTTPS → relay nginx → the same upstream: the peer baseline)\n", r.Nginx)
	case r.NginxSkipped != "":
		fmt.Fprintf(&b, "nginx:   SKIPPED, no nginx column: %s\n", r.NginxSkipped)
	default:
		fmt.Fprintln(&b, "nginx:   not measured (no -nginx)")
	}
	fmt.Fprintf(&b, "airlock: %s (edge → tunnel → relay → the same upstream)\n", r.Airlock)
	fmt.Fprintln(&b, "loadgen and every process measured share this host's CPUs.")
	if nginx {
		fmt.Fprintln(&b, "edge and relay rows: for nginx the edge and relay nginx (master + worker each), for airlock its edge and relay.")
	}
	fmt.Fprintln(&b)

	// Text columns are left-aligned by tabwriter; the figures are padded
	// to the width of the widest first so that they line up on the right.
	width := figureWidth
	for _, x := range r.Rows {
		for _, c := range []*cell{x.Direct, x.Nginx, x.Airlock} {
			width = max(width, utf8.RuneCountInString(formatCell(c, x.Unit)))
		}
	}
	pad := func(s string) string { return fmt.Sprintf("%*s", width, s) }
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	header := []string{"scenario", "unit", pad("direct")}
	if nginx {
		header = append(header, pad("nginx chain"))
	}
	header = append(header, pad("airlock"), "airlock vs direct")
	if nginx {
		header = append(header, "airlock vs nginx")
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, x := range r.Rows {
		line := []string{x.Name, x.Unit, pad(formatCell(x.Direct, x.Unit))}
		if nginx {
			line = append(line, pad(formatCell(x.Nginx, x.Unit)))
		}
		line = append(line, pad(formatCell(x.Airlock, x.Unit)), x.versus(x.Direct, nameDirect))
		if nginx {
			line = append(line, x.versus(x.Nginx, nameNginx))
		}
		fmt.Fprintln(tw, strings.Join(line, "\t"))
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

// figureWidth is the least width the figures are padded to.
const figureWidth = 11

// precision is the number of decimals shown for each unit.
var precision = map[string]int{
	"ms": 3, "µs": 1, "req/s": 0, "MiB/s": 1, "MiB": 1, "KiB": 1, "count": 0, "/req": 1,
}

// formatValue prints v with the unit's precision.
func formatValue(v float64, unit string) string {
	return fmt.Sprintf("%.*f", precision[unit], v)
}

// formatCell prints a cell: "-" when not applicable, "FAILED" when it
// failed, its parts "a / b" when it has them.
func formatCell(c *cell, unit string) string {
	switch {
	case c == nil:
		return "-"
	case c.Failed:
		return "FAILED"
	case len(c.Parts) > 0:
		parts := make([]string, len(c.Parts))
		for i, v := range c.Parts {
			parts[i] = formatValue(v, unit)
		}
		return strings.Join(parts, " / ")
	}
	return formatValue(c.Value, unit)
}

// versus prints how x's AIRLOCK figure compares to base, the figure of the
// target named baseName, by x.Compare: empty when either is missing. Cells
// with parts compare part by part, by their deltas only.
func (x row) versus(base *cell, baseName string) string {
	a := x.Airlock
	if base == nil || a == nil || base.Failed || a.Failed {
		return ""
	}
	if len(a.Parts) > 0 || len(base.Parts) > 0 {
		if len(a.Parts) != len(base.Parts) || x.Compare != compareDelta {
			return ""
		}
		deltas := make([]string, len(a.Parts))
		for i := range a.Parts {
			deltas[i] = x.signed(a.Parts[i] - base.Parts[i])
		}
		return strings.Join(deltas, " / ") + " " + x.Unit
	}
	switch x.Compare {
	case compareDelta:
		return x.signed(a.Value-base.Value) + " " + x.Unit
	case compareRatio:
		if base.Value == 0 {
			return ""
		}
		return fmt.Sprintf("%.1f%% of %s", 100*a.Value/base.Value, baseName)
	}
	return ""
}

// signed prints delta with its sign in x's unit's precision; one that
// rounds to zero is "+0".
func (x row) signed(delta float64) string {
	abs := formatValue(math.Abs(delta), x.Unit)
	if delta < 0 && strings.Trim(abs, "0.") != "" {
		return "-" + abs
	}
	return "+" + abs
}
