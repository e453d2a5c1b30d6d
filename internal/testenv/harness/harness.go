// Package harness runs the real platform for integration tests: the kanga
// binary built once per test binary, and `kanga up` started on a temp
// data dir with a bridge, subnet and cgroup root of its own, stopped or
// killed on demand, and everything it made removed when the test ends
// (instances, containerd, mounts, cgroups, NAT and isolation rules, the
// bridge, the data dir). test/integration and the benchmark's
// integration tests share it.
package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/testenv"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// Binary builds bin/kanga (and bin/kanga-init next to it) once per test
// binary, into a temp dir that RemoveBinary removes (call it from
// TestMain).
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "kanga-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "kanga")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/kanga")
		cmd.Dir = testenv.RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		// kanga-init next to it, where the agent looks for it: the warm
		// containers' holder and the launcher of containers with env
		// from secrets.
		cmd = exec.Command("go", "build", "-ldflags", "-s -w", "-o", filepath.Join(binDir, "kanga-init"), "./cmd/kanga-init")
		cmd.Dir = testenv.RepoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building kanga-init: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// RemoveBinary removes what Binary built.
func RemoveBinary() {
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}

// Net is a kind of test's own data dir prefix, bridge prefix and /16, so
// that tests of one kind never collide with another kind running at the
// same time (go test runs packages side by side).
type Net struct {
	DirPrefix    string // "kanga-it-"
	BridgePrefix string // "kangait": the bridge is kangaitN
	SubnetPrefix string // "10.214": the subnet is 10.214.N.0/24
	// PrefixLen is the subnet's length when not 24: 22 gives
	// 10.214.4N.0/22, room for a thousand instances.
	PrefixLen int
}

var (
	seqMu  sync.Mutex
	netSeq int
)

// next picks the bridge and subnet of the next platform of this process.
func (n Net) next() (bridge, subnet string) {
	seqMu.Lock()
	netSeq++
	seq := (os.Getpid()*7+netSeq)%250 + 1
	seqMu.Unlock()
	if n.PrefixLen == 22 {
		return fmt.Sprintf("%s%d", n.BridgePrefix, seq), fmt.Sprintf("%s.%d.0/22", n.SubnetPrefix, (seq%64)*4)
	}
	return fmt.Sprintf("%s%d", n.BridgePrefix, seq), fmt.Sprintf("%s.%d.0/24", n.SubnetPrefix, seq)
}

// Up is one `kanga up` under test.
type Up struct {
	T       testing.TB
	Bin     string
	DataDir string
	Config  string // the client config it writes
	Listen  string
	Bridge  string
	Subnet  string
	LogPath string
	// HostName is its --host-name.
	HostName string
	// Args are extra flags of kanga up.
	Args []string

	proc *Process
}

// StartUp starts kanga up on a fresh data dir with a bridge and subnet of
// n, named host, and removes everything it made when the test ends.
func StartUp(t testing.TB, n Net, host string, args ...string) *Up {
	t.Helper()
	dir, err := os.MkdirTemp("", n.DirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	bridge, subnet := n.next()
	p := &Up{
		T:        t,
		Bin:      Binary(t),
		DataDir:  dir,
		Config:   filepath.Join(dir, "client.json"),
		Listen:   "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		Bridge:   bridge,
		Subnet:   subnet,
		LogPath:  filepath.Join(dir, "kanga.log"),
		HostName: host,
		Args:     args,
	}
	t.Cleanup(p.cleanup)
	p.Start()
	return p
}

// cleanup removes every instance, stops kanga up and removes what it left.
func (p *Up) cleanup() {
	p.Purge()
	p.Stop()
	if p.T.Failed() {
		if b, err := os.ReadFile(p.LogPath); err == nil {
			p.T.Logf("kanga up log:\n%s", Tail(string(b), 6000))
		}
	}
	RemoveHostLeftovers(p.T, p.DataDir, p.Bridge, p.Subnet)
	_ = os.RemoveAll(p.DataDir)
}

// Start starts kanga up (again) on its data dir and waits until the CLI
// reaches it.
func (p *Up) Start() {
	p.T.Helper()
	args := append([]string{"up", "--data-dir", p.DataDir, "--listen", p.Listen,
		"--write-config", p.Config, "--bridge", p.Bridge, "--subnet", p.Subnet, "--host-name", p.HostName,
		"--cgroup-root", CgroupRootFor(p.DataDir)}, p.Args...)
	proc, err := StartProcess(p.Bin, p.LogPath, nil, args...)
	if err != nil {
		p.T.Fatal(err)
	}
	p.proc = proc
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-proc.Done():
			b, _ := os.ReadFile(p.LogPath)
			p.T.Fatalf("kanga up exited early:\n%s", Tail(string(b), 4000))
		default:
		}
		if _, err := os.Stat(p.Config); err == nil {
			if r, err := p.CLI(2*time.Minute, nil, nil, "version"); err == nil && r.Code == 0 {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, _ := os.ReadFile(p.LogPath)
	p.T.Fatalf("kanga up did not become ready:\n%s", Tail(string(b), 4000))
}

// Running reports whether kanga up runs (started, not stopped or killed).
func (p *Up) Running() bool { return p.proc != nil }

// Pid is the kanga up process's pid (0: it never ran).
func (p *Up) Pid() int { return p.proc.Pid() }

// Stop ends kanga up gracefully and kills the containerd it leaves
// running for adoption; instances keep running.
func (p *Up) Stop() {
	if p.proc == nil {
		return
	}
	p.proc.Stop()
	p.proc = nil
	p.KillContainerd()
}

// Crash kills kanga up with SIGKILL, as a power cut of the process would.
func (p *Up) Crash() {
	p.proc.Kill()
	p.proc = nil
}

// Socket is the address of the containerd the agent supervises.
func (p *Up) Socket() string { return filepath.Join(p.DataDir, "containerd", "containerd.sock") }

// ContainerdPID reads the pid of the containerd the agent supervises (0:
// none runs).
func (p *Up) ContainerdPID() int { return ContainerdPID(p.DataDir) }

// KillContainerd kills the containerd the agent supervised.
func (p *Up) KillContainerd() { KillContainerd(p.DataDir) }

// Purge removes every instance, so that no container, netns or rule
// outlives the test.
func (p *Up) Purge() {
	if !p.Running() {
		return
	}
	r, err := p.CLI(2*time.Minute, nil, nil, "ps", "-aq")
	if err != nil || r.Code != 0 {
		return
	}
	for _, name := range strings.Fields(r.Stdout) {
		_, _ = p.CLI(2*time.Minute, nil, nil, "rm", "-f", name)
	}
}

// Result is what a CLI run printed and its exit code.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Env is the environment of the CLI against this platform: its client
// config, and no other KANGA_ variable of the caller's.
func (p *Up) Env() []string { return CLIEnv(p.Config) }

// CLI runs the CLI against the platform (see RunCLI).
func (p *Up) CLI(timeout time.Duration, env []string, stdin []byte, args ...string) (Result, error) {
	return RunCLI(p.Bin, p.Config, timeout, env, stdin, args...)
}

// CLIEnv is the environment of the CLI with client config config, and no
// other KANGA_ variable of the caller's.
func CLIEnv(config string) []string {
	env := []string{"KANGA_CONFIG=" + config}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KANGA_") {
			env = append(env, e)
		}
	}
	return env
}

// RunCLI runs the CLI bin with client config config, extra environment
// variables and stdin (nil for none), killed after timeout (0: never). A
// non-zero exit is the result's code; err is a run that did not end in an
// exit (the binary missing, the timeout), for which the result's code is
// -1 and its stderr the error.
func RunCLI(bin, config string, timeout time.Duration, env []string, stdin []byte, args ...string) (Result, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(CLIEnv(config), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return Result{Stdout: out.String(), Stderr: errb.String(), Code: ee.ExitCode()}, nil
	} else if err != nil {
		return Result{Stdout: out.String(), Stderr: err.Error(), Code: -1}, err
	}
	return Result{Stdout: out.String(), Stderr: errb.String()}, nil
}

// FreePort is a TCP port on 127.0.0.1 free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Tail is the last n bytes of s.
func Tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// UnmountUnder detaches every mount at or below dir, deepest first.
func UnmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir) {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
}

// CgroupRootFor is the cgroup root of the agent with data dir dir: each
// platform of a test run gets its own, so that tenant cgroups (per host)
// of platforms running side by side on this machine stay apart.
func CgroupRootFor(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "/kanga-it-" + hex.EncodeToString(sum[:])[:10]
}

// RemoveCgroupTree removes the empty cgroups at and under root in every
// hierarchy, deepest first. A cgroup with tasks left stays (and shows as a
// leak).
func RemoveCgroupTree(root string) {
	hs, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hs {
		top := filepath.Join("/sys/fs/cgroup", h.Name(), root)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
}

// DropMasquerade removes the instance subnet's NAT rule (and the bridge's
// isolation tables) of a platform whose kanga up did not get to remove
// it (killed, or instances left when a test failed); normally it is gone
// already.
func DropMasquerade(t testing.TB, bridge, subnet string) {
	if err := network.RemoveMasquerade(context.Background(), bridge, subnet); err != nil {
		t.Logf("remove masquerade of %s: %v", subnet, err)
	}
	if err := network.RemoveIsolation(bridge); err != nil {
		t.Logf("remove isolation tables of %s: %v", bridge, err)
	}
}
