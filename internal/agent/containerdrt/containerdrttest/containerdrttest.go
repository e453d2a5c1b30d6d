// Package containerdrttest starts a real, private containerd for tests and
// cleans up after it: tasks, containers, shims, mounts and the data dir.
package containerdrttest

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"

	"github.com/kanga-run/kanga/internal/agent/containerdrt"
)

// Skip skips the test unless it runs as root on a machine with containerd.
func Skip(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts containerd")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Skip("containerd not installed")
	}
}

// StartDaemon starts a containerd under a fresh temporary data dir and
// registers its teardown. It skips the test when not root.
func StartDaemon(t testing.TB) *containerdrt.Daemon {
	t.Helper()
	Skip(t)
	dataDir := t.TempDir()
	d := containerdrt.NewDaemon(containerdrt.DaemonConfig{DataDir: dataDir, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	// Registered after TempDir so it runs before the directory is removed.
	t.Cleanup(func() { Teardown(t, d, dataDir) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	return d
}

// Teardown removes every task and container of the daemon, stops it, kills
// any shim still serving its address and unmounts whatever is left under
// dataDir. It only reports problems: it runs in cleanup.
func Teardown(t testing.TB, d *containerdrt.Daemon, dataDir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if c := d.Client(); c != nil {
		DeleteAll(ctx, t, c)
	}
	if err := d.Stop(ctx); err != nil {
		t.Logf("stop containerd: %v", err)
	}
	KillShims(t, d.Address())
	KillSandboxes(t, dataDir)
	UnmountUnder(t, dataDir)
	if strings.HasPrefix(d.Address(), "/run/kanga/") {
		os.RemoveAll(filepath.Dir(d.Address()))
		os.Remove("/run/kanga") // only if no one else uses it
	}
}

// DeleteAll kills and deletes every task and container in Kanga's
// namespace, with their snapshots.
func DeleteAll(ctx context.Context, t testing.TB, c *containerd.Client) {
	containers, err := c.Containers(ctx)
	if err != nil {
		t.Logf("list containers: %v", err)
		return
	}
	for _, ctr := range containers {
		if task, err := ctr.Task(ctx, nil); err == nil {
			_ = task.Kill(ctx, syscall.SIGKILL)
			if ch, err := task.Wait(ctx); err == nil {
				select {
				case <-ch:
				case <-time.After(10 * time.Second):
				}
			}
			// A plain Delete first: the task is normally stopped by now, and
			// WithProcessKill would kill it again, which runsc answers with
			// "sandbox is not running", an error the runc shim does not map
			// to not-found, failing the delete.
			if _, err := task.Delete(ctx); err != nil {
				if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
					t.Logf("delete task %s: %v", ctr.ID(), err)
				}
			}
		}
		if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Logf("delete container %s: %v", ctr.ID(), err)
		}
	}
}

// eachProcess calls fn with the pid and argv of every process.
func eachProcess(fn func(pid int, args []string)) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		fn(pid, strings.Split(string(raw), "\x00"))
	}
}

// KillShims kills shims serving the daemon at address. Normally none are
// left: a shim exits when its last task is deleted.
func KillShims(t testing.TB, address string) {
	eachProcess(func(pid int, args []string) {
		if !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			return
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == address {
				t.Logf("killing leftover shim %d", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

// KillSandboxes kills gVisor sandbox and gofer processes whose runtime
// root lies under dataDir. They are children of the shim and outlive it when
// it is killed, so KillShims alone would leak them.
func KillSandboxes(t testing.TB, dataDir string) {
	eachProcess(func(pid int, args []string) {
		if args[0] != "runsc-sandbox" && args[0] != "runsc-gofer" {
			return
		}
		for _, a := range args[1:] {
			if strings.HasPrefix(a, "--root="+dataDir+"/") {
				t.Logf("killing leftover %s %d", args[0], pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	})
}

// UnmountUnder lazily unmounts every mount point below dir, deepest first.
func UnmountUnder(t testing.TB, dir string) {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		if err := syscall.Unmount(points[i], syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", points[i], err)
		}
	}
}

// EnsureHugetlb mounts the v1 hugetlb hierarchy that crun needs on this
// hybrid cgroup layout, if it is missing, and unmounts it at cleanup.
// scripts/install-deps.sh sets it up for real.
func EnsureHugetlb(t testing.TB) {
	t.Helper()
	const dir = "/sys/fs/cgroup/hugetlb"
	raw, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified"); err != nil {
		return // not the hybrid layout
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("mkdir %s: %v", dir, err)
	}
	if err := syscall.Mount("cgroup", dir, "cgroup", 0, "hugetlb"); err != nil {
		t.Fatalf("mount hugetlb cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", dir, err)
		}
	})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
