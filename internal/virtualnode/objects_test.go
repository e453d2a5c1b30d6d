package virtualnode

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

// fakeObjects is a fake of the Kanga API's configs and secrets: it
// records the writes and deletes, and lists what it holds.
type fakeObjects struct {
	mu      sync.Mutex
	configs map[string]map[string][]byte
	secrets map[string]map[string][]byte
	calls   []string
}

func newFakeObjects(t *testing.T) (*fakeObjects, *client.Client) {
	f := &fakeObjects{configs: map[string]map[string][]byte{}, secrets: map[string]map[string][]byte{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		kind, name, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/"), "/")
		m := f.configs
		if kind == "secrets" {
			m = f.secrets
		}
		f.calls = append(f.calls, r.Method+" "+kind+" "+name)
		switch {
		case r.Method == http.MethodGet && name == "":
			var items []api.Config
			for n := range m {
				items = append(items, api.Config{Name: n})
			}
			json.NewEncoder(w).Encode(api.ConfigList{Items: items})
		case r.Method == http.MethodPost:
			var req api.CreateConfigRequest
			json.NewDecoder(r.Body).Decode(&req)
			if _, ok := m[req.Name]; ok {
				w.WriteHeader(http.StatusConflict)
				json.NewEncoder(w).Encode(api.ErrorResponse{Error: api.Error{Code: "AlreadyExists", Message: "exists"}})
				return
			}
			m[req.Name] = req.Data
			json.NewEncoder(w).Encode(api.Config{Name: req.Name})
		case r.Method == http.MethodPut:
			var req api.UpdateConfigRequest
			json.NewDecoder(r.Body).Decode(&req)
			m[name] = req.Data
			json.NewEncoder(w).Encode(api.Config{Name: name})
		case r.Method == http.MethodDelete:
			delete(m, name)
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(api.ErrorResponse{Error: api.Error{Code: "NotFound", Message: "not found"}})
		}
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, "token")
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

func (f *fakeObjects) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// The poll writes an object when its sources change and only then; an
// itemized volume keeps to the keys its instance names; the collection
// deletes the objects of pods that are gone, and no other node's.
func TestVolumeObjectsLifecycle(t *testing.T) {
	ctx := context.Background()
	f, kanga := newFakeObjects(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web"}, Data: map[string]string{"a": "1"}}
	cms := indexer(t, cm)
	pod := volumePod(
		corev1.Volume{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web"}}}},
		corev1.Volume{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
	)
	pods := indexer(t, pod)
	p := NewProvider(kanga, "vn", "192.0.2.1", corev1listers.NewPodLister(pods), slog.New(slog.DiscardHandler),
		EnvSources(corev1listers.NewConfigMapLister(cms), corev1listers.NewSecretLister(indexer(t)), nil, nil))

	spec, objs, err := instanceSpec(pod, "vn", &p.env)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.writeObjects(ctx, kanga, objs); err != nil {
		t.Fatal(err)
	}
	conf, info := volumeObjectName("vn", pod, "conf"), volumeObjectName("vn", pod, "info")
	if got := f.takeCalls(); !slices.Equal(got, []string{"POST configs ", "POST configs "}) {
		t.Fatalf("creates: %v", got)
	}
	insts := map[string]*api.Instance{InstanceName("app", "web-1"): {Name: InstanceName("app", "web-1"), Spec: spec}}
	known := map[string]*corev1.Pod{podKey("app", "web-1"): pod}

	p.syncObjects(ctx, known, insts)
	if got := f.takeCalls(); len(got) != 0 {
		t.Errorf("nothing changed, yet the poll wrote %v", got)
	}
	// A new key in the ConfigMap and a new label: both objects change.
	cm = cm.DeepCopy()
	cm.Data["b"] = "2"
	cms.Update(cm)
	lp := pod.DeepCopy()
	lp.Labels["new"] = "yes"
	pods.Update(lp)
	p.syncObjects(ctx, known, insts)
	if got := f.takeCalls(); !slices.Equal(got, []string{"PUT configs " + conf, "PUT configs " + info}) && !slices.Equal(got, []string{"PUT configs " + info, "PUT configs " + conf}) {
		t.Errorf("writes after the change: %v", got)
	}
	if got := string(f.configs[conf]["b"]); got != "2" {
		t.Errorf("conf's new key: %q", got)
	}
	infoKey := spec.Volumes[1].Config.Items[0].Key
	if got := string(f.configs[info][infoKey]); !strings.Contains(got, `new="yes"`) || len(f.configs[info]) != 1 {
		t.Errorf("info: %q", f.configs[info])
	}

	// Another node's object and a gone pod's: only the latter goes.
	f.configs["kvn-00000000.other"] = nil
	gone := volumeObjectName("vn", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "old", UID: "x"}}, "conf")
	f.secrets[gone] = nil
	if err := p.collectObjects(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	_, other := f.configs["kvn-00000000.other"]
	_, goneLeft := f.secrets[gone]
	_, confLeft := f.configs[conf]
	f.mu.Unlock()
	if !other || goneLeft || !confLeft {
		t.Errorf("after the collection: other node's kept %v, gone pod's kept %v, live pod's kept %v", other, goneLeft, confLeft)
	}
	// Deleting the pod deletes its objects.
	if err := p.deleteObjects(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if len(f.configs) != 1 {
		t.Errorf("left after the pod's deletion: %v", f.configs)
	}
}
