package client_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/server"
	"github.com/kanga-run/kanga/internal/tenant"
)

// fakeObjects keeps secrets and configs in memory, per tenant, for the
// contract tests: the real store (encryption, rotation) is tested in
// internal/store, and the handlers over it in internal/server.
type fakeObjects struct {
	mu      sync.Mutex
	objects map[string]map[string][]byte // "kind/tenant/name"
	rotated int
}

func (f *fakeObjects) key(ctx context.Context, kind, name string) (string, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return "", err
	}
	return kind + "/" + t + "/" + name, nil
}

func (f *fakeObjects) put(ctx context.Context, kind, name string, data map[string][]byte, create bool) ([]api.ObjectKey, error) {
	k, err := f.key(ctx, kind, name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.objects == nil {
		f.objects = map[string]map[string][]byte{}
	}
	_, exists := f.objects[k]
	if create && exists {
		return nil, fmt.Errorf("%s %q already exists: %w", kind, name, errdefs.ErrAlreadyExists)
	}
	if !create && !exists {
		return nil, fmt.Errorf("%s %q not found: %w", kind, name, errdefs.ErrNotFound)
	}
	f.objects[k] = maps.Clone(data)
	return keysOf(data), nil
}

func (f *fakeObjects) get(ctx context.Context, kind, name string) (map[string][]byte, error) {
	k, err := f.key(ctx, kind, name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.objects[k]
	if !ok {
		return nil, fmt.Errorf("%s %q not found: %w", kind, name, errdefs.ErrNotFound)
	}
	return maps.Clone(d), nil
}

func (f *fakeObjects) list(ctx context.Context, kind string) ([]string, map[string][]api.ObjectKey, error) {
	prefix, err := f.key(ctx, kind, "")
	if err != nil {
		return nil, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := map[string][]api.ObjectKey{}
	var names []string
	for k, d := range f.objects {
		if n, ok := strings.CutPrefix(k, prefix); ok {
			names = append(names, n)
			keys[n] = keysOf(d)
		}
	}
	slices.Sort(names)
	return names, keys, nil
}

func (f *fakeObjects) del(ctx context.Context, kind, name string) error {
	k, err := f.key(ctx, kind, name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.objects[k]; !ok {
		return fmt.Errorf("%s %q not found: %w", kind, name, errdefs.ErrNotFound)
	}
	delete(f.objects, k)
	return nil
}

func keysOf(d map[string][]byte) []api.ObjectKey {
	out := []api.ObjectKey{}
	for _, k := range slices.Sorted(maps.Keys(d)) {
		out = append(out, api.ObjectKey{Name: k, Size: len(d[k])})
	}
	return out
}

func (s *fakeStore) CreateSecret(ctx context.Context, name string, data map[string][]byte) (api.Secret, error) {
	keys, err := s.objects.put(ctx, "secret", name, data, true)
	return api.Secret{Name: name, Tenant: "acme", Keys: keys}, err
}

func (s *fakeStore) UpdateSecret(ctx context.Context, name string, data map[string][]byte) (api.Secret, error) {
	keys, err := s.objects.put(ctx, "secret", name, data, false)
	return api.Secret{Name: name, Tenant: "acme", Keys: keys}, err
}

func (s *fakeStore) GetSecret(ctx context.Context, name string, reveal bool) (api.Secret, error) {
	d, err := s.objects.get(ctx, "secret", name)
	if err != nil {
		return api.Secret{}, err
	}
	out := api.Secret{Name: name, Tenant: "acme", Keys: keysOf(d)}
	if reveal {
		out.Data = d
	}
	return out, nil
}

func (s *fakeStore) ListSecrets(ctx context.Context) ([]api.Secret, error) {
	names, keys, err := s.objects.list(ctx, "secret")
	out := []api.Secret{}
	for _, n := range names {
		out = append(out, api.Secret{Name: n, Tenant: "acme", Keys: keys[n]})
	}
	return out, err
}

func (s *fakeStore) DeleteSecret(ctx context.Context, name string) error {
	return s.objects.del(ctx, "secret", name)
}

func (s *fakeStore) RotateSecretKey(ctx context.Context) (api.SecretKeyRotation, error) {
	s.objects.mu.Lock()
	defer s.objects.mu.Unlock()
	s.objects.rotated++
	return api.SecretKeyRotation{KeyID: fmt.Sprintf("k%d", s.objects.rotated), Retired: []string{}}, nil
}

func (s *fakeStore) CreateConfig(ctx context.Context, name string, data map[string][]byte) (api.Config, error) {
	keys, err := s.objects.put(ctx, "config", name, data, true)
	return api.Config{Name: name, Tenant: "acme", Keys: keys}, err
}

func (s *fakeStore) UpdateConfig(ctx context.Context, name string, data map[string][]byte) (api.Config, error) {
	keys, err := s.objects.put(ctx, "config", name, data, false)
	return api.Config{Name: name, Tenant: "acme", Keys: keys}, err
}

func (s *fakeStore) GetConfig(ctx context.Context, name string) (api.Config, error) {
	d, err := s.objects.get(ctx, "config", name)
	return api.Config{Name: name, Tenant: "acme", Keys: keysOf(d), Data: d}, err
}

func (s *fakeStore) ListConfigs(ctx context.Context) ([]api.Config, error) {
	names, keys, err := s.objects.list(ctx, "config")
	out := []api.Config{}
	for _, n := range names {
		out = append(out, api.Config{Name: n, Tenant: "acme", Keys: keys[n]})
	}
	return out, err
}

func (s *fakeStore) DeleteConfig(ctx context.Context, name string) error {
	return s.objects.del(ctx, "config", name)
}

func TestObjectsAgainstServer(t *testing.T) {
	srv := httptest.NewServer(server.New(newFakeStore(), server.Options{Version: "test", Hosts: fakeDirectory{}}).Handler())
	defer srv.Close()
	c, _ := client.New(srv.URL, "good")
	ctx := context.Background()

	sec, err := c.CreateSecret(ctx, "db", map[string][]byte{"password": []byte("hunter2"), "user": []byte("app")})
	if err != nil || sec.Name != "db" || len(sec.Keys) != 2 || sec.Data != nil {
		t.Fatalf("CreateSecret = %+v, %v", sec, err)
	}
	if _, err := c.CreateSecret(ctx, "db", nil); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second CreateSecret: %v", err)
	}
	if _, err := c.CreateSecret(ctx, "db2", map[string][]byte{"a/b": nil}); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "data key") {
		t.Errorf("CreateSecret with a bad key: %v", err)
	}
	if got, err := c.GetSecret(ctx, "db"); err != nil || got.Data != nil || got.Keys[0] != (api.ObjectKey{Name: "password", Size: 7}) {
		t.Errorf("GetSecret = %+v, %v", got, err)
	}
	if got, err := c.RevealSecret(ctx, "db"); err != nil || string(got.Data["password"]) != "hunter2" {
		t.Errorf("RevealSecret = %+v, %v", got, err)
	}
	if got, err := c.UpdateSecret(ctx, "db", map[string][]byte{"token": []byte("t")}); err != nil || len(got.Keys) != 1 {
		t.Errorf("UpdateSecret = %+v, %v", got, err)
	}
	if list, err := c.ListSecrets(ctx); err != nil || len(list) != 1 || list[0].Name != "db" {
		t.Errorf("ListSecrets = %+v, %v", list, err)
	}
	if err := c.DeleteSecret(ctx, "db"); err != nil {
		t.Errorf("DeleteSecret: %v", err)
	}
	if _, err := c.GetSecret(ctx, "db"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetSecret after delete: %v", err)
	}
	if _, err := c.RotateSecretKey(ctx); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("RotateSecretKey as a tenant: %v", err)
	}
	admin, _ := client.New(srv.URL, "admin")
	if rot, err := admin.RotateSecretKey(ctx); err != nil || rot.KeyID == "" {
		t.Errorf("RotateSecretKey = %+v, %v", rot, err)
	}

	cfg, err := c.CreateConfig(ctx, "app", map[string][]byte{"app.conf": []byte("x=1")})
	if err != nil || len(cfg.Keys) != 1 {
		t.Fatalf("CreateConfig = %+v, %v", cfg, err)
	}
	if got, err := c.GetConfig(ctx, "app"); err != nil || string(got.Data["app.conf"]) != "x=1" {
		t.Errorf("GetConfig = %+v, %v", got, err)
	}
	if _, err := c.UpdateConfig(ctx, "app", nil); err != nil {
		t.Errorf("UpdateConfig: %v", err)
	}
	if list, err := c.ListConfigs(ctx); err != nil || len(list) != 1 || len(list[0].Keys) != 0 {
		t.Errorf("ListConfigs = %+v, %v", list, err)
	}
	if err := c.DeleteConfig(ctx, "app"); err != nil {
		t.Errorf("DeleteConfig: %v", err)
	}
	if err := c.DeleteConfig(ctx, "app"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second DeleteConfig: %v", err)
	}
}
