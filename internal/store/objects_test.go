package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/secretkeys"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// rawEtcd is a plain etcd client on a store's embedded server: what an
// etcd dump or backup sees.
func rawEtcd(t *testing.T, dataDir string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(dataDir, "etcd.sock")}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func tenantCtx(t *testing.T, s *store.Store, name string) context.Context {
	t.Helper()
	if err := s.EnsureTenant(t.Context(), &api.Tenant{Name: name}); err != nil {
		t.Fatal(err)
	}
	return tenant.WithName(t.Context(), name)
}

const marker = "PLAINTEXT-MARKER-7f3a"

func TestSecretsEncryptedAtRest(t *testing.T) {
	dir := t.TempDir()
	s := open(t, store.Config{DataDir: dir})
	ctx := tenantCtx(t, s, "acme")
	if _, err := s.CreateSecret(ctx, "db", map[string][]byte{"password": []byte(marker)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateConfig(ctx, "app", map[string][]byte{"app.conf": []byte(marker)}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, secretkeys.FileName))
	if err != nil {
		t.Fatalf("key file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	raw := rawEtcd(t, dir)
	resp, err := raw.Get(t.Context(), "/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var secretSeen, configSeen bool
	for _, kv := range resp.Kvs {
		has := bytes.Contains(kv.Value, []byte(marker))
		switch string(kv.Key) {
		case "/kanga/secrets/acme/db":
			secretSeen = true
			if has {
				t.Errorf("secret record holds the plaintext: %s", kv.Value)
			}
		case "/kanga/configs/acme/app":
			configSeen = true
			if !has {
				t.Errorf("config record lacks the plaintext (the control): %s", kv.Value)
			}
		default:
			if has {
				t.Errorf("key %s holds the plaintext", kv.Key)
			}
		}
	}
	if !secretSeen || !configSeen {
		t.Fatalf("raw etcd: secret seen %v, config seen %v", secretSeen, configSeen)
	}
	got, err := s.GetSecret(ctx, "db", true)
	if err != nil || string(got.Data["password"]) != marker {
		t.Fatalf("GetSecret(reveal) = %+v, %v", got, err)
	}
	got, err = s.GetSecret(ctx, "db", false)
	if err != nil || got.Data != nil || len(got.Keys) != 1 || got.Keys[0] != (api.ObjectKey{Name: "password", Size: len(marker)}) {
		t.Fatalf("GetSecret = %+v, %v; want keys and sizes only", got, err)
	}
}

func TestObjectsCRUDAndIsolation(t *testing.T) {
	s := open(t, store.Config{DataDir: t.TempDir()})
	a := tenantCtx(t, s, "a")
	b := tenantCtx(t, s, "b")
	if _, err := s.CreateSecret(a, "db", map[string][]byte{"pw": []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSecret(a, "db", nil); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second create = %v, want AlreadyExists", err)
	}
	// Another tenant neither sees nor touches it, and may use the name.
	if _, err := s.GetSecret(b, "db", true); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("other tenant's GetSecret = %v, want NotFound", err)
	}
	if _, err := s.UpdateSecret(b, "db", nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("other tenant's UpdateSecret = %v, want NotFound", err)
	}
	if err := s.DeleteSecret(b, "db"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("other tenant's DeleteSecret = %v, want NotFound", err)
	}
	if list, err := s.ListSecrets(b); err != nil || len(list) != 0 {
		t.Errorf("other tenant's ListSecrets = %v, %v", list, err)
	}
	if _, err := s.CreateSecret(b, "db", map[string][]byte{"pw": []byte("2")}); err != nil {
		t.Fatalf("same name in another tenant: %v", err)
	}
	if got, _ := s.GetSecret(a, "db", true); string(got.Data["pw"]) != "1" {
		t.Errorf("tenant a's secret = %q after b's create", got.Data["pw"])
	}
	// Update replaces the data as a whole.
	up, err := s.UpdateSecret(a, "db", map[string][]byte{"user": []byte("u"), "token": []byte("tt")})
	if err != nil {
		t.Fatal(err)
	}
	if len(up.Keys) != 2 || up.Keys[0].Name != "token" || up.Keys[1] != (api.ObjectKey{Name: "user", Size: 1}) || up.Data != nil {
		t.Errorf("UpdateSecret = %+v", up)
	}
	// Empty data is allowed, as in Kubernetes.
	if _, err := s.CreateConfig(a, "empty", nil); err != nil {
		t.Fatal(err)
	}
	bin := []byte{0xff, 0x00, 0xfe}
	if _, err := s.CreateConfig(a, "files", map[string][]byte{"a.conf": []byte("x=1\n"), "blob": bin}); err != nil {
		t.Fatal(err)
	}
	cfg, err := s.GetConfig(a, "files")
	if err != nil || string(cfg.Data["a.conf"]) != "x=1\n" || !bytes.Equal(cfg.Data["blob"], bin) {
		t.Fatalf("GetConfig = %+v, %v", cfg, err)
	}
	list, err := s.ListConfigs(a)
	if err != nil || len(list) != 2 || list[0].Name != "empty" || list[1].Data != nil || len(list[1].Keys) != 2 {
		t.Fatalf("ListConfigs = %+v, %v", list, err)
	}
	if _, err := s.GetConfig(b, "files"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("other tenant's GetConfig = %v, want NotFound", err)
	}
	if err := s.DeleteConfig(a, "files"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetConfig(a, "files"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetConfig after delete = %v, want NotFound", err)
	}
	// No tenant in the context is never "all tenants".
	if _, err := s.ListSecrets(t.Context()); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("ListSecrets without a tenant = %v", err)
	}
	if _, err := s.CreateSecret(tenant.WithName(t.Context(), "ghost"), "x", nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("CreateSecret in a tenant without a record = %v, want NotFound", err)
	}
	// Deleting the tenant takes its objects with it.
	if err := s.DeleteTenant(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	a = tenantCtx(t, s, "a")
	if list, err := s.ListSecrets(a); err != nil || len(list) != 0 {
		t.Errorf("secrets of a re-created tenant: %v, %v", list, err)
	}
	if list, err := s.ListConfigs(a); err != nil || len(list) != 0 {
		t.Errorf("configs of a re-created tenant: %v, %v", list, err)
	}
}

func TestRotateSecretKey(t *testing.T) {
	dir := t.TempDir()
	s := open(t, store.Config{DataDir: dir})
	a := tenantCtx(t, s, "a")
	b := tenantCtx(t, s, "b")
	for i, ctx := range []context.Context{a, b} {
		for _, n := range []string{"one", "two"} {
			if _, err := s.CreateSecret(ctx, n, map[string][]byte{"v": []byte(n + string(rune('0'+i)))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := keyIDs(t, dir)
	rot, err := s.RotateSecretKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rot.Reencrypted != 4 || len(rot.Retired) != 1 || rot.Retired[0] != before[0] || rot.KeyID == before[0] {
		t.Errorf("rotation = %+v (key before: %v)", rot, before)
	}
	if after := keyIDs(t, dir); len(after) != 1 || after[0] != rot.KeyID {
		t.Errorf("key file after rotation holds %v, want only %s", after, rot.KeyID)
	}
	resp, err := rawEtcd(t, dir).Get(t.Context(), "/kanga/secrets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		var rec struct {
			KeyID string `json:"keyId"`
		}
		if err := json.Unmarshal(kv.Value, &rec); err != nil || rec.KeyID != rot.KeyID {
			t.Errorf("%s: key %q, %v; want %s", kv.Key, rec.KeyID, err, rot.KeyID)
		}
	}
	// A second rotation moves every secret on to its own new key and
	// retires the first rotation's.
	again, err := s.RotateSecretKey(t.Context())
	if err != nil || again.Reencrypted != 4 || len(again.Retired) != 1 || again.Retired[0] != rot.KeyID {
		t.Errorf("second rotation = %+v, %v", again, err)
	}
	// The values survive, in this store and in one that loads the key
	// file afresh.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, store.Config{DataDir: dir})
	for i, ctx := range []context.Context{tenant.WithName(t.Context(), "a"), tenant.WithName(t.Context(), "b")} {
		for _, n := range []string{"one", "two"} {
			got, err := s2.GetSecret(ctx, n, true)
			if want := n + string(rune('0'+i)); err != nil || string(got.Data["v"]) != want {
				t.Errorf("after rotation and reopen: %s = %q, %v; want %q", n, got.Data["v"], err, want)
			}
		}
	}
}

// A rotation cut short leaves the old key in the file, so the secrets it
// did not reach still open; the next rotation finishes.
func TestRotateSecretKeyInterrupted(t *testing.T) {
	dir := t.TempDir()
	s := open(t, store.Config{DataDir: dir})
	ctx := tenantCtx(t, s, "a")
	if _, err := s.CreateSecret(ctx, "db", map[string][]byte{"v": []byte("x")}); err != nil {
		t.Fatal(err)
	}
	// Play the first half of a rotation: a new active key in the file,
	// the secret still sealed with the old one.
	ring, err := secretkeys.Load(filepath.Join(dir, secretkeys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ring.Rotate(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, store.Config{DataDir: dir})
	if got, err := s2.GetSecret(ctx, "db", true); err != nil || string(got.Data["v"]) != "x" {
		t.Fatalf("secret under the old key after a cut-short rotation: %+v, %v", got, err)
	}
	rot, err := s2.RotateSecretKey(t.Context())
	if err != nil || rot.Reencrypted != 1 || len(rot.Retired) != 2 {
		t.Errorf("finishing rotation = %+v, %v; want 1 re-encrypted, 2 keys retired", rot, err)
	}
}

func TestSecretsWithoutKeyFile(t *testing.T) {
	dir := t.TempDir()
	open(t, store.Config{DataDir: dir})
	ext := open(t, store.Config{Endpoints: []string{"unix://" + filepath.Join(dir, "etcd.sock")}})
	ctx := tenantCtx(t, ext, "a")
	if _, err := ext.CreateSecret(ctx, "db", nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("CreateSecret without a key file = %v, want FailedPrecondition", err)
	}
	// Configs need no key.
	if _, err := ext.CreateConfig(ctx, "c", nil); err != nil {
		t.Errorf("CreateConfig without a key file: %v", err)
	}
}

func keyIDs(t *testing.T, dir string) []string {
	t.Helper()
	r, err := secretkeys.Load(filepath.Join(dir, secretkeys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return r.IDs()
}
