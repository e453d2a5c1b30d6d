package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

func i64(v int64) *int64 { return &v }

// runFile runs `kanga run -f -` (attached: it prints the logs and ends
// with the instance) and returns what it printed.
func (p *platform) runFile(req api.CreateInstanceRequest) result {
	p.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.kangaIn(b, "run", "-f", "-")
}

// TestSecurityContextUser: a container runs as the user and groups the
// spec gives (--user, runAsGroup, supplementalGroups, the instance's
// fsGroup), its emptyDir belongs to the fsGroup with the set-group-ID bit
// so that new files get the group; --read-only makes / read-only while
// --tmpfs and /dev/shm stay writable; runAsNonRoot refuses a root image
// with CreateContainerConfigError and leaves nothing behind.
func TestSecurityContextUser(t *testing.T) {
	p := startPlatform(t)
	p.importImages()

	out := p.must("run", "--rm", "--user", "1000:1000", "kanga.test/busybox", "id")
	if !strings.Contains(out, "uid=1000 gid=1000") {
		t.Errorf("--user 1000:1000 ran as %q", out)
	}
	// The image's user (root here) when no user is given.
	if out := p.must("run", "--rm", "kanga.test/busybox", "id", "-u"); strings.TrimSpace(out) != "0" {
		t.Errorf("without --user the process ran as uid %q, want the image's (0)", out)
	}

	p.must("secret", "create", "tight", "--from-literal", "key=secret-read")
	script := `id; stat -c 'dir %g %A' /data; touch /data/f; stat -c 'file %g' /data/f; ` +
		`touch /rootfile && echo root-writable; echo > /data/ok && echo data-writable; cat /etc/tight/key`
	r := p.runFile(api.CreateInstanceRequest{Name: "groups", Spec: api.InstanceSpec{
		SecurityContext: &api.InstanceSecurityContext{FSGroup: i64(2000)},
		Volumes: []api.Volume{
			{Name: "data", EmptyDir: &api.EmptyDirVolumeSource{SizeLimit: "16Mi"}},
			// 0400: only the fsGroup lets uid 1000 read it.
			{Name: "tight", Secret: &api.ObjectVolumeSource{Name: "tight", DefaultMode: ptr(int32(0o400))}},
		},
		Containers: []api.ContainerSpec{{
			Name: "main", Image: "kanga.test/busybox", Command: []string{"sh", "-c", script},
			VolumeMounts: []api.VolumeMount{{Name: "data", MountPath: "/data"}, {Name: "tight", MountPath: "/etc/tight", ReadOnly: true}},
			SecurityContext: &api.SecurityContext{
				RunAsUser: i64(1000), RunAsGroup: i64(1001), SupplementalGroups: []int64{3000},
				RunAsNonRoot: ptr(true),
			},
		}},
	}})
	if r.code != 0 {
		t.Fatalf("groups: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("groups:\n%s", r.stdout)
	for _, want := range []string{"uid=1000 gid=1001", "2000", "3000", "dir 2000 drwxrwsrwx", "file 2000", "data-writable", "secret-read"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	if line, _, _ := strings.Cut(r.stdout, "\n"); !strings.Contains(line, "groups=") || !strings.Contains(line, "2000") || !strings.Contains(line, "3000") {
		t.Errorf("id shows groups %q; want fsGroup 2000 and supplemental group 3000 among them", line)
	}
	if strings.Contains(r.stdout, "root-writable") {
		t.Errorf("uid 1000 wrote to /, which root owns:\n%s", r.stdout)
	}

	r = p.kanga("run", "--rm", "--read-only", "--tmpfs", "/scratch:size=8Mi", "kanga.test/busybox", "sh", "-c",
		"touch /x 2>&1; echo root=$?; touch /scratch/y && echo scratch-ok; touch /dev/shm/z && echo shm-ok")
	if r.code != 0 || !strings.Contains(r.stdout, "Read-only file system") || strings.Contains(r.stdout, "root=0") ||
		!strings.Contains(r.stdout, "scratch-ok") || !strings.Contains(r.stdout, "shm-ok") {
		t.Errorf("--read-only: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// runAsNonRoot with an image that runs as root: refused at start.
	b, _ := json.Marshal(api.CreateInstanceRequest{Name: "nonroot", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{
		Name: "main", Image: "kanga.test/busybox", Command: []string{"id"},
		SecurityContext: &api.SecurityContext{RunAsNonRoot: ptr(true)},
	}}}})
	r = p.kangaIn(b, "run", "-d", "-f", "-")
	if r.code == 0 || !strings.Contains(r.stderr, "runAsNonRoot") {
		t.Errorf("runAsNonRoot with a root image: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	inst := p.inspect("nonroot")
	if inst.Status.Phase != api.PhaseFailed || inst.Status.Reason != "CreateContainerConfigError" ||
		!strings.Contains(inst.Status.Message, "image runs as root") {
		t.Errorf("nonroot: %s %s: %s", inst.Status.Phase, inst.Status.Reason, inst.Status.Message)
	}
	if !slices.ContainsFunc(inst.Status.Events, func(e api.Event) bool {
		return e.Reason == "CreateContainerConfigError" && strings.Contains(e.Message, "runAsNonRoot")
	}) {
		t.Errorf("no CreateContainerConfigError event: %+v", inst.Status.Events)
	}
	// Neither container nor snapshot outlives the refusal.
	for _, what := range []string{"containers", "snapshots"} {
		if ls := p.ctr(what, "ls"); strings.Contains(ls, inst.UID) {
			t.Errorf("ctr %s ls still shows the refused instance %s:\n%s", what, inst.UID, ls)
		}
	}
	p.must("rm", "-f", "nonroot")
}

// TestLabelSelector: labels and annotations set by kanga run are stored
// (inspect shows them) and kanga ps -l lists only the matching instances.
func TestLabelSelector(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	p.must("run", "-d", "--name", "web1", "-l", "app=web", "--label", "tier=front", "--annotation", "example.com/note=hello", "kanga.test/busybox", "sleep", "600")
	p.must("run", "-d", "--name", "web2", "-l", "app=web", "-l", "tier=db", "kanga.test/busybox", "sleep", "600")
	p.must("run", "-d", "--name", "db1", "-l", "app=db", "kanga.test/busybox", "sleep", "600")
	if r := p.kanga("run", "-d", "--name", "bad", "-l", "bad key=x", "kanga.test/busybox", "sleep", "600"); r.code == 0 || !strings.Contains(r.stderr, `labels key "bad key"`) {
		t.Errorf("a bad label key: exit %d: %s", r.code, r.stderr)
	}
	names := func(args ...string) []string {
		f := strings.Fields(p.must(append([]string{"ps", "-q"}, args...)...))
		slices.Sort(f)
		return f
	}
	for _, tc := range []struct {
		sel  string
		want []string
	}{
		{"app=web", []string{"web1", "web2"}},
		{"app=web,tier!=db", []string{"web1"}},
		{"app in (db,web),tier", []string{"web1", "web2"}},
		{"app notin (web)", []string{"db1"}},
	} {
		if got := names("-l", tc.sel); !slices.Equal(got, tc.want) {
			t.Errorf("ps -l %q: %v, want %v", tc.sel, got, tc.want)
		}
	}
	if got := names(); !slices.Equal(got, []string{"db1", "web1", "web2"}) {
		t.Errorf("ps: %v", got)
	}
	inst := p.inspect("web1")
	if inst.Labels["app"] != "web" || inst.Labels["tier"] != "front" || inst.Annotations["example.com/note"] != "hello" {
		t.Errorf("inspect web1: labels %v, annotations %v", inst.Labels, inst.Annotations)
	}
	if r := p.kanga("ps", "-l", "app=("); r.code == 0 || !strings.Contains(r.stderr, "labelSelector") {
		t.Errorf("a bad selector: exit %d: %s", r.code, r.stderr)
	}
}

// TestWarmSecurityContext: a warm container's claim applies the spec's
// user and groups (the holder takes them before it execs the process); an
// instance with runAsNonRoot and a root image is refused on the warm path
// as on the usual one, without a second attempt; one with a read-only
// root skips the warm containers (their root is mounted when they are
// made) and starts the usual way, read-only.
func TestWarmSecurityContext(t *testing.T) {
	p := startWarmPlatform(t, "--warm-max", "2")
	p.importImages()
	// The first instance of the image makes the pool hold it warm.
	p.runSpec(api.CreateInstanceRequest{Name: "cold", Spec: api.InstanceSpec{Runtime: "crun", Containers: []api.ContainerSpec{busybox("sleep", "600")}}})
	p.running("cold")

	c := busybox("sleep", "600")
	c.SecurityContext = &api.SecurityContext{RunAsUser: i64(1000), RunAsGroup: i64(1001), SupplementalGroups: []int64{3000}, RunAsNonRoot: ptr(true)}
	p.warmRun("wuser", api.InstanceSpec{Runtime: "crun", Containers: []api.ContainerSpec{c}})
	status := p.must("exec", "wuser", "cat", "/proc/1/status")
	for _, want := range []string{"Uid:\t1000\t1000\t1000\t1000", "Gid:\t1001\t1001\t1001\t1001", "Groups:\t1001 3000", "NoNewPrivs:\t1"} {
		if !strings.Contains(status, want) {
			t.Errorf("the warm container's process: /proc/1/status lacks %q:\n%s", want, status)
		}
	}

	p.eventually("a warm container ready", 60*time.Second, func() bool { return p.warmReady() > 0 })
	nr := busybox("sleep", "600")
	nr.SecurityContext = &api.SecurityContext{RunAsNonRoot: ptr(true)}
	b, _ := json.Marshal(api.CreateInstanceRequest{Name: "wroot", Spec: api.InstanceSpec{Runtime: "crun", Containers: []api.ContainerSpec{nr}}})
	if r := p.kangaIn(b, "run", "-d", "-f", "-"); r.code == 0 {
		t.Errorf("runAsNonRoot with a root image ran in a warm container: %s", r.stdout)
	}
	wroot := p.inspect("wroot")
	// Refused by the claim (the warm-claim step), not by a cold start.
	if wroot.Status.Phase != api.PhaseFailed || wroot.Status.Reason != "CreateContainerConfigError" ||
		!strings.HasPrefix(wroot.Status.Message, "warm-claim: ") {
		t.Errorf("wroot: %s %s: %s", wroot.Status.Phase, wroot.Status.Reason, wroot.Status.Message)
	}
	if log, _ := os.ReadFile(p.logPath); strings.Contains(string(log), "claiming a warm container failed; starting the usual way") {
		t.Errorf("the refused claim was tried again the usual way")
	}
	p.must("rm", "-f", "wroot")

	p.eventually("a warm container ready", 60*time.Second, func() bool { return p.warmReady() > 0 })
	ro := busybox("sleep", "600")
	ro.SecurityContext = &api.SecurityContext{ReadOnlyRootFilesystem: true}
	p.runSpec(api.CreateInstanceRequest{Name: "wro", Spec: api.InstanceSpec{Runtime: "crun", Containers: []api.ContainerSpec{ro}}})
	rinst := p.running("wro")
	if w := p.warmOf(rinst.UID); w != "" {
		t.Errorf("a read-only-root instance claimed warm container %s", w)
	}
	if r := p.kanga("exec", "wro", "touch", "/x"); r.code == 0 {
		t.Errorf("wro: / is writable")
	}
}

// TestPrivilegeEscalationPolicy: allowPrivilegeEscalation true is refused
// until an administrator allows it within the operator's bound; then the
// container runs without no_new_privs, and others keep it.
func TestPrivilegeEscalationPolicy(t *testing.T) {
	p := startPlatformWith(t, "--pool-max", "0", "--tenant-allow-privilege-escalation")
	token := strings.TrimSpace(p.must("tenant", "create", "esc"))
	if r := p.asTenant(token, "image", "import", p.imagePath("busybox.tar")); r.code != 0 {
		t.Fatalf("import as esc: %s", r.stderr)
	}
	defer p.purgeTenant(token)
	c := api.ContainerSpec{Name: "main", Image: "kanga.test/busybox", Command: []string{"grep", "NoNewPrivs", "/proc/self/status"},
		SecurityContext: &api.SecurityContext{AllowPrivilegeEscalation: ptr(true)}}
	b, _ := json.Marshal(api.CreateInstanceRequest{Spec: api.InstanceSpec{Containers: []api.ContainerSpec{c}}})
	file := filepath.Join(t.TempDir(), "esc.json")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := p.asTenant(token, "run", "--rm", "-f", file); r.code == 0 || !strings.Contains(r.stderr, "allowPrivilegeEscalation") {
		t.Errorf("without the policy: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	p.must("tenant", "security", "esc", "--allow-privilege-escalation")
	if r := p.asTenant(token, "run", "--rm", "-f", file); r.code != 0 || !strings.Contains(r.stdout, "NoNewPrivs:\t0") {
		t.Errorf("allowed: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := p.asTenant(token, "run", "--rm", "kanga.test/busybox", "grep", "NoNewPrivs", "/proc/self/status"); r.code != 0 || !strings.Contains(r.stdout, "NoNewPrivs:\t1") {
		t.Errorf("default: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
}
