package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
)

// fakeInstanceAPI answers like the server would, from canned values.
type fakeInstanceAPI struct {
	createErr error
	// createdStatus is the status the create call answers with.
	createdStatus api.InstanceStatus
	waitErr       error
	waited        api.Instance
	deleteErr     error

	created []api.CreateInstanceRequest
	deleted []string
	forced  []bool
}

func (f *fakeInstanceAPI) CreateInstance(ctx context.Context, req api.CreateInstanceRequest) (api.Instance, error) {
	f.created = append(f.created, req)
	return api.Instance{Name: req.Name, Status: f.createdStatus}, f.createErr
}

func (f *fakeInstanceAPI) WaitInstance(ctx context.Context, name string, cond client.WaitCondition) (api.Instance, error) {
	if cond != client.WaitRunning {
		return api.Instance{}, fmt.Errorf("waited for %q", cond)
	}
	return f.waited, f.waitErr
}

func (f *fakeInstanceAPI) DeleteInstance(ctx context.Context, name string, force bool) error {
	f.deleted = append(f.deleted, name)
	f.forced = append(f.forced, force)
	return f.deleteErr
}

// fakeClock returns the given instants in turn.
func fakeClock(ts ...time.Time) func() time.Time {
	return func() time.Time {
		t := ts[0]
		ts = ts[1:]
		return t
	}
}

func TestKangaStarterStart(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }
	running := api.Instance{
		Name: "b-0", CreatedAt: at(4),
		Status: api.InstanceStatus{Phase: api.PhaseRunning, Events: []api.Event{
			{Time: at(4), Reason: "Scheduled"},
			{Time: at(100), Reason: "Created"},
			{Time: at(180), Reason: "Started"},
		}},
	}
	tests := []struct {
		name       string
		api        *fakeInstanceAPI
		wantErr    string
		wantTotal  time.Duration
		wantPhases []Phase
	}{
		{
			name:      "running with server timeline",
			api:       &fakeInstanceAPI{waited: running},
			wantTotal: 185 * time.Millisecond,
			wantPhases: []Phase{
				{"client: create call", 6 * time.Millisecond},
				{"client: wait call", 179 * time.Millisecond},
				{"server: request -> record", 4 * time.Millisecond},
				{"server: record -> container created", 96 * time.Millisecond},
				{"server: created -> task started", 80 * time.Millisecond},
				{"server: started -> client sees Running", 5 * time.Millisecond},
			},
		},
		{
			name:      "running without events gives only the client view",
			api:       &fakeInstanceAPI{waited: api.Instance{Name: "b-0", Status: api.InstanceStatus{Phase: api.PhaseRunning}}},
			wantTotal: 185 * time.Millisecond,
			wantPhases: []Phase{
				{"client: create call", 6 * time.Millisecond},
				{"client: wait call", 179 * time.Millisecond},
			},
		},
		{
			name: "failed instance is a failed start",
			api: &fakeInstanceAPI{waited: api.Instance{Name: "b-0", Status: api.InstanceStatus{
				Phase: api.PhaseFailed, Reason: "StartFailed", Message: "exec: sleep: not found"}}},
			wantErr: "instance is Failed, not Running: exec: sleep: not found",
		},
		{
			name: "unschedulable fails at once",
			api: &fakeInstanceAPI{createdStatus: api.InstanceStatus{Phase: api.PhasePending, Reason: "Unschedulable",
				Message: "0/1 hosts can run runtime class gvisor"}},
			wantErr: "unschedulable: 0/1 hosts can run runtime class gvisor",
		},
		{name: "create error", api: &fakeInstanceAPI{createErr: errors.New("quota")}, wantErr: "create: quota"},
		{name: "wait error", api: &fakeInstanceAPI{waitErr: context.DeadlineExceeded}, wantErr: "wait for running: context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := &KangaStarter{API: tt.api, Image: "kanga.test/busybox:latest", Runtime: "crun", Command: []string{"sleep", "3600"},
				now: fakeClock(at(0), at(6), at(185))}
			s, err := k.Start(context.Background(), "b-0")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Start error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Total != tt.wantTotal {
				t.Errorf("Total = %v, want %v", s.Total, tt.wantTotal)
			}
			if !slices.Equal(s.Phases, tt.wantPhases) {
				t.Errorf("Phases =\n%v\nwant\n%v", s.Phases, tt.wantPhases)
			}
			req := tt.api.created[0]
			c := req.Spec.Containers
			if req.Name != "b-0" || req.Spec.Runtime != "crun" || len(c) != 1 || c[0].Image != "kanga.test/busybox:latest" || !slices.Equal(c[0].Command, []string{"sleep", "3600"}) {
				t.Errorf("create request = %+v", req)
			}
		})
	}
}

func TestKangaStarterFailedPhaseIsClassified(t *testing.T) {
	k := &KangaStarter{API: &fakeInstanceAPI{waited: api.Instance{Status: api.InstanceStatus{Phase: api.PhaseSucceeded}}}}
	_, err := k.Start(context.Background(), "b-0")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("error %v is not ErrFailedPrecondition", err)
	}
}

func TestKangaStarterRemove(t *testing.T) {
	tests := []struct {
		name      string
		deleteErr error
		wantErr   bool
	}{
		{"deleted", nil, false},
		{"never created", fmt.Errorf("instance b-0: %w", errdefs.ErrNotFound), false},
		{"server down", fmt.Errorf("dial: %w", errdefs.ErrUnavailable), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeInstanceAPI{deleteErr: tt.deleteErr}
			err := (&KangaStarter{API: f}).Remove(context.Background(), "b-0")
			if (err != nil) != tt.wantErr {
				t.Errorf("Remove error = %v, want error: %v", err, tt.wantErr)
			}
			if !slices.Equal(f.deleted, []string{"b-0"}) || !f.forced[0] {
				t.Errorf("deleted %v forced %v, want a forced delete of b-0", f.deleted, f.forced)
			}
		})
	}
}

// TestKangaStarterConfigMount: with a config named, each instance mounts
// it as files, and the path is reported apart from the plain one.
func TestKangaStarterConfigMount(t *testing.T) {
	for _, tc := range []struct {
		config   string
		wantPath string
		wantVols int
	}{
		{"", PathKanga, 0},
		{"bench", PathKangaConfig, 1},
	} {
		f := &fakeInstanceAPI{waited: api.Instance{Status: api.InstanceStatus{Phase: api.PhaseRunning}}}
		k := &KangaStarter{API: f, Image: "img", Runtime: "runc", Command: DefaultCommand, ConfigMount: tc.config}
		if _, err := k.Start(t.Context(), "b-0"); err != nil {
			t.Fatal(err)
		}
		spec := f.created[0].Spec
		if k.Path() != tc.wantPath || len(spec.Volumes) != tc.wantVols || len(spec.Containers[0].VolumeMounts) != tc.wantVols {
			t.Errorf("config %q: path %q, spec %+v", tc.config, k.Path(), spec)
			continue
		}
		if tc.wantVols == 1 && (spec.Volumes[0].Config == nil || spec.Volumes[0].Config.Name != tc.config ||
			spec.Containers[0].VolumeMounts[0].MountPath != ConfigMountPath) {
			t.Errorf("config %q: volumes %+v, mounts %+v", tc.config, spec.Volumes, spec.Containers[0].VolumeMounts)
		}
	}
}
