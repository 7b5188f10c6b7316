package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Object is one decoded YAML document of a manifest file.
type Object struct {
	File  string // path as given on the command line
	Line  int    // line of the file where the document starts, from 1
	Index int    // position among the file's non-empty documents, from 1
	GVK   schema.GroupVersionKind
	Name  string
	// Namespace as written; empty means the namespace the objects are
	// applied to (kustomize's namespace:, or kubectl's context).
	Namespace string
	// Obj is the typed object: *appsv1.Deployment, *corev1.Service, ...,
	// or *Kustomization.
	Obj any
}

// where names the document in messages: "FILE:LINE: doc N (Kind name)".
func (o *Object) where() string {
	id := o.GVK.Kind
	if o.Name != "" {
		id += " " + o.Name
	}
	return fmt.Sprintf("%s:%d: doc %d (%s)", o.File, o.Line, o.Index, id)
}

// Problem is one finding, already naming its file, document and object.
type Problem struct{ Msg string }

func (p Problem) Error() string { return p.Msg }

func problemf(o *Object, format string, args ...any) Problem {
	return Problem{o.where() + ": " + fmt.Sprintf(format, args...)}
}

// scheme holds the kinds kubecheck decodes strictly: the built-in API groups
// deploy manifests use, and the Prometheus Operator's monitoring.coreos.com/v1.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		batchv1.AddToScheme, networkingv1.AddToScheme, rbacv1.AddToScheme,
		autoscalingv2.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// kustomizationGVK is kustomize's own file, checked loosely (see Kustomization).
var kustomizationGVK = schema.GroupVersionKind{Group: "kustomize.config.k8s.io", Version: "v1beta1", Kind: "Kustomization"}

// document is one YAML document of a file and the line it starts on.
type document struct {
	line int
	data []byte
}

// splitDocuments splits a YAML stream at "---" lines (and "..." document
// ends). A document that holds only blank lines and comments is dropped.
// Content after "--- " on the separator line belongs to the new document.
func splitDocuments(data []byte) []document {
	var docs []document
	var cur bytes.Buffer
	start := 1
	flush := func() {
		if hasContent(cur.Bytes()) {
			docs = append(docs, document{line: start, data: bytes.Clone(cur.Bytes())})
		}
		cur.Reset()
	}
	for i, line := range strings.SplitAfter(string(data), "\n") {
		n := i + 1
		trimmed := strings.TrimRight(line, " \t\r\n")
		if trimmed == "---" || trimmed == "..." || strings.HasPrefix(trimmed, "--- ") || strings.HasPrefix(trimmed, "---\t") {
			flush()
			if rest := strings.TrimLeft(trimmed[3:], " \t"); rest != "" {
				start = n
				cur.WriteString(rest + "\n")
			}
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		cur.WriteString(line)
	}
	flush()
	return docs
}

// hasContent reports whether b holds anything but blank lines and comments.
func hasContent(b []byte) bool {
	for line := range strings.SplitSeq(string(b), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") {
			return true
		}
	}
	return false
}

// yamlLine matches the relative line number in a YAML parser error.
var yamlLine = regexp.MustCompile(`line (\d+)`)

// decodeFile decodes every document of one file. It returns the objects it
// could decode and a Problem for each one it could not.
func decodeFile(file string, data []byte) ([]*Object, []error) {
	var objs []*Object
	var errs []error
	for i, doc := range splitDocuments(data) {
		o := &Object{File: file, Line: doc.line, Index: i + 1}
		if err := decodeDocument(o, doc.data); err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, o)
	}
	return objs, errs
}

// decodeDocument fills o from one YAML document: YAML to JSON (rejecting
// duplicate keys), then a strict, case-sensitive decode into the Go type of
// its apiVersion and kind (rejecting unknown and duplicate fields).
func decodeDocument(o *Object, data []byte) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		// Make the parser's document-relative line absolute.
		msg := strings.Join(strings.Fields(err.Error()), " ")
		msg = yamlLine.ReplaceAllStringFunc(msg, func(m string) string {
			n, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
			return fmt.Sprintf("line %d", o.Line+n-1)
		})
		return Problem{fmt.Sprintf("%s:%d: doc %d: %s", o.File, o.Line, o.Index, msg)}
	}
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return Problem{fmt.Sprintf("%s:%d: doc %d: not a Kubernetes object: %v", o.File, o.Line, o.Index, err)}
	}
	o.GVK = head.GroupVersionKind()
	o.Name, o.Namespace = head.Metadata.Name, head.Metadata.Namespace
	if head.APIVersion == "" || head.Kind == "" {
		return problemf(o, "apiVersion and kind are required")
	}

	if o.GVK == kustomizationGVK {
		k := new(Kustomization)
		if err := json.Unmarshal(js, k); err != nil {
			return problemf(o, "%v", err)
		}
		o.Obj = k
		return nil
	}
	obj, err := scheme.New(o.GVK)
	if err != nil {
		return problemf(o, "unknown kind %s in apiVersion %s (kubecheck knows %s)", o.GVK.Kind, head.APIVersion, knownGroups())
	}
	strict, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return problemf(o, "%v", err)
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return problemf(o, "%s", strings.Join(msgs, "; "))
	}
	if o.Name == "" {
		return problemf(o, "metadata.name is required")
	}
	o.Obj = obj
	return nil
}

// knownGroups lists the API groups and versions in scheme, for messages.
func knownGroups() string {
	seen := map[string]bool{}
	var out []string
	for gvk := range scheme.AllKnownTypes() {
		gv := gvk.GroupVersion().String()
		if !seen[gv] && gvk.Version != runtime.APIVersionInternal {
			seen[gv] = true
			out = append(out, gv)
		}
	}
	out = append(out, kustomizationGVK.GroupVersion().String())
	slices.Sort(out)
	return strings.Join(out, ", ")
}
