package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// offered returns the runtime classes some host of the platform runs.
func (p *platform) offered() map[string]bool {
	p.t.Helper()
	cfg := readConfig(p.t, p.config)
	req, _ := http.NewRequest("GET", cfg.Addr+"/v1/runtimes", nil)
	req.Header.Set("Authorization", "Bearer "+cfg.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var list api.RuntimeClassList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		p.t.Fatal(err)
	}
	out := map[string]bool{}
	for _, c := range list.Items {
		out[c.Name] = len(c.Hosts) > 0
	}
	return out
}

// TestRuntimeConformance runs the same assertions against every runtime
// class: what the foundation promises must hold whatever the sandbox.
func TestRuntimeConformance(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	offered := p.offered()
	for _, class := range []string{"runc", "crun", "gvisor"} {
		t.Run(class, func(t *testing.T) {
			if !offered[class] {
				t.Skipf("no host offers runtime class %s (gvisor needs scripts/install-runsc.sh)", class)
			}
			rt := []string{"--runtime", class}
			run := func(args ...string) result { return p.kanga(append(append([]string{"run"}, rt...), args...)...) }

			// Attached run: output and exit code.
			r := run("--rm", "kanga.test/busybox", "sh", "-c", "echo out; echo err >&2; exit 5")
			if r.code != 5 || !strings.Contains(r.stdout, "out") {
				t.Fatalf("attached run: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
			}

			// Detached, logs -f, env and working directory.
			name := "conf-" + class
			if r := run("-d", "--name", name, "-e", "WHO=kanga", "-w", "/tmp", "kanga.test/busybox",
				"sh", "-c", "echo hello $WHO from $(pwd); sleep 1000"); r.code != 0 {
				t.Fatalf("run -d: %d %s", r.code, r.stderr)
			}
			p.eventually("the log line", 20*time.Second, func() bool {
				return strings.Contains(p.must("logs", name), "hello kanga from /tmp")
			})

			// exec without and with a terminal.
			if out := p.must("exec", name, "cat", "/etc/hostname"); strings.TrimSpace(out) != name {
				t.Errorf("exec hostname %q, want %q", out, name)
			}
			if r := p.kanga("exec", name, "sh", "-c", "exit 9"); r.code != 9 {
				t.Errorf("exec exit code %d, want 9", r.code)
			}
			if out := p.kangaIn([]byte("to stdin\n"), "exec", "-i", name, "cat").stdout; out != "to stdin\n" {
				t.Errorf("exec -i: %q", out)
			}
			// isatty rather than tty(1): gVisor names its terminal host:[N],
			// which busybox tty does not recognise. gVisor also ignores the
			// initial console size of an exec, so the size may arrive a
			// moment after the process starts; stty waits for it.
			cmd := exec.Command(p.bin, "exec", "-it", name, "sh", "-c",
				"test -t 0 && test -t 1 && echo on-a-tty; for i in $(seq 40); do s=$(stty size 2>/dev/null) && [ \"$s\" != \"0 0\" ] && break; sleep 0.1; done; echo $s")
			cmd.Env = p.env()
			f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 21, Cols: 77})
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(f)
			_ = cmd.Wait()
			f.Close()
			if !strings.Contains(string(out), "on-a-tty") {
				t.Errorf("exec -it: no terminal: %q", out)
			}
			// Known gap: under gVisor the terminal size of an exec is applied
			// late and at times not seen by the process at all (see the
			// closing note of the runtime-classes issue), so only runc and
			// crun are held to it.
			if class != "gvisor" && !strings.Contains(string(out), "21 77") {
				t.Errorf("exec -it: terminal size not 21x77: %q", out)
			}

			// stop and rm.
			p.must("stop", "-t", "1", name)
			if ph := p.inspect(name).Status.Phase; !ph.Terminal() {
				t.Errorf("after stop: %s", ph)
			}
			p.must("rm", name)

			// Networking: a published port answers.
			port := harness.FreePort(t)
			web := "web-" + class
			if r := run("-d", "--name", web, "-p", fmt.Sprintf("127.0.0.1:%d:80", port), "kanga.test/httpd"); r.code != 0 {
				t.Fatalf("run httpd: %s", r.stderr)
			}
			p.eventually("the published port to answer", 30*time.Second, func() bool {
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return string(b) == "hello from kanga\n"
			})
			p.must("rm", "-f", web)

			// Multi-container: containers share localhost.
			spec := api.CreateInstanceRequest{Name: "pair-" + class, Spec: api.InstanceSpec{
				Runtime: class,
				Containers: []api.ContainerSpec{
					{Name: "web", Image: "kanga.test/httpd"},
					{Name: "probe", Image: "kanga.test/busybox", Command: []string{"sh", "-c",
						"for i in $(seq 100); do wget -q -O - http://127.0.0.1:80/ && exit 0; sleep 0.1; done; exit 1"}},
				},
			}}
			b, _ := json.Marshal(spec)
			if r := p.kangaIn(b, "run", "-d", "-f", "-"); r.code != 0 {
				t.Fatalf("run -f: %s", r.stderr)
			}
			p.eventually("the probe to finish", 40*time.Second, func() bool {
				st := p.inspect(spec.Name).Status
				return len(st.Containers) == 2 && st.Containers[1].State == api.ContainerTerminated
			})
			if st := p.inspect(spec.Name).Status.Containers[1]; *st.ExitCode != 0 {
				t.Errorf("probe could not reach web on localhost: exit %d, logs %q", *st.ExitCode, p.must("logs", "-c", "probe", spec.Name))
			}
			p.must("rm", "-f", spec.Name)

			// The resource spec is enforced: a memory hog is killed.
			r = run("--memory", "24Mi", "--name", "hog-"+class, "kanga.test/busybox", "sh", "-c",
				`x=$(head -c 200000000 /dev/zero | tr "\0" a); echo survived`)
			if r.code == 0 || strings.Contains(r.stdout, "survived") {
				t.Errorf("200MB under a 24Mi limit survived: exit %d %q", r.code, r.stdout)
			}
			p.must("rm", "-f", "hog-"+class)
		})
	}
}

// TestGVisorIsolation checks what holds only in the gVisor sandbox: the
// instance sees gVisor's kernel, not the host's, and the host's details
// stay hidden.
func TestGVisorIsolation(t *testing.T) {
	p := startPlatform(t)
	if !p.offered()["gvisor"] {
		t.Skip("no host offers runtime class gvisor (run scripts/install-runsc.sh)")
	}
	p.importImages()
	hostKernel, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}
	p.must("run", "-d", "--name", "neighbour", "kanga.test/busybox", "sleep", "4242")

	probe := func(class, script string) string {
		r := p.kanga("run", "--rm", "--runtime", class, "kanga.test/busybox", "sh", "-c", script)
		return r.stdout
	}
	// The kernel the instance sees.
	if k := strings.TrimSpace(probe("gvisor", "uname -r")); k == strings.TrimSpace(string(hostKernel)) || k == "" {
		t.Errorf("gvisor instance sees kernel %q, the host's is %q", k, hostKernel)
	}
	if out := probe("gvisor", "dmesg"); !strings.Contains(out, "gVisor") {
		t.Errorf("dmesg in gvisor does not come from gVisor: %q", out)
	}
	// Host paths leak through /proc/mounts under runc; not under gVisor.
	if out := probe("runc", "cat /proc/mounts"); !strings.Contains(out, p.dataDir) {
		t.Errorf("control: runc's /proc/mounts should show the host path %s: %q", p.dataDir, out)
	}
	if out := probe("gvisor", "cat /proc/mounts"); strings.Contains(out, p.dataDir) {
		t.Errorf("gvisor's /proc/mounts shows host paths: %q", out)
	}
	// Other instances' processes are invisible.
	if out := probe("gvisor", "ps -o args"); strings.Contains(out, "4242") {
		t.Errorf("gvisor instance sees the neighbour's process: %q", out)
	}
	// adjtimex(2), even only reading the clock's state, is passed to the
	// host kernel by runc's seccomp profile and refused by the sandbox.
	if out := probe("runc", "adjtimex >/dev/null && echo allowed"); !strings.Contains(out, "allowed") {
		t.Errorf("control: adjtimex under runc: %q", out)
	}
	// The exit status, not the message: gVisor at times loses the first
	// write of a process that exits at once (see the closing note).
	if out := probe("gvisor", `adjtimex >/dev/null 2>&1; echo "status=$?"`); !strings.Contains(out, "status=1") {
		t.Errorf("adjtimex under gvisor was not refused: %q", out)
	}
	p.must("rm", "-f", "neighbour")
}

// TestTenantForcedOntoGVisor: an untrusted tenant gets gvisor by default
// and a clear 403 when it asks for runc.
func TestTenantForcedOntoGVisor(t *testing.T) {
	p := startPlatform(t)
	token := strings.TrimSpace(p.must("tenant", "create", "untrusted", "--allowed-runtimes", "gvisor"))
	as := func(args ...string) result {
		cmd := exec.Command(p.bin, args...)
		cmd.Env = append(p.env(), "KANGA_TOKEN="+token)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return result{stdout: out.String(), stderr: errb.String(), code: code}
	}
	if r := as("image", "import", p.imagePath("busybox.tar")); r.code != 0 {
		t.Fatalf("import as untrusted: %s", r.stderr)
	}
	r := as("run", "--rm", "--runtime", "runc", "kanga.test/busybox", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "may not use runtime class runc") || !strings.Contains(r.stderr, "gvisor") {
		t.Fatalf("runc for a gvisor-only tenant: exit %d, %q", r.code, r.stderr)
	}
	if !p.offered()["gvisor"] {
		t.Skip("no host offers gvisor: the rest needs scripts/install-runsc.sh")
	}
	r = as("run", "--rm", "kanga.test/busybox", "dmesg")
	if r.code != 0 || !strings.Contains(r.stdout, "gVisor") {
		t.Fatalf("default class of the untrusted tenant is not gvisor: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// TestEnclaveStaysPending: no host here has the hardware, so an enclave
// instance waits with a reason instead of running somewhere weaker.
func TestEnclaveStaysPending(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	p.must("run", "-d", "--name", "secret", "--runtime", "enclave", "kanga.test/busybox", "true")
	inst := p.inspect("secret")
	if inst.Status.Phase != api.PhasePending || inst.Status.Reason != "Unschedulable" || !strings.Contains(inst.Status.Message, "sgx") {
		t.Fatalf("enclave instance: %s %s %q", inst.Status.Phase, inst.Status.Reason, inst.Status.Message)
	}
	p.must("rm", "secret")
}
