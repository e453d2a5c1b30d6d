package virtualnode

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestInstanceSpecProbes(t *testing.T) {
	pod := testPod()
	c := &pod.Spec.Containers[0]
	c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}
	c.ReadinessProbe = &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http"), Scheme: corev1.URISchemeHTTPS,
			HTTPHeaders: []corev1.HTTPHeader{{Name: "X-A", Value: "b"}}}},
		PeriodSeconds: 2, FailureThreshold: 5, SuccessThreshold: 2,
	}
	c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/ok"}}}, InitialDelaySeconds: 4}
	svc := "api"
	c.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9090, Service: &svc}}, TimeoutSeconds: 3}
	pod.Spec.Containers[1].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(6379)}}}
	spec, err := InstanceSpec(pod, "vn")
	if err != nil {
		t.Fatal(err)
	}
	a, b := spec.Containers[0], spec.Containers[1]
	if r := a.ReadinessProbe; r == nil || r.HTTPGet == nil || r.HTTPGet.Port != 8080 || r.HTTPGet.Path != "/healthz" || r.HTTPGet.Scheme != "HTTPS" ||
		len(r.HTTPGet.HTTPHeaders) != 1 || r.PeriodSeconds != 2 || r.FailureThreshold != 5 || r.SuccessThreshold != 2 {
		t.Errorf("readiness %+v", r)
	}
	if l := a.LivenessProbe; l == nil || l.Exec == nil || l.Exec.Command[1] != "/ok" || l.InitialDelaySeconds != 4 {
		t.Errorf("liveness %+v", l)
	}
	if s := a.StartupProbe; s == nil || s.GRPC == nil || s.GRPC.Port != 9090 || *s.GRPC.Service != "api" || s.TimeoutSeconds != 3 {
		t.Errorf("startup %+v", s)
	}
	if l := b.LivenessProbe; l == nil || l.TCPSocket == nil || l.TCPSocket.Port != 6379 {
		t.Errorf("b's liveness %+v", l)
	}

	for name, mod := range map[string]func(*corev1.Container){
		"httpGet host": func(c *corev1.Container) {
			c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "10.0.0.1", Port: intstr.FromInt32(80)}}}
		},
		"unknown port name": func(c *corev1.Container) {
			c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("nope")}}}
		},
	} {
		pod := testPod()
		mod(&pod.Spec.Containers[0])
		if _, err := InstanceSpec(pod, "vn"); err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "container a") {
			t.Errorf("%s: err = %v, want an invalid argument naming the container", name, err)
		}
	}
}

func TestPodStatusReadiness(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	changed := now.Add(time.Minute)
	inst := api.Instance{UID: "iuid", CreatedAt: now, Status: api.InstanceStatus{
		Phase: api.PhaseRunning, IP: "10.0.0.2", StartedAt: &now,
		Containers: []api.ContainerStatus{
			{Name: "a", State: api.ContainerRunning, StartedAt: &now, Ready: true},
			{Name: "b", State: api.ContainerRunning, StartedAt: &now, Ready: false},
		},
		Conditions: []api.InstanceCondition{{Type: api.InstanceReady, Status: api.ConditionFalse, LastTransitionTime: changed}},
	}}
	cond := func(st corev1.PodStatus, typ corev1.PodConditionType) corev1.PodCondition {
		for _, c := range st.Conditions {
			if c.Type == typ {
				return c
			}
		}
		return corev1.PodCondition{}
	}
	st := PodStatus(testPod(), &inst, "192.0.2.1")
	if !st.ContainerStatuses[0].Ready || st.ContainerStatuses[1].Ready {
		t.Errorf("container ready = %v, %v, want true, false", st.ContainerStatuses[0].Ready, st.ContainerStatuses[1].Ready)
	}
	for _, typ := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
		if c := cond(st, typ); c.Status != corev1.ConditionFalse || !c.LastTransitionTime.Time.Equal(changed) {
			t.Errorf("%s = %+v, want False since the instance's transition", typ, c)
		}
	}
	inst.Status.Containers[1].Ready = true
	inst.Status.Conditions[0].Status = api.ConditionTrue
	st = PodStatus(testPod(), &inst, "192.0.2.1")
	if c := cond(st, corev1.PodReady); c.Status != corev1.ConditionTrue {
		t.Errorf("Ready = %+v once every container is ready", c)
	}
}

func TestInstanceSpecLifecycle(t *testing.T) {
	pod := testPod()
	c := &pod.Spec.Containers[0]
	c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}
	c.Lifecycle = &corev1.Lifecycle{
		PostStart: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Host: "10.0.0.9", Path: "/echo?msg=poststart", Port: intstr.FromString("http"),
			HTTPHeaders: []corev1.HTTPHeader{{Name: "X-A", Value: "b"}}}},
		PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "sleep 1"}}},
	}
	pod.Spec.Containers[1].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}}
	spec, err := InstanceSpec(pod, "vn")
	if err != nil {
		t.Fatal(err)
	}
	a, b := spec.Containers[0].Lifecycle, spec.Containers[1].Lifecycle
	if a == nil || a.PostStart == nil || a.PostStart.HTTPGet == nil {
		t.Fatalf("a's lifecycle %+v", a)
	}
	if g := a.PostStart.HTTPGet; g.Host != "10.0.0.9" || g.Port != 8080 || g.Path != "/echo?msg=poststart" || len(g.HTTPHeaders) != 1 {
		t.Errorf("a's postStart httpGet %+v", g)
	}
	if p := a.PreStop; p == nil || p.Exec == nil || p.Exec.Command[2] != "sleep 1" {
		t.Errorf("a's preStop %+v", p)
	}
	if b == nil || b.PostStart != nil || b.PreStop == nil || b.PreStop.Sleep == nil || b.PreStop.Sleep.Seconds != 5 {
		t.Errorf("b's lifecycle %+v", b)
	}

	for name, mod := range map[string]func(*corev1.Container){
		"tcpSocket hook": func(c *corev1.Container) {
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(80)}}}
		},
		"unknown port name": func(c *corev1.Container) {
			c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("nope")}}}
		},
	} {
		pod := testPod()
		mod(&pod.Spec.Containers[0])
		if _, err := InstanceSpec(pod, "vn"); err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "container a: lifecycle") {
			t.Errorf("%s: err = %v, want an invalid argument naming the container's hook", name, err)
		}
	}
}
