package client_test

// This file runs the client against the real API handlers of
// internal/server, over a fake store and a fake host, so that the two sides
// of the wire cannot drift apart unnoticed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/server"
	"github.com/kanga-run/kanga/internal/store"
)

// fakeStore keeps instances in memory and plays the host agent: instances
// run as soon as they are stored, stop when asked and vanish when deleted.
type fakeStore struct {
	mu        sync.Mutex
	instances map[string]*api.Instance
	hosts     map[string]*api.Host
	changed   chan struct{} // closed and replaced on every change
	objects   fakeObjects   // secrets and configs (objects_test.go)
}

func newFakeStore() *fakeStore {
	return &fakeStore{
		instances: map[string]*api.Instance{},
		hosts: map[string]*api.Host{"host-1": {Name: "host-1", Capacity: api.HostCapacity{CPUs: 2, MemoryBytes: 4 << 30, Pods: 10},
			Status: api.HostStatus{Phase: api.HostReady}}},
		changed: make(chan struct{}),
	}
}

func (s *fakeStore) ListHosts(ctx context.Context) ([]api.Host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []api.Host
	for _, h := range s.hosts {
		out = append(out, *h)
	}
	return out, nil
}

func (s *fakeStore) GetHost(ctx context.Context, name string) (*api.Host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hosts[name]
	if !ok {
		return nil, fmt.Errorf("host %q not found: %w", name, errdefs.ErrNotFound)
	}
	c := *h
	return &c, nil
}

func (s *fakeStore) UpdateHost(ctx context.Context, name string, fn func(*api.Host) error) (*api.Host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hosts[name]
	if !ok {
		return nil, fmt.Errorf("host %q not found: %w", name, errdefs.ErrNotFound)
	}
	c := *h
	if err := fn(&c); err != nil {
		return nil, err
	}
	s.hosts[name] = &c
	return &c, nil
}

// ListAllInstances: every instance of the fake runs on host-1.
func (s *fakeStore) ListAllInstances(ctx context.Context) ([]api.Instance, int64, error) {
	out, err := s.ListInstances(ctx)
	return out, 1, err
}

func (s *fakeStore) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func notFound(name string) error {
	return fmt.Errorf("instance %q not found: %w", name, errdefs.ErrNotFound)
}

func (s *fakeStore) CreateInstance(ctx context.Context, inst *api.Instance, _ ...store.CreateOption) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.instances[inst.Name]; ok {
		return fmt.Errorf("instance %q already exists: %w", inst.Name, errdefs.ErrAlreadyExists)
	}
	// Placed and started at once, on the one host (fakeHost, host-1).
	c := *inst
	c.Status.Phase = api.PhaseRunning
	c.Status.Host = fakeHost{}.Name()
	c.Status.IP = "10.211.0.2"
	s.instances[c.Name] = &c
	s.notify()
	return nil
}

func (s *fakeStore) GetInstance(ctx context.Context, name string) (*api.Instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.instances[name]
	if !ok {
		return nil, notFound(name)
	}
	c := *inst
	return &c, nil
}

// ListInstanceRecords has no revisions: every read is of the current
// state, and a record's revision is a hash of its JSON, which changes when
// the instance does.
func (s *fakeStore) ListInstanceRecords(ctx context.Context, rev int64) ([]store.InstanceRecord, int64, error) {
	list, err := s.ListInstances(ctx)
	if err != nil {
		return nil, 0, err
	}
	var out []store.InstanceRecord
	for _, inst := range list {
		b, err := json.Marshal(inst)
		if err != nil {
			return nil, 0, err
		}
		h := fnv.New64a()
		_, _ = h.Write(b)
		out = append(out, store.InstanceRecord{Name: inst.Name, ModRevision: int64(h.Sum64() >> 1), Value: b})
	}
	return out, 1, nil
}

func (s *fakeStore) ListInstances(ctx context.Context) ([]api.Instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []api.Instance
	for _, inst := range s.instances {
		out = append(out, *inst)
	}
	return out, nil
}

func (s *fakeStore) UpdateInstance(ctx context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.instances[name]
	if !ok {
		return nil, notFound(name)
	}
	c := *inst
	if err := fn(&c); err != nil {
		return nil, err
	}
	// The "agent" reacts at once.
	if c.StopRequested && !c.Status.Phase.Terminal() {
		code := 143
		c.Status.Phase = api.PhaseFailed
		c.Status.Containers = []api.ContainerStatus{{Name: c.Spec.Containers[0].Name, State: api.ContainerTerminated, ExitCode: &code}}
	}
	if c.DeletionRequested {
		delete(s.instances, name)
	} else {
		s.instances[name] = &c
	}
	s.notify()
	return &c, nil
}

func (s *fakeStore) WaitInstance(ctx context.Context, name string, cond func(*api.Instance) bool) (*api.Instance, error) {
	for {
		s.mu.Lock()
		inst, ok := s.instances[name]
		changed := s.changed
		var c api.Instance
		if ok {
			c = *inst
		}
		s.mu.Unlock()
		if !ok {
			return nil, notFound(name)
		}
		if cond(&c) {
			return &c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// WatchInstance sends the instance after every change until it is gone.
func (s *fakeStore) WatchInstance(ctx context.Context, name string) (<-chan *api.Instance, error) {
	out := make(chan *api.Instance)
	s.mu.Lock()
	changed := s.changed
	s.mu.Unlock()
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			s.mu.Lock()
			inst, ok := s.instances[name]
			changed = s.changed
			var c api.Instance
			if ok {
				c = *inst
			}
			s.mu.Unlock()
			if !ok {
				return
			}
			select {
			case out <- &c:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (s *fakeStore) WaitInstanceGone(ctx context.Context, name string) error {
	for {
		s.mu.Lock()
		_, ok := s.instances[name]
		changed := s.changed
		s.mu.Unlock()
		if !ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

func (s *fakeStore) LookupPrincipal(ctx context.Context, token string) (store.Principal, error) {
	switch token {
	case "good":
		return store.Principal{Tenant: "acme", Scopes: []string{api.ScopeAll}}, nil
	case "admin":
		return store.Principal{Tenant: "acme", Admin: true, Scopes: []string{api.ScopeEverything}}, nil
	}
	return store.Principal{}, fmt.Errorf("unknown token: %w", errdefs.ErrNotFound)
}

// The fake keeps no tokens beyond the two above; the real store's token
// endpoints are tested in internal/server.
func (s *fakeStore) CreateToken(context.Context, string, store.NewTokenInfo) (api.Token, error) {
	return api.Token{}, errdefs.ErrNotImplemented
}

func (s *fakeStore) ListTokens(context.Context, string) ([]api.Token, error) {
	return nil, errdefs.ErrNotImplemented
}

func (s *fakeStore) RevokeToken(context.Context, string, string) (api.Token, error) {
	return api.Token{}, errdefs.ErrNotImplemented
}

func (s *fakeStore) DeleteInstance(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.instances[name]; !ok {
		return notFound(name)
	}
	delete(s.instances, name)
	s.notify()
	return nil
}

// The fake has no tenant records: every tenant is unrestricted.
func (s *fakeStore) CreateTenant(ctx context.Context, t *api.Tenant, token string) error {
	return fmt.Errorf("fake store has no tenants: %w", errdefs.ErrNotImplemented)
}

func (s *fakeStore) GetTenant(ctx context.Context, name string) (*api.Tenant, error) {
	return nil, fmt.Errorf("tenant %q not found: %w", name, errdefs.ErrNotFound)
}

func (s *fakeStore) ListTenants(ctx context.Context) ([]api.Tenant, error) { return nil, nil }

func (s *fakeStore) UpdateTenant(ctx context.Context, name string, fn func(*api.Tenant) error) (*api.Tenant, error) {
	return nil, fmt.Errorf("tenant %q not found: %w", name, errdefs.ErrNotFound)
}

func (s *fakeStore) TenantUsage(ctx context.Context, name string) (api.QuotaAmounts, error) {
	return api.QuotaAmounts{}, nil
}

func (s *fakeStore) DeleteTenant(ctx context.Context, name string) error {
	return fmt.Errorf("tenant %q not found: %w", name, errdefs.ErrNotFound)
}

// The fake host is always connected: nothing is ever left to purge.
func (s *fakeStore) RecordPurge(ctx context.Context, p store.Purge) (store.Purge, error) {
	return p, nil
}
func (s *fakeStore) Purges(ctx context.Context, host string) ([]store.Purge, error) { return nil, nil }
func (s *fakeStore) AckPurge(ctx context.Context, host string, p store.Purge) error { return nil }
func (s *fakeStore) TenantPurgePending(ctx context.Context, name string) ([]string, error) {
	return nil, nil
}

// fakeDirectory is the API's host directory, in place of
// hostclient.Directory: the one fakeHost.
type fakeDirectory struct{}

func (fakeDirectory) Host(name string) (hostcontract.Host, bool) {
	return fakeHost{}, name == fakeHost{}.Name()
}
func (fakeDirectory) All() []hostcontract.Host { return []hostcontract.Host{fakeHost{}} }

// fakeHost knows the image "busybox"; its exec echoes stdin and exits 7.
type fakeHost struct{}

func (fakeHost) Name() string             { return "host-1" }
func (fakeHost) RuntimeClasses() []string { return []string{"runc", "crun"} }
func (fakeHost) Capacity() hostcontract.Capacity {
	return hostcontract.Capacity{CPUs: 2, Memory: 4 << 30}
}

func (fakeHost) ImageConfig(ctx context.Context, ref string) (hostcontract.ImageConfig, error) {
	if ref != "busybox" {
		return hostcontract.ImageConfig{}, fmt.Errorf("image %q is not known: %w", ref, errdefs.ErrNotFound)
	}
	return hostcontract.ImageConfig{Cmd: []string{"sh"}}, nil
}

func (fakeHost) ListImages(ctx context.Context) ([]api.Image, error) {
	return []api.Image{{Name: "busybox:latest", Digest: "sha256:abc"}}, nil
}

func (fakeHost) ImportImage(ctx context.Context, r io.Reader, progress func(api.Progress)) ([]api.Image, error) {
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return nil, err
	}
	progress(api.Progress{Status: "read", Current: n})
	if n == 0 {
		return nil, fmt.Errorf("empty archive: %w", errdefs.ErrInvalidArgument)
	}
	return []api.Image{{Name: "imported:latest", Size: n}}, nil
}

func (fakeHost) PullImage(ctx context.Context, ref string, progress func(api.Progress)) (api.Image, error) {
	return api.Image{Name: ref}, nil
}

func (fakeHost) Logs(ctx context.Context, inst *api.Instance, container string, follow bool, w io.Writer) error {
	_, err := fmt.Fprintf(w, "logs of %s/%s follow=%v\n", inst.Name, container, follow)
	return err
}

func (fakeHost) Exec(ctx context.Context, inst *api.Instance, req hostcontract.ExecRequest) (int, error) {
	if req.Cmd[0] == "missing" {
		return 0, fmt.Errorf("executable %q not found in the container: %w", req.Cmd[0], errdefs.ErrNotFound)
	}
	if req.Stdin != nil {
		if _, err := io.Copy(req.Stdout, req.Stdin); err != nil {
			return 0, err
		}
	}
	fmt.Fprintf(req.Stderr, "%s env=%v tty=%v", strings.Join(req.Cmd, " "), req.Env, req.TTY)
	return 7, nil
}

func TestHostsAgainstServer(t *testing.T) {
	fs := newFakeStore()
	srv := httptest.NewServer(server.New(fs, server.Options{Version: "test", Hosts: fakeDirectory{}}).Handler())
	defer srv.Close()
	ctx := context.Background()
	tenantClient, _ := client.New(srv.URL, "good")
	if _, err := tenantClient.ListHosts(ctx); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("ListHosts as a tenant: %v, want permission denied", err)
	}
	if _, err := tenantClient.CordonHost(ctx, "host-1"); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("CordonHost as a tenant: %v, want permission denied", err)
	}
	c, _ := client.New(srv.URL, "admin")
	hosts, err := c.ListHosts(ctx)
	if err != nil || len(hosts) != 1 || hosts[0].Name != "host-1" || hosts[0].Status.Phase != api.HostReady {
		t.Fatalf("ListHosts = %+v, %v", hosts, err)
	}
	if h, err := c.CordonHost(ctx, "host-1"); err != nil || !h.Cordoned {
		t.Fatalf("CordonHost = %+v, %v", h, err)
	}
	if h, err := c.GetHost(ctx, "host-1"); err != nil || !h.Cordoned {
		t.Fatalf("GetHost after cordon = %+v, %v", h, err)
	}
	if h, err := c.UncordonHost(ctx, "host-1"); err != nil || h.Cordoned {
		t.Fatalf("UncordonHost = %+v, %v", h, err)
	}
	if _, err := c.GetHost(ctx, "ghost"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetHost of a missing host: %v", err)
	}
	rep, err := c.DrainHost(ctx, "host-1")
	if err != nil || rep.Host != "host-1" || len(rep.Moved) != 0 {
		t.Fatalf("DrainHost = %+v, %v", rep, err)
	}
	if h, _ := c.GetHost(ctx, "host-1"); !h.Cordoned {
		t.Fatal("a drained host is not cordoned")
	}
}

func TestAgainstServer(t *testing.T) {
	srv := httptest.NewServer(server.New(newFakeStore(), server.Options{Version: "test", Hosts: fakeDirectory{}}).Handler())
	defer srv.Close()
	c, err := client.New(srv.URL, "good")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	if err := c.Healthz(ctx); err != nil {
		t.Fatalf("Healthz: %v", err)
	}
	v, err := c.Version(ctx)
	if err != nil || v.Tenant != "acme" || v.Version != "test" {
		t.Fatalf("Version = %+v, %v", v, err)
	}
	bad, _ := client.New(srv.URL, "bad")
	if _, err := bad.Version(ctx); !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Errorf("Version with a bad token: %v", err)
	}

	req := api.CreateInstanceRequest{Name: "web", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "busybox", Image: "busybox"}}}}
	inst, err := c.CreateInstance(ctx, req)
	if err != nil || inst.Name != "web" || inst.Tenant != "acme" {
		t.Fatalf("CreateInstance = %+v, %v", inst, err)
	}
	if _, err := c.CreateInstance(ctx, req); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second CreateInstance: %v", err)
	}
	missing := api.CreateInstanceRequest{Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "x", Image: "nope"}}}}
	if _, err := c.CreateInstance(ctx, missing); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `image "nope" is not known`) {
		t.Errorf("CreateInstance of an unknown image: %v", err)
	}
	invalid := api.CreateInstanceRequest{Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "x", Image: "busybox"}}, Resources: api.Resources{Memory: "lots"}}}
	if _, err := c.CreateInstance(ctx, invalid); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("CreateInstance with a bad quantity: %v", err)
	}

	if inst, err = c.WaitInstance(ctx, "web", client.WaitRunning); err != nil || inst.Status.Phase != api.PhaseRunning {
		t.Fatalf("WaitInstance(running) = %+v, %v", inst.Status, err)
	}
	list, err := c.ListInstances(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListInstances = %+v, %v", list, err)
	}
	if _, err := c.GetInstance(ctx, "ghost"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetInstance of a missing instance: %v", err)
	}

	rc, err := c.Logs(ctx, "web", client.LogsOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "logs of web/busybox follow=true\n" {
		t.Errorf("Logs = %q", b)
	}
	if _, err := c.Logs(ctx, "web", client.LogsOptions{Container: "nope"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Logs of a missing container: %v", err)
	}

	var stdout, stderr strings.Builder
	code, err := c.Exec(ctx, "web", client.ExecOptions{
		Cmd: []string{"cat"}, Env: []string{"A=1"}, Stdin: strings.NewReader("ping"), Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil || code != 7 || stdout.String() != "ping" || stderr.String() != "cat env=[A=1] tty=false" {
		t.Errorf("Exec = %d, %v, stdout %q, stderr %q", code, err, stdout.String(), stderr.String())
	}
	if _, err := c.Exec(ctx, "web", client.ExecOptions{Cmd: []string{"missing"}}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Exec of a missing executable: %v", err)
	}
	if _, err := c.Exec(ctx, "ghost", client.ExecOptions{Cmd: []string{"true"}}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Exec in a missing instance: %v", err)
	}

	if err := c.DeleteInstance(ctx, "web", false); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("DeleteInstance of a running instance without force: %v", err)
	}
	inst, err = c.StopInstance(ctx, "web", 0)
	if err != nil || inst.Status.Phase != api.PhaseFailed {
		t.Errorf("StopInstance = %+v, %v", inst.Status, err)
	}
	if inst, err = c.WaitInstance(ctx, "web", client.WaitTerminal); err != nil || !inst.Status.Phase.Terminal() {
		t.Errorf("WaitInstance(terminal) = %+v, %v", inst.Status, err)
	}
	if err := c.DeleteInstance(ctx, "web", false); err != nil {
		t.Errorf("DeleteInstance of a stopped instance: %v", err)
	}
	if _, err := c.GetInstance(ctx, "web"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetInstance after delete: %v", err)
	}

	images, err := c.ImportImage(ctx, strings.NewReader("tarball"), 7, nil)
	if err != nil || len(images) != 1 || images[0].Size != 7 {
		t.Errorf("ImportImage = %+v, %v", images, err)
	}
	if _, err := c.ImportImage(ctx, strings.NewReader(""), -1, nil); !errors.Is(err, errdefs.ErrInvalidArgument) || err.Error() != "empty archive: invalid argument" {
		t.Errorf("ImportImage of an empty archive: %v", err)
	}
	img, err := c.PullImage(ctx, "127.0.0.1:5000/busybox:1", nil)
	if err != nil || img.Name != "127.0.0.1:5000/busybox:1" {
		t.Errorf("PullImage = %+v, %v", img, err)
	}
	if _, err := c.PullImage(ctx, "", nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("PullImage without a ref: %v", err)
	}
	if imgs, err := c.ListImages(ctx); err != nil || len(imgs) != 1 {
		t.Errorf("ListImages = %+v, %v", imgs, err)
	}
}

func (fakeHost) Stats(ctx context.Context, inst *api.Instance) (api.InstanceStats, error) {
	return api.InstanceStats{Pids: 1}, nil
}

func (fakeHost) SLA(ctx context.Context, inst *api.Instance) (api.SLAReport, error) {
	return api.SLAReport{Instance: inst.Name, Items: []api.SLAItem{}}, nil
}
