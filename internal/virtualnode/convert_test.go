package virtualnode

import (
	"errors"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func TestInstanceName(t *testing.T) {
	long := strings.Repeat("x", 70)
	tests := []struct{ ns, pod string }{
		{"default", "web-7d9f-abcde"},
		{"kube.system", "Pod.With.Dots"},
		{long, long},
		{"a-b", "c"},
		{"a", "b-c"},
		{"-", "-"},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		n := InstanceName(tt.ns, tt.pod)
		if len(n) > 63 || !dnsLabel.MatchString(n) {
			t.Errorf("InstanceName(%q, %q) = %q: not a DNS label", tt.ns, tt.pod, n)
		}
		if n != InstanceName(tt.ns, tt.pod) {
			t.Errorf("InstanceName(%q, %q) is not deterministic", tt.ns, tt.pod)
		}
		if prev, dup := seen[n]; dup {
			t.Errorf("InstanceName(%q, %q) = %q, same as for %s", tt.ns, tt.pod, n, prev)
		}
		seen[n] = tt.ns + "/" + tt.pod
	}
}

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "ns", Name: "p", UID: "u1",
			Annotations: map[string]string{
				AnnotationIngressBandwidth: "10M",
				AnnotationEgressBandwidth:  "5M",
				AnnotationInstanceType:     "small",
			},
		},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyOnFailure,
			Containers: []corev1.Container{
				{
					Name: "a", Image: "busybox", Command: []string{"sh"}, Args: []string{"-c", "sleep 1"},
					Env: []corev1.EnvVar{{Name: "K", Value: "V"}},
					Resources: corev1.ResourceRequirements{
						Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
					},
				},
				{
					Name: "b", Image: "busybox",
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
					},
				},
			},
			Volumes: []corev1.Volume{{Name: "kube-api-access-abcde", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}}},
		},
	}
}

func TestInstanceSpec(t *testing.T) {
	spec, err := InstanceSpec(testPod(), "vn")
	if err != nil {
		t.Fatal(err)
	}
	if spec.RestartPolicy != api.RestartOnFailure || spec.InstanceType != "small" {
		t.Errorf("restart policy %q, type %q", spec.RestartPolicy, spec.InstanceType)
	}
	if spec.Resources.CPU != "750m" || spec.Resources.Memory != "128Mi" {
		t.Errorf("resources cpu %q memory %q, want 750m 128Mi", spec.Resources.CPU, spec.Resources.Memory)
	}
	if spec.Resources.IngressBandwidth != "10M" || spec.Resources.EgressBandwidth != "5M" {
		t.Errorf("bandwidth %q/%q", spec.Resources.IngressBandwidth, spec.Resources.EgressBandwidth)
	}
	if len(spec.Containers) != 2 || spec.Containers[0].Command[0] != "sh" || spec.Containers[0].Args[1] != "sleep 1" {
		t.Fatalf("containers %+v", spec.Containers)
	}
	env := map[string]string{}
	for _, e := range spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	want := map[string]string{"K": "V", EnvNamespace: "ns", EnvPodName: "p", EnvPodUID: "u1", EnvNode: "vn"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
}

// TestInstanceSpecSecurityContext: capabilities and the seccomp profile
// type go to the instance (the API allows them only as far as the
// tenant's policy does); a container's profile overrides the pod's.
func TestInstanceSpecSecurityContext(t *testing.T) {
	pod := testPod()
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		Capabilities:   &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	spec, err := InstanceSpec(pod, "vn")
	if err != nil {
		t.Fatal(err)
	}
	sc := spec.Containers[0].SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Add, []string{"NET_ADMIN"}) ||
		!slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || sc.SeccompProfile.Type != api.SeccompRuntimeDefault {
		t.Errorf("security context %+v", sc)
	}
	pod.Spec.Containers[0].SecurityContext = nil
	if spec, err = InstanceSpec(pod, "vn"); err != nil {
		t.Fatal(err)
	}
	if sc := spec.Containers[0].SecurityContext; sc == nil || sc.SeccompProfile.Type != api.SeccompUnconfined || sc.Capabilities != nil {
		t.Errorf("the pod's profile: %+v", sc)
	}
}

func TestInstanceSpecRefusesUnsupported(t *testing.T) {
	yes := true
	tests := []struct {
		name   string
		mutate func(*corev1.Pod)
		want   string
	}{
		{"hostNetwork", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "hostNetwork"},
		{"hostPath", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}, "hostPath"},
		{"privileged", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes}
		}, "privileged"},
		{"hostPort", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}
		}, "hostPort 80"},
		{"sidecar init container", func(p *corev1.Pod) {
			always := corev1.ContainerRestartPolicyAlways
			p.Spec.InitContainers = []corev1.Container{{Name: "i", Image: "busybox", RestartPolicy: &always}}
		}, "spec.initContainers[0].restartPolicy Always"},
		{"privileged init container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "i", Image: "busybox", SecurityContext: &corev1.SecurityContext{Privileged: &yes}}}
		}, "container i: privileged"},
		{"nfs", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "share", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nas", Path: "/x"}}})
		}, "volume share of type nfs"},
		{"iscsi", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "lun", VolumeSource: corev1.VolumeSource{ISCSI: &corev1.ISCSIVolumeSource{}}})
		}, "volume lun of type iscsi"},
		{"hugepages emptyDir", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "e", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumHugePages}}})
		}, "spec.volumes[1] e: emptyDir medium HugePages"},
		{"bidirectional propagation", func(p *corev1.Pod) {
			b := corev1.MountPropagationBidirectional
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "e", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "e", MountPath: "/e", MountPropagation: &b}}
		}, "volumeMount e mountPropagation Bidirectional"},
		{"configMap without a cluster's listers", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "c", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "x"}}}})
		}, "this node cannot read ConfigMaps"},
		{"seccomp profile file", func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost}}
		}, "seccompProfile Localhost"},
		{"sysctls", func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "kernel.shm_rmid_forced", Value: "1"}}}
		}, "securityContext.sysctls (kernel.shm_rmid_forced)"},
		{"windows", func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }, "os windows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testPod()
			tt.mutate(pod)
			_, err := InstanceSpec(pod, "vn")
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want InvalidArgument naming %q", err, tt.want)
			}
		})
	}
}

func TestPodStatus(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	zero, one := 0, 1
	tests := []struct {
		name      string
		inst      api.Instance
		phase     corev1.PodPhase
		ready     bool
		stateOfA  string
		restartsA int32
	}{
		{
			name:     "pending with reason",
			inst:     api.Instance{Status: api.InstanceStatus{Phase: api.PhasePending, Reason: "Unschedulable", Message: "no host has 64 cpus free"}},
			phase:    corev1.PodPending,
			stateOfA: "waiting:Unschedulable",
		},
		{
			name: "running, one container still waiting",
			inst: api.Instance{Status: api.InstanceStatus{Phase: api.PhaseRunning, IP: "10.0.0.2", Containers: []api.ContainerStatus{
				{Name: "a", State: api.ContainerRunning, StartedAt: &now, RestartCount: 2},
			}}},
			phase:     corev1.PodRunning,
			stateOfA:  "running",
			restartsA: 2,
		},
		{
			name: "running and ready",
			inst: api.Instance{Status: api.InstanceStatus{Phase: api.PhaseRunning, IP: "10.0.0.2", Containers: []api.ContainerStatus{
				{Name: "a", State: api.ContainerRunning, StartedAt: &now},
				{Name: "b", State: api.ContainerRunning, StartedAt: &now},
			}}},
			phase:    corev1.PodRunning,
			ready:    true,
			stateOfA: "running",
		},
		{
			name: "oom killed",
			inst: api.Instance{Status: api.InstanceStatus{Phase: api.PhaseFailed, Containers: []api.ContainerStatus{
				{Name: "a", State: api.ContainerTerminated, Reason: "OOMKilled", ExitCode: &one},
				{Name: "b", State: api.ContainerTerminated, ExitCode: &zero},
			}}},
			phase:    corev1.PodFailed,
			stateOfA: "terminated:OOMKilled",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.inst.CreatedAt = now
			tt.inst.UID = "iuid"
			st := PodStatus(testPod(), &tt.inst, "192.0.2.1")
			if st.Phase != tt.phase {
				t.Errorf("phase %s, want %s", st.Phase, tt.phase)
			}
			var ready bool
			for _, c := range st.Conditions {
				if c.Type == corev1.PodReady {
					ready = c.Status == corev1.ConditionTrue
				}
			}
			if ready != tt.ready {
				t.Errorf("ready %v, want %v", ready, tt.ready)
			}
			if st.PodIP != tt.inst.Status.IP || st.HostIP != "192.0.2.1" {
				t.Errorf("pod ip %q host ip %q", st.PodIP, st.HostIP)
			}
			a := st.ContainerStatuses[0]
			var got string
			switch {
			case a.State.Running != nil:
				got = "running"
			case a.State.Terminated != nil:
				got = "terminated:" + a.State.Terminated.Reason
			case a.State.Waiting != nil:
				got = "waiting:" + a.State.Waiting.Reason
			}
			if got != tt.stateOfA || a.RestartCount != tt.restartsA {
				t.Errorf("container a %s restarts %d, want %s %d", got, a.RestartCount, tt.stateOfA, tt.restartsA)
			}
			// Two reads of the same instance must give the same status, or
			// each poll would update the pod.
			if again := PodStatus(testPod(), &tt.inst, "192.0.2.1"); again.String() != st.String() {
				t.Error("status differs between two reads of the same instance")
			}
		})
	}
}

func TestDeletedStatusTerminatesEveryContainer(t *testing.T) {
	pod := testPod()
	st := deletedStatus(pod, time.Now())
	if len(st.ContainerStatuses) != len(pod.Spec.Containers) {
		t.Fatalf("%d container statuses for %d containers", len(st.ContainerStatuses), len(pod.Spec.Containers))
	}
	for _, c := range st.ContainerStatuses {
		if c.State.Terminated == nil {
			t.Errorf("container %s not terminated", c.Name)
		}
	}
}

func TestTail(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 5, "a\nb\nc\n"},
		{"", 3, ""},
	}
	for _, tt := range tests {
		got, err := tail(strings.NewReader(tt.in), tt.n)
		if err != nil || string(got) != tt.want {
			t.Errorf("tail(%q, %d) = %q, %v; want %q", tt.in, tt.n, got, err, tt.want)
		}
	}
}

func TestInstanceSpecDNS(t *testing.T) {
	ndots := "2"
	pod := &corev1.Pod{}
	pod.Namespace, pod.Name = "default", "web-0"
	pod.Spec.Containers = []corev1.Container{{Name: "c", Image: "busybox"}}
	pod.Spec.HostAliases = []corev1.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"db", "db.local"}}}
	pod.Spec.DNSPolicy = corev1.DNSNone
	pod.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.53"}, Searches: []string{"svc.local"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &ndots}, {Name: "edns0"}}}
	spec, err := InstanceSpec(pod, "vn")
	if err != nil {
		t.Fatal(err)
	}
	if spec.Hostname != "web-0" {
		t.Errorf("hostname %q, want the pod's name", spec.Hostname)
	}
	if len(spec.HostAliases) != 1 || spec.HostAliases[0].IP != "10.1.2.3" || len(spec.HostAliases[0].Hostnames) != 2 {
		t.Errorf("host aliases %+v", spec.HostAliases)
	}
	if spec.DNSPolicy != api.DNSNone || spec.DNSConfig == nil || spec.DNSConfig.Nameservers[0] != "10.0.0.53" ||
		len(spec.DNSConfig.Options) != 2 || *spec.DNSConfig.Options[0].Value != "2" || spec.DNSConfig.Options[1].Value != nil {
		t.Errorf("dns %q %+v", spec.DNSPolicy, spec.DNSConfig)
	}
	pod.Spec.Hostname = "custom"
	pod.Spec.DNSPolicy = corev1.DNSClusterFirst
	if spec, _ = InstanceSpec(pod, "vn"); spec.Hostname != "custom" || spec.DNSPolicy != "" {
		t.Errorf("hostname %q policy %q, want custom and the default policy", spec.Hostname, spec.DNSPolicy)
	}
	pod.Spec.Hostname, pod.Name = "", "web.0"
	if spec, _ = InstanceSpec(pod, "vn"); spec.Hostname != "" {
		t.Errorf("a pod name that is no DNS label became the hostname %q", spec.Hostname)
	}
}

// TestInstanceSpecUserAndRoot: the pod's user, groups and runAsNonRoot go
// to every container, a container's own fields win, fsGroup goes to the
// instance; readOnlyRootFilesystem and allowPrivilegeEscalation are the
// container's.
func TestInstanceSpecUserAndRoot(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	yes, no := true, false
	pod := testPod()
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "side", Image: "kanga.test/busybox"})
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsUser: i64(1000), RunAsGroup: i64(3000), RunAsNonRoot: &yes,
		SupplementalGroups: []int64{4000}, FSGroup: i64(2000),
	}
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		RunAsUser: i64(1001), ReadOnlyRootFilesystem: &yes, AllowPrivilegeEscalation: &no,
	}
	spec, err := InstanceSpec(pod, "vn")
	if err != nil {
		t.Fatal(err)
	}
	if spec.SecurityContext == nil || spec.SecurityContext.FSGroup == nil || *spec.SecurityContext.FSGroup != 2000 {
		t.Errorf("instance security context %+v", spec.SecurityContext)
	}
	a, b := spec.Containers[0].SecurityContext, spec.Containers[1].SecurityContext
	if a == nil || *a.RunAsUser != 1001 || *a.RunAsGroup != 3000 || !*a.RunAsNonRoot || !a.ReadOnlyRootFilesystem ||
		a.AllowPrivilegeEscalation == nil || *a.AllowPrivilegeEscalation || !slices.Equal(a.SupplementalGroups, []int64{4000}) {
		t.Errorf("first container %+v", a)
	}
	if b == nil || *b.RunAsUser != 1000 || *b.RunAsGroup != 3000 || b.ReadOnlyRootFilesystem || b.AllowPrivilegeEscalation != nil {
		t.Errorf("second container %+v", b)
	}
	// Nothing asked, nothing set: the image's user and the defaults.
	pod = testPod()
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{}
	if spec, err = InstanceSpec(pod, "vn"); err != nil {
		t.Fatal(err)
	}
	if spec.Containers[0].SecurityContext != nil || spec.SecurityContext != nil {
		t.Errorf("empty pod security context gave %+v, %+v", spec.Containers[0].SecurityContext, spec.SecurityContext)
	}
}

func TestInstanceMetadata(t *testing.T) {
	pod := testPod()
	pod.Labels = map[string]string{"app": "web", "tier": "front"}
	pod.Annotations = map[string]string{"note": "x", lastApplied: `{"kind":"Pod"}`, AnnotationRuntime: "crun"}
	l, a := InstanceMetadata(pod)
	if !maps.Equal(l, pod.Labels) {
		t.Errorf("labels %v", l)
	}
	if !maps.Equal(a, map[string]string{"note": "x", AnnotationRuntime: "crun"}) {
		t.Errorf("annotations %v", a)
	}
	bare := testPod()
	bare.Annotations = nil
	l, a = InstanceMetadata(bare)
	if l != nil || a != nil {
		t.Errorf("a pod without metadata gave %v, %v", l, a)
	}
}
