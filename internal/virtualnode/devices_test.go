package virtualnode

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kanga-run/kanga/api"
)

func TestDevicesOf(t *testing.T) {
	limits := func(kv ...string) corev1.ResourceRequirements {
		l := corev1.ResourceList{}
		for i := 0; i < len(kv); i += 2 {
			l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
		return corev1.ResourceRequirements{Limits: l}
	}
	ctr := func(r corev1.ResourceRequirements) corev1.Container { return corev1.Container{Name: "c", Resources: r} }
	for _, tc := range []struct {
		name  string
		ctrs  []corev1.Container
		inits []corev1.Container
		want  []api.DeviceRequest
		err   string
	}{
		{"none", []corev1.Container{ctr(limits("cpu", "1", "memory", "1Gi", "hugepages-2Mi", "2Mi"))}, nil, nil, ""},
		{"summed over containers, kinds in order", []corev1.Container{
			ctr(limits("nvidia.com/gpu", "1", "kanga.dev/mock", "1")), ctr(limits("nvidia.com/gpu", "2")),
		}, nil, []api.DeviceRequest{{Kind: "kanga.dev/mock", Count: 1}, {Kind: "nvidia.com/gpu", Count: 3}}, ""},
		{"the larger init container wins", []corev1.Container{ctr(limits("nvidia.com/gpu", "1"))},
			[]corev1.Container{ctr(limits("nvidia.com/gpu", "2"))}, []api.DeviceRequest{{Kind: "nvidia.com/gpu", Count: 2}}, ""},
		{"kubernetes.io names are not devices", []corev1.Container{ctr(limits("example.kubernetes.io/thing", "1"))}, nil, nil, ""},
		{"a fraction", []corev1.Container{ctr(limits("nvidia.com/gpu", "500m"))}, nil, nil, "not a whole number of devices"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: tc.ctrs, InitContainers: tc.inits}}
			got, err := devicesOf(pod)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("devicesOf = %v, %v; want an error with %q", got, err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("devicesOf = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
