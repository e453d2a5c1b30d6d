package virtualnode

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestApplyReadinessGates(t *testing.T) {
	const g1, g2 = corev1.PodConditionType("example.com/gate-1"), corev1.PodConditionType("example.com/gate-2")
	ready := func() corev1.PodStatus {
		return corev1.PodStatus{Conditions: []corev1.PodCondition{
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue},
		}}
	}
	cond := func(t corev1.PodConditionType, s corev1.ConditionStatus) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: s}
	}
	for _, tc := range []struct {
		name      string
		gates     []corev1.PodConditionType
		live      []corev1.PodCondition
		wantReady corev1.ConditionStatus
		// wantCarried is how many gate conditions the status carries.
		wantCarried int
	}{
		{name: "no gates", wantReady: corev1.ConditionTrue},
		{name: "gates not set yet", gates: []corev1.PodConditionType{g1, g2}, wantReady: corev1.ConditionFalse},
		{name: "one gate true", gates: []corev1.PodConditionType{g1, g2},
			live: []corev1.PodCondition{cond(g1, corev1.ConditionTrue)}, wantReady: corev1.ConditionFalse, wantCarried: 1},
		{name: "all gates true", gates: []corev1.PodConditionType{g1, g2},
			live:      []corev1.PodCondition{cond(g1, corev1.ConditionTrue), cond(g2, corev1.ConditionTrue), cond(corev1.PodReady, corev1.ConditionFalse)},
			wantReady: corev1.ConditionTrue, wantCarried: 2},
		{name: "a gate back to false", gates: []corev1.PodConditionType{g1, g2},
			live:      []corev1.PodCondition{cond(g1, corev1.ConditionFalse), cond(g2, corev1.ConditionTrue)},
			wantReady: corev1.ConditionFalse, wantCarried: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{}
			for _, g := range tc.gates {
				pod.Spec.ReadinessGates = append(pod.Spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: g})
			}
			st := ready()
			ApplyReadinessGates(&st, pod, tc.live)
			var gotReady, gotContainers corev1.ConditionStatus
			carried := 0
			for _, c := range st.Conditions {
				switch c.Type {
				case corev1.PodReady:
					gotReady = c.Status
				case corev1.ContainersReady:
					gotContainers = c.Status
				case g1, g2:
					carried++
				}
			}
			if gotReady != tc.wantReady {
				t.Errorf("Ready = %s, want %s (conditions %+v)", gotReady, tc.wantReady, st.Conditions)
			}
			if gotContainers != corev1.ConditionTrue {
				t.Errorf("ContainersReady = %s, want True: the gates are not the containers'", gotContainers)
			}
			if carried != tc.wantCarried {
				t.Errorf("carried %d gate conditions, want %d", carried, tc.wantCarried)
			}
		})
	}
}
