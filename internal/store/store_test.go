package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/store/storetest"
	"github.com/kanga-run/kanga/internal/tenant"
)

func open(t *testing.T, cfg store.Config) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestEmbedded(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.Store {
		return open(t, store.Config{DataDir: t.TempDir()})
	})
}

// TestExternal runs the suite through the external-cluster path: one
// embedded server plays the cluster, every subtest connects to it by
// endpoint, as kanga server does with Config.Endpoints.
func TestExternal(t *testing.T) {
	dir := t.TempDir()
	open(t, store.Config{DataDir: dir})
	storetest.Run(t, func(t *testing.T) *store.Store {
		return open(t, store.Config{Endpoints: []string{"unix://" + filepath.Join(dir, "etcd.sock")}})
	})
}

// TestEmbeddedTCPFallback uses a data directory whose socket path would be
// too long for a unix socket, so the server listens on 127.0.0.1.
func TestEmbeddedTCPFallback(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	s := open(t, store.Config{DataDir: dir})
	ctx := tenant.WithName(t.Context(), tenant.Default)
	if err := s.CreateInstance(ctx, &api.Instance{Name: "web", Tenant: tenant.Default}); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
}

func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	ctx := tenant.WithName(t.Context(), "acme")

	s, err := store.Open(t.Context(), store.Config{DataDir: dir})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.CreateInstance(ctx, &api.Instance{Name: "web", Tenant: "acme", UID: "u1"}); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	if err := s.PutToken(ctx, "secret-token", "acme"); err != nil {
		t.Fatalf("PutToken: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, store.Config{DataDir: dir})
	got, err := s.GetInstance(ctx, "web")
	if err != nil || got.UID != "u1" {
		t.Fatalf("GetInstance after restart = %+v, %v; want UID u1", got, err)
	}
	if tn, err := s.LookupToken(ctx, "secret-token"); err != nil || tn != "acme" {
		t.Fatalf("LookupToken after restart = %q, %v; want acme", tn, err)
	}
}

// TestTwoEmbeddedStores runs two embedded servers side by side, as two
// kanga processes on one machine would: they must neither collide on a
// listener nor share data.
func TestTwoEmbeddedStores(t *testing.T) {
	ctx := tenant.WithName(t.Context(), tenant.Default)
	s1 := open(t, store.Config{DataDir: t.TempDir()})
	s2 := open(t, store.Config{DataDir: t.TempDir()})
	for i, s := range []*store.Store{s1, s2} {
		uid := []string{"one", "two"}[i]
		if err := s.CreateInstance(ctx, &api.Instance{Name: "web", Tenant: tenant.Default, UID: uid}); err != nil {
			t.Fatalf("store %d: CreateInstance: %v", i+1, err)
		}
	}
	for i, s := range []*store.Store{s1, s2} {
		want := []string{"one", "two"}[i]
		got, err := s.GetInstance(ctx, "web")
		if err != nil || got.UID != want {
			t.Fatalf("store %d: GetInstance = %+v, %v; want UID %s", i+1, got, err, want)
		}
	}
}

func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	open(t, store.Config{DataDir: dir})
	_, err := store.Open(t.Context(), store.Config{DataDir: dir})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("second Open on the same data directory: error = %v, want failed precondition", err)
	}
}

func TestOpenNeedsDataDirOrEndpoints(t *testing.T) {
	_, err := store.Open(t.Context(), store.Config{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Open(empty config): error = %v, want invalid argument", err)
	}
}
