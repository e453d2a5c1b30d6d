package server

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
)

// objectsEnv is a test env whose two tenants have tenant records, as
// every tenant made through the API or kanga up has: secrets and configs
// are created only in an existing tenant.
func objectsEnv(t *testing.T) (*testEnv, string) {
	t.Helper()
	e, admin := adminEnv(t)
	for _, tn := range []testTenant{e.a, e.b} {
		if err := e.store.EnsureTenant(t.Context(), &api.Tenant{Name: tn.name}); err != nil {
			t.Fatal(err)
		}
	}
	return e, admin
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

const secretMarker = "S3CRET-MARKER-91c2"

func TestSecretsAPI(t *testing.T) {
	e, admin := objectsEnv(t)
	a, b := e.a.token, e.b.token
	r := e.do(t, "POST", "/v1/secrets", a, fmt.Sprintf(`{"name":"db","data":{"password":%q,"user":%q}}`, b64(secretMarker), b64("app")))
	wantStatus(t, r, http.StatusCreated)
	if strings.Contains(string(r.body), b64(secretMarker)) || strings.Contains(string(r.body), secretMarker) {
		t.Errorf("create answer carries the value: %s", r.body)
	}
	var sec api.Secret
	decode(t, r, &sec)
	if sec.Name != "db" || sec.Tenant != e.a.name || len(sec.Keys) != 2 || sec.Keys[0] != (api.ObjectKey{Name: "password", Size: len(secretMarker)}) || sec.Data != nil {
		t.Errorf("created secret = %+v", sec)
	}
	wantError(t, e.do(t, "POST", "/v1/secrets", a, `{"name":"db"}`), http.StatusConflict, "AlreadyExists", `secret "db"`)

	// Inspect and list show keys and sizes, never values.
	for _, path := range []string{"/v1/secrets/db", "/v1/secrets"} {
		r := e.do(t, "GET", path, a, "")
		wantStatus(t, r, http.StatusOK)
		if strings.Contains(string(r.body), b64(secretMarker)) || strings.Contains(string(r.body), `"data"`) {
			t.Errorf("GET %s carries the values: %s", path, r.body)
		}
	}
	r = e.do(t, "POST", "/v1/secrets/db/reveal", a, "")
	wantStatus(t, r, http.StatusOK)
	decode(t, r, &sec)
	if string(sec.Data["password"]) != secretMarker || string(sec.Data["user"]) != "app" {
		t.Errorf("revealed = %+v", sec.Data)
	}

	// Another tenant: every route is a 404, its list is empty, and it may
	// use the name for its own secret.
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/v1/secrets/db", ""}, {"POST", "/v1/secrets/db/reveal", ""},
		{"PUT", "/v1/secrets/db", `{"data":{}}`}, {"DELETE", "/v1/secrets/db", ""},
	} {
		wantError(t, e.do(t, c.method, c.path, b, c.body), http.StatusNotFound, "NotFound", `secret "db" not found`)
	}
	var list api.SecretList
	r = e.do(t, "GET", "/v1/secrets", b, "")
	wantStatus(t, r, http.StatusOK)
	decode(t, r, &list)
	if len(list.Items) != 0 {
		t.Errorf("tenant b lists %+v", list.Items)
	}

	// Update replaces the data.
	r = e.do(t, "PUT", "/v1/secrets/db", a, fmt.Sprintf(`{"data":{"token":%q}}`, b64("t")))
	wantStatus(t, r, http.StatusOK)
	decode(t, r, &sec)
	if len(sec.Keys) != 1 || sec.Keys[0].Name != "token" {
		t.Errorf("updated = %+v", sec)
	}

	// The audit log has the reveal, by whom, and never a value.
	recs, err := e.store.ListAudit(t.Context(), store.AuditFilter{Tenant: e.a.name})
	if err != nil {
		t.Fatal(err)
	}
	revealed := false
	for _, rec := range recs {
		if rec.Verb == "secrets.reveal" && rec.Object == "secrets/db" && rec.Principal != "" {
			revealed = true
		}
	}
	all, _ := json.Marshal(recs)
	if !revealed || strings.Contains(string(all), secretMarker) || strings.Contains(string(all), b64(secretMarker)) {
		t.Errorf("audit records (reveal found %v): %s", revealed, all)
	}

	wantStatus(t, e.do(t, "DELETE", "/v1/secrets/db", a, ""), http.StatusNoContent)
	wantError(t, e.do(t, "GET", "/v1/secrets/db", a, ""), http.StatusNotFound, "NotFound")
	_ = admin
}

func TestConfigsAPI(t *testing.T) {
	e, _ := objectsEnv(t)
	a, b := e.a.token, e.b.token
	wantStatus(t, e.do(t, "POST", "/v1/configs", a, fmt.Sprintf(`{"name":"app","data":{"app.conf":%q}}`, b64("level=debug\n"))), http.StatusCreated)
	var cfg api.Config
	r := e.do(t, "GET", "/v1/configs/app", a, "")
	wantStatus(t, r, http.StatusOK)
	decode(t, r, &cfg)
	if string(cfg.Data["app.conf"]) != "level=debug\n" || len(cfg.Keys) != 1 {
		t.Errorf("config = %+v", cfg)
	}
	var list api.ConfigList
	r = e.do(t, "GET", "/v1/configs", a, "")
	wantStatus(t, r, http.StatusOK)
	decode(t, r, &list)
	if len(list.Items) != 1 || list.Items[0].Data != nil {
		t.Errorf("list = %+v", list)
	}
	wantError(t, e.do(t, "GET", "/v1/configs/app", b, ""), http.StatusNotFound, "NotFound", `config "app" not found`)
	wantError(t, e.do(t, "PUT", "/v1/configs/app", b, `{}`), http.StatusNotFound, "NotFound")
	wantError(t, e.do(t, "DELETE", "/v1/configs/app", b, ""), http.StatusNotFound, "NotFound")
	wantStatus(t, e.do(t, "PUT", "/v1/configs/app", a, `{}`), http.StatusOK)
	r = e.do(t, "GET", "/v1/configs/app", a, "")
	decode(t, r, &cfg)
	if len(cfg.Keys) != 0 {
		t.Errorf("after an update to no data: %+v", cfg)
	}
	wantStatus(t, e.do(t, "DELETE", "/v1/configs/app", a, ""), http.StatusNoContent)
}

func TestObjectValidation(t *testing.T) {
	e, _ := objectsEnv(t)
	big := strings.Repeat("x", api.MaxObjectBytes)
	for _, kind := range []string{"secrets", "configs"} {
		for _, tc := range []struct {
			name, body string
			status     int
			msg        string
		}{
			{"empty data", `{"name":"empty-%s"}`, http.StatusCreated, ""},
			{"bad name", `{"name":"Bad_Name"}`, http.StatusBadRequest, "name"},
			{"no name", `{"data":{}}`, http.StatusBadRequest, "name is empty"},
			{"slash in key", `{"name":"x","data":{"a/b":"eA=="}}`, http.StatusBadRequest, `data key "a/b" contains '/'`},
			{"dotdot key", `{"name":"x","data":{"..":"eA=="}}`, http.StatusBadRequest, "data key"},
			{"over 1 MiB", `{"name":"x","data":{"k":"` + b64(big) + `"}}`, http.StatusBadRequest, "at most 1048576"},
			{"body over 2 MiB", `{"name":"x","data":{"k":"` + b64(big+big) + `"}}`, http.StatusRequestEntityTooLarge, "larger than"},
			{"unknown field", `{"name":"x","value":"y"}`, http.StatusBadRequest, "value"},
		} {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				body := tc.body
				if strings.Contains(body, "%s") {
					body = fmt.Sprintf(body, kind)
				}
				r := e.do(t, "POST", "/v1/"+kind, e.a.token, body)
				if tc.status == http.StatusCreated {
					wantStatus(t, r, tc.status)
					return
				}
				code := "InvalidArgument"
				if tc.status == http.StatusRequestEntityTooLarge {
					code = "TooLarge"
				}
				wantError(t, r, tc.status, code, tc.msg)
			})
		}
		wantError(t, e.do(t, "PUT", "/v1/"+kind+"/x", e.a.token, `{"data":{"a/b":""}}`), http.StatusBadRequest, "InvalidArgument", "data key")
	}
}

func TestSecretScopes(t *testing.T) {
	e, admin := adminEnv(t)
	name, first := newTenantWithToken(t, e, admin)
	wantStatus(t, e.do(t, "POST", "/v1/secrets", first, fmt.Sprintf(`{"name":"db","data":{"pw":%q}}`, b64("x"))), http.StatusCreated)
	ro := createToken(t, e, first, `{"name":"ro","scopes":["read-only"]}`)
	wantStatus(t, e.do(t, "GET", "/v1/secrets/db", ro.Secret, ""), http.StatusOK)
	wantError(t, e.do(t, "POST", "/v1/secrets/db/reveal", ro.Secret, ""), http.StatusForbidden, "PermissionDenied", "secrets:reveal")
	wantError(t, e.do(t, "DELETE", "/v1/secrets/db", ro.Secret, ""), http.StatusForbidden, "PermissionDenied", "secrets:write")
	rev := createToken(t, e, first, `{"name":"rev","scopes":["secrets:reveal"]}`)
	wantStatus(t, e.do(t, "POST", "/v1/secrets/db/reveal", rev.Secret, ""), http.StatusOK)

	// Rotation is the administrator's.
	wantError(t, e.do(t, "POST", "/v1/secret-keys/rotate", first, ""), http.StatusForbidden, "PermissionDenied", "tenants:admin")
	r := e.do(t, "POST", "/v1/secret-keys/rotate", admin, "")
	wantStatus(t, r, http.StatusOK)
	var rot api.SecretKeyRotation
	decode(t, r, &rot)
	if rot.KeyID == "" || rot.Reencrypted < 1 {
		t.Errorf("rotation = %+v", rot)
	}
	r = e.do(t, "POST", "/v1/secrets/db/reveal", first, "")
	wantStatus(t, r, http.StatusOK)
	var sec api.Secret
	decode(t, r, &sec)
	if string(sec.Data["pw"]) != "x" || sec.Tenant != name {
		t.Errorf("after rotation: %+v", sec)
	}
}

// instanceWith is a create body for one busybox container with extra
// container fields and spec fields (JSON fragments, may be empty).
func instanceWith(name, ctr, spec string) string {
	if ctr != "" {
		ctr = "," + ctr
	}
	if spec != "" {
		spec = "," + spec
	}
	return fmt.Sprintf(`{"name":%q,"spec":{"containers":[{"name":"main","image":%q%s}]%s}}`, name, imgBusybox, ctr, spec)
}

func TestInstanceObjectRefs(t *testing.T) {
	e, _ := objectsEnv(t)
	a := e.a.token
	wantStatus(t, e.do(t, "POST", "/v1/secrets", a, fmt.Sprintf(`{"name":"db","data":{"password":%q}}`, b64(secretMarker))), http.StatusCreated)
	wantStatus(t, e.do(t, "POST", "/v1/configs", a, fmt.Sprintf(`{"name":"app","data":{"LEVEL":%q,"MODE":%q}}`, b64("debug"), b64("fast"))), http.StatusCreated)
	// Tenant b's objects are not a's.
	wantStatus(t, e.do(t, "POST", "/v1/configs", e.b.token, `{"name":"other"}`), http.StatusCreated)

	for _, tc := range []struct {
		name, ctr, spec string
		status          int
		code, msg       string
	}{
		{"missing secret", `"envFrom":[{"secretRef":{"name":"nope"}}]`, "", 400, "InvalidArgument", `spec.containers[0].envFrom[0].secretRef.name: secret "nope" does not exist`},
		{"other tenant's config", `"envFrom":[{"configMapRef":{"name":"other"}}]`, "", 400, "InvalidArgument", `spec.containers[0].envFrom[0].configMapRef.name: config "other" does not exist`},
		{"missing key", `"env":[{"name":"X","valueFrom":{"configMapKeyRef":{"name":"app","key":"NOPE"}}}]`, "", 400, "InvalidArgument", `spec.containers[0].env[0].valueFrom.configMapKeyRef: config "app" has no key "NOPE"`},
		{"missing volume object", `"volumeMounts":[{"name":"v","mountPath":"/etc/app"}]`, `"volumes":[{"name":"v","config":{"name":"gone"}}]`, 400, "InvalidArgument", `spec.volumes[0].config.name: config "gone"`},
		{"mount over proc", `"volumeMounts":[{"name":"v","mountPath":"/proc/x"}]`, `"volumes":[{"name":"v","config":{"name":"app"}}]`, 400, "InvalidArgument", "spec.containers[0].volumeMounts[0].mountPath"},
		{"two mounts one path", `"volumeMounts":[{"name":"v","mountPath":"/etc/app"},{"name":"w","mountPath":"/etc/app"}]`, `"volumes":[{"name":"v","config":{"name":"app"}},{"name":"w","secret":{"name":"db"}}]`, 400, "InvalidArgument", "spec.containers[0].volumeMounts[1].mountPath"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, "POST", "/v1/instances", a, instanceWith("refs-"+randomHex(t, 3), tc.ctr, tc.spec))
			wantError(t, r, tc.status, tc.code, tc.msg)
			if strings.Contains(string(r.body), secretMarker) {
				t.Errorf("error carries the secret's value: %s", r.body)
			}
		})
	}
	if names := e.storedNames(t, e.a); len(names) != 0 {
		t.Errorf("refused creates left instances: %v", names)
	}

	// Env from a config is resolved at create; the container's own env
	// wins over envFrom.
	inst := e.do(t, "POST", "/v1/instances", a, instanceWith("cfgenv",
		`"envFrom":[{"configMapRef":{"name":"app"}},{"prefix":"APP_","configMapRef":{"name":"app"}}],`+
			`"env":[{"name":"MODE","value":"slow"},{"name":"L2","valueFrom":{"configMapKeyRef":{"name":"app","key":"LEVEL"}}}]`, ""))
	wantStatus(t, inst, http.StatusCreated)
	got := e.stored(t, e.a, "cfgenv").Spec.Containers[0]
	want := []api.EnvVar{{Name: "LEVEL", Value: "debug"}, {Name: "MODE", Value: "slow"}, {Name: "APP_LEVEL", Value: "debug"}, {Name: "APP_MODE", Value: "fast"}, {Name: "L2", Value: "debug"}}
	if len(got.EnvFrom) != 0 || fmt.Sprint(got.Env) != fmt.Sprint(want) {
		t.Errorf("stored env = %+v, envFrom %+v; want %+v", got.Env, got.EnvFrom, want)
	}

	// Env from a secret, and secret and config volumes, stay references
	// in the record: the host resolves them at start, from the control
	// plane. The record never holds the secret's value.
	ctr := `"envFrom":[{"configMapRef":{"name":"app"}},{"secretRef":{"name":"db"}}],` +
		`"env":[{"name":"PW","valueFrom":{"secretKeyRef":{"name":"db","key":"password"}}}],` +
		`"volumeMounts":[{"name":"s","mountPath":"/etc/db"},{"name":"c","mountPath":"/etc/app"}]`
	vols := `"volumes":[{"name":"s","secret":{"name":"db","defaultMode":256}},{"name":"c","config":{"name":"app","items":[{"key":"LEVEL","path":"level"}]}}]`
	wantStatus(t, e.do(t, "POST", "/v1/instances", a, instanceWith("secretrefs", ctr, vols)), http.StatusCreated)
	stored := e.stored(t, e.a, "secretrefs")
	sc := stored.Spec.Containers[0]
	if len(sc.EnvFrom) != 2 || sc.EnvFrom[1].SecretRef == nil || len(sc.Env) != 1 || sc.Env[0].ValueFrom == nil || len(stored.Spec.Volumes) != 2 {
		t.Errorf("stored spec = %+v; want the references as given", stored.Spec)
	}
	if b, _ := json.Marshal(stored); strings.Contains(string(b), secretMarker) || strings.Contains(string(b), b64(secretMarker)) {
		t.Errorf("the instance record holds the secret's value: %s", b)
	}
}

// TestObjectsSDKIsolation goes through the Go SDK over the real store:
// another tenant's secret is a NotFound there too, with errors.Is.
func TestObjectsSDKIsolation(t *testing.T) {
	e, _ := objectsEnv(t)
	a, b := e.client(e.a), e.client(e.b)
	if _, err := a.CreateSecret(t.Context(), "shared-name", map[string][]byte{"k": []byte("a-value")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RevealSecret(t.Context(), "shared-name"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("tenant b reveals tenant a's secret: %v", err)
	}
	if err := b.DeleteSecret(t.Context(), "shared-name"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("tenant b deletes tenant a's secret: %v", err)
	}
	if _, err := b.CreateSecret(t.Context(), "shared-name", map[string][]byte{"k": []byte("b-value")}); err != nil {
		t.Fatal(err)
	}
	for c, want := range map[*client.Client]string{a: "a-value", b: "b-value"} {
		got, err := c.RevealSecret(t.Context(), "shared-name")
		if err != nil || string(got.Data["k"]) != want {
			t.Errorf("RevealSecret = %+v, %v; want %q", got, err, want)
		}
	}
}
