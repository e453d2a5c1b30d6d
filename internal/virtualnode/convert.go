package virtualnode

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// Annotations a pod may carry to steer its Kanga instance.
const (
	// AnnotationRuntime names the Kanga runtime class (see `kanga
	// runtimes`); it wins over spec.runtimeClassName.
	AnnotationRuntime = "kanga.run/runtime-class"
	// AnnotationInstanceType names a catalog entry (see `kanga types`)
	// whose resources fill in what the containers' limits leave empty.
	AnnotationInstanceType = "kanga.run/instance-type"
	// The Kubernetes bandwidth annotations, honoured as the CNI bandwidth
	// plugin of a kubelet would.
	AnnotationIngressBandwidth = "kubernetes.io/ingress-bandwidth"
	AnnotationEgressBandwidth  = "kubernetes.io/egress-bandwidth"
)

// Environment variables that tie an instance to its pod. The instance's
// labels are the pod's own (InstanceMetadata), so these are how a
// restarted virtual node finds the pods it already created (and the ones
// deleted while it was down).
const (
	EnvNamespace = "KANGA_POD_NAMESPACE"
	EnvPodName   = "KANGA_POD_NAME"
	EnvPodUID    = "KANGA_POD_UID"
	EnvNode      = "KANGA_VIRTUAL_NODE"
)

// maxName is the longest instance name Kanga accepts (a DNS label).
const maxName = 63

// InstanceName is the Kanga instance name of a pod. It is a function of
// namespace and name only, so that a restarted virtual node maps each pod
// to the instance it already has instead of creating a second one. The
// hash suffix keeps "a-b"/"c" and "a"/"b-c" apart and keeps long names
// within a DNS label.
func InstanceName(namespace, pod string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + pod))
	suffix := hex.EncodeToString(sum[:])[:8]
	base := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		default:
			return '-'
		}
	}, namespace+"-"+pod)
	if max := maxName - len(suffix) - 1; len(base) > max {
		base = base[:max]
	}
	base = strings.Trim(base, "-")
	if base == "" {
		return "pod-" + suffix
	}
	return base + "-" + suffix
}

// FromPod is the instance of a Kubernetes Pod manifest run without a
// cluster (`kanga run -f pod.yaml`), through the mapping the virtual node
// uses: ConfigMap and Secret references name the tenant's Kanga configs
// and secrets of the same names, the node's fields are empty, and the
// instance is named as the pod.
func FromPod(pod *corev1.Pod) (api.CreateInstanceRequest, error) {
	if pod.Name == "" {
		return api.CreateInstanceRequest{}, fmt.Errorf("metadata.name: the pod has no name (generateName needs the API server): %w", errdefs.ErrInvalidArgument)
	}
	spec, _, err := instanceSpec(pod, "", &envSources{kangaObjects: true})
	if err != nil {
		return api.CreateInstanceRequest{}, err
	}
	labels, annotations := InstanceMetadata(pod)
	return api.CreateInstanceRequest{Name: pod.Name, Labels: labels, Annotations: annotations, Spec: spec}, nil
}

// InstanceSpec translates a pod into the spec of its Kanga instance, or
// says why Kanga cannot run it. It resolves no env reference to a
// ConfigMap or Secret (a Provider does).
func InstanceSpec(pod *corev1.Pod, node string) (api.InstanceSpec, error) {
	spec, _, err := instanceSpec(pod, node, &envSources{})
	return spec, err
}

// instanceSpec is InstanceSpec with the env of the containers and the
// volumes resolved from env (env.go, volumes.go), and the objects of the
// volumes to write before the instance is created.
func instanceSpec(pod *corev1.Pod, node string, env *envSources) (api.InstanceSpec, []volumeObject, error) {
	if err := checkSupported(pod); err != nil {
		return api.InstanceSpec{}, nil, err
	}
	vols, err := env.podVolumes(pod, node)
	if err != nil {
		return api.InstanceSpec{}, nil, err
	}
	spec := api.InstanceSpec{
		// Kanga instances are immutable: a deadline shortened on the
		// running pod is not applied (see UpdatePod).
		ActiveDeadlineSeconds: pod.Spec.ActiveDeadlineSeconds,
		// The grace of the kills the node makes itself (probes, hooks);
		// a deletion's comes with the deletion.
		TerminationGracePeriodSeconds: pod.Spec.TerminationGracePeriodSeconds,
		RestartPolicy:                 restartPolicy(pod.Spec.RestartPolicy),
		InstanceType:                  pod.Annotations[AnnotationInstanceType],
		Runtime:                       pod.Annotations[AnnotationRuntime],
		Volumes:                       vols.volumes,
	}
	mapDNS(pod, &spec)
	if spec.Runtime == "" && pod.Spec.RuntimeClassName != nil {
		spec.Runtime = *pod.Spec.RuntimeClassName
	}
	if psc := pod.Spec.SecurityContext; psc != nil && psc.FSGroup != nil {
		spec.SecurityContext = &api.InstanceSecurityContext{FSGroup: psc.FSGroup}
	}
	marker := []api.EnvVar{
		{Name: EnvNamespace, Value: pod.Namespace},
		{Name: EnvPodName, Value: pod.Name},
		{Name: EnvPodUID, Value: string(pod.UID)},
		{Name: EnvNode, Value: node},
	}
	var cpu, mem resource.Quantity
	for _, c := range pod.Spec.Containers {
		cs, err := containerSpec(pod, &c, node, marker, env, &vols)
		if err != nil {
			return api.InstanceSpec{}, nil, err
		}
		if err := probes(c, &cs); err != nil {
			return api.InstanceSpec{}, nil, err
		}
		if err := lifecycle(c, &cs); err != nil {
			return api.InstanceSpec{}, nil, err
		}
		spec.Containers = append(spec.Containers, cs)
		// Kanga's resources are instance-wide: the sum of the containers'
		// limits, or their requests where no limit is set.
		cpu.Add(limitOrRequest(c.Resources, corev1.ResourceCPU))
		mem.Add(limitOrRequest(c.Resources, corev1.ResourceMemory))
	}
	// Init containers run one at a time, before the app containers: the
	// pod needs the larger of their sum and the largest init container,
	// as the scheduler counts a pod's effective request.
	for _, c := range pod.Spec.InitContainers {
		cs, err := containerSpec(pod, &c, node, marker, env, &vols)
		if err != nil {
			return api.InstanceSpec{}, nil, fmt.Errorf("init %w", err)
		}
		spec.InitContainers = append(spec.InitContainers, cs)
		if q := limitOrRequest(c.Resources, corev1.ResourceCPU); q.Cmp(cpu) > 0 {
			cpu = q
		}
		if q := limitOrRequest(c.Resources, corev1.ResourceMemory); q.Cmp(mem) > 0 {
			mem = q
		}
	}
	if !cpu.IsZero() {
		spec.Resources.CPU = cpu.String()
	}
	if !mem.IsZero() {
		spec.Resources.Memory = mem.String()
	}
	devs, err := devicesOf(pod)
	if err != nil {
		return api.InstanceSpec{}, nil, err
	}
	spec.Devices = devs
	spec.Resources.IngressBandwidth = pod.Annotations[AnnotationIngressBandwidth]
	spec.Resources.EgressBandwidth = pod.Annotations[AnnotationEgressBandwidth]
	return spec, vols.objects, nil
}

// containerSpec maps container c of pod, app or init, with its env
// resolved from env and, on a virtual node, the marker variables that tie
// the instance to the pod.
func containerSpec(pod *corev1.Pod, c *corev1.Container, node string, marker []api.EnvVar, env *envSources, vols *podVolumes) (api.ContainerSpec, error) {
	vars, envFrom, command, args, err := env.containerEnv(pod, c)
	if err != nil {
		return api.ContainerSpec{}, fmt.Errorf("container %s: %w", c.Name, err)
	}
	mounts, err := volumeMounts(c, vars, vols)
	if err != nil {
		return api.ContainerSpec{}, fmt.Errorf("container %s: %w", c.Name, err)
	}
	cs := api.ContainerSpec{
		Name:         c.Name,
		Image:        c.Image,
		Command:      command,
		Args:         args,
		Env:          vars,
		EnvFrom:      envFrom,
		WorkingDir:   c.WorkingDir,
		VolumeMounts: mounts,
		// Added capabilities and Unconfined go to Kanga's API, which
		// allows them only as far as the tenant's policy does.
		SecurityContext: securityContext(pod.Spec.SecurityContext, c.SecurityContext),
		// The API server defaults both; a pod read from a file may not
		// have them, and then has no message file, as Kanga's API.
		TerminationMessagePath:   c.TerminationMessagePath,
		TerminationMessagePolicy: string(c.TerminationMessagePolicy),
	}
	if node != "" {
		cs.Env = append(cs.Env, marker...)
	}
	return cs, nil
}

// mapDNS maps the pod's hostname, host aliases and resolver settings. The
// hostname is the pod's (as the kubelet makes it), not the instance's
// derived name. Kanga has no cluster DNS: ClusterFirst resolves through
// the host's upstream resolvers, as Default does.
func mapDNS(pod *corev1.Pod, spec *api.InstanceSpec) {
	spec.Hostname = pod.Spec.Hostname
	if spec.Hostname == "" && len(pod.Name) <= maxName && isDNSLabel(pod.Name) {
		spec.Hostname = pod.Name
	}
	for _, a := range pod.Spec.HostAliases {
		spec.HostAliases = append(spec.HostAliases, api.HostAlias{IP: a.IP, Hostnames: a.Hostnames})
	}
	if pod.Spec.DNSPolicy == corev1.DNSNone {
		spec.DNSPolicy = api.DNSNone
	}
	if c := pod.Spec.DNSConfig; c != nil {
		spec.DNSConfig = &api.DNSConfig{Nameservers: c.Nameservers, Searches: c.Searches}
		for _, o := range c.Options {
			spec.DNSConfig.Options = append(spec.DNSConfig.Options, api.DNSOption{Name: o.Name, Value: o.Value})
		}
	}
}

// isDNSLabel reports whether s is a DNS label (what a hostname may be).
func isDNSLabel(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func limitOrRequest(r corev1.ResourceRequirements, name corev1.ResourceName) resource.Quantity {
	if q, ok := r.Limits[name]; ok {
		return q
	}
	return r.Requests[name]
}

func restartPolicy(p corev1.RestartPolicy) api.RestartPolicy {
	switch p {
	case corev1.RestartPolicyNever:
		return api.RestartNever
	case corev1.RestartPolicyOnFailure:
		return api.RestartOnFailure
	default:
		return api.RestartAlways
	}
}

// serviceAccountVolume reports whether v is the projected API token volume
// that the ServiceAccount admission plugin adds to every pod. Kanga
// instances cannot reach the cluster's API anyway, so the volume is
// dropped rather than refused (refusing it would refuse every pod).
func serviceAccountVolume(v corev1.Volume) bool {
	return v.Projected != nil && strings.HasPrefix(v.Name, "kube-api-access-")
}

// lastApplied is the annotation kubectl apply keeps a copy of the whole
// manifest in: no use on the instance, and large.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// InstanceMetadata are the labels and annotations of a pod's instance:
// the pod's, without kubectl's copy of the manifest.
func InstanceMetadata(pod *corev1.Pod) (labels, annotations map[string]string) {
	if len(pod.Labels) > 0 {
		labels = maps.Clone(pod.Labels)
	}
	for k, v := range pod.Annotations {
		if k == lastApplied {
			continue
		}
		if annotations == nil {
			annotations = map[string]string{}
		}
		annotations[k] = v
	}
	return labels, annotations
}

// securityContext maps a container's security context over the pod's,
// as the kubelet merges them (the container's fields win): user, group,
// supplemental groups, runAsNonRoot, capabilities, seccomp profile type,
// read-only root and privilege escalation. nil when they ask for nothing.
func securityContext(pod *corev1.PodSecurityContext, c *corev1.SecurityContext) *api.SecurityContext {
	var out api.SecurityContext
	seccomp := (*corev1.SeccompProfile)(nil)
	if pod != nil {
		seccomp = pod.SeccompProfile
		out.RunAsUser, out.RunAsGroup, out.RunAsNonRoot = pod.RunAsUser, pod.RunAsGroup, pod.RunAsNonRoot
		out.SupplementalGroups = slices.Clone(pod.SupplementalGroups)
	}
	if c != nil {
		if c.SeccompProfile != nil {
			seccomp = c.SeccompProfile
		}
		if c.RunAsUser != nil {
			out.RunAsUser = c.RunAsUser
		}
		if c.RunAsGroup != nil {
			out.RunAsGroup = c.RunAsGroup
		}
		if c.RunAsNonRoot != nil {
			out.RunAsNonRoot = c.RunAsNonRoot
		}
		if c.ReadOnlyRootFilesystem != nil {
			out.ReadOnlyRootFilesystem = *c.ReadOnlyRootFilesystem
		}
		// Unset is Kanga's default, no_new_privs; true asks the tenant's
		// policy for more.
		out.AllowPrivilegeEscalation = c.AllowPrivilegeEscalation
		if cp := c.Capabilities; cp != nil && (len(cp.Add) > 0 || len(cp.Drop) > 0) {
			out.Capabilities = &api.Capabilities{}
			for _, a := range cp.Add {
				out.Capabilities.Add = append(out.Capabilities.Add, string(a))
			}
			for _, d := range cp.Drop {
				out.Capabilities.Drop = append(out.Capabilities.Drop, string(d))
			}
		}
	}
	if seccomp != nil {
		switch seccomp.Type {
		case corev1.SeccompProfileTypeUnconfined:
			out.SeccompProfile = &api.SeccompProfile{Type: api.SeccompUnconfined}
		case corev1.SeccompProfileTypeRuntimeDefault:
			out.SeccompProfile = &api.SeccompProfile{Type: api.SeccompRuntimeDefault}
		}
	}
	if len(out.SupplementalGroups) == 0 {
		out.SupplementalGroups = nil
	}
	if reflect.ValueOf(out).IsZero() {
		return nil
	}
	return &out
}

// checkSupported refuses pod fields Kanga cannot honour; running the pod
// without them would silently change its meaning.
func checkSupported(pod *corev1.Pod) error {
	var bad []string
	if pod.Spec.HostNetwork {
		bad = append(bad, "hostNetwork")
	}
	if pod.Spec.HostPID {
		bad = append(bad, "hostPID")
	}
	if pod.Spec.HostIPC {
		bad = append(bad, "hostIPC")
	}
	for i, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			// A sidecar: started, not awaited, restarted for the pod's
			// whole life. Kanga runs init containers to completion only.
			bad = append(bad, fmt.Sprintf("spec.initContainers[%d].restartPolicy Always (init container %s as a sidecar)", i, c.Name))
		}
	}
	if psc := pod.Spec.SecurityContext; psc != nil && psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeLocalhost {
		bad = append(bad, "seccompProfile Localhost")
	}
	if psc := pod.Spec.SecurityContext; psc != nil && len(psc.Sysctls) > 0 {
		// Kanga sets no sysctls in an instance's namespaces: refused
		// rather than run without them.
		bad = append(bad, fmt.Sprintf("securityContext.sysctls (%s)", psc.Sysctls[0].Name))
	}
	if pod.Spec.OS != nil && pod.Spec.OS.Name != corev1.Linux {
		bad = append(bad, "os "+string(pod.Spec.OS.Name))
	}
	for _, v := range pod.Spec.Volumes {
		if !supportedVolume(v) {
			bad = append(bad, "volume "+v.Name+" of type "+volumeType(v))
		}
	}
	// Init containers run in the same sandbox: the same limits hold.
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if sc := c.SecurityContext; sc != nil {
			if sc.Privileged != nil && *sc.Privileged {
				bad = append(bad, "container "+c.Name+": privileged")
			}
			if sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeLocalhost {
				bad = append(bad, "container "+c.Name+": seccompProfile Localhost")
			}
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				bad = append(bad, fmt.Sprintf("container %s: hostPort %d", c.Name, p.HostPort))
			}
		}
		for _, m := range c.VolumeMounts {
			if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
				bad = append(bad, "container "+c.Name+": volumeMount "+m.Name+" mountPropagation Bidirectional")
			}
		}
		if c.Stdin || c.TTY {
			bad = append(bad, "container "+c.Name+": stdin/tty")
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("kanga cannot run this pod: unsupported %s: %w", strings.Join(bad, ", "), errdefs.ErrInvalidArgument)
	}
	return nil
}
