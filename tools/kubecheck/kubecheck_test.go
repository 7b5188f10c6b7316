package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRepoManifests checks the manifests this tool exists for.
func TestRepoManifests(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"../../deploy/kubernetes"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("kubecheck deploy/kubernetes: exit %d, want 0:\n%s", code, stderr.String())
	}
}

func TestGoodSetPasses(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"testdata/good"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, stderr.String())
	}
	if want := "7 objects in 2 files: ok"; !strings.Contains(stdout.String(), want) {
		t.Errorf("stdout = %q, want it to contain %q", stdout.String(), want)
	}
}

// TestProblems breaks one thing at a time in a copy of testdata/good and
// checks that the message names the file, line, document, object and field.
func TestProblems(t *testing.T) {
	tests := []struct {
		name     string
		file     string // in testdata/good
		old, new string // the first old is replaced with new
		want     []string
	}{
		{
			name: "unknown field",
			file: "app.yaml", old: "          image: example/web:1\n", new: "          image: example/web:1\n          imagePullPolcy: Always\n",
			want: []string{"app.yaml:19: doc 3 (Deployment web):", `unknown field "spec.template.spec.containers[0].imagePullPolcy"`, "checks across objects skipped"},
		},
		{
			name: "unknown top-level field",
			file: "app.yaml", old: "kind: Secret\n", new: "kind: Secret\nstringdata: {}\n",
			want: []string{"app.yaml:11: doc 2 (Secret web-key):", `unknown field "stringdata"`},
		},
		{
			name: "field of the wrong type",
			file: "app.yaml", old: "replicas: 2", new: "replicas: two",
			want: []string{"doc 3 (Deployment web):", "replicas"},
		},
		{
			name: "duplicate key",
			file: "app.yaml", old: "  replicas: 2\n", new: "  replicas: 2\n  replicas: 3\n",
			want: []string{"app.yaml:19: doc 3: yaml: unmarshal errors: line 25: key \"replicas\" already set in map"},
		},
		{
			name: "unknown kind",
			file: "app.yaml", old: "kind: Deployment", new: "kind: Deploymnet",
			want: []string{"doc 3 (Deploymnet web):", "unknown kind Deploymnet in apiVersion apps/v1"},
		},
		{
			name: "selector does not match the pod labels",
			file: "app.yaml", old: "    matchLabels:\n      app: web\n  template:", new: "    matchLabels:\n      app: webx\n  template:",
			want: []string{"doc 3 (Deployment web):", "spec.selector (app=webx) does not match spec.template.metadata.labels"},
		},
		{
			name: "service selects no pods",
			file: "app.yaml", old: "spec:\n  selector:\n    app: web\n", new: "spec:\n  selector:\n    app: api\n",
			want: []string{"doc 4 (Service web):", "spec.selector map[app:api] matches the pods of no Deployment"},
		},
		{
			name: "service target port of the wrong protocol",
			file: "app.yaml", old: "      port: 8443\n      protocol: UDP", new: "      port: 8443\n      protocol: TCP",
			want: []string{"doc 4 (Service web):", "spec.ports[1].targetPort 8443/TCP is not a TCP container port of Deployment web"},
		},
		{
			name: "probe port names no container port",
			file: "app.yaml", old: "              port: http", new: "              port: htp",
			want: []string{"doc 3 (Deployment web):", `spec.template.spec.containers[0].readinessProbe.httpGet.port "htp" names no port of container "web"`},
		},
		{
			name: "missing ConfigMap",
			file: "app.yaml", old: "name: web-config\n                  items", new: "name: web-conf\n                  items",
			want: []string{"doc 3 (Deployment web):", `spec.template.spec.volumes[0].projected.sources[0]: ConfigMap "web-conf" is not in the set`},
		},
		{
			name: "missing Secret key",
			file: "app.yaml", old: "- key: web.key", new: "- key: tls.key",
			want: []string{"doc 3 (Deployment web):", `key "tls.key" is not in Secret "web-key"`},
		},
		{
			name: "missing volume",
			file: "app.yaml", old: "            - name: config\n", new: "            - name: conf\n",
			want: []string{"doc 3 (Deployment web):", `volumeMounts[0]: volume "conf" is not in spec.template.spec.volumes`},
		},
		{
			name: "grace period shorter than the drain",
			file: "app.yaml", old: "terminationGracePeriodSeconds: 20", new: "terminationGracePeriodSeconds: 15",
			want: []string{"doc 3 (Deployment web):", "terminationGracePeriodSeconds 15 must exceed the preStop pause (5s) plus shutdown_grace (10s"},
		},
		{
			name: "not hardened",
			file: "app.yaml", old: "allowPrivilegeEscalation: false", new: "allowPrivilegeEscalation: true",
			want: []string{"doc 3 (Deployment web):", "containers[0].securityContext.allowPrivilegeEscalation must be false"},
		},
		{
			name: "PDB that blocks every eviction",
			file: "app.yaml", old: "minAvailable: 1", new: "minAvailable: 2",
			want: []string{"doc 5 (PodDisruptionBudget web):", "spec.minAvailable 2 is not below the 2 replicas of Deployment web"},
		},
		{
			name: "ServiceMonitor port",
			file: "app.yaml", old: "    - port: http\n", new: "    - port: metrics\n",
			want: []string{"doc 6 (ServiceMonitor web):", `spec.endpoints[0].port "metrics" names no port of the selected Services (ports: http, stream)`},
		},
		{
			name: "ServiceMonitor jobLabel missing on the Service",
			file: "app.yaml", old: "  jobLabel: app\n", new: "  jobLabel: job\n",
			want: []string{"doc 6 (ServiceMonitor web):", `spec.jobLabel "job" is not a label of the selected Service web`},
		},
		{
			name: "invalid label",
			file: "app.yaml", old: "  labels:\n    app: web\nspec:", new: "  labels:\n    app: web!\nspec:",
			want: []string{"doc 4 (Service web):", "metadata.labels: Invalid value"},
		},
		{
			name: "kustomization lists a missing file",
			file: "kustomization.yaml", old: "  - app.yaml", new: "  - app.yaml\n  - db.yaml",
			want: []string{"kustomization.yaml:1: doc 1 (Kustomization):", `resources[1] "db.yaml" does not exist`},
		},
		{
			name: "kustomization leaves a file out",
			file: "kustomization.yaml", old: "  - app.yaml", new: "  []",
			want: []string{"kustomization.yaml:1: doc 1 (Kustomization):", "app.yaml is beside this kustomization but not listed in its resources"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyGood(t)
			path := filepath.Join(dir, tt.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(data, []byte(tt.old)) {
				t.Fatalf("%s does not contain %q", tt.file, tt.old)
			}
			data = bytes.Replace(data, []byte(tt.old), []byte(tt.new), 1)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := run([]string{dir}, nil, &stdout, &stderr)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr.String())
			}
			got := stderr.String()
			t.Logf("stderr:\n%s", got)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, got)
				}
			}
			if !strings.Contains(got, path) {
				t.Errorf("stderr does not name the file %s:\n%s", path, got)
			}
		})
	}
}

// copyGood copies testdata/good into a temporary directory.
func copyGood(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir("testdata/good")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("testdata/good", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestStdin(t *testing.T) {
	data, err := os.ReadFile("testdata/good/app.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-q", "-"}, bytes.NewReader(data), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("-q printed %q, want nothing", stdout.String())
	}
	bad := bytes.Replace(data, []byte("kind: Service\n"), []byte("kind: Service\nmetadat: {}\n"), 1)
	stderr.Reset()
	if code := run([]string{"-"}, bytes.NewReader(bad), &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if want := `<stdin>:85: doc 4 (Service web): unknown field "metadat"`; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr does not contain %q:\n%s", want, stderr.String())
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no paths", nil, 2},
		{"unknown flag", []string{"-x", "a.yaml"}, 2},
		{"help", []string{"-h"}, 0},
		{"missing file", []string{"testdata/none.yaml"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run(tt.args, nil, &stdout, &stderr); got != tt.want {
				t.Errorf("run(%q) = %d, want %d; stderr:\n%s", tt.args, got, tt.want, stderr.String())
			}
		})
	}
}

func TestSplitDocuments(t *testing.T) {
	type doc struct {
		line int
		data string
	}
	tests := []struct {
		name string
		in   string
		want []doc
	}{
		{"one", "a: 1\n", []doc{{1, "a: 1\n"}}},
		{"leading separator", "---\na: 1\n", []doc{{2, "a: 1\n"}}},
		{"comments stay with their document", "# head\na: 1\n---\n# two\nb: 2\n", []doc{{1, "# head\na: 1\n"}, {4, "# two\nb: 2\n"}}},
		{"empty and comment-only documents dropped", "---\n# only a comment\n---\n\n---\na: 1\n---\n", []doc{{6, "a: 1\n"}}},
		{"separator with comment", "a: 1\n--- # next\nb: 2\n", []doc{{1, "a: 1\n"}, {2, "# next\nb: 2\n"}}},
		{"content on the separator line", "--- {a: 1}\n", []doc{{1, "{a: 1}\n"}}},
		{"document end marker", "a: 1\n...\n---\nb: 2\n", []doc{{1, "a: 1\n"}, {4, "b: 2\n"}}},
		{"CRLF", "a: 1\r\n---\r\nb: 2\r\n", []doc{{1, "a: 1\r\n"}, {3, "b: 2\r\n"}}},
		{"not a separator", "a: |\n  ---x\n", []doc{{1, "a: |\n  ---x\n"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []doc
			for _, d := range splitDocuments([]byte(tt.in)) {
				got = append(got, doc{d.line, string(d.data)})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d documents %+v, want %d %+v", len(got), got, len(tt.want), tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("document %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}
