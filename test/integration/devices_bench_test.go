package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/testenv"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// BenchmarkDeviceAttachDetach attaches a mock device (the host's
// /dev/fuse) to a running instance and detaches it again, b.N times,
// through the SDK on kanga up, and reports each half's p50 and p99. At
// the end the container's devices cgroup must not allow the device (no
// stale rule):
//
//	go test -run '^$' -bench DeviceAttachDetach -benchtime 100x ./test/integration/
func BenchmarkDeviceAttachDetach(b *testing.B) {
	dir, _ := mockDevices(b)
	up := harness.StartUp(b, harness.Net{DirPrefix: "kanga-db-", BridgePrefix: "kangadb", SubnetPrefix: "10.248"}, "", "--pool-max", "0", "--cdi-spec-dir", dir)
	run := func(args ...string) string {
		r, err := up.CLI(2*time.Minute, nil, nil, args...)
		if err != nil || r.Code != 0 {
			b.Fatalf("kanga %v: %v %d\n%s%s", args, err, r.Code, r.Stdout, r.Stderr)
		}
		return r.Stdout
	}
	run("image", "import", filepath.Join(testenv.Images(b), "busybox.tar"))
	run("run", "-d", "--name", "dev", "kanga.test/busybox", "sleep", "100000")
	cfg, err := client.LoadConfig(up.Config)
	if err != nil {
		b.Fatal(err)
	}
	opts, err := cfg.Options()
	if err != nil {
		b.Fatal(err)
	}
	c, err := client.New(cfg.Addr, cfg.Token, opts...)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	if _, err := c.WaitInstance(ctx, "dev", client.WaitRunning); err != nil {
		b.Fatal(err)
	}
	const dev = "kanga.dev/mock=m0"
	attach := make([]time.Duration, 0, b.N)
	detach := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := c.AttachDevice(ctx, "dev", api.DeviceRequest{Name: dev}); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		// The detach needs the host's status report of the device.
		for {
			in, err := c.GetInstance(ctx, "dev")
			if err != nil {
				b.Fatal(err)
			}
			if slices.Contains(in.Status.Devices, dev) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		t2 := time.Now()
		if _, err := c.DetachDevice(ctx, "dev", dev); err != nil {
			b.Fatal(err)
		}
		attach = append(attach, t1.Sub(t0))
		detach = append(detach, time.Since(t2))
	}
	b.StopTimer()
	pct := func(ds []time.Duration, p float64) float64 {
		s := slices.Clone(ds)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(attach, 0.5), "attach-p50-ms")
	b.ReportMetric(pct(attach, 0.99), "attach-p99-ms")
	b.ReportMetric(pct(detach, 0.5), "detach-p50-ms")
	b.ReportMetric(pct(detach, 0.99), "detach-p99-ms")

	list := hostDevicesList(b, up)
	if strings.Contains(list, "c 10:229 ") {
		b.Fatalf("after %d cycles the devices cgroup still allows /dev/fuse:\n%s", b.N, list)
	}
}

// hostDevicesList reads devices.list of the one devices cgroup with
// processes under the platform's cgroup root: the only instance's
// container.
func hostDevicesList(b *testing.B, up *harness.Up) string {
	root := harness.CgroupRootFor(up.DataDir)
	var found string
	_ = filepath.WalkDir(filepath.Join("/sys/fs/cgroup/devices", root), func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() || found != "" {
			return nil
		}
		procs, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if len(strings.TrimSpace(string(procs))) == 0 {
			return nil
		}
		if l, err := os.ReadFile(filepath.Join(p, "devices.list")); err == nil {
			found = string(l)
		}
		return nil
	})
	if found == "" {
		b.Fatalf("no devices cgroup with processes under %s", root)
	}
	return found
}
