package agent

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// fakeCgroups writes the v1 files of instance uid, with one container
// child, under a temporary root laid out like /sys/fs/cgroup.
func fakeCgroups(t *testing.T, uid string) string {
	t.Helper()
	root := t.TempDir()
	cg := DefaultCgroupRoot + "/" + uid
	files := map[string]string{
		"cpuacct/" + cg + "/cpuacct.usage":                           "1500000000\n",
		"cpu/" + cg + "/cpu.stat":                                    "nr_periods 40\nnr_throttled 30\nthrottled_time 900000000\nnr_bursts 0\n",
		"cpuset/" + cg + "/cpuset.cpus":                              "1\n",
		"memory/" + cg + "/memory.usage_in_bytes":                    "1048576\n",
		"memory/" + cg + "/memory.max_usage_in_bytes":                "4194304\n",
		"memory/" + cg + "/memory.limit_in_bytes":                    "9223372036854771712\n",
		"memory/" + cg + "/memory.oom_control":                       "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
		"memory/" + cg + "/app/memory.oom_control":                   "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
		"memory/" + cg + "/app/memory.usage_in_bytes":                "819200\n",
		"memory/" + cg + "/app/memory.stat":                          "cache 4096\ntotal_inactive_file 204800\ntotal_active_file 4096\n",
		"cpuacct/" + cg + "/app/cpuacct.usage":                       "1200000000\n",
		"pids/" + cg + "/pids.current":                               "7\n",
		"pids/" + cg + "/pids.max":                                   "50\n",
		"blkio/" + cg + "/blkio.throttle.io_service_bytes_recursive": "254:0 Read 4096\n254:0 Write 819200\n254:0 Sync 823296\n254:0 Async 0\n254:0 Discard 0\n254:0 Total 823296\n7:0 Read 100\nTotal 823396\n",
		"blkio/" + cg + "/blkio.throttle.io_serviced":                "254:0 Read 1\n254:0 Write 200\n254:0 Total 201\n",
	}
	for f, c := range files {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestReadCgroupStats(t *testing.T) {
	root := fakeCgroups(t, "u1")
	got, err := readCgroupStats(root, DefaultCgroupRoot+"/u1")
	if err != nil {
		t.Fatal(err)
	}
	want := api.InstanceStats{
		CPUUsageNanos: 1500000000, CPUPeriods: 40, CPUThrottledPeriods: 30, CPUThrottledNanos: 900000000,
		CPUs:        "1",
		MemoryUsage: 1 << 20, MemoryPeak: 4 << 20, MemoryLimit: 0, // unlimited
		OOMKills: 3, // instance + container cgroup
		Pids:     7, PidsLimit: 50,
		DiskReadBytes: 4196, DiskWriteBytes: 819200, // summed over devices
		DiskReadOps: 1, DiskWriteOps: 200, // falls back to the non-recursive file
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if _, err := readCgroupStats(root, "nope"); !errors.Is(err, errNoCgroup) {
		t.Fatalf("missing cgroup: %v, want errNoCgroup", err)
	}
}

func TestReadContainerCgroup(t *testing.T) {
	root := fakeCgroups(t, "u1")
	got, err := readContainerCgroup(root, DefaultCgroupRoot+"/u1/app")
	if err != nil {
		t.Fatal(err)
	}
	want := api.ContainerStats{CPUUsageNanos: 1200000000, MemoryUsage: 819200, MemoryWorkingSet: 819200 - 204800}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := readContainerCgroup(root, DefaultCgroupRoot+"/u1/gone"); err == nil {
		t.Error("a container without a cgroup gave figures")
	}
}

func TestParseBlkioStat(t *testing.T) {
	for _, tc := range []struct {
		in          string
		read, write uint64
	}{
		{"", 0, 0},
		{"Total 0\n", 0, 0},
		{"8:0 Read 10\n8:0 Write 20\n8:16 Read 1\n8:16 Write 2\nTotal 33\n", 11, 22},
		{"8:0 Read x\n", 0, 0},
	} {
		r, w := parseBlkioStat(tc.in)
		if r != tc.read || w != tc.write {
			t.Errorf("parseBlkioStat(%q) = %d, %d; want %d, %d", tc.in, r, w, tc.read, tc.write)
		}
	}
}

func TestHistoryIsBounded(t *testing.T) {
	var h history
	t0 := time.Unix(0, 0)
	for i := range historyLen + 10 {
		h.add(sample{InstanceStats: api.InstanceStats{Time: t0.Add(time.Duration(i) * time.Second)}})
	}
	all := h.all()
	if len(all) != historyLen {
		t.Fatalf("%d samples kept, want %d", len(all), historyLen)
	}
	if !all[0].Time.Equal(t0.Add(10*time.Second)) || !all[len(all)-1].Time.Equal(t0.Add(time.Duration(historyLen+9)*time.Second)) {
		t.Fatalf("kept %v..%v, want the newest", all[0].Time, all[len(all)-1].Time)
	}
}
