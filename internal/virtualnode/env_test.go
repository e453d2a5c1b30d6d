package virtualnode

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

func indexer(t *testing.T, objs ...any) cache.Indexer {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, o := range objs {
		if err := idx.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	return idx
}

func testSources(t *testing.T) *envSources {
	meta := func(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
	return &envSources{
		configMaps: corev1listers.NewConfigMapLister(indexer(t,
			&corev1.ConfigMap{ObjectMeta: meta("app", "cfg"), Data: map[string]string{"mode": "fast", "price": "$5 $$(X)", "a key": "skipped"}},
		)),
		secrets: corev1listers.NewSecretLister(indexer(t,
			&corev1.Secret{ObjectMeta: meta("app", "db"), Data: map[string][]byte{"password": []byte("pa$$word")}},
		)),
		services: corev1listers.NewServiceLister(indexer(t,
			&corev1.Service{ObjectMeta: meta("app", "redis-main"), Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.7", Ports: []corev1.ServicePort{{Name: "client", Port: 6379, Protocol: corev1.ProtocolTCP}}}},
			&corev1.Service{ObjectMeta: meta("app", "headless"), Spec: corev1.ServiceSpec{ClusterIP: "None", Ports: []corev1.ServicePort{{Port: 80}}}},
			&corev1.Service{ObjectMeta: meta("other", "elsewhere"), Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.9", Ports: []corev1.ServicePort{{Port: 80}}}},
			&corev1.Service{ObjectMeta: meta("default", "kubernetes"), Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}},
		)),
		hostIP:      "192.0.2.10",
		allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("16"), corev1.ResourceMemory: resource.MustParse("64Gi")},
	}
}

func envMap(env []api.EnvVar) map[string]string {
	m := map[string]string{}
	for _, e := range env {
		m[e.Name] = e.Value
	}
	return m
}

func TestContainerEnv(t *testing.T) {
	s := testSources(t)
	no := false
	yes := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web-0", UID: "u-1", Labels: map[string]string{"app": "web", "tier": "front"}},
		Spec:       corev1.PodSpec{NodeName: "kanga", ServiceAccountName: "default"},
	}
	c := corev1.Container{
		Name:    "web",
		Command: []string{"serve", "--mode=$(MODE)", "$$(MODE)", "$(UNKNOWN)"},
		Args:    []string{"--redis=$(REDIS_MAIN_SERVICE_HOST):$(REDIS_MAIN_SERVICE_PORT_CLIENT)"},
		Resources: corev1.ResourceRequirements{
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
		},
		EnvFrom: []corev1.EnvFromSource{
			{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: &yes}},
		},
		Env: []corev1.EnvVar{
			{Name: "LATER_REF", Value: "$(MODE)"}, // MODE is not defined yet
			{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "mode"}}},
			{Name: "GREETING", Value: "mode=$(MODE) literal=$$(MODE)"},
			{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}},
			{Name: "OPTIONAL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "nope", Optional: &yes}}},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "LABELS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}},
			{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
			{Name: "MEM_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "CPU_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			{Name: "CPU_REQ_M", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
		},
	}
	pod.Spec.Containers = []corev1.Container{c}
	pod.Spec.EnableServiceLinks = nil

	env, _, cmd, args, err := s.containerEnv(pod, &c)
	if err != nil {
		t.Fatal(err)
	}
	got := envMap(env)
	want := map[string]string{
		"CFG_mode":                       "fast",
		"CFG_price":                      "$5 $$(X)", // values are never expanded
		"LATER_REF":                      "$(MODE)",
		"MODE":                           "fast",
		"GREETING":                       "mode=fast literal=$(MODE)",
		"PASSWORD":                       "pa$$word",
		"POD_NAME":                       "web-0",
		"POD_NS":                         "app",
		"APP":                            "web",
		"LABELS":                         "app=\"web\"\ntier=\"front\"",
		"NODE":                           "kanga",
		"HOST_IP":                        "192.0.2.10",
		"MEM_MI":                         "256",
		"CPU_LIMIT":                      "1", // no cpu limit: the instance's cpu (the pod's 250m), rounded up
		"CPU_REQ_M":                      "250",
		"REDIS_MAIN_SERVICE_HOST":        "10.96.0.7",
		"REDIS_MAIN_SERVICE_PORT":        "6379",
		"REDIS_MAIN_SERVICE_PORT_CLIENT": "6379",
		"REDIS_MAIN_PORT":                "tcp://10.96.0.7:6379",
		"REDIS_MAIN_PORT_6379_TCP":       "tcp://10.96.0.7:6379",
		"REDIS_MAIN_PORT_6379_TCP_PROTO": "tcp",
		"REDIS_MAIN_PORT_6379_TCP_PORT":  "6379",
		"REDIS_MAIN_PORT_6379_TCP_ADDR":  "10.96.0.7",
		"KUBERNETES_SERVICE_HOST":        "10.96.0.1",
		"KUBERNETES_SERVICE_PORT":        "443",
		"KUBERNETES_SERVICE_PORT_HTTPS":  "443",
		"KUBERNETES_PORT":                "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP":        "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO":  "tcp",
		"KUBERNETES_PORT_443_TCP_PORT":   "443",
		"KUBERNETES_PORT_443_TCP_ADDR":   "10.96.0.1",
	}
	if !reflect.DeepEqual(got, want) {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q, want %q", k, got[k], v)
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("unexpected %s=%q", k, v)
			}
		}
	}
	if w := []string{"serve", "--mode=fast", "$(MODE)", "$(UNKNOWN)"}; !reflect.DeepEqual(cmd, w) {
		t.Errorf("command = %q, want %q", cmd, w)
	}
	if w := []string{"--redis=10.96.0.7:6379"}; !reflect.DeepEqual(args, w) {
		t.Errorf("args = %q, want %q", args, w)
	}

	// enableServiceLinks: false keeps only the API server's variables.
	pod.Spec.EnableServiceLinks = &no
	env, _, _, _, err = s.containerEnv(pod, &c)
	if err != nil {
		t.Fatal(err)
	}
	if m := envMap(env); m["REDIS_MAIN_SERVICE_HOST"] != "" || m["KUBERNETES_SERVICE_HOST"] != "10.96.0.1" {
		t.Errorf("enableServiceLinks false: redis %q, kubernetes %q", m["REDIS_MAIN_SERVICE_HOST"], m["KUBERNETES_SERVICE_HOST"])
	}
}

// The pod's IP is known only on the host: the variable becomes a field
// reference, and the references to it and the escapes are left for the
// host's pass, which must then give what the kubelet would.
func TestContainerEnvPodIP(t *testing.T) {
	s := testSources(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}}
	c := corev1.Container{
		Name:    "c",
		Command: []string{"sh", "-c", "echo $(MY_IP) $$(MY_IP) $(MODE)"},
		Env: []corev1.EnvVar{
			{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "price"}}},
			{Name: "MY_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "URL", Value: "http://$(MY_IP):8080/$(MODE)/$$"},
		},
	}
	pod.Spec.Containers = []corev1.Container{c}
	env, _, cmd, args, err := s.containerEnv(pod, &c)
	if err != nil {
		t.Fatal(err)
	}
	if !model.HasFieldRefs(env) {
		t.Fatalf("MY_IP is not a field reference: %+v", env)
	}
	spec := api.ContainerSpec{Command: cmd, Args: args, Env: env}
	final, fcmd, _ := model.ResolveFields(&spec, env, model.InstanceFields{PodIP: "10.88.0.5"})
	m := envMap(final)
	if m["MY_IP"] != "10.88.0.5" || m["MODE"] != "$5 $$(X)" || m["URL"] != "http://10.88.0.5:8080/$5 $$(X)/$" {
		t.Errorf("after the host's pass: MY_IP=%q MODE=%q URL=%q", m["MY_IP"], m["MODE"], m["URL"])
	}
	if w := []string{"sh", "-c", "echo 10.88.0.5 $(MY_IP) $5 $$(X)"}; !reflect.DeepEqual(fcmd, w) {
		t.Errorf("command after the host's pass = %q, want %q", fcmd, w)
	}
}

func TestContainerEnvErrors(t *testing.T) {
	s := testSources(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}}
	for _, tc := range []struct {
		name      string
		env       corev1.EnvVar
		retryable bool
	}{
		{"missing configmap", corev1.EnvVar{Name: "A", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "later"}, Key: "k"}}}, true},
		{"missing key", corev1.EnvVar{Name: "A", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "k"}}}, true},
		{"unsupported field", corev1.EnvVar{Name: "A", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.phase"}}}, false},
		{"unsupported resource", corev1.EnvVar{Name: "A", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.hugepages-2Mi"}}}, false},
	} {
		c := corev1.Container{Name: "c", Env: []corev1.EnvVar{tc.env}}
		pod.Spec.Containers = []corev1.Container{c}
		_, _, _, _, err := s.containerEnv(pod, &c)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if errors.Is(err, errEnvSource) != tc.retryable {
			t.Errorf("%s: %v: retryable %v, want %v", tc.name, err, !tc.retryable, tc.retryable)
		}
	}
}

// A missing source gets the event virtual-kubelet's resolver records
// (its end-to-end suite waits for these reasons); an optional one is
// left out of the env and the pod runs.
func TestContainerEnvEvents(t *testing.T) {
	s := testSources(t)
	fake := record.NewFakeRecorder(10)
	s.recorder = fake
	yes := true
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}}
	ref := func(name string, optional *bool) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: "k", Optional: optional}}
	}
	for _, tc := range []struct {
		name   string
		env    corev1.EnvVar
		reason string
		err    bool
	}{
		{"optional configmap", corev1.EnvVar{Name: "A", ValueFrom: ref("absent", &yes)}, reasonOptionalConfigMapNotFound, false},
		{"mandatory configmap", corev1.EnvVar{Name: "A", ValueFrom: ref("absent", nil)}, reasonMandatoryConfigMapNotFound, true},
		{"mandatory configmap key", corev1.EnvVar{Name: "A", ValueFrom: ref("cfg", nil)}, reasonMandatoryConfigMapKeyNotFound, true},
		{"optional secret", corev1.EnvVar{Name: "A", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Key: "k", Optional: &yes}}}, reasonOptionalSecretNotFound, false},
		{"mandatory secret", corev1.EnvVar{Name: "A", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Key: "k"}}}, reasonMandatorySecretNotFound, true},
	} {
		c := corev1.Container{Name: "c", Env: []corev1.EnvVar{tc.env}}
		pod.Spec.Containers = []corev1.Container{c}
		env, _, _, _, err := s.containerEnv(pod, &c)
		if (err != nil) != tc.err {
			t.Errorf("%s: err = %v, want error %v", tc.name, err, tc.err)
		}
		if err == nil && envMap(env)["A"] != "" {
			t.Errorf("%s: A set to %q", tc.name, envMap(env)["A"])
		}
		select {
		case ev := <-fake.Events:
			if !strings.HasPrefix(ev, "Warning "+tc.reason+" ") {
				t.Errorf("%s: event %q, want a Warning %s", tc.name, ev, tc.reason)
			}
		default:
			t.Errorf("%s: no event", tc.name)
		}
	}
}
