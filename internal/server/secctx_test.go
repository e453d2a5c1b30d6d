package server

import (
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// TestSecurityContextInput: user, group and fsGroup ids that are names,
// negative or too large, and privileged, are 400s naming the field;
// allowPrivilegeEscalation is a 403 until an administrator allows it
// within the operator's bounds; nothing is stored after a refusal.
func TestSecurityContextInput(t *testing.T) {
	e, admin := adminEnvWith(t, Options{Security: model.SecurityBounds{PrivilegeEscalation: true}})
	name, tok := newTenantWithToken(t, e, admin)
	ctr := func(sc string) string {
		return fmt.Sprintf(`{"spec":{"containers":[{"image":%q,"securityContext":%s}]}}`, imgBusybox, sc)
	}
	for _, tc := range []struct {
		body   string
		status int
		code   string
		want   []string
	}{
		{ctr(`{"runAsUser":"nobody"}`), http.StatusBadRequest, "InvalidArgument", []string{"spec.containers.securityContext.runAsUser", "names are not resolved"}},
		{ctr(`{"runAsGroup":"staff"}`), http.StatusBadRequest, "InvalidArgument", []string{"spec.containers.securityContext.runAsGroup"}},
		{ctr(`{"runAsUser":-1}`), http.StatusBadRequest, "InvalidArgument", []string{"spec.containers[0].securityContext.runAsUser -1"}},
		{ctr(`{"runAsUser":4294967296}`), http.StatusBadRequest, "InvalidArgument", []string{"spec.containers[0].securityContext.runAsUser 4294967296"}},
		{ctr(`{"supplementalGroups":[5,-1]}`), http.StatusBadRequest, "InvalidArgument", []string{"spec.containers[0].securityContext.supplementalGroups[1] -1"}},
		{ctr(`{"privileged":true}`), http.StatusBadRequest, "InvalidArgument", []string{"spec.containers[0].securityContext.privileged"}},
		{ctr(`{"runAsNonRoot":true,"runAsUser":0}`), http.StatusBadRequest, "InvalidArgument", []string{"spec.containers[0].securityContext.runAsNonRoot"}},
		{fmt.Sprintf(`{"spec":{"securityContext":{"fsGroup":-3},"containers":[{"image":%q}]}}`, imgBusybox), http.StatusBadRequest, "InvalidArgument", []string{"spec.securityContext.fsGroup -3"}},
		{ctr(`{"allowPrivilegeEscalation":true}`), http.StatusForbidden, "PermissionDenied", []string{"spec.containers[0].securityContext.allowPrivilegeEscalation", "--allow-privilege-escalation"}},
	} {
		wantError(t, e.do(t, "POST", "/v1/instances", tok, tc.body), tc.status, tc.code, tc.want...)
	}
	r := e.do(t, "GET", "/v1/instances", tok, "")
	wantStatus(t, r, http.StatusOK)
	var list api.InstanceList
	decode(t, r, &list)
	if len(list.Items) != 0 {
		t.Fatalf("refused creates stored %d instances", len(list.Items))
	}

	ok := fmt.Sprintf(`{"name":"u","spec":{"securityContext":{"fsGroup":2000},"containers":[{"image":%q,"securityContext":{"runAsUser":1000,"runAsGroup":1000,"supplementalGroups":[3000],"runAsNonRoot":true,"readOnlyRootFilesystem":true,"allowPrivilegeEscalation":false,"privileged":false}}]}}`, imgBusybox)
	r = e.do(t, "POST", "/v1/instances", tok, ok)
	wantStatus(t, r, http.StatusCreated)
	var inst api.Instance
	decode(t, r, &inst)
	sc := inst.Spec.Containers[0].SecurityContext
	if sc == nil || *sc.RunAsUser != 1000 || *sc.RunAsGroup != 1000 || !sc.ReadOnlyRootFilesystem || !slices.Equal(sc.SupplementalGroups, []int64{3000}) ||
		inst.Spec.SecurityContext == nil || *inst.Spec.SecurityContext.FSGroup != 2000 {
		t.Errorf("stored %+v, %+v", sc, inst.Spec.SecurityContext)
	}

	path := "/v1/tenants/" + name + "/security"
	wantStatus(t, e.do(t, "PUT", path, admin, `{"allowPrivilegeEscalation":true}`), http.StatusOK)
	wantStatus(t, e.do(t, "POST", "/v1/instances", tok, ctr(`{"allowPrivilegeEscalation":true}`)), http.StatusCreated)

	// The operator's bound: without it an administrator cannot allow it.
	e2, admin2 := adminEnv(t)
	name2, _ := newTenantWithToken(t, e2, admin2)
	wantError(t, e2.do(t, "PUT", "/v1/tenants/"+name2+"/security", admin2, `{"allowPrivilegeEscalation":true}`), http.StatusForbidden, "PermissionDenied",
		"security.allowPrivilegeEscalation", "--tenant-allow-privilege-escalation")
}

// TestInstanceLabels: labels and annotations are validated (a 400 naming
// the key), stored, and select instances through ?labelSelector=.
func TestInstanceLabels(t *testing.T) {
	e := newEnv(t, 0)
	create := func(name, labels string) response {
		return e.do(t, "POST", "/v1/instances", e.a.token,
			fmt.Sprintf(`{"name":%q,"labels":%s,"annotations":{"example.com/note":"free text"},"spec":{"containers":[{"name":"main","image":%q}]}}`, name, labels, imgBusybox))
	}
	wantError(t, create("bad", `{"bad key":"x"}`), http.StatusBadRequest, "InvalidArgument", `labels key "bad key"`)
	wantError(t, create("bad", `{"app":"no spaces"}`), http.StatusBadRequest, "InvalidArgument", `labels["app"] value "no spaces"`)
	wantError(t, e.do(t, "POST", "/v1/instances", e.a.token, fmt.Sprintf(`{"name":"bad","annotations":{"/x":"y"},"spec":{"containers":[{"name":"main","image":%q}]}}`, imgBusybox)),
		http.StatusBadRequest, "InvalidArgument", `annotations key "/x"`)
	for _, c := range []struct{ name, labels string }{
		{"web1", `{"app":"web","tier":"front"}`},
		{"web2", `{"app":"web","tier":"db"}`},
		{"db1", `{"app":"db","tier":"db"}`},
		{"none", `{}`},
	} {
		wantStatus(t, create(c.name, c.labels), http.StatusCreated)
	}
	// Another tenant's instance with the same labels is never listed.
	wantStatus(t, e.do(t, "POST", "/v1/instances", e.b.token,
		fmt.Sprintf(`{"name":"web9","labels":{"app":"web"},"spec":{"containers":[{"name":"main","image":%q}]}}`, imgBusybox)), http.StatusCreated)
	list := func(sel string) []string {
		t.Helper()
		c := e.client(e.a)
		items, err := c.ListInstancesSelected(t.Context(), sel)
		if err != nil {
			t.Fatalf("selector %q: %v", sel, err)
		}
		var names []string
		for _, i := range items {
			names = append(names, i.Name)
		}
		slices.Sort(names)
		return names
	}
	for sel, want := range map[string][]string{
		"":                    {"db1", "none", "web1", "web2"},
		"app=web":             {"web1", "web2"},
		"app=web,tier!=db":    {"web1"},
		"tier in (db)":        {"db1", "web2"},
		"app notin (web)":     {"db1", "none"},
		"tier":                {"db1", "web1", "web2"},
		"!tier":               {"none"},
		"app=nothing-is-this": nil,
	} {
		if got := list(sel); !slices.Equal(got, want) {
			t.Errorf("labelSelector %q: %v, want %v", sel, got, want)
		}
	}
	wantError(t, e.do(t, "GET", "/v1/instances?labelSelector=app%3D(", e.a.token, ""), http.StatusBadRequest, "InvalidArgument", "labelSelector")
	r := e.do(t, "GET", "/v1/instances/web1", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	var inst api.Instance
	decode(t, r, &inst)
	if inst.Labels["app"] != "web" || inst.Labels["tier"] != "front" || inst.Annotations["example.com/note"] != "free text" {
		t.Errorf("stored labels %v, annotations %v", inst.Labels, inst.Annotations)
	}
}
