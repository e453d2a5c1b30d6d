package store_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
)

// An encrypted volume's key is sealed in etcd, opens only for the
// volume's own host, and survives a rotation of the secrets key.
func TestVolumeKeySealedAndReleasedToItsHost(t *testing.T) {
	dir := t.TempDir()
	s := open(t, store.Config{DataDir: dir})
	ctx := tenantCtx(t, s, "acme")
	key := make([]byte, 64)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(key)
	if _, err := s.CreateVolume(ctx, store.NewVolume{Name: "db", ID: "pv-1", Size: 1 << 30, Encrypted: true, Host: "h1", Key: key}); err != nil {
		t.Fatal(err)
	}
	raw := rawEtcd(t, dir)
	resp, err := raw.Get(t.Context(), "/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, want) || bytes.Contains(kv.Value, want[:16]) {
			t.Errorf("etcd key %s holds the volume key in the clear", kv.Key)
		}
	}
	if _, err := s.ForHost("h2").VolumeKey(t.Context(), "pv-1"); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("key to another host: %v, want PermissionDenied", err)
	}
	got, err := s.ForHost("h1").VolumeKey(t.Context(), "pv-1")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("key to its host: %v, equal %v", err, bytes.Equal(got, want))
	}
	if _, err := s.RotateSecretKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err = s.ForHost("h1").VolumeKey(t.Context(), "pv-1")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("key after a rotation: %v, equal %v", err, bytes.Equal(got, want))
	}
	if _, err := s.ForHost("h1").VolumeKey(t.Context(), "pv-none"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown volume: %v, want NotFound", err)
	}
}

// One holder at a time: a claim holds while its instance exists, and
// ends with it.
func TestVolumeClaims(t *testing.T) {
	s := open(t, store.Config{DataDir: t.TempDir()})
	ctx := tenantCtx(t, s, "acme")
	other := tenantCtx(t, s, "other")
	if _, err := s.CreateVolume(ctx, store.NewVolume{Name: "data", ID: "pv-2", Size: 1 << 30, Host: "h1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateVolume(ctx, store.NewVolume{Name: "data", ID: "pv-3", Size: 1 << 30, Host: "h1"}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate: %v, want AlreadyExists", err)
	}
	if _, err := s.GetVolume(other, "data"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("another tenant's volume: %v, want NotFound", err)
	}
	// Not claimable while Creating.
	if _, err := s.ClaimVolume(ctx, "data", "a", "uid-a"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("claim of a volume being made: %v", err)
	}
	if err := s.SetVolumePhase(ctx, "data", api.VolumeAvailable, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimVolume(ctx, "data", "a", "uid-a"); err != nil {
		t.Fatal(err)
	}
	inst := &api.Instance{Name: "a", Tenant: "acme", UID: "uid-a", Status: api.InstanceStatus{Phase: api.PhasePending},
		PersistentVolumes: []api.BoundVolume{{Name: "data", ID: "pv-2", Host: "h1"}}}
	if err := s.CreateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if err := s.ConfirmVolumeClaim(ctx, "data", "uid-a"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetVolume(ctx, "data"); err != nil || v.Status.Holder != "a" || v.Status.Phase != api.VolumeInUse {
		t.Fatalf("held volume: %+v %v", v, err)
	}
	if _, err := s.ClaimVolume(ctx, "data", "b", "uid-b"); !errors.Is(err, errdefs.ErrConflict) || !bytes.Contains([]byte(err.Error()), []byte(`"a"`)) {
		t.Fatalf("second claim: %v, want a conflict naming a", err)
	}
	// Re-created under a new UID (its host was lost), it still holds it.
	if _, err := s.UpdateInstance(ctx, "a", func(in *api.Instance) error { in.UID = "uid-a2"; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimVolume(ctx, "data", "b", "uid-b"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("claim over a re-created holder: %v, want a conflict", err)
	}
	if _, err := s.BeginDeleteVolume(ctx, "data"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("delete of a held volume: %v, want a conflict", err)
	}
	if err := s.DeleteInstance(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetVolume(ctx, "data"); err != nil || v.Status.Holder != "" || v.Status.Phase != api.VolumeAvailable {
		t.Fatalf("volume of a removed instance: %+v %v", v, err)
	}
	// A pending claim holds until released.
	if _, err := s.ClaimVolume(ctx, "data", "b", "uid-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimVolume(ctx, "data", "c", "uid-c"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("claim over a pending one: %v, want a conflict", err)
	}
	if err := s.ReleaseVolumeClaim(ctx, "data", "uid-b"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.BeginDeleteVolume(ctx, "data"); err != nil || v.Status.Phase != api.VolumeDeleting {
		t.Fatalf("delete of a free volume: %+v %v", v, err)
	}
	if err := s.DeleteVolume(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetVolume(ctx, "data"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}
