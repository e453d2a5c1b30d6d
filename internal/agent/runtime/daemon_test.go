package runtime_test

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/containerd/containerd/namespaces"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/runtime"
	"github.com/kanga-run/kanga/internal/agent/runtime/runtimetest"
)

// helperEnv makes the test binary act as a previous Kanga run: start a
// containerd on the given data dir and exit, leaving it running.
const helperEnv = "KANGA_RUNTIME_TEST_LEAVE_CONTAINERD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		d := runtime.NewDaemon(runtime.DaemonConfig{DataDir: dir})
		if err := d.Start(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(d.PID())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return namespaces.WithNamespace(ctx, runtime.Namespace)
}

func TestAddress(t *testing.T) {
	long := "/var/lib/" + strings.Repeat("a", 100)
	tests := []struct {
		name    string
		dataDir string
		want    string
	}{
		{"short data dir keeps the socket inside", "/var/lib/kanga", "/var/lib/kanga/containerd.sock"},
		{"long data dir falls back to /run/kanga", long, "/run/kanga/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runtime.NewDaemon(runtime.DaemonConfig{DataDir: tt.dataDir}).Address()
			if !strings.HasPrefix(got, tt.want) {
				t.Fatalf("Address() = %q, want prefix %q", got, tt.want)
			}
			if len(got)+len(".ttrpc") >= 108 {
				t.Fatalf("Address() = %q is too long for a unix socket", got)
			}
		})
	}
	a := runtime.NewDaemon(runtime.DaemonConfig{DataDir: long + "x"}).Address()
	b := runtime.NewDaemon(runtime.DaemonConfig{DataDir: long}).Address()
	if a == b {
		t.Fatalf("two long data dirs share socket %s", a)
	}
}

func TestDaemonStartStop(t *testing.T) {
	d := runtimetest.StartDaemon(t)
	ctx := testContext(t)
	v, err := d.Client().Version(ctx)
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	t.Logf("containerd %s at %s, pid %d", v.Version, d.Address(), d.PID())

	resp, err := d.Client().IntrospectionService().Plugins(ctx, nil)
	if err != nil {
		t.Fatalf("list plugins: %v", err)
	}
	for _, p := range resp.Plugins {
		if p.ID == "cri" {
			t.Errorf("CRI plugin loaded (%s); it must be disabled", p.Type)
		}
		if p.InitErr != nil {
			t.Errorf("plugin %s.%s failed: %s", p.Type, p.ID, p.InitErr.Message)
		}
	}

	pid := d.PID()
	if !containerdRunning(pid) {
		t.Fatalf("pid %d is not running", pid)
	}
	if err := d.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if containerdRunning(pid) {
		t.Fatalf("containerd %d still running after Stop", pid)
	}
	if d.Client() != nil || d.PID() != 0 {
		t.Fatalf("after Stop: client %v, pid %d", d.Client(), d.PID())
	}
	if err := d.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// TestDaemonLongDataDir starts containerd on a data dir too long for a unix
// socket path inside it.
func TestDaemonLongDataDir(t *testing.T) {
	runtimetest.Skip(t)
	dataDir := filepath.Join(t.TempDir(), strings.Repeat("d", 90))
	d := runtime.NewDaemon(runtime.DaemonConfig{DataDir: dataDir})
	t.Cleanup(func() { runtimetest.Teardown(t, d, dataDir) })
	ctx := testContext(t)
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if !strings.HasPrefix(d.Address(), "/run/kanga/") {
		t.Fatalf("Address() = %s, want the /run/kanga fallback", d.Address())
	}
	if _, err := d.Client().Version(ctx); err != nil {
		t.Fatalf("Version: %v", err)
	}
}

func TestDaemonSecondSupervisorConflicts(t *testing.T) {
	d := runtimetest.StartDaemon(t)
	dataDir := filepath.Dir(d.Address())
	other := runtime.NewDaemon(runtime.DaemonConfig{DataDir: dataDir})
	err := other.Start(testContext(t))
	if !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("second Start on a supervised data dir: %v, want ErrConflict", err)
	}
}

func TestDaemonAdopt(t *testing.T) {
	runtimetest.Skip(t)
	dataDir := t.TempDir()
	// A previous Kanga run, in its own process, starts containerd and exits.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dataDir)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	oldPID, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("helper printed %q", out)
	}
	d := runtime.NewDaemon(runtime.DaemonConfig{DataDir: dataDir, Logger: slog.Default()})
	t.Cleanup(func() {
		runtimetest.Teardown(t, d, dataDir)
		// Whatever happened, the orphan must not outlive the test.
		_ = syscall.Kill(oldPID, syscall.SIGKILL)
	})
	if err := d.Start(testContext(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if d.PID() != oldPID {
		t.Fatalf("Start ran containerd %d instead of adopting %d", d.PID(), oldPID)
	}
	if n := countContainerd(t, dataDir); n != 1 {
		t.Fatalf("%d containerd processes serve %s, want 1", n, dataDir)
	}
	if _, err := d.Client().Version(testContext(t)); err != nil {
		t.Fatalf("Version on adopted containerd: %v", err)
	}

	// An adopted containerd is supervised by polling: kill it and expect a
	// restarted child.
	d.Kill()
	waitRestart(t, d, oldPID)
	if _, err := d.Client().Version(testContext(t)); err != nil {
		t.Fatalf("Version after restart: %v", err)
	}
	if n := countContainerd(t, dataDir); n != 1 {
		t.Fatalf("%d containerd processes serve %s after restart, want 1", n, dataDir)
	}
}

// TestDaemonRestartAfterKill kills containerd under a running container: the
// supervisor restarts it, the same client works again, and the container
// survived and is still managed.
func TestDaemonRestartAfterKill(t *testing.T) {
	d := runtimetest.StartDaemon(t)
	ctx := testContext(t)
	c := d.Client()
	class, ok := runtime.Classes(filepath.Dir(d.Address()))[runtime.DefaultClass]
	if !ok {
		t.Skip("runc not installed")
	}
	img := runtimetest.ImportBusybox(ctx, t, c, "kanga.test/busybox:latest")
	task, _ := runtimetest.StartTask(ctx, t, c, img, class, "survivor", "/bin/busybox", "sleep", "300")
	containerPID := int(task.Pid())

	oldPID := d.PID()
	d.Kill()
	waitRestart(t, d, oldPID)

	if d.Client() != c {
		t.Fatal("Client() changed across a restart; callers hold on to it")
	}
	if _, err := c.Version(ctx); err != nil {
		t.Fatalf("Version after restart: %v", err)
	}
	if !containerdRunning(containerPID) {
		t.Fatalf("container process %d died with containerd", containerPID)
	}
	ctr, err := c.LoadContainer(ctx, "survivor")
	if err != nil {
		t.Fatalf("LoadContainer after restart: %v", err)
	}
	task, err = ctr.Task(ctx, nil)
	if err != nil {
		t.Fatalf("Task after restart: %v", err)
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Running {
		t.Fatalf("task status after restart = %v, %v; want running", st.Status, err)
	}
	exit, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("kill task after restart: %v", err)
	}
	if s := <-exit; s.ExitCode() != 128+uint32(syscall.SIGKILL) {
		t.Fatalf("exit code %d after SIGKILL", s.ExitCode())
	}
	if d.Restarts() != 1 {
		t.Fatalf("Restarts() = %d, want 1", d.Restarts())
	}
}

// TestTwoDaemons runs the same container ID in the same namespace on two
// daemons at once, as two Kanga hosts on one machine would.
func TestTwoDaemons(t *testing.T) {
	a := runtimetest.StartDaemon(t)
	b := runtimetest.StartDaemon(t)
	ctx := testContext(t)
	var pids []uint32
	for _, d := range []*runtime.Daemon{a, b} {
		class, ok := runtime.Classes(filepath.Dir(d.Address()))[runtime.DefaultClass]
		if !ok {
			t.Skip("runc not installed")
		}
		img := runtimetest.ImportBusybox(ctx, t, d.Client(), "kanga.test/busybox:latest")
		task, _ := runtimetest.StartTask(ctx, t, d.Client(), img, class, "same-id", "/bin/busybox", "sleep", "300")
		pids = append(pids, task.Pid())
	}
	if pids[0] == pids[1] {
		t.Fatalf("both daemons report container pid %d", pids[0])
	}
	for _, pid := range pids {
		if !containerdRunning(int(pid)) {
			t.Fatalf("container %d not running", pid)
		}
	}
}

func waitRestart(t *testing.T, d *runtime.Daemon, oldPID int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for d.PID() == oldPID || d.PID() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("containerd %d was not restarted within a minute", oldPID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containerdRunning(pid int) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(raw), ')')
	return i > 0 && i+2 < len(raw) && raw[i+2] != 'Z'
}

// countContainerd counts live containerd processes whose config lies in
// dataDir.
func countContainerd(t *testing.T, dataDir string) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !containerdRunning(pid) {
			continue
		}
		raw, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(raw), "\x00")
		if filepath.Base(args[0]) == "containerd" && strings.Contains(string(raw), dataDir+"/") {
			n++
		}
	}
	return n
}
