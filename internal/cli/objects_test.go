package cli

import (
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

func TestObjectData(t *testing.T) {
	files := map[string][]byte{"/tmp/pw.txt": []byte("hunter2"), "/etc/app.conf": []byte("x=1\n")}
	read := func(p string) ([]byte, error) {
		if b, ok := files[p]; ok {
			return b, nil
		}
		return nil, fs.ErrNotExist
	}
	for _, tc := range []struct {
		name            string
		files, literals []string
		want            map[string][]byte
		wantErr         string
	}{
		{name: "none", want: map[string][]byte{}},
		{name: "key=path", files: []string{"password=/tmp/pw.txt"}, want: map[string][]byte{"password": []byte("hunter2")}},
		{name: "path only", files: []string{"/etc/app.conf"}, want: map[string][]byte{"app.conf": []byte("x=1\n")}},
		{name: "literal", literals: []string{"user=app", "empty=", "eq=a=b"}, want: map[string][]byte{"user": []byte("app"), "empty": {}, "eq": []byte("a=b")}},
		{name: "both", files: []string{"pw=/tmp/pw.txt"}, literals: []string{"user=app"}, want: map[string][]byte{"pw": []byte("hunter2"), "user": []byte("app")}},
		{name: "duplicate", files: []string{"k=/tmp/pw.txt"}, literals: []string{"k=v"}, wantErr: `key "k" is given twice`},
		{name: "missing file", files: []string{"k=/nope"}, wantErr: "--from-file k=/nope"},
		{name: "literal without =", literals: []string{"hunter2"}, wantErr: "expected KEY=VALUE"},
		{name: "empty key", literals: []string{"=v"}, wantErr: "the key is empty"},
		{name: "too large", literals: []string{"k=" + strings.Repeat("x", api.MaxObjectBytes)}, wantErr: "more than the 1 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := objectData(tc.files, tc.literals, read)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("error %q echoes a value", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("objectData = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// objectsAPI is a fake of the secret and config routes that records what
// it was asked.
type objectsAPI struct {
	mu   sync.Mutex
	seen []string // "METHOD PATH"
	body []byte   // the last request body
}

func newObjectsAPI(t *testing.T) *objectsAPI {
	a := &objectsAPI{}
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	sec := api.Secret{Name: "db", Tenant: "acme", CreatedAt: t0, UpdatedAt: t0, Keys: []api.ObjectKey{{Name: "password", Size: 7}, {Name: "user", Size: 3}}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/secrets", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateSecretRequest
		if err := json.Unmarshal(a.body, &req); err != nil {
			writeTestError(w, 400, "InvalidArgument", err.Error())
			return
		}
		writeTestJSON(w, 201, sec)
	})
	mux.HandleFunc("PUT /v1/secrets/{name}", func(w http.ResponseWriter, r *http.Request) { writeTestJSON(w, 200, sec) })
	mux.HandleFunc("GET /v1/secrets", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, api.SecretList{Items: []api.Secret{sec}})
	})
	mux.HandleFunc("GET /v1/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") != "db" {
			writeTestError(w, 404, "NotFound", `secret "`+r.PathValue("name")+`" not found`)
			return
		}
		writeTestJSON(w, 200, sec)
	})
	mux.HandleFunc("POST /v1/secrets/{name}/reveal", func(w http.ResponseWriter, r *http.Request) {
		s := sec
		s.Data = map[string][]byte{"password": []byte("hunter2"), "user": []byte("app")}
		writeTestJSON(w, 200, s)
	})
	mux.HandleFunc("DELETE /v1/secrets/{name}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	mux.HandleFunc("POST /v1/secret-keys/rotate", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, api.SecretKeyRotation{KeyID: "k2", Reencrypted: 3, Retired: []string{"k1"}})
	})
	mux.HandleFunc("POST /v1/configs", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 201, api.Config{Name: "app", Tenant: "acme", Keys: []api.ObjectKey{{Name: "app.conf", Size: 4}}})
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.seen = append(a.seen, r.Method+" "+r.URL.Path)
		a.body = b
		a.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("KANGA_ADDR", srv.URL)
	t.Setenv("KANGA_TOKEN", fakeToken)
	t.Setenv("KANGA_CONFIG", filepath.Join(t.TempDir(), "none.json"))
	return a
}

func (a *objectsAPI) last() (string, []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[len(a.seen)-1], a.body
}

func TestSecretCommands(t *testing.T) {
	a := newObjectsAPI(t)
	pw := filepath.Join(t.TempDir(), "pw.txt")
	if err := os.WriteFile(pw, []byte("hunter2"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := kanga(t, "", "secret", "create", "db", "--from-file", "password="+pw, "--from-literal", "user=app")
	if r.code != 0 || r.stdout != "db\n" || !strings.Contains(r.stderr, "secret db created with 2 keys") {
		t.Fatalf("secret create = %+v", r)
	}
	route, body := a.last()
	var req api.CreateSecretRequest
	if err := json.Unmarshal(body, &req); err != nil || route != "POST /v1/secrets" || req.Name != "db" || string(req.Data["password"]) != "hunter2" || string(req.Data["user"]) != "app" {
		t.Fatalf("create sent %s %s (%v)", route, body, err)
	}

	r = kanga(t, "", "secret", "ls")
	if r.code != 0 || !strings.Contains(r.stdout, "db") || !strings.Contains(r.stdout, "password,user") || strings.Contains(r.stdout, "hunter2") {
		t.Fatalf("secret ls = %+v", r)
	}
	r = kanga(t, "", "secret", "inspect", "db")
	if route, _ := a.last(); r.code != 0 || route != "GET /v1/secrets/db" || !strings.Contains(r.stdout, `"password"`) || strings.Contains(r.stdout, `"data"`) {
		t.Fatalf("secret inspect = %+v (asked %s)", r, route)
	}
	r = kanga(t, "", "secret", "inspect", "--reveal", "db")
	if route, _ := a.last(); r.code != 0 || route != "POST /v1/secrets/db/reveal" || !strings.Contains(r.stdout, `"password": "aHVudGVyMg=="`) {
		t.Fatalf("secret inspect --reveal = %+v (asked %s)", r, route)
	}
	r = kanga(t, "", "secret", "inspect", "db", "gone")
	if r.code != 1 || !strings.Contains(r.stderr, `secret "gone" not found`) || !strings.Contains(r.stdout, `"name": "db"`) {
		t.Fatalf("secret inspect of one missing = %+v", r)
	}
	r = kanga(t, "", "secret", "update", "db", "--from-literal", "user=other")
	if route, _ := a.last(); r.code != 0 || route != "PUT /v1/secrets/db" {
		t.Fatalf("secret update = %+v (asked %s)", r, route)
	}
	r = kanga(t, "", "secret", "rm", "db")
	if route, _ := a.last(); r.code != 0 || r.stdout != "db\n" || route != "DELETE /v1/secrets/db" {
		t.Fatalf("secret rm = %+v (asked %s)", r, route)
	}
	r = kanga(t, "", "secret", "rotate-key")
	if r.code != 0 || !strings.Contains(r.stdout, "new key k2: 3 secrets re-encrypted, retired k1") {
		t.Fatalf("secret rotate-key = %+v", r)
	}
	r = kanga(t, "", "secret", "create", "db", "--from-literal", "hunter2")
	if r.code == 0 || strings.Contains(r.stderr, "hunter2") {
		t.Fatalf("secret create with a bad literal = %+v: must fail without echoing it", r)
	}
	r = kanga(t, "", "config", "create", "app", "--from-literal", "app.conf=x=1\n")
	if route, _ := a.last(); r.code != 0 || route != "POST /v1/configs" {
		t.Fatalf("config create = %+v (asked %s)", r, route)
	}
}

func TestRunObjectFlags(t *testing.T) {
	cmd, f := runCommandWithFlags(&options{})
	args := []string{"--secret", "db:/etc/db", "--config-mount", "app:/etc/app", "--env-from-secret", "db", "--env-from-config", "app", "busybox"}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	got, err := buildRunRequest(f, cmd.Flags().Changed, cmd.Flags().Args(), strings.NewReader(""), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	want := api.InstanceSpec{
		Containers: []api.ContainerSpec{{Name: "busybox", Image: "busybox",
			VolumeMounts: []api.VolumeMount{{Name: "secret-0", MountPath: "/etc/db", ReadOnly: true}, {Name: "config-0", MountPath: "/etc/app", ReadOnly: true}},
			EnvFrom:      []api.EnvFromSource{{ConfigMapRef: &api.ObjectRef{Name: "app"}}, {SecretRef: &api.ObjectRef{Name: "db"}}},
		}},
		Volumes: []api.Volume{{Name: "secret-0", Secret: &api.ObjectVolumeSource{Name: "db"}}, {Name: "config-0", Config: &api.ObjectVolumeSource{Name: "app"}}},
	}
	if !reflect.DeepEqual(got.Spec, want) {
		t.Errorf("spec\n got %+v\nwant %+v", got.Spec, want)
	}
	for _, bad := range [][]string{{"--secret", "db", "busybox"}, {"--config-mount", "app:etc", "busybox"}, {"--secret", ":/x", "busybox"}} {
		cmd, f := runCommandWithFlags(&options{})
		if err := cmd.ParseFlags(bad); err != nil {
			t.Fatal(err)
		}
		_, err := buildRunRequest(f, cmd.Flags().Changed, cmd.Flags().Args(), strings.NewReader(""), func(string) (string, bool) { return "", false })
		if err == nil || !strings.Contains(err.Error(), "NAME:/DIR") {
			t.Errorf("%v: err = %v, want NAME:/DIR", bad, err)
		}
	}
}
