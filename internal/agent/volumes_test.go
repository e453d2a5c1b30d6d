package agent

import (
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/containerd/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/api"
)

func TestVolumeMounts(t *testing.T) {
	c := api.ContainerSpec{VolumeMounts: []api.VolumeMount{
		{Name: "scratch", MountPath: "/data/"},
		{Name: "conf", MountPath: "/etc/app"}, // not the volumes step's: left to its own code
		{Name: "mem", MountPath: "/mem", ReadOnly: true},
	}}
	got := volumeMounts(c, map[string]string{"scratch": "/v/empty/u/scratch/dir", "mem": "/v/empty/u/mem/dir"})
	want := []specs.Mount{
		{Destination: "/data", Type: "bind", Source: "/v/empty/u/scratch/dir", Options: []string{"rbind", "rprivate", "nosuid", "nodev", "rw"}},
		{Destination: "/mem", Type: "bind", Source: "/v/empty/u/mem/dir", Options: []string{"rbind", "rprivate", "nosuid", "nodev", "ro"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("volumeMounts = %+v, want %+v", got, want)
	}
	if got := volumeMounts(c, nil); got != nil {
		t.Fatalf("volumeMounts without paths = %+v, want none", got)
	}
}

func TestSnapshotDir(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mounts []mount.Mount
		want   string
	}{
		{"overlay", []mount.Mount{{Type: "overlay", Source: "overlay",
			Options: []string{"index=off", "workdir=/s/snapshots/7/work", "upperdir=/s/snapshots/7/fs", "lowerdir=/s/snapshots/1/fs"}}}, "/s/snapshots/7"},
		{"no layers: a bind", []mount.Mount{{Type: "bind", Source: "/s/snapshots/8/fs", Options: []string{"rbind", "rw"}}}, "/s/snapshots/8"},
		{"read-only view", []mount.Mount{{Type: "overlay", Options: []string{"lowerdir=/s/snapshots/1/fs:/s/snapshots/2/fs"}}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := snapshotDir(tc.mounts)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("snapshotDir = %q, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("snapshotDir = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestStorageItems(t *testing.T) {
	const mi = 1 << 20
	items := storageItems([]api.StorageStats{
		{Name: "app", Kind: api.StorageWritableLayer, Limit: 200 * mi, Size: 200*mi + 80<<10, Used: 10 * mi},
		{Name: "mem", Kind: api.StorageEmptyDir, Medium: api.MediumMemory, Limit: 64 * mi, Size: 64 * mi, Used: 64 * mi},
		// No filesystem of its own: statfs saw the host's disk.
		{Name: "scratch", Kind: api.StorageEmptyDir, Limit: 64 * mi, Size: 40 << 30, Used: 1 << 30},
		{Name: "small", Kind: api.StorageEmptyDir, Limit: 64 * mi, Size: 32 * mi},
		{Name: "disk", Kind: api.StorageDisk, Limit: 200 * mi, Size: 200*mi + 80<<10, Used: 199 * mi},
	})
	wantKept := []bool{true, true, false, false, true}
	for i, it := range items {
		if it.Kept != wantKept[i] {
			t.Errorf("item %d %+v: kept %v, want %v", i, it, it.Kept, wantKept[i])
		}
		if !it.Kept && !strings.Contains(it.Detail, "not the promised 64.0Mi") {
			t.Errorf("item %d detail %q", i, it.Detail)
		}
	}
	if items[0].Resource != "disk" || items[1].Resource != "emptyDir" || !strings.Contains(items[1].Promised, "(memory)") ||
		items[4].Resource != "disk" || !strings.Contains(items[4].Promised, "at most 200.0Mi of ephemeral storage") {
		t.Errorf("items: %+v", items)
	}
}
