package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
)

// InstanceAPI is the part of the Go SDK (*client.Client) the Kanga path
// uses.
type InstanceAPI interface {
	CreateInstance(ctx context.Context, req api.CreateInstanceRequest) (api.Instance, error)
	WaitInstance(ctx context.Context, name string, cond client.WaitCondition) (api.Instance, error)
	DeleteInstance(ctx context.Context, name string, force bool) error
}

// PathKanga names the path through Kanga's public API; PathKangaConfig
// the same with one config mounted as files (Config.ConfigMount).
const (
	PathKanga       = "kanga API"
	PathKangaConfig = "kanga API, config file"
)

// ConfigMountPath is where the config-file path mounts its config.
const ConfigMountPath = "/etc/bench"

// KangaStarter starts instances through Kanga's public API, as a user
// would: one create call, then a wait for Running.
type KangaStarter struct {
	API     InstanceAPI
	Image   string
	Runtime string
	// Command is the container's command; it must keep running, so that
	// Running is a stable state to wait for.
	Command []string
	// Security is the container's security context; nil is the default.
	Security *api.SecurityContext
	// Storage, if set, gives each instance what it names (an emptyDir,
	// a writable-layer cap), and PathName then tells the path apart.
	Storage  *Storage
	PathName string
	// ConfigMount, if set, names a config of the tenant that every
	// instance mounts at ConfigMountPath (the path is then
	// PathKangaConfig): what one config file costs a start.
	ConfigMount string
	// now is the clock; nil means time.Now.
	now func() time.Time
}

var _ Starter = (*KangaStarter)(nil)

func (k *KangaStarter) Path() string {
	if k.PathName != "" {
		return k.PathName
	}
	if k.ConfigMount != "" {
		return PathKangaConfig
	}
	return PathKanga
}

func (k *KangaStarter) Prepare(context.Context) error { return nil }
func (k *KangaStarter) Close(context.Context) error   { return nil }

func (k *KangaStarter) clock() time.Time {
	if k.now != nil {
		return k.now()
	}
	return time.Now()
}

// Start times from just before the create call to the wait returning the
// instance Running. Besides the two client calls, it reports the server's
// own timeline from the instance record (CreatedAt and the Created and
// Started events): the server and this client share the machine's clock
// in the benchmark setup, so the differences are meaningful there.
func (k *KangaStarter) Start(ctx context.Context, id string) (Sample, error) {
	req := api.CreateInstanceRequest{
		Name: id,
		Spec: api.InstanceSpec{
			Containers: []api.ContainerSpec{{Name: "main", Image: k.Image, Command: k.Command, SecurityContext: k.Security}},
			Runtime:    k.Runtime,
		},
	}
	k.Storage.apply(&req.Spec)
	if k.ConfigMount != "" {
		req.Spec.Volumes = []api.Volume{{Name: "config", Config: &api.ObjectVolumeSource{Name: k.ConfigMount}}}
		req.Spec.Containers[0].VolumeMounts = []api.VolumeMount{{Name: "config", MountPath: ConfigMountPath}}
	}
	// The client retries a create the server refused as busy (429); the
	// retries are counted, and timed as part of the start.
	var retries atomic.Int64
	ctx = client.WithRetryObserver(ctx, func(client.Retry) { retries.Add(1) })
	t0 := k.clock()
	created, err := k.API.CreateInstance(ctx, req)
	if err != nil {
		return Sample{}, fmt.Errorf("create: %w", err)
	}
	// Without a host for the runtime class the instance stays Pending:
	// waiting for Running would only burn the timeout.
	if r := created.Status.Reason; api.WaitsForResources(r) && r != api.ReasonInsufficientCPU {
		return Sample{}, fmt.Errorf("unschedulable: %s: %w", created.Status.Message, errdefs.ErrFailedPrecondition)
	}
	t1 := k.clock()
	inst, err := k.API.WaitInstance(ctx, id, client.WaitRunning)
	if err != nil {
		return Sample{}, fmt.Errorf("wait for running: %w", err)
	}
	t2 := k.clock()
	if inst.Status.Phase != api.PhaseRunning {
		msg := inst.Status.Message
		if msg == "" {
			msg = inst.Status.Reason
		}
		return Sample{}, fmt.Errorf("instance is %s, not Running: %s: %w", inst.Status.Phase, msg, errdefs.ErrFailedPrecondition)
	}
	s := Sample{Total: t2.Sub(t0), Retries: int(retries.Load()), Phases: []Phase{
		{Name: "client: create call", Duration: t1.Sub(t0)},
		{Name: "client: wait call", Duration: t2.Sub(t1)},
	}}
	s.Phases = append(s.Phases, serverPhases(inst, t0, t2)...)
	return s, nil
}

// serverPhases splits a start along the instance's own timeline:
// request -> record written (CreatedAt) -> container created (event
// Created: after network, cgroup and containerd container) -> task started
// (event Started) -> the client sees Running. It returns nothing when the
// record lacks a timestamp, rather than a misleading partial split.
func serverPhases(inst api.Instance, sent, seen time.Time) []Phase {
	created, ok1 := firstEvent(inst, "Created")
	started, ok2 := firstEvent(inst, "Started")
	if inst.CreatedAt.IsZero() || !ok1 || !ok2 {
		return nil
	}
	return []Phase{
		{Name: "server: request -> record", Duration: inst.CreatedAt.Sub(sent)},
		{Name: "server: record -> container created", Duration: created.Sub(inst.CreatedAt)},
		{Name: "server: created -> task started", Duration: started.Sub(created)},
		{Name: "server: started -> client sees Running", Duration: seen.Sub(started)},
	}
}

func firstEvent(inst api.Instance, reason string) (time.Time, bool) {
	for _, e := range inst.Status.Events {
		if e.Reason == reason {
			return e.Time, true
		}
	}
	return time.Time{}, false
}

// Remove force-deletes the instance; one that was never created is fine.
func (k *KangaStarter) Remove(ctx context.Context, id string) error {
	err := k.API.DeleteInstance(ctx, id, true)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	return nil
}

// Storage is what a storage variant of the Kanga path adds to each
// instance, to measure its cost against the plain path in the same run.
type Storage struct {
	// EmptyDir is the sizeLimit of an emptyDir mounted at /scratch ("" for
	// none), of medium EmptyDirMedium ("" disk, "Memory" tmpfs).
	EmptyDir       string
	EmptyDirMedium string
	// Disk caps the container's writable layer ("" for no cap).
	Disk string
	// Config names a config of the tenant mounted as files at
	// ConfigMountPath ("" for none): with an emptyDir, the issue's "one
	// config file and one emptyDir" against none.
	Config string
}

// Name describes the variant, for its path's name.
func (s *Storage) Name() string {
	var parts []string
	if s.EmptyDir != "" {
		m := "disk"
		if s.EmptyDirMedium != "" {
			m = strings.ToLower(s.EmptyDirMedium)
		}
		parts = append(parts, fmt.Sprintf("emptyDir %s %s", m, s.EmptyDir))
	}
	if s.Disk != "" {
		parts = append(parts, "disk "+s.Disk)
	}
	if s.Config != "" {
		parts = append(parts, "config file")
	}
	return PathKanga + " + " + strings.Join(parts, " + ")
}

func (s *Storage) apply(spec *api.InstanceSpec) {
	if s == nil {
		return
	}
	if s.EmptyDir != "" {
		spec.Volumes = append(spec.Volumes, api.Volume{Name: "scratch",
			EmptyDir: &api.EmptyDirVolumeSource{Medium: s.EmptyDirMedium, SizeLimit: s.EmptyDir}})
		c := &spec.Containers[0]
		c.VolumeMounts = append(c.VolumeMounts, api.VolumeMount{Name: "scratch", MountPath: "/scratch"})
	}
	spec.Resources.Disk = s.Disk
	if s.Config != "" {
		spec.Volumes = append(spec.Volumes, api.Volume{Name: "config", Config: &api.ObjectVolumeSource{Name: s.Config}})
		c := &spec.Containers[0]
		c.VolumeMounts = append(c.VolumeMounts, api.VolumeMount{Name: "config", MountPath: ConfigMountPath})
	}
}
