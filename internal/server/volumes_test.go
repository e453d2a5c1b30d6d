package server

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// fakeVolumeHost is a fake host that keeps volumes as map entries.
type fakeVolumeHost struct {
	*fakeHost
	mu   sync.Mutex
	vols map[string]int // id -> key length
}

func (h *fakeVolumeHost) CreateVolume(_ context.Context, id string, _ int64, _ bool, key []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.vols[id]; ok {
		return fmt.Errorf("volume %s: %w", id, errdefs.ErrAlreadyExists)
	}
	h.vols[id] = len(key)
	return nil
}

func (h *fakeVolumeHost) RemoveVolume(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.vols, id)
	return nil
}

func (h *fakeVolumeHost) keyLens() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []int
	for _, n := range h.vols {
		out = append(out, n)
	}
	return out
}

func pvBody(name, vol string) string {
	return fmt.Sprintf(`{"name":%q,"spec":{"containers":[{"name":"main","image":%q,"volumeMounts":[{"name":"v","mountPath":"/data"}]}],"volumes":[{"name":"v","persistentVolume":{"name":%q}}]}}`,
		name, imgBusybox, vol)
}

func TestVolumesAPI(t *testing.T) {
	e := newEnv(t, 0)
	for _, tn := range []testTenant{e.a, e.b} {
		if err := e.store.EnsureTenant(t.Context(), &api.Tenant{Name: tn.name}); err != nil {
			t.Fatal(err)
		}
	}
	// A host without volumes: nowhere to put one.
	wantError(t, e.do(t, "POST", "/v1/volumes", e.a.token, `{"name":"data","size":"1Gi"}`), http.StatusServiceUnavailable, "Unavailable", "no ready host keeps persistent volumes")

	vh := &fakeVolumeHost{fakeHost: e.host, vols: map[string]int{}}
	e.server.hosts = fakeDirectory{vh} // before the requests below: handlers read it

	for _, tt := range []struct{ body, field string }{
		{`{"name":"","size":"1Gi"}`, "name is empty"},
		{`{"name":"Data","size":"1Gi"}`, `name "Data"`},
		{`{"name":"data"}`, "size is empty"},
		{`{"name":"data","size":"8Mi"}`, `size "8Mi" is out of range`},
		{`{"name":"data","size":"2Ti"}`, `size "2Ti" is out of range`},
		{`{"name":"data","size":"1Gi","host":"other"}`, `host: "other" is not a host`},
	} {
		wantError(t, e.do(t, "POST", "/v1/volumes", e.a.token, tt.body), http.StatusBadRequest, "InvalidArgument", tt.field)
	}
	if n := len(vh.keyLens()); n != 0 {
		t.Fatalf("bad requests made %d volumes on the host", n)
	}

	r := e.do(t, "POST", "/v1/volumes", e.a.token, `{"name":"data","size":"100Mi"}`)
	wantStatus(t, r, http.StatusCreated)
	var v api.PersistentVolume
	decode(t, r, &v)
	if v.Name != "data" || v.Size != 100<<20 || v.Host != "fake-host" || v.Status.Phase != api.VolumeAvailable || v.Tenant != e.a.name {
		t.Fatalf("created %+v", v)
	}
	wantError(t, e.do(t, "POST", "/v1/volumes", e.a.token, `{"name":"data","size":"100Mi"}`), http.StatusConflict, "AlreadyExists", `volume "data" already exists`)
	wantStatus(t, e.do(t, "POST", "/v1/volumes", e.a.token, `{"name":"sec","size":"16Mi","encrypted":true}`), http.StatusCreated)
	lens := vh.keyLens()
	if len(lens) != 2 || lens[0]+lens[1] != 64 {
		t.Fatalf("host got keys of lengths %v, want one of 64 bytes (the encrypted volume's)", lens)
	}
	// Another tenant sees none of it, and may use the name.
	wantError(t, e.do(t, "GET", "/v1/volumes/data", e.b.token, ""), http.StatusNotFound, "NotFound")
	wantStatus(t, e.do(t, "POST", "/v1/volumes", e.b.token, `{"name":"data","size":"16Mi"}`), http.StatusCreated)

	// Instances: a missing volume is a 400 naming the field; one holder
	// at a time, named in the 409s.
	wantError(t, e.do(t, "POST", "/v1/instances", e.a.token, pvBody("w0", "nope")), http.StatusBadRequest, "InvalidArgument", "spec.volumes[0].persistentVolume.name")
	wantStatus(t, e.do(t, "POST", "/v1/instances", e.a.token, pvBody("w1", "data")), http.StatusCreated)
	if st := e.stored(t, e.a, "w1"); len(st.PersistentVolumes) != 1 || st.PersistentVolumes[0].Host != "fake-host" || st.PersistentVolumes[0].ID == "" {
		t.Fatalf("w1 bound to %+v", st.PersistentVolumes)
	}
	wantError(t, e.do(t, "POST", "/v1/instances", e.a.token, pvBody("w2", "data")), http.StatusConflict, "Conflict", `in use by instance "w1"`)
	if names := e.storedNames(t, e.a); len(names) != 1 {
		t.Fatalf("instances stored: %v, want only w1", names)
	}
	wantError(t, e.do(t, "DELETE", "/v1/volumes/data", e.a.token, ""), http.StatusConflict, "Conflict", `in use by instance "w1"`)
	r = e.do(t, "GET", "/v1/volumes/data", e.a.token, "")
	decode(t, r, &v)
	if v.Status.Phase != api.VolumeInUse || v.Status.Holder != "w1" {
		t.Fatalf("held volume: %+v", v.Status)
	}
	// Once w1 is gone (the host removes its record), the volume is free.
	if err := e.store.DeleteInstance(e.a.ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, e.do(t, "POST", "/v1/instances", e.a.token, pvBody("w2", "data")), http.StatusCreated)
	if err := e.store.DeleteInstance(e.a.ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, e.do(t, "DELETE", "/v1/volumes/data", e.a.token, ""), http.StatusNoContent)
	wantError(t, e.do(t, "GET", "/v1/volumes/data", e.a.token, ""), http.StatusNotFound, "NotFound")
	r = e.do(t, "GET", "/v1/volumes", e.a.token, "")
	var list api.PersistentVolumeList
	decode(t, r, &list)
	if len(list.Items) != 1 || list.Items[0].Name != "sec" || !list.Items[0].Encrypted {
		t.Fatalf("list: %+v", list.Items)
	}
}

// A tenant with volumes is not deleted: its data would stay on the host
// with no record left to remove it by.
func TestDeleteTenantWithVolumes(t *testing.T) {
	e, admin := adminEnv(t)
	e.server.hosts = fakeDirectory{&fakeVolumeHost{fakeHost: e.host, vols: map[string]int{}}}
	name, tok := newTenantWithToken(t, e, admin)
	wantStatus(t, e.do(t, "POST", "/v1/volumes", tok, `{"name":"keep","size":"16Mi"}`), http.StatusCreated)
	wantError(t, e.do(t, "DELETE", "/v1/tenants/"+name, admin, ""), http.StatusConflict, "Conflict", "1 persistent volumes", "volume rm")
	wantStatus(t, e.do(t, "DELETE", "/v1/volumes/keep", tok, ""), http.StatusNoContent)
	wantStatus(t, e.do(t, "DELETE", "/v1/tenants/"+name, admin, ""), http.StatusNoContent)
}
