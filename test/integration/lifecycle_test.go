package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/testenv"
	"github.com/kanga-run/kanga/internal/testenv/harness"
	"github.com/kanga-run/kanga/internal/testenv/testimage"
)

// TestLifecycle shares one platform across the foundation's scenarios;
// each subtest cleans up its own instances.
func TestLifecycle(t *testing.T) {
	// The local registry must be allowed: pulls reach no loopback address
	// the operator did not name.
	registry := testenv.StartRegistry(t)
	p := startPlatformWith(t, "--pool-max", "0", "--insecure-registry", registry)
	p.importImages()

	t.Run("ImageList", func(t *testing.T) {
		out := p.must("image", "ls")
		for _, want := range []string{"kanga.test/busybox", "kanga.test/httpd", "kanga.test/noentry"} {
			if !strings.Contains(out, want) {
				t.Errorf("image ls does not list %s:\n%s", want, out)
			}
		}
	})

	t.Run("RunAttachedExitCode", func(t *testing.T) {
		r := p.kanga("run", "--rm", "--name", "attached", "kanga.test/busybox", "sh", "-c", "echo hello from inside; echo oops >&2; exit 3")
		if r.code != 3 {
			t.Fatalf("exit code %d, want 3\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, "hello from inside") {
			t.Fatalf("output not streamed: %q", r.stdout)
		}
		if strings.Contains(p.must("ps", "-aq"), "attached") {
			t.Fatal("--rm left the instance behind")
		}
		r = p.kanga("run", "--rm", "kanga.test/busybox", "true")
		if r.code != 0 {
			t.Fatalf("true exited %d: %s", r.code, r.stderr)
		}
	})

	t.Run("DetachedLogsFollow", func(t *testing.T) {
		p.must("run", "-d", "--name", "ticker", "kanga.test/busybox", "sh", "-c", "for i in 1 2 3 4; do echo tick $i; sleep 0.3; done")
		out := p.must("logs", "-f", "ticker")
		if !strings.Contains(out, "tick 1\ntick 2\ntick 3\ntick 4\n") {
			t.Fatalf("logs -f = %q", out)
		}
		inst := p.inspect("ticker")
		if inst.Status.Phase != api.PhaseSucceeded {
			t.Fatalf("phase %s after logs -f ended, want Succeeded", inst.Status.Phase)
		}
		p.must("rm", "ticker")
	})

	t.Run("ExecAndTTY", func(t *testing.T) {
		p.must("run", "-d", "--name", "sleeper", "-e", "GREETING=hi there", "kanga.test/busybox", "sleep", "1000")
		if out := p.must("exec", "sleeper", "sh", "-c", "echo $GREETING; hostname"); out != "hi there\nsleeper\n" {
			t.Fatalf("exec output %q", out)
		}
		if r := p.kanga("exec", "sleeper", "sh", "-c", "exit 7"); r.code != 7 {
			t.Fatalf("exec exit code %d, want 7", r.code)
		}
		if out := p.kangaIn([]byte("piped input\n"), "exec", "-i", "sleeper", "cat").stdout; out != "piped input\n" {
			t.Fatalf("exec -i cat = %q", out)
		}
		// Without -t there is no terminal.
		if r := p.kanga("exec", "sleeper", "tty"); r.code == 0 {
			t.Fatalf("tty succeeded without -t: %q", r.stdout)
		}
		// With -it the process gets a real terminal of the size we set.
		cmd := exec.Command(p.bin, "exec", "-it", "sleeper", "sh", "-c", "tty; stty size")
		cmd.Env = p.env()
		f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 33, Cols: 97})
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(f)
		_ = cmd.Wait()
		f.Close()
		if !strings.Contains(string(out), "/dev/pts/") || !strings.Contains(string(out), "33 97") {
			t.Fatalf("exec -it output %q: want a /dev/pts tty of 33x97", out)
		}
		p.must("rm", "-f", "sleeper")
	})

	t.Run("StopAndRemove", func(t *testing.T) {
		p.must("run", "-d", "--name", "victim", "kanga.test/busybox", "sleep", "1000")
		inst := p.inspect("victim")
		if inst.Status.Phase != api.PhaseRunning || inst.Status.IP == "" {
			t.Fatalf("want Running with an IP, got %s %q", inst.Status.Phase, inst.Status.IP)
		}
		// inspect carries the running instance's counters.
		var withStats []struct {
			Stats *api.InstanceStats `json:"stats"`
		}
		if err := json.Unmarshal([]byte(p.must("inspect", "victim")), &withStats); err != nil || len(withStats) != 1 ||
			withStats[0].Stats == nil || withStats[0].Stats.MemoryUsage == 0 || withStats[0].Stats.Pids == 0 {
			t.Fatalf("inspect of a running instance lacks its stats: %+v %v", withStats, err)
		}
		uid := inst.UID
		r := p.kanga("rm", "victim")
		if r.code == 0 || !strings.Contains(r.stderr, "kanga rm -f") {
			t.Fatalf("rm of a running instance: exit %d, stderr %q; want a refusal that suggests rm -f", r.code, r.stderr)
		}
		p.must("stop", "-t", "1", "victim")
		inst = p.inspect("victim")
		if !inst.Status.Phase.Terminal() || inst.Status.Containers[0].Reason != "Stopped" {
			t.Fatalf("after stop: phase %s, reason %q", inst.Status.Phase, inst.Status.Containers[0].Reason)
		}
		p.must("rm", "victim")
		if strings.Contains(p.ctr("containers", "ls", "-q"), uid) {
			t.Fatal("containerd still has the removed instance's container")
		}

		p.must("run", "-d", "--name", "victim2", "kanga.test/busybox", "sleep", "1000")
		uid = p.inspect("victim2").UID
		p.must("rm", "-f", "victim2")
		if strings.Contains(p.ctr("containers", "ls", "-q"), uid) || strings.Contains(p.ctr("tasks", "ls"), uid) {
			t.Fatal("rm -f left a container or task behind")
		}
		if _, err := os.Stat(filepath.Join("/run/kanga/netns")); err == nil {
			matches, _ := filepath.Glob("/run/kanga/netns/*/" + uid)
			if len(matches) > 0 {
				t.Fatalf("rm -f left the network namespace %v", matches)
			}
		}
		if r := p.kanga("inspect", "victim2"); r.code == 0 {
			t.Fatal("inspect found a removed instance")
		}
	})

	t.Run("MultiContainerSharesLocalhost", func(t *testing.T) {
		spec := api.CreateInstanceRequest{Name: "pair", Spec: api.InstanceSpec{
			Containers: []api.ContainerSpec{
				{Name: "web", Image: "kanga.test/httpd"},
				{Name: "probe", Image: "kanga.test/busybox", Command: []string{"sh", "-c",
					"for i in $(seq 50); do wget -q -O - http://127.0.0.1:80/ && exit 0; sleep 0.1; done; exit 1"}},
			},
		}}
		b, _ := json.Marshal(spec)
		if r := p.kangaIn(b, "run", "-d", "-f", "-"); r.code != 0 {
			t.Fatalf("run -f: exit %d: %s", r.code, r.stderr)
		}
		p.eventually("the probe container to finish", 30*time.Second, func() bool {
			st := p.inspect("pair").Status
			return len(st.Containers) == 2 && st.Containers[1].State == api.ContainerTerminated
		})
		if out := p.must("logs", "-c", "probe", "pair"); !strings.Contains(out, "hello from kanga") {
			t.Fatalf("probe could not reach web over localhost: %q", out)
		}
		p.must("rm", "-f", "pair")
	})

	t.Run("ActiveDeadline", func(t *testing.T) {
		deadline := int64(2)
		spec := api.CreateInstanceRequest{Name: "deadline", Spec: api.InstanceSpec{
			Containers:            []api.ContainerSpec{{Name: "c", Image: "kanga.test/busybox", Command: []string{"sleep", "1000"}}},
			RestartPolicy:         api.RestartAlways,
			ActiveDeadlineSeconds: &deadline,
		}}
		b, _ := json.Marshal(spec)
		if r := p.kangaIn(b, "run", "-d", "-f", "-"); r.code != 0 {
			t.Fatalf("run -f: exit %d: %s", r.code, r.stderr)
		}
		p.eventually("the instance to fail past its deadline", time.Minute, func() bool {
			st := p.inspect("deadline").Status
			return st.Phase == api.PhaseFailed && len(st.Containers) == 1 && st.Containers[0].State == api.ContainerTerminated
		})
		inst := p.inspect("deadline")
		if inst.Status.Reason != "DeadlineExceeded" || inst.Status.Containers[0].RestartCount != 0 {
			t.Errorf("status %s %q, restarts %d: want Failed DeadlineExceeded, no restart", inst.Status.Phase, inst.Status.Reason, inst.Status.Containers[0].RestartCount)
		}
		// A zero deadline is refused, naming the field.
		zero := int64(0)
		spec.Name, spec.Spec.ActiveDeadlineSeconds = "nodeadline", &zero
		b, _ = json.Marshal(spec)
		if r := p.kangaIn(b, "run", "-d", "-f", "-"); r.code == 0 || !strings.Contains(r.stderr, "spec.activeDeadlineSeconds") {
			t.Errorf("activeDeadlineSeconds 0: exit %d, stderr %q; want a refusal naming the field", r.code, r.stderr)
		}
		p.must("rm", "-f", "deadline")
	})

	t.Run("PodManifest", func(t *testing.T) {
		// A Kubernetes pod, unchanged: its ConfigMap is the tenant's
		// config of that name, its downward-API env resolved.
		p.must("config", "create", "settings", "--from-literal", "greeting=hi")
		defer p.must("config", "rm", "settings")
		pod := `apiVersion: v1
kind: Pod
metadata: {name: podyaml}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: kanga.test/busybox
    command: [sh, -c, 'echo "$GREETING $CFG_greeting $POD_NAME $(POD_IP) $URL"; exec sleep 1000']
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: URL, value: "http://$(POD_IP):80/"}
    envFrom:
    - {prefix: CFG_, configMapRef: {name: settings}}
`
		if r := p.kangaIn([]byte(pod), "run", "-d", "-f", "-"); r.code != 0 {
			t.Fatalf("run -f pod.yaml: exit %d: %s", r.code, r.stderr)
		}
		defer p.must("rm", "-f", "podyaml")
		var ip string
		p.eventually("the pod's instance to run", time.Minute, func() bool {
			st := p.inspect("podyaml").Status
			ip = st.IP
			return st.Phase == api.PhaseRunning && ip != ""
		})
		want := fmt.Sprintf("hi hi podyaml %s http://%s:80/", ip, ip)
		p.eventually("its env in its log", 30*time.Second, func() bool {
			return strings.Contains(p.must("logs", "podyaml"), want)
		})
		// Not a pod: refused before anything is created.
		dep := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
		if r := p.kangaIn([]byte(dep), "run", "-d", "-f", "-"); r.code == 0 || !strings.Contains(r.stderr, "Deployment") {
			t.Errorf("run -f of a Deployment: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("HostnameAndDNS", func(t *testing.T) {
		ndots := "3"
		spec := api.CreateInstanceRequest{Name: "dnsinst", Spec: api.InstanceSpec{
			Containers:  []api.ContainerSpec{{Name: "c", Image: "kanga.test/busybox", Command: []string{"sleep", "1000"}}},
			Hostname:    "web-0",
			HostAliases: []api.HostAlias{{IP: "10.9.8.7", Hostnames: []string{"db", "db.internal"}}},
			DNSPolicy:   api.DNSNone,
			DNSConfig:   &api.DNSConfig{Nameservers: []string{"10.9.8.53"}, Searches: []string{"svc.internal"}, Options: []api.DNSOption{{Name: "ndots", Value: &ndots}}},
		}}
		b, _ := json.Marshal(spec)
		if r := p.kangaIn(b, "run", "-d", "-f", "-"); r.code != 0 {
			t.Fatalf("run -f: exit %d: %s", r.code, r.stderr)
		}
		defer p.must("rm", "-f", "dnsinst")
		if out := p.must("exec", "dnsinst", "sh", "-c", "hostname; echo $HOSTNAME"); out != "web-0\nweb-0\n" {
			t.Errorf("hostname and $HOSTNAME: %q, want web-0 twice", out)
		}
		hosts := p.must("exec", "dnsinst", "cat", "/etc/hosts")
		ip := p.inspect("dnsinst").Status.IP
		if !strings.Contains(hosts, ip+"\tweb-0\n") || !strings.Contains(hosts, "10.9.8.7\tdb\tdb.internal\n") {
			t.Errorf("/etc/hosts:\n%s\nwant %s web-0 and the alias of 10.9.8.7", hosts, ip)
		}
		resolv := p.must("exec", "dnsinst", "cat", "/etc/resolv.conf")
		if !strings.Contains(resolv, "nameserver 10.9.8.53\nsearch svc.internal\noptions ndots:3\n") || strings.Count(resolv, "nameserver") != 1 {
			t.Errorf("/etc/resolv.conf with dnsPolicy None:\n%s", resolv)
		}
		// Bad input names the field; nothing is stored.
		spec.Name = "baddns"
		spec.Spec.HostAliases = []api.HostAlias{{IP: "10.9.8.7", Hostnames: []string{"db\nnameserver 1.1.1.1"}}}
		b, _ = json.Marshal(spec)
		if r := p.kangaIn(b, "run", "-d", "-f", "-"); r.code == 0 || !strings.Contains(r.stderr, "spec.hostAliases[0].hostnames[0]") {
			t.Errorf("a host alias with a newline: exit %d, stderr %q", r.code, r.stderr)
		}
		if strings.Contains(p.must("ps", "-aq"), "baddns") {
			t.Error("a refused instance was stored")
		}
	})

	t.Run("ImageStopSignal", func(t *testing.T) {
		// busybox with STOPSIGNAL SIGUSR1: stop sends it, not SIGTERM.
		archive := filepath.Join(t.TempDir(), "usr1.tar")
		f, err := os.Create(archive)
		if err != nil {
			t.Fatal(err)
		}
		err = testimage.WithConfig(f, p.imagePath(testimage.Busybox.File), "kanga.test/usr1:latest", func(c *v1.Config) { c.StopSignal = "SIGUSR1" })
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		p.must("image", "import", archive)
		p.must("run", "-d", "--name", "usr1", "kanga.test/usr1", "sh", "-c",
			`trap 'echo got USR1; exit 0' USR1; trap 'echo got TERM; exit 1' TERM; echo ready; while true; do sleep 0.1; done`)
		defer p.must("rm", "-f", "usr1")
		p.eventually("the trap to be set", 30*time.Second, func() bool { return strings.Contains(p.must("logs", "usr1"), "ready") })
		p.must("stop", "-t", "30", "usr1")
		p.eventually("the container to exit", time.Minute, func() bool {
			st := p.inspect("usr1").Status
			return len(st.Containers) == 1 && st.Containers[0].State == api.ContainerTerminated
		})
		c := p.inspect("usr1").Status.Containers[0]
		if out := p.must("logs", "usr1"); !strings.Contains(out, "got USR1") || c.ExitCode == nil || *c.ExitCode != 0 {
			t.Errorf("stop of an image with STOPSIGNAL SIGUSR1: log %q, exit %v; want the trap's USR1 and exit 0", out, c.ExitCode)
		}
	})

	t.Run("LongContainerName", func(t *testing.T) {
		// 63 characters, as Kubernetes allows: past containerd's id limit
		// with the instance's uid in front.
		name := strings.Repeat("c", 62) + "1"
		spec := api.CreateInstanceRequest{Name: "longname", Spec: api.InstanceSpec{
			Containers: []api.ContainerSpec{{Name: name, Image: "kanga.test/busybox", Command: []string{"sleep", "1000"}}},
		}}
		b, _ := json.Marshal(spec)
		if r := p.kangaIn(b, "run", "-d", "-f", "-"); r.code != 0 {
			t.Fatalf("run -f: exit %d: %s", r.code, r.stderr)
		}
		defer p.must("rm", "-f", "longname")
		if st := p.inspect("longname").Status; st.Phase != api.PhaseRunning {
			t.Fatalf("a 63-character container name: %s %s %s", st.Phase, st.Reason, st.Message)
		}
		if out := p.must("exec", "-c", name, "longname", "echo", "ok"); out != "ok\n" {
			t.Errorf("exec in the container: %q", out)
		}
	})

	t.Run("PublishedPort", func(t *testing.T) {
		port := harness.FreePort(t)
		p.must("run", "-d", "--name", "web", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), "kanga.test/httpd")
		var body string
		p.eventually("the published port to answer", 30*time.Second, func() bool {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return resp.StatusCode == 200
		})
		if body != "hello from kanga\n" {
			t.Fatalf("published port served %q", body)
		}
		p.must("rm", "-f", "web")
	})

	t.Run("RestartPolicies", func(t *testing.T) {
		p.must("run", "-d", "--name", "flaky", "--restart", "on-failure", "kanga.test/busybox", "sh", "-c", "exit 1")
		p.eventually("on-failure to restart twice", 30*time.Second, func() bool {
			return p.inspect("flaky").Status.Containers[0].RestartCount >= 2
		})
		p.must("run", "-d", "--name", "loop", "--restart", "always", "kanga.test/busybox", "true")
		p.eventually("always to restart after a clean exit", 30*time.Second, func() bool {
			return p.inspect("loop").Status.Containers[0].RestartCount >= 1
		})
		if ph := p.inspect("loop").Status.Phase; ph != api.PhaseRunning {
			t.Fatalf("an always-restarting instance is %s, want Running", ph)
		}
		p.must("run", "-d", "--name", "once", "--restart", "no", "kanga.test/busybox", "sh", "-c", "exit 2")
		p.eventually("never to fail for good", 30*time.Second, func() bool {
			return p.inspect("once").Status.Phase == api.PhaseFailed
		})
		if st := p.inspect("once").Status; st.Containers[0].RestartCount != 0 || *st.Containers[0].ExitCode != 2 {
			t.Fatalf("never policy: %+v", st.Containers[0])
		}
		p.must("rm", "-f", "flaky", "loop", "once")
	})

	t.Run("MemoryLimitOOMKilled", func(t *testing.T) {
		r := p.kanga("run", "--name", "hog", "--memory", "16Mi", "kanga.test/busybox", "sh", "-c",
			`x=$(head -c 100000000 /dev/zero | tr "\0" a); echo survived`)
		if r.code != 137 || strings.Contains(r.stdout, "survived") {
			t.Fatalf("a 100MB allocation under a 16Mi limit: exit %d, stdout %q", r.code, r.stdout)
		}
		inst := p.inspect("hog")
		if inst.Status.Phase != api.PhaseFailed || inst.Status.Reason != "OOMKilled" || inst.Status.Containers[0].Reason != "OOMKilled" {
			t.Fatalf("want Failed/OOMKilled, got %s/%s (container %q)", inst.Status.Phase, inst.Status.Reason, inst.Status.Containers[0].Reason)
		}
		p.must("rm", "hog")
	})

	t.Run("BadInput", func(t *testing.T) {
		before := p.must("ps", "-aq")
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"unknown image", []string{"run", "-d", "kanga.test/nope:latest"}, "not found"},
			{"malformed memory", []string{"run", "-d", "--memory", "lots", "kanga.test/busybox", "true"}, "spec.resources.memory"},
			{"no command", []string{"run", "-d", "kanga.test/noentry"}, "no entrypoint or cmd"},
			{"bad runtime", []string{"run", "-d", "--runtime", "kata", "kanga.test/busybox", "true"}, "spec.runtime"},
		} {
			r := p.kanga(tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("%s: exit %d, stderr %q; want an error mentioning %q", tc.name, r.code, r.stderr, tc.want)
			}
		}
		p.must("run", "-d", "--name", "dup", "kanga.test/busybox", "sleep", "100")
		if r := p.kanga("run", "-d", "--name", "dup", "kanga.test/busybox", "true"); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
			t.Errorf("duplicate name: exit %d, stderr %q", r.code, r.stderr)
		}
		p.must("rm", "-f", "dup")
		if after := p.must("ps", "-aq"); after != before {
			t.Errorf("bad input left instances behind: before %q, after %q", before, after)
		}
	})

	t.Run("Auth", func(t *testing.T) {
		cfg := readConfig(t, p.config)
		for _, tc := range []struct {
			name, token string
		}{{"missing", ""}, {"wrong", "not-the-token"}} {
			req, _ := http.NewRequest("GET", cfg.Addr+"/v1/instances", nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e api.ErrorResponse
			_ = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != 401 || e.Error.Code != "Unauthenticated" || e.Error.Message == "" {
				t.Errorf("%s token: status %d, error %+v", tc.name, resp.StatusCode, e.Error)
			}
		}
		r := p.kanga("ps")
		if r.code != 0 {
			t.Fatalf("ps with the admin token failed: %s", r.stderr)
		}
	})

	t.Run("PullFromLocalRegistry", func(t *testing.T) {
		ref := testenv.PushImage(t, registry, filepath.Join(testenv.Images(t), "busybox.tar"), "pulled/busybox:v1")
		p.must("image", "pull", ref)
		if out := p.must("image", "ls"); !strings.Contains(out, "pulled/busybox") {
			t.Fatalf("pulled image not listed:\n%s", out)
		}
		r := p.kanga("run", "--rm", ref, "echo", "pulled ok")
		if r.code != 0 || !strings.Contains(r.stdout, "pulled ok") {
			t.Fatalf("running the pulled image: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("DockerArchiveImport", func(t *testing.T) {
		out := p.must("image", "import", filepath.Join(testenv.Images(t), "busybox-docker.tar"))
		if !strings.Contains(out, "kanga.test/busybox") {
			t.Fatalf("docker archive import printed %q", out)
		}
	})

	t.Run("Crun", func(t *testing.T) {
		testenv.RequireBinaries(t, "crun")
		r := p.kanga("run", "--rm", "--runtime", "crun", "kanga.test/busybox", "echo", "via crun")
		if r.code != 0 || !strings.Contains(r.stdout, "via crun") {
			t.Fatalf("crun: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
	})
}

func readConfig(t *testing.T, path string) struct{ Addr, Token string } {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Addr, Token string }
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}
