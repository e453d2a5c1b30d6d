package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
)

func TestCgroupResources(t *testing.T) {
	u64 := func(v uint64) *uint64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	disk := &blockDevice{254, 0}
	dev := func(rate uint64) []specs.LinuxThrottleDevice {
		return []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 254, Minor: 0}, Rate: rate}}
	}
	for _, tc := range []struct {
		name    string
		res     api.Resources
		cores   []int
		disk    *blockDevice
		want    *specs.LinuxResources
		wantErr error
	}{
		{name: "nothing", want: &specs.LinuxResources{}},
		{
			name: "shared cpu and memory",
			res:  api.Resources{CPU: "0.5", Memory: "64Mi"},
			want: &specs.LinuxResources{
				CPU:    &specs.LinuxCPU{Period: u64(100000), Quota: i64(50000)},
				Memory: &specs.LinuxMemory{Limit: i64(64 << 20)},
			},
		},
		{
			name: "cpu cap without a reservation",
			res:  api.Resources{CPULimit: "1", Memory: "256Mi"},
			want: &specs.LinuxResources{
				CPU:    &specs.LinuxCPU{Period: u64(100000), Quota: i64(100000)},
				Memory: &specs.LinuxMemory{Limit: i64(256 << 20)},
			},
		},
		{
			name: "cpu cap above the reservation",
			res:  api.Resources{CPU: "0.5", CPULimit: "2"},
			want: &specs.LinuxResources{CPU: &specs.LinuxCPU{Period: u64(100000), Quota: i64(200000)}},
		},
		{
			name:  "dedicated: cores, top weight, no quota",
			res:   api.Resources{CPU: "2", CPUPolicy: "dedicated"},
			cores: []int{2, 3},
			want:  &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "2-3", Shares: u64(dedicatedShares)}},
		},
		{
			name: "pids",
			res:  api.Resources{Pids: 50},
			want: &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: 50}},
		},
		{
			name: "disk",
			res:  api.Resources{DiskReadBPS: "1Mi", DiskWriteBPS: "2M", DiskReadIOPS: 100, DiskWriteIOPS: 200},
			disk: disk,
			want: &specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{
				ThrottleReadBpsDevice:   dev(1 << 20),
				ThrottleWriteBpsDevice:  dev(2e6),
				ThrottleReadIOPSDevice:  dev(100),
				ThrottleWriteIOPSDevice: dev(200),
			}},
		},
		{
			name:    "disk without a device",
			res:     api.Resources{DiskWriteIOPS: 200},
			wantErr: errdefs.ErrFailedPrecondition,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cgroupResources(parsed(t, tc.res), tc.cores, tc.disk)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// fakeSysBlock lays out /sys/dev/block for a disk 8:0 with partition 8:1,
// as the kernel links them.
func fakeSysBlock(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	disk := filepath.Join(root, "devices", "sda")
	part := filepath.Join(disk, "sda1")
	for _, d := range []string{part, filepath.Join(root, "dev", "block")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(disk, "dev"):       "8:0\n",
		filepath.Join(part, "dev"):       "8:1\n",
		filepath.Join(part, "partition"): "1\n",
	}
	for f, c := range files {
		if err := os.WriteFile(f, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sys := filepath.Join(root, "dev", "block")
	for link, target := range map[string]string{"8:0": disk, "8:1": part} {
		if err := os.Symlink(target, filepath.Join(sys, link)); err != nil {
			t.Fatal(err)
		}
	}
	return sys
}

func TestWholeDisk(t *testing.T) {
	sys := fakeSysBlock(t)
	for _, tc := range []struct {
		dev     blockDevice
		want    blockDevice
		wantErr error
	}{
		{dev: blockDevice{8, 0}, want: blockDevice{8, 0}},
		{dev: blockDevice{8, 1}, want: blockDevice{8, 0}},
		{dev: blockDevice{0, 45}, wantErr: errdefs.ErrFailedPrecondition}, // tmpfs
	} {
		got, err := wholeDisk(sys, tc.dev)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("wholeDisk(%s) err = %v, want %v", tc.dev, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("wholeDisk(%s) = %s, %v; want %s", tc.dev, got, err, tc.want)
		}
	}
}

func TestBackingDeviceOfThisHost(t *testing.T) {
	dir := t.TempDir()
	d, err := backingDevice(dir)
	if errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Skipf("%s is not on a block device: %v", dir, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	// What blkio is given must be a whole disk the kernel knows.
	if _, err := os.Stat(filepath.Join(sysDevBlock, d.String(), "partition")); err == nil {
		t.Fatalf("%s is a partition", d)
	}
	if _, err := os.Stat(filepath.Join(sysDevBlock, d.String())); err != nil {
		t.Fatalf("%s is not a block device: %v", d, err)
	}
}

func TestWithDiskLimits(t *testing.T) {
	dir := t.TempDir()
	if _, err := backingDevice(dir); err != nil {
		t.Skipf("%s is not on a block device: %v", dir, err)
	}
	a := New(Config{SnapshotDir: dir})
	for _, tc := range []struct {
		name string
		res  api.Resources
		want bool // a BlockIO in the spec
	}{
		{"no limits leave the spec alone", api.Resources{CPU: "1"}, false},
		{"limits reach the container's cgroup", api.Resources{DiskWriteIOPS: 200}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt, err := a.withDiskLimits(parsed(t, tc.res))
			if err != nil {
				t.Fatal(err)
			}
			var s specs.Spec
			if err := opt(context.Background(), nil, nil, &s); err != nil {
				t.Fatal(err)
			}
			got := s.Linux != nil && s.Linux.Resources != nil && s.Linux.Resources.BlockIO != nil
			if got != tc.want {
				t.Fatalf("BlockIO set = %v, want %v (%+v)", got, tc.want, s.Linux)
			}
			if got && s.Linux.Resources.BlockIO.ThrottleWriteIOPSDevice[0].Rate != 200 {
				t.Fatalf("throttle %+v", s.Linux.Resources.BlockIO.ThrottleWriteIOPSDevice)
			}
		})
	}
	if _, err := New(Config{}).withDiskLimits(model.Resources{DiskWriteIOPS: 1}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("no snapshot dir: %v, want failed precondition", err)
	}
}
