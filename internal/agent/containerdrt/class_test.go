package containerdrt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/internal/agent/containerdrt"
	"github.com/kanga-run/kanga/internal/agent/containerdrt/containerdrttest"
)

// classNames are the classes the smoke test covers. A class whose runtime
// is not installed is skipped with a hint, never silently dropped.
var classNames = []string{"runc", "crun", "gvisor"}

// installHint says how to install the runtime of each class.
var installHint = map[string]string{
	"runc":   "apt-get install runc",
	"crun":   "apt-get install crun",
	"gvisor": "run scripts/install-runsc.sh",
}

func requireClass(t testing.TB, classes map[string]containerdrt.Class, name string) containerdrt.Class {
	t.Helper()
	c, ok := classes[name]
	if !ok {
		t.Skipf("runtime class %s not installed: %s", name, installHint[name])
	}
	return c
}

func TestClasses(t *testing.T) {
	dataDir := "/var/lib/kanga"
	classes := containerdrt.Classes(dataDir)
	tests := []struct {
		name, binary string
		fallback     string // outside PATH, still found
		sandboxed    bool
	}{
		{name: "runc", binary: "runc"},
		{name: "crun", binary: "crun"},
		{name: "gvisor", binary: "runsc", fallback: "/usr/local/bin/runsc", sandboxed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := exec.LookPath(tt.binary)
			installed := err == nil
			if !installed && tt.fallback != "" {
				_, err := os.Stat(tt.fallback)
				installed = err == nil
			}
			c, ok := classes[tt.name]
			if ok != installed {
				t.Fatalf("class %s present=%v, %s installed=%v", tt.name, ok, tt.binary, installed)
			}
			if !ok {
				t.Skipf("%s not installed: %s", tt.binary, installHint[tt.name])
			}
			if c.Name != tt.name || c.Runtime != "io.containerd.runc.v2" {
				t.Errorf("class %s = %+v", tt.name, c)
			}
			if !filepath.IsAbs(c.Options.BinaryName) || filepath.Base(c.Options.BinaryName) != tt.binary {
				t.Errorf("class %s BinaryName = %q, want absolute path to %s", tt.name, c.Options.BinaryName, tt.binary)
			}
			if c.Options.Root != filepath.Join(dataDir, "runtime", tt.name) {
				t.Errorf("class %s Root = %q, want it under the data dir", tt.name, c.Options.Root)
			}
			if c.ExclusiveNetns != tt.sandboxed || (c.SharedNetnsOptions != nil) != tt.sandboxed {
				t.Errorf("class %s ExclusiveNetns=%v SharedNetnsOptions=%v, want both set: %v", tt.name, c.ExclusiveNetns, c.SharedNetnsOptions, tt.sandboxed)
			}
		})
	}
}

// TestRuntimeClasses runs the same smoke test with every class: exit codes,
// an instance-shaped container (network namespace made outside the
// runtime, nested cgroup with a memory limit, log file), exec with and
// without a terminal, signals, and an OOM kill.
func TestRuntimeClasses(t *testing.T) {
	d := containerdrttest.StartDaemon(t)
	containerdrttest.EnsureHugetlb(t)
	c := d.Client()
	img := containerdrttest.ImportBusybox(testContext(t), t, c, "kanga.test/busybox:latest")
	classes := containerdrt.Classes(filepath.Dir(d.Address()))
	for _, name := range classNames {
		t.Run(name, func(t *testing.T) {
			class := requireClass(t, classes, name)
			t.Run("exit code", func(t *testing.T) {
				ctx := testContext(t)
				_, exit := containerdrttest.StartTask(ctx, t, c, img, class, "exit-"+name, "sh", "-c", "test \"$KANGA_TEST\" = 1 && exit 7")
				s := <-exit
				if s.Error() != nil || s.ExitCode() != 7 {
					t.Fatalf("exit = %d, %v; want 7", s.ExitCode(), s.Error())
				}
				if _, err := os.Stat(filepath.Join(class.Options.Root, containerdrt.Namespace)); err != nil {
					// The shim makes the runtime's --root <Root>/<namespace>.
					t.Errorf("runtime state not under the class Root: %v", err)
				}
			})
			t.Run("instance", func(t *testing.T) { testInstance(t, c, img, class) })
			t.Run("oom", func(t *testing.T) { testOOM(t, c, img, class) })
		})
	}
}

// testInstance runs a container the way the agent does: in a network
// namespace made beforehand, in cgroup /kanga/<instance>/<container> under
// an instance cgroup with its own memory limit, with output to a log file.
func testInstance(t *testing.T, c *containerd.Client, img containerd.Image, class containerdrt.Class) {
	ctx := testContext(t)
	id := "instance-" + class.Name
	parent := newInstanceCgroup(t, 256<<20)
	cgroup := parent + "/main"
	const memLimit = 64 << 20
	netns := newNetns(t)
	logPath := filepath.Join(t.TempDir(), "main.log")

	// The trap makes SIGTERM observable with any runtime: a pid 1 without a
	// handler ignores it under runc and crun.
	script := `trap 'echo got-term; exit 42' TERM
echo kanga-log-line
mkdir -p /tmp/www && uname -r > /tmp/www/index.html
httpd -p 8080 -h /tmp/www
while :; do sleep 1; done`
	ctr, err := c.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter("overlayfs"),
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(class.Runtime, class.Options),
		containerd.WithNewSpec(oci.WithImageConfig(img),
			oci.WithProcessArgs("sh", "-c", script),
			oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netns.path}),
			oci.WithCgroup(cgroup),
			oci.WithMemoryLimit(memLimit),
		),
	)
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	deleteAtCleanup(t, ctr)
	task, err := ctr.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		t.Fatalf("create task: %v", err)
	}
	exit, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task: %v", err)
	}

	// Networking: the host reaches the server through the veth.
	release := httpGet(ctx, t, "http://"+net.JoinHostPort(netns.containerIP, "8080")+"/")
	release = strings.TrimSpace(release)
	var uts syscall.Utsname
	if err := syscall.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	hostRelease := utsString(uts.Release[:])
	switch {
	case class.Name == "gvisor" && !strings.Contains(release, "gvisor"):
		t.Errorf("uname -r = %q inside gVisor, want gVisor's kernel", release)
	case class.Name != "gvisor" && release != hostRelease:
		t.Errorf("uname -r = %q, want the host's %q", release, hostRelease)
	}
	t.Logf("uname -r inside: %s", release)

	// Cgroups: the task (for gVisor, the sandbox) is in the nested cgroup
	// with the container's limit.
	if got := memoryCgroupOf(t, int(task.Pid())); got != cgroup {
		t.Errorf("task %d in memory cgroup %q, want %q", task.Pid(), got, cgroup)
	}
	if got := readCgroupFile(t, cgroup, "memory.limit_in_bytes"); got != strconv.Itoa(memLimit) {
		t.Errorf("memory.limit_in_bytes = %s, want %d", got, memLimit)
	}

	// Exec without a terminal: separate streams, exit code.
	execArgs := []string{"sh", "-c", "echo out-$((6*7)); echo err-line >&2; exit 5"}
	out, code := execIn(ctx, t, task, false, execArgs...)
	if class.Name == "gvisor" && code == 5 && !(strings.Contains(out, "out-42") && strings.Contains(out, "err-line")) {
		// gVisor now and then loses the last write of a process that
		// exits right after it (seen 1 in ~3 runs on a loaded 2-core
		// host, never with runc or crun); ask once more so that only a
		// repeatable loss fails.
		t.Logf("gVisor exec lost a stream (%q); asking again", out)
		out, code = execIn(ctx, t, task, false, execArgs...)
	}
	if code != 5 || !strings.Contains(out, "out-42") || !strings.Contains(out, "err-line") {
		t.Errorf("exec = %d, %q; want 5 and both streams", code, out)
	}
	// Exec with a terminal: stdin and stdout are a tty.
	out, code = execIn(ctx, t, task, true, "sh", "-c", "test -t 0 && test -t 1 && echo tty-ok")
	if code != 0 || !strings.Contains(out, "tty-ok") {
		t.Errorf("exec with tty = %d, %q; want 0 and tty-ok", code, out)
	}
	if class.Name == "gvisor" {
		out, _ = execIn(ctx, t, task, false, "sh", "-c", "dmesg")
		if !strings.Contains(out, "gVisor") {
			t.Errorf("dmesg inside gVisor = %q, want gVisor's boot messages", out)
		}
	}

	// Signals and exit codes.
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if s := <-exit; s.Error() != nil || s.ExitCode() != 42 {
		t.Fatalf("exit after SIGTERM = %d, %v; want 42 from the trap", s.ExitCode(), s.Error())
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete task: %v", err)
	}
	// Only stdout lines: containerd 1.6's shim loses lines when stdout and
	// stderr share a file:// log (both write at their own offsets).
	waitFileContains(t, logPath, "kanga-log-line", "got-term")
}

// testOOM runs a container that allocates past its memory limit.
func testOOM(t *testing.T, c *containerd.Client, img containerd.Image, class containerdrt.Class) {
	ctx := testContext(t)
	id := "oom-" + class.Name
	parent := newInstanceCgroup(t, 256<<20)
	events, errs := c.Subscribe(ctx, `topic=="/tasks/oom"`)

	ctr, err := c.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter("overlayfs"),
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(class.Runtime, class.Options),
		containerd.WithNewSpec(oci.WithImageConfig(img),
			// dd's buffer is one block: 64 MiB of anonymous memory, touched
			// by the read from /dev/zero. It waits for a line on stdin: the
			// shim watches the cgroup for OOM only once Start has returned,
			// and misses (no /tasks/oom event) an OOM that comes before.
			oci.WithProcessArgs("sh", "-c", "read go && dd if=/dev/zero of=/dev/null bs=64M count=1"),
			oci.WithCgroup(parent+"/oom"),
			oci.WithMemoryLimit(32<<20),
		),
	)
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	deleteAtCleanup(t, ctr)
	stdin, start := io.Pipe()
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(stdin, io.Discard, io.Discard)))
	if err != nil {
		t.Fatalf("create task: %v", err)
	}
	exit, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task: %v", err)
	}
	if _, err := io.WriteString(start, "go\n"); err != nil {
		t.Fatalf("write stdin: %v", err)
	}
	start.Close()
	if s := <-exit; s.Error() != nil || s.ExitCode() != 128+uint32(syscall.SIGKILL) {
		t.Fatalf("exit = %d, %v; want 137 (OOM kill)", s.ExitCode(), s.Error())
	}
	for {
		select {
		case env := <-events:
			ev, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				t.Fatalf("decode %s event: %v", env.Topic, err)
			}
			if oom, ok := ev.(*apievents.TaskOOM); ok && oom.ContainerID == id {
				return
			}
		case err := <-errs:
			t.Fatalf("events: %v", err)
		case <-ctx.Done():
			t.Fatal("no /tasks/oom event for the OOM-killed container")
		}
	}
}

// deleteAtCleanup deletes the container and its task, if any, before the
// cleanups registered earlier (its cgroup, its network namespace) run.
func deleteAtCleanup(t *testing.T, ctr containerd.Container) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), containerdrt.Namespace), time.Minute)
		defer cancel()
		if task, err := ctr.Task(ctx, nil); err == nil {
			if st, err := task.Status(ctx); err == nil && st.Status != containerd.Stopped {
				_ = task.Kill(ctx, syscall.SIGKILL)
				if ch, err := task.Wait(ctx); err == nil {
					<-ch
				}
			}
			if _, err := task.Delete(ctx); err != nil {
				t.Logf("delete task %s: %v", ctr.ID(), err)
			}
		}
		if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Logf("delete container %s: %v", ctr.ID(), err)
		}
	})
}

// execIn runs args in the task and returns its combined output and exit
// code.
func execIn(ctx context.Context, t *testing.T, task containerd.Task, tty bool, args ...string) (string, uint32) {
	t.Helper()
	spec, err := task.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := *spec.Process
	pspec.Args = args
	pspec.Terminal = tty
	var out syncBuffer
	opts := []cio.Opt{cio.WithStreams(nil, &out, &out)}
	if tty {
		opts = append(opts, cio.WithTerminal)
	}
	execID := "exec-" + randomHex(t, 4)
	proc, err := task.Exec(ctx, execID, &pspec, cio.NewCreator(opts...))
	if err != nil {
		t.Fatalf("exec %v: %v", args, err)
	}
	status, err := proc.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Start(ctx); err != nil {
		t.Fatalf("start exec %v (tty=%v): %v", args, tty, err)
	}
	s := <-status
	// Delete waits for the output to be copied.
	if _, err := proc.Delete(ctx); err != nil {
		t.Fatalf("delete exec: %v", err)
	}
	if s.Error() != nil {
		t.Fatalf("exec %v: %v", args, s.Error())
	}
	return out.String(), s.ExitCode()
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// httpGet fetches url, retrying until the server in the container listens.
func httpGet(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	var lastErr error
	for ctx.Err() == nil {
		resp, err := client.Get(url)
		if err == nil {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK {
				return string(body)
			}
			lastErr = fmt.Errorf("status %s, read error %v", resp.Status, err)
		} else {
			lastErr = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, lastErr)
	return ""
}

// waitFileContains waits for every want string to appear in the file: the
// shim copies output asynchronously.
func waitFileContains(t *testing.T, path string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw, _ := os.ReadFile(path)
		missing := ""
		for _, w := range want {
			if !bytes.Contains(raw, []byte(w)) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %s = %q, want it to contain %q", path, raw, missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testNetns is a network namespace wired to the host through a veth pair,
// the way the CNI bridge plugin leaves an instance's namespace.
type testNetns struct {
	path        string
	hostIP      string
	containerIP string
}

// newNetns makes a named network namespace with a /30 on a veth pair, the
// container side inside and up, and removes it all at cleanup.
func newNetns(t *testing.T) testNetns {
	t.Helper()
	suffix := randomHex(t, 4)
	name := "kanga-test-" + suffix
	hostVeth, ctrVeth := "kth"+suffix, "ktc"+suffix
	subnet := freeSubnet(t)
	hostIP, ctrIP := subnet+".1", subnet+".2"

	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", name)
	t.Cleanup(func() {
		// Deleting the namespace deletes the veth pair with it.
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Logf("ip netns delete %s: %v: %s", name, err, out)
		}
		_ = exec.Command("ip", "link", "delete", hostVeth).Run()
	})
	ip("link", "add", hostVeth, "type", "veth", "peer", "name", ctrVeth)
	ip("link", "set", ctrVeth, "netns", name)
	ip("addr", "add", hostIP+"/30", "dev", hostVeth)
	ip("link", "set", hostVeth, "up")
	ip("-n", name, "addr", "add", ctrIP+"/30", "dev", ctrVeth)
	ip("-n", name, "link", "set", ctrVeth, "up")
	ip("-n", name, "link", "set", "lo", "up")
	ip("-n", name, "route", "add", "default", "via", hostIP)
	return testNetns{path: "/run/netns/" + name, hostIP: hostIP, containerIP: ctrIP}
}

// freeSubnet returns the first three octets of a 10.213.x.0/30 no host
// interface uses.
func freeSubnet(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 64; i++ {
		b := make([]byte, 1)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		_, subnet, _ := net.ParseCIDR(fmt.Sprintf("10.213.%d.0/24", b[0]))
		used := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (subnet.Contains(ipn.IP) || ipn.Contains(subnet.IP)) {
				used = true
			}
		}
		if !used {
			return fmt.Sprintf("10.213.%d", b[0])
		}
	}
	t.Fatal("no free 10.213.x.0/24 subnet")
	return ""
}

// newInstanceCgroup makes /kanga/test-<random> in the v1 memory hierarchy
// with the given limit, as the agent makes an instance's cgroup, and
// removes it (and whatever the runtimes left under it, in every hierarchy)
// at cleanup. It returns the cgroup path.
func newInstanceCgroup(t *testing.T, limit int64) string {
	t.Helper()
	const memRoot = "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(memRoot, "memory.limit_in_bytes")); err != nil {
		t.Skip("no cgroup v1 memory hierarchy at " + memRoot)
	}
	path := "/kanga/test-" + randomHex(t, 4)
	mounts := cgroupMounts(t)
	t.Cleanup(func() {
		for _, m := range mounts {
			removeCgroupTree(t, filepath.Join(m, path))
		}
	})
	dir := filepath.Join(memRoot, path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		t.Fatalf("set instance memory limit: %v", err)
	}
	return path
}

// removeCgroupTree removes dir and the cgroups below it, deepest first. A
// cgroup is removed with rmdir; the files in it are not real files.
func removeCgroupTree(t *testing.T, dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Logf("remove cgroup %s: %v", dirs[i], err)
		}
	}
}

// cgroupMounts returns the mount points of the cgroup hierarchies, v1 and
// v2: on the hybrid layout runc also makes the container's cgroup in the
// unified hierarchy.
func cgroupMounts(t *testing.T) []string {
	raw, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var mounts []string
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 2 && (f[2] == "cgroup" || f[2] == "cgroup2") {
			mounts = append(mounts, f[1])
		}
	}
	return mounts
}

func memoryCgroupOf(t *testing.T, pid int) string {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && f[1] == "memory" {
			return f[2]
		}
	}
	return ""
}

func readCgroupFile(t *testing.T, cgroup, file string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", cgroup, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(raw))
}

func utsString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// BenchmarkStartTrue measures the start of a fresh container running true
// through the Go client, per class: create container and task, start, wait
// for the exit, delete. Compare classes by ratio in one run; ms-median is
// less sensitive to outliers than ns/op.
//
//	go test -run '^$' -bench StartTrue -benchtime 20x ./internal/agent/containerdrt/
func BenchmarkStartTrue(b *testing.B) {
	d := containerdrttest.StartDaemon(b)
	containerdrttest.EnsureHugetlb(b)
	c := d.Client()
	ctx := testContext(b)
	img := containerdrttest.ImportBusybox(ctx, b, c, "kanga.test/busybox:latest")
	classes := containerdrt.Classes(filepath.Dir(d.Address()))
	for _, name := range classNames {
		b.Run(name, func(b *testing.B) {
			class := requireClass(b, classes, name)
			durations := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("true-%s-%d", name, i)
				start := time.Now()
				task, exit := containerdrttest.StartTask(ctx, b, c, img, class, id, "/bin/busybox", "true")
				if s := <-exit; s.ExitCode() != 0 {
					b.Fatalf("true exited %d", s.ExitCode())
				}
				if _, err := task.Delete(ctx); err != nil {
					b.Fatal(err)
				}
				ctr, err := c.LoadContainer(ctx, id)
				if err != nil {
					b.Fatal(err)
				}
				if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
					b.Fatal(err)
				}
				durations = append(durations, time.Since(start))
			}
			sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
			b.ReportMetric(float64(durations[len(durations)/2])/float64(time.Millisecond), "ms-median")
		})
	}
}
