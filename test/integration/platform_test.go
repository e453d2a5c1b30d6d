// Package integration runs the kanga binary end to end as root: a real
// `kanga up` with its own containerd, runc/crun, CNI and etcd, driven
// through the CLI exactly as a user would.
package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/testenv"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// TestMain removes the binary built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBinary()
	os.Exit(code)
}

// binary builds bin/kanga once per test run, into a temp dir.
func binary(t *testing.T) string { return harness.Binary(t) }

// platform is one `kanga up` under test.
type platform struct {
	t       *testing.T
	bin     string
	dataDir string
	config  string
	listen  string
	bridge  string
	subnet  string
	logPath string
	upArgs  []string // extra flags of kanga up
	cmd     *exec.Cmd
	done    chan struct{}
}

var netSeq = 0

// startPlatform starts `kanga up` in a fresh data dir with its own bridge
// and subnet, and tears everything down (instances included) at the end.
// The warm pool is off: these tests count veths, rules and addresses, and
// pooled sandboxes appearing and going in the background would blur that.
// test/integration/pool_test.go covers the pool.
func startPlatform(t *testing.T) *platform {
	t.Helper()
	return startPlatformWith(t, "--pool-max", "0")
}

// startPlatformWith is startPlatform with extra flags for kanga up.
func startPlatformWith(t *testing.T, upArgs ...string) *platform {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinaries(t, "containerd", "runc")
	return startPlatformOn(t, platformNet{dirPrefix: "kanga-it-", bridgePrefix: "kangait", subnetPrefix: "10.214"}, upArgs...)
}

// platformNet is a kind of test's own data dir prefix, bridge prefix and
// /16, so that tests of one kind never collide with another kind running
// at the same time (go test runs packages side by side).
type platformNet struct {
	dirPrefix    string // "kanga-it-"
	bridgePrefix string // "kangait": the bridge is kangaitN
	subnetPrefix string // "10.214": the subnet is 10.214.N.0/24
	// prefixLen is the subnet's length when not 24: 22 gives 10.214.4N.0/22,
	// room for a thousand instances.
	prefixLen int
}

// startPlatformOn starts kanga up on a bridge and subnet of n and removes
// everything it made when the test ends.
func startPlatformOn(t *testing.T, n platformNet, upArgs ...string) *platform {
	t.Helper()
	netSeq++
	seq := (os.Getpid()*7+netSeq)%250 + 1
	dir, err := os.MkdirTemp("", n.dirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	p := &platform{
		t:       t,
		bin:     binary(t),
		dataDir: dir,
		config:  filepath.Join(dir, "client.json"),
		listen:  "127.0.0.1:" + strconv.Itoa(harness.FreePort(t)),
		bridge:  fmt.Sprintf("%s%d", n.bridgePrefix, seq),
		subnet:  fmt.Sprintf("%s.%d.0/24", n.subnetPrefix, seq),
		logPath: filepath.Join(dir, "kanga.log"),
		upArgs:  upArgs,
	}
	if n.prefixLen == 22 {
		p.subnet = fmt.Sprintf("%s.%d.0/22", n.subnetPrefix, (seq%64)*4)
	}
	p.start()
	t.Cleanup(func() {
		p.purge()
		p.stop()
		if t.Failed() {
			if b, err := os.ReadFile(p.logPath); err == nil {
				t.Logf("kanga up log:\n%s", harness.Tail(string(b), 6000))
			}
		}
		// Snapshots are unmounted by containerd on delete; anything left
		// mounted under the data dir would make RemoveAll fail loudly.
		harness.UnmountUnder(dir)
		harness.RemoveCgroupTree(harness.CgroupRootFor(dir))
		harness.DropMasquerade(t, p.bridge, p.subnet)
		_ = exec.Command("ip", "link", "del", p.bridge).Run()
		os.RemoveAll(dir)
		// The netns directory of this data dir outlives its last
		// namespace; remove it if empty (Remove fails otherwise). Its name
		// is derived from the network state dir, as the agent does.
		sum := sha256.Sum256([]byte(filepath.Join(dir, "network")))
		_ = os.Remove(filepath.Join("/run/kanga/netns", hex.EncodeToString(sum[:])[:12]))
	})
	return p
}

func (p *platform) start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	args := append([]string{"up", "--data-dir", p.dataDir, "--listen", p.listen,
		"--write-config", p.config, "--bridge", p.bridge, "--subnet", p.subnet, "--host-name", "it-host",
		"--cgroup-root", harness.CgroupRootFor(p.dataDir)}, p.upArgs...)
	cmd := exec.Command(p.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	logf.Close()
	p.cmd = cmd
	p.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			b, _ := os.ReadFile(p.logPath)
			p.t.Fatalf("kanga up exited early:\n%s", harness.Tail(string(b), 4000))
		default:
		}
		if _, err := os.Stat(p.config); err == nil {
			if r := p.kanga("version"); r.code == 0 {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, _ := os.ReadFile(p.logPath)
	p.t.Fatalf("kanga up did not become ready:\n%s", harness.Tail(string(b), 4000))
}

// stop ends kanga up gracefully; instances keep running.
func (p *platform) stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
	p.killContainerd()
}

// crash kills kanga up with SIGKILL, as a power cut of the process would.
func (p *platform) crash() {
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// containerdPID reads the pid of the containerd the agent supervises.
func (p *platform) containerdPID() int {
	b, err := os.ReadFile(filepath.Join(p.dataDir, "containerd", "containerd", "containerd.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

func (p *platform) killContainerd() {
	if pid := p.containerdPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// purge removes every instance, so that no container, netns or rule
// outlives the test.
func (p *platform) purge() {
	if p.cmd == nil {
		return
	}
	r := p.kanga("ps", "-aq")
	for _, name := range strings.Fields(r.stdout) {
		p.kanga("rm", "-f", name)
	}
}

type result struct {
	stdout, stderr string
	code           int
}

func (p *platform) env() []string { return harness.CLIEnv(p.config) }

// kanga runs the CLI and returns what it printed and its exit code.
func (p *platform) kanga(args ...string) result {
	return p.kangaIn(nil, args...)
}

func (p *platform) kangaIn(stdin []byte, args ...string) result {
	r, err := p.cli(2*time.Minute, nil, stdin, args...)
	if err != nil {
		p.t.Fatalf("kanga %v: %v", args, err)
	}
	return r
}

// cli runs the CLI against the platform with extra environment variables
// and stdin (see harness.RunCLI).
func (p *platform) cli(timeout time.Duration, env []string, stdin []byte, args ...string) (result, error) {
	r, err := harness.RunCLI(p.bin, p.config, timeout, env, stdin, args...)
	return result{stdout: r.Stdout, stderr: r.Stderr, code: r.Code}, err
}

// must runs the CLI and fails the test unless it exits 0.
func (p *platform) must(args ...string) string {
	p.t.Helper()
	r := p.kanga(args...)
	if r.code != 0 {
		p.t.Fatalf("kanga %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (p *platform) inspect(name string) api.Instance {
	p.t.Helper()
	out := p.must("inspect", name)
	var insts []api.Instance
	if err := json.Unmarshal([]byte(out), &insts); err != nil || len(insts) != 1 {
		p.t.Fatalf("inspect %s: %v\n%s", name, err, out)
	}
	return insts[0]
}

// summary is `kanga ps -a` reduced to names and phases.
func (p *platform) summary() string {
	p.t.Helper()
	var list api.InstanceList
	out := p.must("ps", "-a", "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		p.t.Fatalf("ps -a -o json: %v\n%s", err, out)
	}
	var b strings.Builder
	for _, i := range list.Items {
		fmt.Fprintf(&b, "%s %s\n", i.Name, i.Status.Phase)
	}
	return b.String()
}

// eventually polls cond until it holds or the deadline passes. It is a
// wait for a state, not a timing assertion: the deadline is generous.
func (p *platform) eventually(what string, timeout time.Duration, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.t.Fatalf("timed out after %s waiting for %s", timeout, what)
}

// importImages imports the test images built from busybox-static.
func (p *platform) importImages() {
	p.t.Helper()
	dir := testenv.Images(p.t)
	for _, f := range []string{"busybox.tar", "httpd.tar", "noentry.tar"} {
		p.must("image", "import", filepath.Join(dir, f))
	}
}

func (p *platform) imagePath(file string) string {
	return filepath.Join(testenv.Images(p.t), file)
}

// ctr runs containerd's own CLI against the platform's containerd, to
// check what really exists underneath.
func (p *platform) ctr(args ...string) string {
	p.t.Helper()
	sock := filepath.Join(p.dataDir, "containerd", "containerd.sock")
	out, err := exec.Command("ctr", append([]string{"-a", sock, "-n", "kanga"}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("ctr %v: %v\n%s", args, err, out)
	}
	return string(out)
}
