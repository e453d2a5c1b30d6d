package virtualnode

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	vkerrdefs "github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

// fakeKanga serves the instance reads of the Kanga API from a fixed list.
func fakeKanga(t *testing.T, insts []api.Instance) *client.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/instances" {
			json.NewEncoder(w).Encode(api.InstanceList{Items: insts})
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/v1/instances/")
		for _, i := range insts {
			if i.Name == name {
				json.NewEncoder(w).Encode(i)
				return
			}
		}
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(api.ErrorResponse{Error: api.Error{Code: "NotFound", Message: "instance " + name + " not found"}})
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, "token")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func lister(t *testing.T, pods ...*corev1.Pod) corev1listers.PodLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return corev1listers.NewPodLister(idx)
}

// instanceOf is the running instance a virtual node made for pod.
func instanceOf(t *testing.T, pod *corev1.Pod, node string) api.Instance {
	t.Helper()
	spec, err := InstanceSpec(pod, node)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	st := api.InstanceStatus{Phase: api.PhaseRunning, IP: "10.0.0.9", StartedAt: &now}
	for _, c := range pod.Spec.Containers {
		st.Containers = append(st.Containers, api.ContainerStatus{Name: c.Name, State: api.ContainerRunning, StartedAt: &now})
	}
	return api.Instance{Name: InstanceName(pod.Namespace, pod.Name), UID: "i-" + string(pod.UID), CreatedAt: now, Spec: spec, Status: st}
}

// A restarted virtual node knows no pod: it must find its instances,
// report their status, and tell apart instances of other nodes, of
// deleted pods and of earlier pods of the same name.
func TestProviderAfterRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mine := testPod()
	mine.Name, mine.UID = "mine", "u-mine"
	gone := testPod()
	gone.Name, gone.UID = "gone", "u-gone"
	other := testPod()
	other.Name, other.UID = "other", "u-other"
	reborn := testPod()
	reborn.Name, reborn.UID = "reborn", "u-old"
	insts := []api.Instance{
		instanceOf(t, mine, "vn"),
		instanceOf(t, gone, "vn"),
		instanceOf(t, other, "another-node"),
		instanceOf(t, reborn, "vn"),
	}
	rebornNow := reborn.DeepCopy()
	rebornNow.UID = "u-new"
	p := NewProvider(fakeKanga(t, insts), "vn", "192.0.2.1", lister(t, mine, other, rebornNow), slog.New(slog.DiscardHandler))

	pods, err := p.GetPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]types.UID{}
	for _, pod := range pods {
		got[pod.Name] = pod.UID
	}
	want := map[string]types.UID{"mine": "u-mine", "gone": "u-gone", "reborn": "u-old"}
	if len(got) != len(want) {
		t.Fatalf("GetPods = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("GetPods %s uid %q, want %q", k, got[k], v)
		}
	}

	if _, err := p.GetPod(ctx, "ns", "reborn"); !vkerrdefs.IsNotFound(err) {
		t.Errorf("GetPod of a pod whose instance is an earlier pod's: err = %v, want NotFound", err)
	}
	if _, err := p.GetPod(ctx, "ns", "other"); !vkerrdefs.IsNotFound(err) {
		t.Errorf("GetPod of another node's instance: err = %v, want NotFound", err)
	}
	pod, err := p.GetPod(ctx, "ns", "mine")
	if err != nil {
		t.Fatal(err)
	}
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP != "10.0.0.9" || !podIsReady(pod) {
		t.Errorf("GetPod mine: phase %s ip %q ready %v", pod.Status.Phase, pod.Status.PodIP, podIsReady(pod))
	}

	// The adopted pod's status flows through the notifier.
	var mu sync.Mutex
	notified := map[string]corev1.PodPhase{}
	p.interval = 10 * time.Millisecond
	p.NotifyPods(ctx, func(pod *corev1.Pod) {
		mu.Lock()
		notified[pod.Name] = pod.Status.Phase
		mu.Unlock()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		phase, ok := notified["mine"]
		mu.Unlock()
		if ok {
			if phase != corev1.PodRunning {
				t.Errorf("notified phase %s, want Running", phase)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no status notified for the adopted pod")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func podIsReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// A pod Kanga refuses goes Failed whatever its restart policy, and stays
// so (GetPod returns it) until deleted; a new pod of the same name is not
// the refused one.
func TestProviderRefusedPodFails(t *testing.T) {
	for _, policy := range []corev1.RestartPolicy{corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever} {
		t.Run(string(policy), func(t *testing.T) {
			pod := &corev1.Pod{}
			pod.Namespace, pod.Name, pod.UID = "default", "bad", types.UID("uid-bad")
			pod.Spec.RestartPolicy = policy
			pod.Spec.HostNetwork = true
			pod.Spec.Containers = []corev1.Container{{Name: "c", Image: "busybox"}}
			pods := lister(t, pod)
			p := NewProvider(fakeKanga(t, nil), "vn", "192.0.2.1", pods, slog.New(slog.DiscardHandler))
			var mu sync.Mutex
			var notified []*corev1.Pod
			p.notify = func(pod *corev1.Pod) { mu.Lock(); notified = append(notified, pod); mu.Unlock() }

			err := p.CreatePod(context.Background(), pod)
			if !vkerrdefs.IsInvalidInput(err) || !strings.Contains(err.Error(), "hostNetwork") {
				t.Fatalf("CreatePod: %v, want an invalid-input error naming hostNetwork", err)
			}
			got, err := p.GetPod(context.Background(), "default", "bad")
			if err != nil {
				t.Fatalf("GetPod of the refused pod: %v", err)
			}
			if got.Status.Phase != corev1.PodFailed || got.Status.Reason != ReasonRefused || !strings.Contains(got.Status.Message, "hostNetwork") {
				t.Errorf("refused pod status: %s %s %q, want Failed %s naming hostNetwork", got.Status.Phase, got.Status.Reason, got.Status.Message, ReasonRefused)
			}
			if err := p.poll(context.Background()); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			n := len(notified)
			mu.Unlock()
			if n != 1 || notified[0].Status.Phase != corev1.PodFailed {
				t.Errorf("poll notified %d pods, want the refused one, Failed", n)
			}

			// The API server has it Failed now: no more reports.
			failed := pod.DeepCopy()
			failed.Status.Phase = corev1.PodFailed
			p.pods = lister(t, failed)
			if err := p.poll(context.Background()); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			n = len(notified)
			mu.Unlock()
			if n != 1 {
				t.Errorf("poll notified the refused pod again after the API server had it Failed (%d reports)", n)
			}

			// A new pod of the same name is a new pod.
			reborn := pod.DeepCopy()
			reborn.UID = "uid-reborn"
			p.pods = lister(t, reborn)
			if _, err := p.GetPod(context.Background(), "default", "bad"); !vkerrdefs.IsNotFound(err) {
				t.Errorf("GetPod of a new pod of the refused one's name: %v, want not found", err)
			}
		})
	}
}
