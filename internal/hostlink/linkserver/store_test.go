package linkserver

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/hostlink/agentside"
	"github.com/kanga-run/kanga/internal/hostlink/join"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// realCluster is the link's server on a real (embedded etcd) store.
func realCluster(t *testing.T) (*store.Store, *cluster) {
	t.Helper()
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	certPEM, keyPEM, _ := pki.NewCA("test")
	ca, _ := pki.LoadCA(certPEM, keyPEM)
	s := &Server{Store: st, CA: ca, Token: pki.NewToken(ca), LeaseTTL: 2 * time.Second}
	serving, _ := ca.ServingCert("server", pki.Servers, []string{"127.0.0.1"})
	ts := httptest.NewUnstartedServer(s.Handler())
	ts.TLS = s.TLSConfig(serving)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return st, &cluster{ca: ca, token: s.Token, url: ts.URL}
}

func place(t *testing.T, st *store.Store, name, host string) {
	t.Helper()
	ctx := tenant.WithName(t.Context(), "default")
	in := &api.Instance{Name: name, Tenant: "default", UID: name + "-uid", Status: api.InstanceStatus{Phase: api.PhasePending, Host: host}}
	if err := st.CreateInstance(ctx, in); err != nil {
		t.Fatal(err)
	}
}

func move(t *testing.T, st *store.Store, name, host string) {
	t.Helper()
	ctx := tenant.WithName(t.Context(), "default")
	if _, err := st.UpdateInstance(ctx, name, func(in *api.Instance) error { in.Status.Host = host; return nil }); err != nil {
		t.Fatal(err)
	}
}

// next returns the next event on ch for an instance, skipping none.
func next(t *testing.T, ch <-chan hostcontract.InstanceEvent) hostcontract.InstanceEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return hostcontract.InstanceEvent{}
}

func TestWatchForwardsOwnAndMovedAway(t *testing.T) {
	st, c := realCluster(t)
	place(t, st, "mine", "h1")
	place(t, st, "moving", "h1")
	place(t, st, "other", "h2")
	l := agentside.NewLink(c.url, "h1", c.join(t, "h1"), nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	insts, rev, err := l.ListAllInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 2 {
		t.Fatalf("h1 lists %d instances, want its 2", len(insts))
	}
	ch := l.WatchAllInstances(ctx, rev)

	// Another host's instance changing is not h1's business; h1's own is.
	move(t, st, "other", "h3")
	move(t, st, "moving", "h2") // away from h1: h1 must hear of it
	place(t, st, "new", "h1")
	ev := next(t, ch)
	if ev.Name != "moving" || ev.Instance == nil || ev.Instance.Status.Host != "h2" {
		t.Fatalf("first event %s host %v, want moving's move to h2", ev.Name, ev.Instance)
	}
	if ev = next(t, ch); ev.Name != "new" {
		t.Fatalf("second event %s, want new", ev.Name)
	}
	// After the move away, "moving" is no longer h1's: its next change is
	// not forwarded, while a deletion of h1's own is.
	move(t, st, "moving", "h3")
	if err := st.DeleteInstance(tenant.WithName(t.Context(), "default"), "mine"); err != nil {
		t.Fatal(err)
	}
	if ev = next(t, ch); ev.Name != "mine" || !ev.Deleted {
		t.Fatalf("third event %s deleted=%v, want mine's deletion", ev.Name, ev.Deleted)
	}
}

func TestStatusWrites(t *testing.T) {
	st, c := realCluster(t)
	place(t, st, "a", "h1")
	place(t, st, "b", "h2")
	l := agentside.NewLink(c.url, "h1", c.join(t, "h1"), nil)
	ctx := tenant.WithName(t.Context(), "default")

	// A status write lands; the agent cannot move the instance.
	got, err := l.UpdateInstance(ctx, "a", func(in *api.Instance) error {
		in.Status.Phase = api.PhaseRunning
		in.Status.Host = "h9"
		in.Spec.Runtime = "ignored"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := st.GetInstance(ctx, "a")
	if got.Status.Phase != api.PhaseRunning || stored.Status.Phase != api.PhaseRunning || stored.Status.Host != "h1" || stored.Spec.Runtime != "" {
		t.Fatalf("stored %+v / %+v, want Running on h1 with the spec untouched", stored.Status, stored.Spec)
	}

	// A concurrent change between read and write: the fn runs again on
	// the newer version instead of overwriting it.
	runs := 0
	_, err = l.UpdateInstance(ctx, "a", func(in *api.Instance) error {
		runs++
		if runs == 1 {
			if _, err := st.UpdateInstance(ctx, "a", func(in *api.Instance) error { in.StopRequested = true; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		in.Status.Message = "seen stop=" + map[bool]string{true: "yes", false: "no"}[in.StopRequested]
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stored, _ = st.GetInstance(ctx, "a")
	if runs != 2 || stored.Status.Message != "seen stop=yes" || !stored.StopRequested {
		t.Fatalf("runs=%d message=%q stop=%v, want 2 runs, the second seeing the stop", runs, stored.Status.Message, stored.StopRequested)
	}

	// Another host's instance: not found through h1's link, unchanged.
	_, err = l.UpdateInstance(ctx, "b", func(in *api.Instance) error { in.Status.Phase = api.PhaseFailed; return nil })
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("writing h2's instance from h1: %v, want NotFound", err)
	}
	if b, _ := st.GetInstance(ctx, "b"); b.Status.Phase != api.PhasePending {
		t.Fatalf("h2's instance became %s", b.Status.Phase)
	}

	// Deletes only after deletion was requested.
	if err := l.DeleteInstance(ctx, "a"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("deleting a running instance: %v, want FailedPrecondition", err)
	}
	if _, err := st.UpdateInstance(ctx, "a", func(in *api.Instance) error { in.DeletionRequested = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteInstance(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetInstance(ctx, "a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("after delete: %v, want NotFound", err)
	}

	// An autoRemove instance (docker run --rm) is the host's to delete
	// once it ended, and not before.
	auto := &api.Instance{Name: "auto", Tenant: "default", UID: "u-auto", Spec: api.InstanceSpec{AutoRemove: true, Containers: []api.ContainerSpec{{Name: "c", Image: "busybox"}}},
		Status: api.InstanceStatus{Phase: api.PhaseRunning, Host: "h1"}}
	if err := st.CreateInstance(ctx, auto); err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteInstance(ctx, "auto"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("deleting a running autoRemove instance: %v, want FailedPrecondition", err)
	}
	if _, err := l.UpdateInstance(ctx, "auto", func(in *api.Instance) error { in.Status.Phase = api.PhaseSucceeded; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteInstance(ctx, "auto"); err != nil {
		t.Fatalf("deleting an ended autoRemove instance: %v", err)
	}
}

func TestHeartbeatHoldsTheLease(t *testing.T) {
	st, c := realCluster(t)
	l := agentside.NewLink(c.url, "h1", c.join(t, "h1"), nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx, func() api.Host { return api.Host{Name: "h1", Capacity: api.HostCapacity{CPUs: 2}} })
	}()
	phase := func() string {
		h, err := st.GetHost(t.Context(), "h1")
		if err != nil {
			return ""
		}
		return h.Status.Phase
	}
	waitFor(t, "h1 Ready", func() bool { return phase() == api.HostReady })
	cancel()
	<-done
	// The lease is not revoked when the stream ends (a reconnect must not
	// flap the host), it runs out.
	waitFor(t, "h1 NotReady after its lease ran out", func() bool { return phase() == api.HostNotReady })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestLinkMovesToTheNextReplica(t *testing.T) {
	st, c := realCluster(t)
	place(t, st, "a", "h1")
	// A replica that is gone: a listener closed at once.
	dead := httptest.NewUnstartedServer(nil)
	dead.StartTLS()
	deadURL := dead.URL
	dead.Close()

	urls := deadURL + "," + c.url
	creds, err := join.Join(t.Context(), urls, c.token.String(), t.TempDir(), "h1", nil)
	if err != nil {
		t.Fatalf("join through %s: %v", urls, err)
	}
	l := agentside.NewLink(urls, "h1", creds, nil)
	_, _, err = l.ListAllInstances(t.Context())
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("first list (dead replica): %v, want Unavailable", err)
	}
	insts, _, err := l.ListAllInstances(t.Context())
	if err != nil || len(insts) != 1 {
		t.Fatalf("second list (next replica): %d instances, %v; want 1", len(insts), err)
	}
}

// TestInstanceFiles: an agent gets the secret and config files (and the
// env from secrets) of an instance placed on its own host, with the uid it
// runs; for another host's instance, or a stale uid, a 404 whatever the
// tenant, and the value never in the error.
func TestInstanceFiles(t *testing.T) {
	st, c := realCluster(t)
	ctx := tenant.WithName(t.Context(), "default")
	const value = "s3cr3t-value-of-the-test"
	if err := st.EnsureTenant(ctx, &api.Tenant{Name: "default"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSecret(ctx, "db", map[string][]byte{"password": []byte(value)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateConfig(ctx, "app", map[string][]byte{"app.conf": []byte("level=debug\n")}); err != nil {
		t.Fatal(err)
	}
	mode := int32(0o400)
	spec := api.InstanceSpec{
		Containers: []api.ContainerSpec{{Name: "main", Image: "busybox",
			Env: []api.EnvVar{{Name: "PW", ValueFrom: &api.EnvVarSource{SecretKeyRef: &api.KeySelector{Name: "db", Key: "password"}}}}}},
		Volumes: []api.Volume{
			{Name: "s", Secret: &api.ObjectVolumeSource{Name: "db", Items: []api.KeyToPath{{Key: "password", Path: "pw", Mode: &mode}}}},
			{Name: "c", Config: &api.ObjectVolumeSource{Name: "app"}},
		},
	}
	for _, in := range []*api.Instance{
		{Name: "mine", Tenant: "default", UID: "mine-uid", Spec: spec, Status: api.InstanceStatus{Phase: api.PhasePending, Host: "h1"}},
		{Name: "theirs", Tenant: "default", UID: "theirs-uid", Spec: spec, Status: api.InstanceStatus{Phase: api.PhasePending, Host: "h2"}},
	} {
		if err := st.CreateInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	l := agentside.NewLink(c.url, "h1", c.join(t, "h1"), nil)
	got, err := l.InstanceFiles(ctx, "mine", "mine-uid")
	if err != nil {
		t.Fatal(err)
	}
	want := hostcontract.InstanceFiles{
		Volumes: []hostcontract.VolumeFiles{
			{Name: "s", Secret: true, Files: []hostcontract.File{{Path: "pw", Mode: 0o400, Data: []byte(value)}}},
			{Name: "c", Files: []hostcontract.File{{Path: "app.conf", Mode: 0o644, Data: []byte("level=debug\n")}}},
		},
		Env: map[string][]api.EnvVar{"main": {{Name: "PW", Value: value}}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("InstanceFiles = %+v\nwant %+v", got, want)
	}
	for _, tc := range []struct{ tenant, name, uid string }{
		{"default", "theirs", "theirs-uid"}, // placed on h2
		{"default", "mine", "old-uid"},      // not the instance h1 runs
		{"other", "mine", "mine-uid"},       // no such instance in that tenant
	} {
		_, err := l.InstanceFiles(tenant.WithName(t.Context(), tc.tenant), tc.name, tc.uid)
		if !errors.Is(err, errdefs.ErrNotFound) || strings.Contains(fmt.Sprint(err), value) {
			t.Errorf("InstanceFiles(%s/%s, %s) = %v; want NotFound", tc.tenant, tc.name, tc.uid, err)
		}
	}
}
