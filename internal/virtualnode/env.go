package virtualnode

import (
	"errors"
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/expansion"
	"github.com/kanga-run/kanga/internal/model"
)

// envSources are what a pod's environment is made of besides the pod: the
// ConfigMaps, Secrets and Services of the cluster, the node's address and
// its allocatable resources.
//
// The node resolves env itself rather than leave it to virtual-kubelet's
// pod controller, which fails a pod whose env names the pod's IP (unknown
// until its host starts it) and drops resourceFieldRef: the pod then waits
// for ever with no event. Variables from status.podIP become Kanga field
// references that the instance's host resolves at start, together with
// the $(VAR) references to them (see package expansion).
type envSources struct {
	configMaps corev1listers.ConfigMapLister
	secrets    corev1listers.SecretLister
	services   corev1listers.ServiceLister
	// claims and volumes are the PersistentVolumeClaims and
	// PersistentVolumes a claim volume maps through (volumes.go).
	claims      corev1listers.PersistentVolumeClaimLister
	volumes     corev1listers.PersistentVolumeLister
	hostIP      string
	allocatable corev1.ResourceList
	// recorder, if set, gets the events virtual-kubelet's resolver
	// records (and its end-to-end suite waits for) on missing sources.
	recorder record.EventRecorder
	// kangaObjects maps ConfigMap and Secret references to the Kanga
	// configs and secrets of the same names instead of resolving them:
	// a pod manifest run with `kanga run -f`, outside any cluster.
	kangaObjects bool
}

// Reasons of the events on missing env sources, as virtual-kubelet names
// them.
const (
	reasonOptionalConfigMapNotFound     = "OptionalConfigMapNotFound"
	reasonOptionalConfigMapKeyNotFound  = "OptionalConfigMapKeyNotFound"
	reasonOptionalSecretNotFound        = "OptionalSecretNotFound"
	reasonOptionalSecretKeyNotFound     = "OptionalSecretKeyNotFound"
	reasonMandatoryConfigMapNotFound    = "MandatoryConfigMapNotFound"
	reasonMandatoryConfigMapKeyNotFound = "MandatoryConfigMapKeyNotFound"
	reasonMandatorySecretNotFound       = "MandatorySecretNotFound"
	reasonMandatorySecretKeyNotFound    = "MandatorySecretKeyNotFound"
)

// warn records a Warning event on pod.
func (s *envSources) warn(pod *corev1.Pod, reason, format string, args ...any) {
	if s.recorder != nil {
		s.recorder.Eventf(pod, corev1.EventTypeWarning, reason, format, args...)
	}
}

// errEnvSource marks an env source that is missing for now (a ConfigMap
// not created yet): the pod controller retries the pod, as a kubelet
// retries a container in CreateContainerConfigError.
var errEnvSource = errors.New("env source not available")

// masterService is the Service every pod gets variables for, as the
// kubelet gives them (the API server's, in the default namespace).
const masterService = "kubernetes"

// containerEnv returns c's environment and its command and args with the
// $(VAR) references expanded, as the kubelet makes them; envFrom only with
// kangaObjects.
func (s *envSources) containerEnv(pod *corev1.Pod, c *corev1.Container) (env []api.EnvVar, envFrom []api.EnvFromSource, command, args []string, err error) {
	// Variables from the pod's IP are resolved on the host: the rest of
	// this resolution then leaves the references to them, and the $$
	// escapes, for the host's pass (values are escaped for it too).
	deferred := map[string]bool{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && podIPField(e.ValueFrom.FieldRef.FieldPath) {
			deferred[e.Name] = true
		}
	}
	twoPass := len(deferred) > 0
	expand := expansion.Expand
	escape := func(v string) string { return v }
	if twoPass {
		expand = expansion.Partial
		escape = func(v string) string { return strings.ReplaceAll(v, "$", "$$") }
	}

	svc, err := s.serviceEnv(pod)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var order []string
	vals := map[string]string{}
	set := func(name, v string) {
		if _, ok := vals[name]; !ok {
			order = append(order, name)
		}
		vals[name] = v
	}
	// lookup is Kubernetes' mapping: variables defined so far, then the
	// services'; the pod-IP variables wait for the host.
	refs := map[string]*api.EnvVarSource{}
	lookup := func(name string) (string, bool) {
		if deferred[name] || refs[name] != nil {
			return "", false
		}
		if v, ok := vals[name]; ok {
			return v, true
		}
		v, ok := svc[name]
		return v, ok
	}

	// refs are Kanga's own references (kangaObjects), for the host to
	// resolve.
	for i, from := range c.EnvFrom {
		field := fmt.Sprintf("envFrom[%d]", i)
		if s.kangaObjects {
			ef := api.EnvFromSource{Prefix: from.Prefix}
			switch {
			case from.ConfigMapRef != nil:
				ef.ConfigMapRef = &api.ObjectRef{Name: from.ConfigMapRef.Name}
			case from.SecretRef != nil:
				ef.SecretRef = &api.ObjectRef{Name: from.SecretRef.Name}
			}
			envFrom = append(envFrom, ef)
			continue
		}
		data, err := s.envFromData(pod, from, field)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			name := from.Prefix + k
			if model.ValidateEnvName(name) != nil {
				// The kubelet skips these too (with an event).
				continue
			}
			set(name, escape(data[k]))
		}
	}
	for i, e := range c.Env {
		field := fmt.Sprintf("env[%d] %s", i, e.Name)
		switch {
		case deferred[e.Name]:
			set(e.Name, "")
		case e.ValueFrom == nil:
			set(e.Name, expand(e.Value, lookup))
		case s.kangaObjects && e.ValueFrom.ConfigMapKeyRef != nil:
			refs[e.Name] = &api.EnvVarSource{ConfigMapKeyRef: &api.KeySelector{Name: e.ValueFrom.ConfigMapKeyRef.Name, Key: e.ValueFrom.ConfigMapKeyRef.Key}}
			set(e.Name, "")
		case s.kangaObjects && e.ValueFrom.SecretKeyRef != nil:
			refs[e.Name] = &api.EnvVarSource{SecretKeyRef: &api.KeySelector{Name: e.ValueFrom.SecretKeyRef.Name, Key: e.ValueFrom.SecretKeyRef.Key}}
			set(e.Name, "")
		default:
			v, ok, err := s.valueFrom(pod, c, e.ValueFrom, field)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			if ok {
				set(e.Name, escape(v))
			}
		}
	}
	svcNames := make([]string, 0, len(svc))
	for name := range svc {
		svcNames = append(svcNames, name)
	}
	sort.Strings(svcNames)
	for _, name := range svcNames {
		if _, ok := vals[name]; !ok && !deferred[name] {
			set(name, escape(svc[name]))
		}
	}

	for _, name := range order {
		if deferred[name] {
			env = append(env, api.EnvVar{Name: name, ValueFrom: &api.EnvVarSource{FieldRef: &api.FieldRef{FieldPath: api.FieldPodIP}}})
			continue
		}
		if ref := refs[name]; ref != nil {
			env = append(env, api.EnvVar{Name: name, ValueFrom: ref})
			continue
		}
		env = append(env, api.EnvVar{Name: name, Value: vals[name]})
	}
	// Command and args see every variable of the container.
	all := func(ss []string) []string {
		if ss == nil {
			return nil
		}
		out := make([]string, len(ss))
		for i, v := range ss {
			out[i] = expand(v, lookup)
		}
		return out
	}
	return env, envFrom, all(c.Command), all(c.Args), nil
}

func podIPField(path string) bool {
	return path == "status.podIP" || path == "status.podIPs"
}

// envFromData is the data of an envFrom source; nothing for a missing
// optional one.
func (s *envSources) envFromData(pod *corev1.Pod, from corev1.EnvFromSource, field string) (map[string]string, error) {
	switch {
	case (from.ConfigMapRef != nil && s.configMaps == nil) || (from.SecretRef != nil && s.secrets == nil):
		return nil, fmt.Errorf("%s: this node cannot read ConfigMaps and Secrets: %w", field, errdefs.ErrInvalidArgument)
	case from.ConfigMapRef != nil:
		cm, err := s.configMaps.ConfigMaps(pod.Namespace).Get(from.ConfigMapRef.Name)
		if err != nil {
			return nil, s.missing(pod, err, field, kindConfigMap, from.ConfigMapRef.Name, "", from.ConfigMapRef.Optional)
		}
		return cm.Data, nil
	case from.SecretRef != nil:
		sec, err := s.secrets.Secrets(pod.Namespace).Get(from.SecretRef.Name)
		if err != nil {
			return nil, s.missing(pod, err, field, kindSecret, from.SecretRef.Name, "", from.SecretRef.Optional)
		}
		out := make(map[string]string, len(sec.Data))
		for k, v := range sec.Data {
			out[k] = string(v)
		}
		return out, nil
	}
	return nil, nil
}

const (
	kindConfigMap = "configmap"
	kindSecret    = "secret"
)

// missing handles an env source (key, if not empty) that is not there: an
// event, and nil when the source is optional, else an error the pod
// controller retries.
func (s *envSources) missing(pod *corev1.Pod, err error, field, kind, name, key string, optional *bool) error {
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: %s %q: %w", field, kind, name, err)
	}
	opt := optional != nil && *optional
	var reason string
	switch {
	case kind == kindConfigMap && key == "" && opt:
		reason = reasonOptionalConfigMapNotFound
	case kind == kindConfigMap && key == "":
		reason = reasonMandatoryConfigMapNotFound
	case kind == kindConfigMap && opt:
		reason = reasonOptionalConfigMapKeyNotFound
	case kind == kindConfigMap:
		reason = reasonMandatoryConfigMapKeyNotFound
	case key == "" && opt:
		reason = reasonOptionalSecretNotFound
	case key == "":
		reason = reasonMandatorySecretNotFound
	case opt:
		reason = reasonOptionalSecretKeyNotFound
	default:
		reason = reasonMandatorySecretKeyNotFound
	}
	what := fmt.Sprintf("%s %q", kind, name)
	if key != "" {
		what = fmt.Sprintf("key %q of %s %q", key, kind, name)
	}
	s.warn(pod, reason, "%s: %s not found", field, what)
	if opt {
		return nil
	}
	return fmt.Errorf("%s: %s not found: %w", field, what, errEnvSource)
}

// valueFrom resolves one env source; ok is false when an optional source
// is missing (the variable is then not set).
func (s *envSources) valueFrom(pod *corev1.Pod, c *corev1.Container, from *corev1.EnvVarSource, field string) (string, bool, error) {
	switch {
	case (from.ConfigMapKeyRef != nil && s.configMaps == nil) || (from.SecretKeyRef != nil && s.secrets == nil):
		return "", false, fmt.Errorf("%s: this node cannot read ConfigMaps and Secrets: %w", field, errdefs.ErrInvalidArgument)
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		cm, err := s.configMaps.ConfigMaps(pod.Namespace).Get(ref.Name)
		if err != nil {
			return "", false, s.missing(pod, err, field, kindConfigMap, ref.Name, "", ref.Optional)
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			return "", false, s.missing(pod, nil, field, kindConfigMap, ref.Name, ref.Key, ref.Optional)
		}
		return v, true, nil
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		sec, err := s.secrets.Secrets(pod.Namespace).Get(ref.Name)
		if err != nil {
			return "", false, s.missing(pod, err, field, kindSecret, ref.Name, "", ref.Optional)
		}
		v, ok := sec.Data[ref.Key]
		if !ok {
			return "", false, s.missing(pod, nil, field, kindSecret, ref.Name, ref.Key, ref.Optional)
		}
		return string(v), true, nil
	case from.FieldRef != nil:
		v, err := s.fieldValue(pod, from.FieldRef.FieldPath)
		if err != nil {
			return "", false, fmt.Errorf("%s: %w", field, err)
		}
		return v, true, nil
	case from.ResourceFieldRef != nil:
		v, err := s.resourceValue(pod, c, from.ResourceFieldRef)
		if err != nil {
			return "", false, fmt.Errorf("%s: %w", field, err)
		}
		return v, true, nil
	}
	return "", false, fmt.Errorf("%s: valueFrom has no source: %w", field, errdefs.ErrInvalidArgument)
}

// fieldValue is the downward-API value of a pod field, as the kubelet
// gives it.
func (s *envSources) fieldValue(pod *corev1.Pod, path string) (string, error) {
	if i := strings.IndexByte(path, '['); i > 0 && strings.HasSuffix(path, "']") && path[i:i+2] == "['" {
		key := path[i+2 : len(path)-2]
		switch path[:i] {
		case "metadata.labels":
			return pod.Labels[key], nil
		case "metadata.annotations":
			return pod.Annotations[key], nil
		}
		return "", fmt.Errorf("fieldRef %q: unsupported subscript: %w", path, errdefs.ErrInvalidArgument)
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return s.hostIP, nil
	}
	return "", fmt.Errorf("fieldRef %q is not supported: %w", path, errdefs.ErrInvalidArgument)
}

// formatMap renders labels or annotations as the downward API does:
// sorted key="value" lines.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q\n", k, m[k])
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// resourceValue is a resourceFieldRef's value. A limit the container does
// not set is the most it can have: the pod's (Kanga limits the instance as
// a whole), else the node's allocatable, as the kubelet reports it.
func (s *envSources) resourceValue(pod *corev1.Pod, c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	target := c
	if ref.ContainerName != "" {
		target = nil
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == ref.ContainerName {
				target = &pod.Spec.Containers[i]
			}
		}
		for i := range pod.Spec.InitContainers {
			if pod.Spec.InitContainers[i].Name == ref.ContainerName {
				target = &pod.Spec.InitContainers[i]
			}
		}
		if target == nil {
			return "", fmt.Errorf("resourceFieldRef: no container %q: %w", ref.ContainerName, errdefs.ErrInvalidArgument)
		}
	}
	kind, res, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("resourceFieldRef %q is not supported: %w", ref.Resource, errdefs.ErrInvalidArgument)
	}
	name := corev1.ResourceName(res)
	var q resource.Quantity
	if kind == "requests" {
		q = target.Resources.Requests[name]
	} else if l, ok := target.Resources.Limits[name]; ok {
		q = l
	} else {
		var sum resource.Quantity
		for _, pc := range pod.Spec.Containers {
			sum.Add(limitOrRequest(pc.Resources, name))
		}
		q = sum
		if q.IsZero() {
			q = s.allocatable[name]
		}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	switch name {
	case corev1.ResourceCPU:
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	case corev1.ResourceMemory, corev1.ResourceEphemeralStorage:
		return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
	}
	return "", fmt.Errorf("resourceFieldRef %q is not supported: %w", ref.Resource, errdefs.ErrInvalidArgument)
}

// serviceEnv is the variables of the Services a pod sees, as the kubelet
// makes them: the namespace's (unless enableServiceLinks is false) and the
// API server's.
func (s *envSources) serviceEnv(pod *corev1.Pod) (map[string]string, error) {
	out := map[string]string{}
	if s.services == nil {
		return out, nil
	}
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	seen := map[string]*corev1.Service{}
	if links {
		list, err := s.services.Services(pod.Namespace).List(labels.Everything())
		if err != nil {
			return nil, fmt.Errorf("list services of namespace %s: %w", pod.Namespace, err)
		}
		for _, svc := range list {
			seen[svc.Name] = svc
		}
	}
	if _, ok := seen[masterService]; !ok {
		if svc, err := s.services.Services(corev1.NamespaceDefault).Get(masterService); err == nil {
			seen[masterService] = svc
		}
	}
	for _, svc := range seen {
		ip := svc.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
			continue
		}
		prefix := strings.ToUpper(strings.ReplaceAll(svc.Name, "-", "_"))
		out[prefix+"_SERVICE_HOST"] = ip
		out[prefix+"_SERVICE_PORT"] = strconv.Itoa(int(svc.Spec.Ports[0].Port))
		for i, p := range svc.Spec.Ports {
			port := strconv.Itoa(int(p.Port))
			if p.Name != "" {
				out[prefix+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_"))] = port
			}
			proto := string(p.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			url := strings.ToLower(proto) + "://" + net.JoinHostPort(ip, port)
			if i == 0 {
				out[prefix+"_PORT"] = url
			}
			pp := prefix + "_PORT_" + port + "_" + strings.ToUpper(proto)
			out[pp] = url
			out[pp+"_PROTO"] = strings.ToLower(proto)
			out[pp+"_PORT"] = port
			out[pp+"_ADDR"] = ip
		}
	}
	return out, nil
}
