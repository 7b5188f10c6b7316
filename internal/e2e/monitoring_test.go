package e2e

// The monitoring tests check that what airlock ships for monitoring, the
// Grafana dashboard (deploy/grafana/airlock.json) and the Prometheus alert
// rules (deploy/prometheus/alerts.yml), names only metrics that a running
// edge and relay really export, so that a renamed or removed metric breaks
// this test rather than leaving an empty panel or an alert that can never
// fire. PromQL validity and the alerts' behaviour are checked by
// scripts/check-monitoring (promtool) and scripts/e2e-prometheus (a real
// Prometheus server).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/airlock-proxy/airlock/internal/testkit/devstack"
	"github.com/airlock-proxy/airlock/internal/testkit/testupstream"
)

const (
	// monitoringDashboardFile and monitoringAlertsFile are the shipped
	// monitoring files, relative to this package's directory.
	monitoringDashboardFile = "../../deploy/grafana/airlock.json"
	monitoringAlertsFile    = "../../deploy/prometheus/alerts.yml"
	// monitoringDatasource is the data source of every panel: the
	// dashboard's DS_PROMETHEUS variable, so that it works with any
	// Prometheus data source, whatever its uid.
	monitoringDatasource = "${DS_PROMETHEUS}"
)

// monitoringMetricName matches the metric names in a PromQL expression (or
// any text) that the roles export themselves: airlock's own, and the Go
// runtime and process collectors'. Prometheus' own series (up, ALERTS) are
// not checked.
var monitoringMetricName = regexp.MustCompile(`\b(?:airlock|go|process)_[a-z0-9_]+\b`)

// monitoringAlertStart matches the line that starts an alerting rule in a
// Prometheus rule file, and captures the alert's name.
var monitoringAlertStart = regexp.MustCompile(`^\s*-\s*alert:\s*["']?([A-Za-z0-9_]+)`)

// monitoringUse is one place of the monitoring files that uses metrics: a
// panel's query, a template variable, an alert's expression or its
// annotations.
type monitoringUse struct {
	where string   // e.g. `dashboard panel "Sessions by relay and transport"`
	names []string // metric names as written, histogram suffixes included
	// prose is set for names in text for people (an alert's annotations),
	// where a histogram is named by its family name.
	prose bool
}

// TestDashboardUsesLiveMetrics runs an edge and a relay with their admin
// listeners, drives requests through them with the official client, scrapes
// both /metrics, and fails, naming the panel or alert and the metric, for
// every metric name in the dashboard's queries and variables and in the
// alert rules that neither exports.
func TestDashboardUsesLiveMetrics(t *testing.T) {
	uses := append(monitoringDashboardUses(t, monitoringDashboardFile), monitoringAlertUses(t, monitoringAlertsFile)...)
	if t.Failed() {
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{Admin: true, TestUpstream: testupstream.Options{ChunkInterval: time.Millisecond}})
	if err != nil {
		t.Fatalf("starting the stack: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the stack: %v", err)
		}
	})
	monitoringTraffic(t, st)

	// Some series appear only when an exchange has ended on the edge and the
	// relay, which can be just after the client has read the last byte: scrape
	// until nothing is missing, or report what still is.
	targets := append([]string{st.EdgeAdminURL}, st.RelayAdminURLs...)
	var problems []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		problems = monitoringProblems(uses, monitoringScrape(t, ctx, targets))
		if len(problems) == 0 || time.Now().After(deadline) || t.Failed() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestMonitoringChecksCanFail feeds the checks of TestDashboardUsesLiveMetrics
// uses that must be refused, and a rule file whose expression and
// annotations must be told apart, so that a check that always passes is
// caught.
func TestMonitoringChecksCanFail(t *testing.T) {
	live := map[string]string{
		"airlock_edge_requests_total":           "counter",
		"airlock_edge_request_duration_seconds": "histogram",
		"go_gc_duration_seconds":                "summary",
	}
	tests := []struct {
		name  string
		uses  []string
		prose bool
		bad   bool
	}{
		{"exported counter", []string{"airlock_edge_requests_total"}, false, false},
		{"histogram series", []string{"airlock_edge_request_duration_seconds_bucket", "airlock_edge_request_duration_seconds_sum", "airlock_edge_request_duration_seconds_count"}, false, false},
		{"summary series", []string{"go_gc_duration_seconds", "go_gc_duration_seconds_sum"}, false, false},
		{"histogram named in prose", []string{"airlock_edge_request_duration_seconds"}, true, false},
		{"unknown metric", []string{"airlock_edge_requests_total", "airlock_no_such_metric_total"}, false, true},
		{"unknown metric in prose", []string{"airlock_no_such_metric_total"}, true, true},
		{"histogram without a series suffix", []string{"airlock_edge_request_duration_seconds"}, false, true},
		{"suffix on a counter", []string{"airlock_edge_requests_total_count"}, false, true},
		{"summary has no buckets", []string{"go_gc_duration_seconds_bucket"}, false, true},
	}
	for _, tt := range tests {
		got := monitoringProblems([]monitoringUse{{where: tt.name, names: tt.uses, prose: tt.prose}}, live)
		if bad := len(got) > 0; bad != tt.bad {
			t.Errorf("%s: got problems %q, want problems: %v", tt.name, got, tt.bad)
		}
	}

	rules := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(rules, []byte(`groups:
  - name: g
    rules:
      - alert: One
        expr: |
          sum by (relay) (rate(airlock_tunnel_reconnects_total{job="airlock-edge"}[5m]))
            / on () group_left go_goroutines
        for: 1m
        annotations:
          # airlock_commented_out is not read
          description: see airlock_edge_request_duration_seconds
      - alert: Two
        expr: up{job="airlock-relay"} == 0
`), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []monitoringUse{
		{where: "alert One (expr)", names: []string{"airlock_tunnel_reconnects_total", "go_goroutines"}},
		{where: "alert One (annotations)", names: []string{"airlock_edge_request_duration_seconds"}, prose: true},
		{where: "alert Two (expr)"},
		{where: "alert Two (annotations)", prose: true},
	}
	if got := monitoringAlertUses(t, rules); !reflect.DeepEqual(got, want) {
		t.Errorf("rule file read as\n%+v\nwant\n%+v", got, want)
	}
}

// monitoringTraffic drives the requests through the edge that make every
// request, latency and token series exist: a streamed chat completion that
// asks for its usage, a plain one, and a models list.
func monitoringTraffic(t *testing.T, st *devstack.Stack) {
	t.Helper()
	c := sdk(st, st.ClientKey)
	ctx := testCtx(t)
	params := openai.ChatCompletionNewParams{
		Model:         "gpt-4o-mini",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("count my tokens")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}
	stream := c.Chat.Completions.NewStreaming(ctx, params)
	var usage openai.CompletionUsage
	for stream.Next() {
		if u := stream.Current().Usage; u.TotalTokens > 0 {
			usage = u
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("streamed chat completion: %v", err)
	}
	stream.Close()
	if usage.TotalTokens == 0 {
		t.Fatal("the streamed chat completion reported no usage, want the include_usage chunk")
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
	if _, err := c.Chat.Completions.New(ctx, params); err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	if _, err := c.Models.List(ctx); err != nil {
		t.Fatalf("models: %v", err)
	}
}

// monitoringScrape fetches /metrics from each admin base URL and returns the
// type ("counter", "gauge", "histogram", ...) of every metric family any of
// them exports, from the text format's TYPE lines.
func monitoringScrape(t *testing.T, ctx context.Context, adminURLs []string) map[string]string {
	t.Helper()
	types := map[string]string{}
	for _, base := range adminURLs {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("scraping %s: %v", base, err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			// # TYPE airlock_edge_requests_total counter
			if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
				types[f[2]] = f[3]
			}
		}
		err = sc.Err()
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("scraping %s: status %d, %v", base, resp.StatusCode, err)
		}
	}
	if len(types) == 0 {
		t.Fatal("the scrapes found no metric at all")
	}
	return types
}

// monitoringProblems returns one message, naming the place and the metric,
// for each name of uses that is not a series of the live metric families
// types: an exported counter, gauge or summary by its name, a histogram's or
// summary's _sum and _count, a histogram's _bucket. A histogram by its bare
// name is a problem: no series has it. Each message is returned once.
func monitoringProblems(uses []monitoringUse, types map[string]string) []string {
	var problems []string
	for _, u := range uses {
		for _, name := range u.names {
			if why := monitoringUnresolved(name, types, u.prose); why != "" {
				msg := fmt.Sprintf("%s uses %s: %s", u.where, name, why)
				if !slices.Contains(problems, msg) {
					problems = append(problems, msg)
				}
			}
		}
	}
	return problems
}

// monitoringUnresolved says why name is not a series of the families types,
// or returns "" when it is. In prose, a histogram's family name is fine too.
func monitoringUnresolved(name string, types map[string]string, prose bool) string {
	switch types[name] {
	case "histogram":
		if prose {
			return ""
		}
		return "a histogram has no series of that name; use _bucket, _sum or _count"
	case "":
	default:
		return ""
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch typ := types[base]; {
		case typ == "histogram", typ == "summary" && suffix != "_bucket":
			return ""
		case typ != "":
			return fmt.Sprintf("%s is a %s, which has no %s series", base, typ, suffix)
		}
	}
	return "not exported by the running edge or relay"
}

// monitoringDashboardUses reads the Grafana dashboard at path and returns the
// metric names of every panel's queries and every template variable's query.
// A panel other than a row or text without a query, a query without an
// airlock, go or process metric, or a panel or query on another data source
// than monitoringDatasource, is an error of the test.
func monitoringDashboardUses(t *testing.T, path string) []monitoringUse {
	t.Helper()
	type datasource struct {
		UID string `json:"uid"`
	}
	type panel struct {
		Title      string     `json:"title"`
		Type       string     `json:"type"`
		Datasource datasource `json:"datasource"`
		Targets    []struct {
			Expr       string     `json:"expr"`
			Datasource datasource `json:"datasource"`
		} `json:"targets"`
		Panels json.RawMessage `json:"panels"` // the panels of a collapsed row
	}
	var dash struct {
		Title      string          `json:"title"`
		Panels     json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name       string          `json:"name"`
				Type       string          `json:"type"`
				Definition string          `json:"definition"`
				Query      json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}

	var uses []monitoringUse
	add := func(where, expr string) {
		names := monitoringMetricName.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: query %q uses no airlock, go or process metric", where, expr)
		}
		uses = append(uses, monitoringUse{where: where, names: names})
	}
	var walk func(raw json.RawMessage)
	walk = func(raw json.RawMessage) {
		if len(raw) == 0 {
			return
		}
		var panels []panel
		if err := json.Unmarshal(raw, &panels); err != nil {
			t.Fatalf("%s: panels: %v", path, err)
		}
		for _, p := range panels {
			where := fmt.Sprintf("dashboard panel %q", p.Title)
			if len(p.Targets) == 0 && p.Type != "row" && p.Type != "text" {
				t.Errorf("%s (%s) has no query", where, p.Type)
			}
			for _, tg := range p.Targets {
				add(where, tg.Expr)
				if p.Datasource.UID != monitoringDatasource || tg.Datasource.UID != monitoringDatasource {
					t.Errorf("%s: data source %q, query's %q, want %q", where, p.Datasource.UID, tg.Datasource.UID, monitoringDatasource)
				}
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)

	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		// The query is a string in old dashboards, {"query": "..."} in new ones.
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q.Query); err != nil {
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Errorf("%s: template variable %q: query: %v", path, v.Name, err)
			}
		}
		add(fmt.Sprintf("dashboard variable %q", v.Name), q.Query+" "+v.Definition)
	}
	if len(uses) < 10 {
		t.Errorf("%s: found only %d queries, want a whole dashboard", path, len(uses))
	}
	return uses
}

// monitoringAlertUses reads the Prometheus rule file at path and returns,
// for each alerting rule, the metric names of its expression and those of
// the rest of its text (annotations), read from its "- alert:" line to the
// next one. The expression is the "expr:" line and the lines indented more
// deeply than it that follow (a block scalar).
func monitoringAlertUses(t *testing.T, path string) []monitoringUse {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var uses []monitoringUse // pairs: expression, annotations
	exprIndent := -1         // the indentation of the expr: key while in the expression
	for line := range strings.Lines(string(data)) {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if m := monitoringAlertStart.FindStringSubmatch(line); m != nil {
			uses = append(uses,
				monitoringUse{where: fmt.Sprintf("alert %s (expr)", m[1])},
				monitoringUse{where: fmt.Sprintf("alert %s (annotations)", m[1]), prose: true})
			exprIndent = -1
		}
		if len(uses) == 0 {
			continue
		}
		switch {
		case strings.HasPrefix(trimmed, "expr:"):
			exprIndent = indent
		case exprIndent >= 0 && indent <= exprIndent:
			exprIndent = -1
		}
		u := &uses[len(uses)-1]
		if exprIndent >= 0 {
			u = &uses[len(uses)-2]
		}
		u.names = append(u.names, monitoringMetricName.FindAllString(line, -1)...)
	}
	if len(uses) == 0 {
		t.Errorf("%s: found no alerting rule", path)
	}
	return uses
}

// monitoringReadme is the README, whose Troubleshooting section the alerts'
// runbook_url annotations point at.
const monitoringReadme = "../../README.md"

// monitoringRunbookBase is the start of every runbook_url: the README on
// GitHub.
const monitoringRunbookBase = "https://github.com/airlock-proxy/airlock/blob/main/README.md#"

// monitoringRunbookURL matches an alert's runbook_url annotation and
// captures the URL.
var monitoringRunbookURL = regexp.MustCompile(`^\s*runbook_url:\s*["']?([^"'\s]+)`)

// TestMonitoringAlertRunbooks: every alert has a runbook_url that leads to its own
// entry (a "### AlertName" heading) in the README's Troubleshooting section,
// and every entry there is an alert's, so that neither a new alert nor a
// renamed one leaves a dead link.
func TestMonitoringAlertRunbooks(t *testing.T) {
	data, err := os.ReadFile(monitoringAlertsFile)
	if err != nil {
		t.Fatal(err)
	}
	runbooks := map[string]string{} // alert name → runbook_url
	var alerts []string
	for line := range strings.Lines(string(data)) {
		if m := monitoringAlertStart.FindStringSubmatch(line); m != nil {
			alerts = append(alerts, m[1])
			continue
		}
		if m := monitoringRunbookURL.FindStringSubmatch(line); m != nil && len(alerts) > 0 {
			runbooks[alerts[len(alerts)-1]] = m[1]
		}
	}
	if len(alerts) == 0 {
		t.Fatalf("%s: found no alerting rule", monitoringAlertsFile)
	}

	readme, err := os.ReadFile(monitoringReadme)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]bool{} // anchors of the Troubleshooting entries
	in := false
	for line := range strings.Lines(string(readme)) {
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "## Troubleshooting":
			in = true
		case strings.HasPrefix(line, "## "):
			in = false
		case in && strings.HasPrefix(line, "### "):
			entries[strings.ToLower(strings.TrimPrefix(line, "### "))] = true
		}
	}
	if len(entries) == 0 {
		t.Fatalf("%s: no \"## Troubleshooting\" section with \"### \" entries", monitoringReadme)
	}

	for _, name := range alerts {
		anchor := strings.ToLower(name)
		if got, want := runbooks[name], monitoringRunbookBase+anchor; got != want {
			t.Errorf("alert %s: runbook_url %q, want %q", name, got, want)
		}
		if !entries[anchor] {
			t.Errorf("alert %s: the README's Troubleshooting section has no \"### %s\" entry", name, name)
		}
		delete(entries, anchor)
	}
	for anchor := range entries {
		t.Errorf("the README's Troubleshooting entry %q is no alert's", anchor)
	}
}
