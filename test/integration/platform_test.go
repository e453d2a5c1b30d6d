// Package integration runs the kanga binary end to end as root: a real
// `kanga up` with its own containerd, runc/crun, CNI and etcd, driven
// through the CLI exactly as a user would.
package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// platform is one `kanga up` under test (harness.Up), with the CLI
// helpers these tests share. The lower-case fields are the Up's, named as
// the tests use them. A hostPool's platform has no Up: it is the CLI half
// only, against kanga server.
type platform struct {
	*harness.Up
	t       *testing.T
	bin     string
	dataDir string
	config  string
	listen  string
	bridge  string
	subnet  string
	logPath string
}

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
	return startPlatformOn(t, harness.Net{DirPrefix: "kanga-it-", BridgePrefix: "kangait", SubnetPrefix: "10.214"}, upArgs...)
}

// startPlatformOn starts kanga up, host it-host unless upArgs name
// another, on a bridge and subnet of n and removes everything it made
// when the test ends.
func startPlatformOn(t *testing.T, n harness.Net, upArgs ...string) *platform {
	t.Helper()
	up := harness.StartUp(t, n, "it-host", upArgs...)
	return &platform{Up: up, t: t, bin: up.Bin, dataDir: up.DataDir, config: up.Config, listen: up.Listen,
		bridge: up.Bridge, subnet: up.Subnet, logPath: up.LogPath}
}

func (p *platform) start()             { p.Start() }
func (p *platform) stop()              { p.Stop() }
func (p *platform) crash()             { p.Crash() }
func (p *platform) containerdPID() int { return p.ContainerdPID() }
func (p *platform) killContainerd()    { p.KillContainerd() }
func (p *platform) purge()             { p.Purge() }

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
