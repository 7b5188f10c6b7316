package main

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// workload is a Deployment, StatefulSet or DaemonSet: what Services, PDBs and
// probes refer to.
type workload struct {
	obj      *Object
	replicas int32 // 1 when unset; 0 for a DaemonSet (unknown)
	selector *metav1.LabelSelector
	template *corev1.PodTemplateSpec
}

// checker holds the set of objects for the cross-object checks.
type checker struct {
	objs       []*Object
	workloads  []workload
	services   []*Object
	configMaps map[string]*corev1.ConfigMap // by namespace + "/" + name
	secrets    map[string]*corev1.Secret
	errs       []error
}

// check runs every semantic check over the decoded objects and returns the
// problems found, in file order.
func check(objs []*Object) []error {
	c := &checker{objs: objs, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	seen := map[string]*Object{}
	for _, o := range objs {
		if o.GVK == kustomizationGVK {
			continue
		}
		id := o.GVK.GroupKind().String() + " " + o.Namespace + "/" + o.Name
		if first, dup := seen[id]; dup {
			c.errorf(o, "duplicate of %s", first.where())
		}
		seen[id] = o
		c.checkMeta(o)
		switch v := o.Obj.(type) {
		case *appsv1.Deployment:
			c.workloads = append(c.workloads, workload{o, replicasOf(v.Spec.Replicas), v.Spec.Selector, &v.Spec.Template})
		case *appsv1.StatefulSet:
			c.workloads = append(c.workloads, workload{o, replicasOf(v.Spec.Replicas), v.Spec.Selector, &v.Spec.Template})
		case *appsv1.DaemonSet:
			c.workloads = append(c.workloads, workload{o, 0, v.Spec.Selector, &v.Spec.Template})
		case *corev1.Service:
			c.services = append(c.services, o)
		case *corev1.ConfigMap:
			c.configMaps[o.Namespace+"/"+o.Name] = v
		case *corev1.Secret:
			c.secrets[o.Namespace+"/"+o.Name] = v
		}
	}
	for _, w := range c.workloads {
		c.checkWorkload(w)
	}
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *corev1.Service:
			c.checkService(o, v)
		case *policyv1.PodDisruptionBudget:
			c.checkPDB(o, v)
		case *monitoringv1.ServiceMonitor:
			c.checkServiceMonitor(o, v)
		}
	}
	return c.errs
}

func (c *checker) errorf(o *Object, format string, args ...any) {
	c.errs = append(c.errs, problemf(o, format, args...))
}

func replicasOf(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

// checkMeta applies the API server's own rules for names, labels and
// annotations. Service names are DNS labels; other names DNS subdomains.
func (c *checker) checkMeta(o *Object) {
	m, ok := o.Obj.(metav1.Object)
	if !ok {
		return
	}
	nameFn := apivalidation.NameIsDNSSubdomain
	if _, svc := o.Obj.(*corev1.Service); svc {
		nameFn = apivalidation.NameIsDNS1035Label
	}
	for _, e := range apivalidation.ValidateObjectMetaAccessor(m, o.Namespace != "", nameFn, field.NewPath("metadata")) {
		c.errorf(o, "%v", e)
	}
}

// checkWorkload checks that the selector selects the workload's own pods, and
// then the pod spec.
func (c *checker) checkWorkload(w workload) {
	o := w.obj
	if w.selector == nil || (len(w.selector.MatchLabels) == 0 && len(w.selector.MatchExpressions) == 0) {
		c.errorf(o, "spec.selector is required and must not be empty")
	} else {
		for _, e := range metav1validation.ValidateLabelSelector(w.selector, metav1validation.LabelSelectorValidationOptions{}, field.NewPath("spec", "selector")) {
			c.errorf(o, "%v", e)
		}
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err == nil && !sel.Matches(labels.Set(w.template.Labels)) {
			c.errorf(o, "spec.selector (%s) does not match spec.template.metadata.labels %v", sel, w.template.Labels)
		}
	}
	c.checkPodSpec(o, &w.template.Spec, "spec.template.spec")
}

// checkPodSpec checks references inside a pod spec (volumes, ConfigMaps,
// Secrets, named probe ports) and the hardening every airlock pod has.
func (c *checker) checkPodSpec(o *Object, spec *corev1.PodSpec, at string) {
	volumes := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		vp := fmt.Sprintf("%s.volumes[%d]", at, i)
		volumes[v.Name] = v
		switch {
		case v.ConfigMap != nil:
			c.refConfigMap(o, vp, v.ConfigMap.Name, keysOf(v.ConfigMap.Items), v.ConfigMap.Optional)
		case v.Secret != nil:
			c.refSecret(o, vp, v.Secret.SecretName, keysOf(v.Secret.Items), v.Secret.Optional)
		case v.Projected != nil:
			for j, s := range v.Projected.Sources {
				sp := fmt.Sprintf("%s.projected.sources[%d]", vp, j)
				if s.ConfigMap != nil {
					c.refConfigMap(o, sp, s.ConfigMap.Name, keysOf(s.ConfigMap.Items), s.ConfigMap.Optional)
				}
				if s.Secret != nil {
					c.refSecret(o, sp, s.Secret.Name, keysOf(s.Secret.Items), s.Secret.Optional)
				}
			}
		}
	}

	portNames := map[string]bool{}
	containerNames := map[string]bool{}
	all := [][]corev1.Container{spec.InitContainers, spec.Containers}
	for k, list := range all {
		kind := [...]string{"initContainers", "containers"}[k]
		for i := range list {
			ct := &list[i]
			cp := fmt.Sprintf("%s.%s[%d]", at, kind, i)
			if containerNames[ct.Name] {
				c.errorf(o, "%s.name: duplicate container name %q", cp, ct.Name)
			}
			containerNames[ct.Name] = true
			if ct.Image == "" {
				c.errorf(o, "%s.image is required", cp)
			}
			for j, p := range ct.Ports {
				if p.Name == "" {
					continue
				}
				for _, msg := range validation.IsValidPortName(p.Name) {
					c.errorf(o, "%s.ports[%d].name %q: %s", cp, j, p.Name, msg)
				}
				if portNames[p.Name] {
					c.errorf(o, "%s.ports[%d].name: duplicate port name %q in the pod", cp, j, p.Name)
				}
				portNames[p.Name] = true
			}
			for _, p := range []struct {
				name  string
				probe *corev1.Probe
			}{{"livenessProbe", ct.LivenessProbe}, {"readinessProbe", ct.ReadinessProbe}, {"startupProbe", ct.StartupProbe}} {
				if p.probe != nil {
					c.checkHandlerPort(o, ct, cp+"."+p.name, p.probe.HTTPGet, p.probe.TCPSocket)
				}
			}
			if lc := ct.Lifecycle; lc != nil {
				if lc.PostStart != nil {
					c.checkHandlerPort(o, ct, cp+".lifecycle.postStart", lc.PostStart.HTTPGet, lc.PostStart.TCPSocket)
				}
				if lc.PreStop != nil {
					c.checkHandlerPort(o, ct, cp+".lifecycle.preStop", lc.PreStop.HTTPGet, lc.PreStop.TCPSocket)
				}
			}
			for j, m := range ct.VolumeMounts {
				if volumes[m.Name] == nil {
					c.errorf(o, "%s.volumeMounts[%d]: volume %q is not in %s.volumes", cp, j, m.Name, at)
				}
			}
			for j, e := range ct.EnvFrom {
				ep := fmt.Sprintf("%s.envFrom[%d]", cp, j)
				if e.ConfigMapRef != nil {
					c.refConfigMap(o, ep, e.ConfigMapRef.Name, nil, e.ConfigMapRef.Optional)
				}
				if e.SecretRef != nil {
					c.refSecret(o, ep, e.SecretRef.Name, nil, e.SecretRef.Optional)
				}
			}
			for j, e := range ct.Env {
				if e.ValueFrom == nil {
					continue
				}
				ep := fmt.Sprintf("%s.env[%d]", cp, j)
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					c.refConfigMap(o, ep, r.Name, []string{r.Key}, r.Optional)
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					c.refSecret(o, ep, r.Name, []string{r.Key}, r.Optional)
				}
			}
			c.checkHardening(o, spec, ct, cp)
			c.checkDrain(o, spec, ct, volumes, at, cp)
		}
	}
}

// checkHandlerPort checks that a probe or lifecycle handler's named port is a
// port of the same container (the kubelet resolves it there).
func (c *checker) checkHandlerPort(o *Object, ct *corev1.Container, at string, h *corev1.HTTPGetAction, t *corev1.TCPSocketAction) {
	var port intstr.IntOrString
	switch {
	case h != nil:
		port, at = h.Port, at+".httpGet.port"
	case t != nil:
		port, at = t.Port, at+".tcpSocket.port"
	default:
		return
	}
	if port.Type != intstr.String {
		return
	}
	for _, p := range ct.Ports {
		if p.Name == port.StrVal {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				c.errorf(o, "%s %q names a %s port; probes use TCP", at, port.StrVal, p.Protocol)
			}
			return
		}
	}
	c.errorf(o, "%s %q names no port of container %q", at, port.StrVal, ct.Name)
}

// checkHardening holds every container to the security baseline of the
// airlock manifests: non-root, no privilege escalation, read-only root
// filesystem, no capabilities, a seccomp profile, and resource requests and
// a memory limit.
func (c *checker) checkHardening(o *Object, spec *corev1.PodSpec, ct *corev1.Container, at string) {
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	sc := ct.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	nonRoot := psc.RunAsNonRoot
	if sc.RunAsNonRoot != nil {
		nonRoot = sc.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		c.errorf(o, "%s: runAsNonRoot must be true (container or pod securityContext)", at)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		c.errorf(o, "%s.securityContext.allowPrivilegeEscalation must be false", at)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		c.errorf(o, "%s.securityContext.readOnlyRootFilesystem must be true", at)
	}
	if sc.Privileged != nil && *sc.Privileged {
		c.errorf(o, "%s.securityContext.privileged must not be true", at)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		c.errorf(o, "%s.securityContext.capabilities.drop must contain ALL", at)
	}
	seccomp := psc.SeccompProfile
	if sc.SeccompProfile != nil {
		seccomp = sc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type == corev1.SeccompProfileTypeUnconfined {
		c.errorf(o, "%s: seccompProfile must be RuntimeDefault or Localhost (container or pod securityContext)", at)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := ct.Resources.Requests[r]; !ok {
			c.errorf(o, "%s.resources.requests.%s is required", at, r)
		}
	}
	if _, ok := ct.Resources.Limits[corev1.ResourceMemory]; !ok {
		c.errorf(o, "%s.resources.limits.memory is required", at)
	}
}

// shutdownGrace finds shutdown_grace in an airlock TOML config.
var shutdownGrace = regexp.MustCompile(`(?m)^\s*shutdown_grace\s*=\s*"([^"]*)"`)

// checkDrain checks, for a container that runs `airlock ... -config FILE`
// with FILE from a ConfigMap in the set, that Kubernetes waits longer than
// airlock drains: terminationGracePeriodSeconds > preStop sleep +
// shutdown_grace (30s when unset). Otherwise the kubelet kills requests that
// airlock would have let finish.
func (c *checker) checkDrain(o *Object, spec *corev1.PodSpec, ct *corev1.Container, volumes map[string]*corev1.Volume, at, cp string) {
	args := append(slices.Clone(ct.Command), ct.Args...)
	i := slices.Index(args, "-config")
	if i < 0 || i+1 >= len(args) {
		return
	}
	file := args[i+1]
	cm, key := c.configMapFile(o, ct, volumes, file)
	if cm == nil {
		return
	}
	grace := 30 * time.Second
	if m := shutdownGrace.FindStringSubmatch(cm.Data[key]); m != nil {
		d, err := time.ParseDuration(m[1])
		if err != nil {
			c.errorf(o, "%s: shutdown_grace %q in ConfigMap %s key %s: %v", cp, m[1], cm.Name, key, err)
			return
		}
		grace = d
	}
	var pause time.Duration
	if ct.Lifecycle != nil && ct.Lifecycle.PreStop != nil && ct.Lifecycle.PreStop.Sleep != nil {
		pause = time.Duration(ct.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	period := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if spec.TerminationGracePeriodSeconds != nil {
		period = *spec.TerminationGracePeriodSeconds
	}
	if time.Duration(period)*time.Second <= pause+grace {
		c.errorf(o, "%s.terminationGracePeriodSeconds %d must exceed the preStop pause (%s) plus shutdown_grace (%s in ConfigMap %s key %s), or the kubelet kills requests still draining",
			at, period, pause, grace, cm.Name, key)
	}
}

// configMapFile finds the ConfigMap and key that a container sees at file,
// through a volume mounted at the file's directory.
func (c *checker) configMapFile(o *Object, ct *corev1.Container, volumes map[string]*corev1.Volume, file string) (*corev1.ConfigMap, string) {
	dir, base := path.Split(file)
	for _, m := range ct.VolumeMounts {
		if m.SubPath != "" || path.Clean(m.MountPath) != path.Clean(dir) {
			continue
		}
		v := volumes[m.Name]
		if v == nil {
			return nil, ""
		}
		var refs []*corev1.ConfigMapProjection
		switch {
		case v.ConfigMap != nil:
			refs = append(refs, &corev1.ConfigMapProjection{LocalObjectReference: v.ConfigMap.LocalObjectReference, Items: v.ConfigMap.Items})
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					refs = append(refs, s.ConfigMap)
				}
			}
		}
		for _, r := range refs {
			cm := c.configMaps[o.Namespace+"/"+r.Name]
			if cm == nil {
				continue
			}
			if len(r.Items) == 0 {
				if _, ok := cm.Data[base]; ok {
					return cm, base
				}
				continue
			}
			for _, it := range r.Items {
				if it.Path == base {
					return cm, it.Key
				}
			}
		}
	}
	return nil, ""
}

func keysOf(items []corev1.KeyToPath) []string {
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = it.Key
	}
	return keys
}

// refConfigMap checks that a ConfigMap (and each key) a pod refers to is in
// the set, unless the reference is optional.
func (c *checker) refConfigMap(o *Object, at, name string, keys []string, optional *bool) {
	var has func(string) bool
	if cm := c.configMaps[o.Namespace+"/"+name]; cm != nil {
		has = func(k string) bool {
			_, inData := cm.Data[k]
			_, inBinary := cm.BinaryData[k]
			return inData || inBinary
		}
	}
	c.refKeys(o, at, "ConfigMap", name, keys, optional, has)
}

// refSecret checks that a Secret (and each key) a pod refers to is in the
// set, unless the reference is optional.
func (c *checker) refSecret(o *Object, at, name string, keys []string, optional *bool) {
	var has func(string) bool
	if s := c.secrets[o.Namespace+"/"+name]; s != nil {
		has = func(k string) bool {
			_, inData := s.Data[k]
			_, inString := s.StringData[k]
			return inData || inString
		}
	}
	c.refKeys(o, at, "Secret", name, keys, optional, has)
}

// refKeys reports a reference to an object of kind that is not in the set
// (has is nil) or to keys it lacks, unless the reference is optional.
func (c *checker) refKeys(o *Object, at, kind, name string, keys []string, optional *bool, has func(key string) bool) {
	if optional != nil && *optional {
		return
	}
	if has == nil {
		c.errorf(o, "%s: %s %q is not in the set", at, kind, name)
		return
	}
	for _, k := range keys {
		if !has(k) {
			c.errorf(o, "%s: key %q is not in %s %q", at, k, kind, name)
		}
	}
}

// selected returns the workloads in namespace ns whose pod labels sel matches.
func (c *checker) selected(ns string, sel labels.Selector) []workload {
	var out []workload
	for _, w := range c.workloads {
		if w.obj.Namespace == ns && sel.Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

// checkService checks that a Service with a selector selects pods of a
// workload in the set, and that each port's target is a container port of
// those pods with the same protocol.
func (c *checker) checkService(o *Object, svc *corev1.Service) {
	if len(svc.Spec.Selector) == 0 {
		return
	}
	ws := c.selected(o.Namespace, labels.SelectorFromSet(svc.Spec.Selector))
	if len(ws) == 0 {
		c.errorf(o, "spec.selector %v matches the pods of no Deployment, StatefulSet or DaemonSet in the set", svc.Spec.Selector)
		return
	}
	for i, p := range svc.Spec.Ports {
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port)
		}
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		for _, w := range ws {
			if !hasContainerPort(&w.template.Spec, target, proto) {
				c.errorf(o, "spec.ports[%d].targetPort %s/%s is not a %s container port of %s %s", i, target.String(), proto, proto, w.obj.GVK.Kind, w.obj.Name)
			}
		}
	}
}

func hasContainerPort(spec *corev1.PodSpec, target intstr.IntOrString, proto corev1.Protocol) bool {
	for _, ct := range spec.Containers {
		for _, p := range ct.Ports {
			pp := p.Protocol
			if pp == "" {
				pp = corev1.ProtocolTCP
			}
			if pp != proto {
				continue
			}
			if (target.Type == intstr.String && p.Name == target.StrVal) || (target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
				return true
			}
		}
	}
	return false
}

// checkPDB checks that a PodDisruptionBudget selects a workload and can be
// satisfied while one pod is evicted; a budget that never can blocks every
// node drain.
func (c *checker) checkPDB(o *Object, pdb *policyv1.PodDisruptionBudget) {
	if pdb.Spec.Selector == nil {
		c.errorf(o, "spec.selector is required")
		return
	}
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		c.errorf(o, "spec.selector: %v", err)
		return
	}
	ws := c.selected(o.Namespace, sel)
	if len(ws) == 0 {
		c.errorf(o, "spec.selector (%s) matches the pods of no Deployment, StatefulSet or DaemonSet in the set", sel)
		return
	}
	for _, w := range ws {
		if w.replicas == 0 {
			continue
		}
		if m := pdb.Spec.MinAvailable; m != nil && m.Type == intstr.Int && m.IntVal >= w.replicas {
			c.errorf(o, "spec.minAvailable %d is not below the %d replicas of %s %s: no pod could ever be evicted", m.IntVal, w.replicas, w.obj.GVK.Kind, w.obj.Name)
		}
		if m := pdb.Spec.MaxUnavailable; m != nil && m.Type == intstr.Int && m.IntVal == 0 {
			c.errorf(o, "spec.maxUnavailable 0: no pod of %s %s could ever be evicted", w.obj.GVK.Kind, w.obj.Name)
		}
	}
}

// checkServiceMonitor checks that a ServiceMonitor selects a Service in the
// set, that those Services carry its jobLabel, and that each endpoint's port
// names a port of such a Service.
func (c *checker) checkServiceMonitor(o *Object, sm *monitoringv1.ServiceMonitor) {
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		c.errorf(o, "spec.selector: %v", err)
		return
	}
	if sel.Empty() {
		c.errorf(o, "spec.selector is empty: it would select every Service")
		return
	}
	nsOK := func(ns string) bool {
		switch nsSel := sm.Spec.NamespaceSelector; {
		case nsSel.Any:
			return true
		case len(nsSel.MatchNames) > 0:
			return slices.Contains(nsSel.MatchNames, ns)
		default:
			return ns == o.Namespace
		}
	}
	var svcs []*corev1.Service
	for _, so := range c.services {
		if nsOK(so.Namespace) && sel.Matches(labels.Set(so.Obj.(*corev1.Service).Labels)) {
			svcs = append(svcs, so.Obj.(*corev1.Service))
		}
	}
	if len(svcs) == 0 {
		c.errorf(o, "spec.selector (%s) matches no Service in the set", sel)
		return
	}
	if l := sm.Spec.JobLabel; l != "" {
		for _, s := range svcs {
			if _, ok := s.Labels[l]; !ok {
				c.errorf(o, "spec.jobLabel %q is not a label of the selected Service %s: its targets would get job=%q", l, s.Name, s.Name)
			}
		}
	}
	if len(sm.Spec.Endpoints) == 0 {
		c.errorf(o, "spec.endpoints: at least one endpoint is required")
	}
	for i, ep := range sm.Spec.Endpoints {
		if ep.Port == "" {
			if ep.TargetPort == nil {
				c.errorf(o, "spec.endpoints[%d].port: name the Service port to scrape", i)
			}
			continue
		}
		found := false
		var names []string
		for _, s := range svcs {
			for _, p := range s.Spec.Ports {
				names = append(names, p.Name)
				found = found || p.Name == ep.Port
			}
		}
		if !found {
			c.errorf(o, "spec.endpoints[%d].port %q names no port of the selected Services (ports: %s)", i, ep.Port, strings.Join(names, ", "))
		}
	}
}
