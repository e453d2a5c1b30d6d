package integration

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// filesSpec is an instance of busybox that sleeps with secret db mounted
// at /etc/db (key password as creds/pw, mode 0400), config app at
// /etc/app (every key, mode 0440), and env from secret envsec (PW from a
// key, every key with prefix E_).
const filesSpec = `{"name":%q,"spec":{
  "containers":[{"name":"main","image":"kanga.test/busybox","command":["sleep","3600"],
    "env":[{"name":"PW","valueFrom":{"secretKeyRef":{"name":"envsec","key":"token"}}}],
    "envFrom":[{"prefix":"E_","secretRef":{"name":"envsec"}}],
    "volumeMounts":[{"name":"db","mountPath":"/etc/db"},{"name":"app","mountPath":"/etc/app","readOnly":false}]}],
  "volumes":[
    {"name":"db","secret":{"name":"db","items":[{"key":"password","path":"creds/pw","mode":256}]}},
    {"name":"app","config":{"name":"app","defaultMode":288}}]}}`

// pid1Env is a shell command printing the env of the container's
// process, one variable a line.
const pid1Env = `tr '\0' '\n' </proc/1/environ`

// filesMount is the host's tmpfs of an instance's secret and config files.
func filesMount(dataDir string, inst api.Instance) string {
	return filepath.Join(dataDir, "agent", "sandboxes", inst.UID, "files")
}

// mountsAt lists the filesystem types mounted at dir (/proc/self/mounts).
func mountsAt(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 2 && fields[1] == dir {
			out = append(out, fields[2])
		}
	}
	return out
}

// filesOnDisk lists the files under root, outside any tmpfs, whose bytes
// contain marker: what a disk image of the host would show.
func filesOnDisk(t *testing.T, root, marker string) []string {
	t.Helper()
	tmpfs := map[string]bool{}
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 2 && (f[2] == "tmpfs" || f[2] == "overlay") && strings.HasPrefix(f[1], root+"/") {
			// overlay: a container's root filesystem, whose files are
			// the snapshot's, walked anyway under the snapshotter.
			tmpfs[f[1]] = true
		}
	}
	var found []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone meanwhile
		}
		if d.IsDir() && tmpfs[p] {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err == nil && bytes.Contains(data, []byte(marker)) {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestSecretAndConfigFiles runs an instance with a secret and a config
// mounted as files and env from a secret on a real kanga up: content and
// modes as the container sees them, read-only mounts, the host's side on
// a tmpfs of mode 0700 with the secret nowhere on disk, a config update
// reaching the running container, the files kept across a SIGKILL of
// kanga up, and no tmpfs left after rm.
func TestSecretAndConfigFiles(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	const (
		fileMarker = "it-file-secret-7c3a"
		envMarker  = "it-env-secret-91b2"
	)
	p.must("secret", "create", "db", "--from-literal", "password="+fileMarker, "--from-literal", "user=app")
	p.must("secret", "create", "envsec", "--from-literal", "token="+envMarker, "--from-literal", "user=env-user")
	p.must("config", "create", "app", "--from-literal", "app.conf=level=one", "--from-literal", "other=x")

	spec := filepath.Join(t.TempDir(), "files.json")
	if err := os.WriteFile(spec, fmt.Appendf(nil, filesSpec, "files"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.must("run", "-d", "-f", spec)
	p.eventually("files to run", 60*time.Second, func() bool { return p.inspect("files").Status.Phase == api.PhaseRunning })
	inst := p.inspect("files")

	// The record names the objects, never a value.
	if out := p.must("inspect", "files"); strings.Contains(out, fileMarker) || strings.Contains(out, envMarker) || strings.Contains(out, b64(envMarker)) {
		t.Errorf("inspect shows a secret's value:\n%s", out)
	}

	exec := func(script string) string {
		t.Helper()
		return p.must("exec", "files", "sh", "-c", script)
	}
	// Items, paths and modes as the container sees them (stat -L: each
	// key is a link into ..data, as with the kubelet).
	if got := exec("cat /etc/db/creds/pw; echo; stat -L -c %a /etc/db/creds/pw; ls /etc/db"); got != fileMarker+"\n400\ncreds\n" {
		t.Errorf("secret volume as the container sees it: %q", got)
	}
	if got := exec("cat /etc/app/app.conf; echo; stat -L -c %a /etc/app/app.conf /etc/app/other"); got != "level=one\n440\n440\n" {
		t.Errorf("config volume as the container sees it: %q", got)
	}
	// Read-only, though the config's mount asked for read-write.
	for _, dir := range []string{"/etc/db", "/etc/app"} {
		if r := p.kanga("exec", "files", "sh", "-c", "echo x > "+dir+"/new"); r.code == 0 || !strings.Contains(r.stderr+r.stdout, "Read-only file system") {
			t.Errorf("writing into %s: %+v", dir, r)
		}
	}
	// Env from the secret, resolved at start, in the env of the
	// container's process and, through the launcher, of an exec'd one
	// (see internal/agent/launch.go).
	if got := exec(pid1Env + ` | grep -E '^(PW|E_token|E_user)='`); got != "E_token="+envMarker+"\nE_user=env-user\nPW="+envMarker+"\n" {
		t.Errorf("env from the secret: %q", got)
	}
	if got := exec(`echo "$PW $E_token $E_user"`); got != envMarker+" "+envMarker+" env-user\n" {
		t.Errorf("env from the secret in an exec'd process: %q", got)
	}

	// The host's side: a tmpfs of mode 0700 owned by root; the secret
	// mounted as a file is nowhere else under the data dir.
	dir := filesMount(p.dataDir, inst)
	if got := mountsAt(t, dir); len(got) != 1 || got[0] != "tmpfs" {
		t.Fatalf("mounts at %s: %v, want one tmpfs", dir, got)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil || st.Mode&0o777 != 0o700 || st.Uid != 0 {
		t.Errorf("%s: mode %o uid %d (%v), want 0700 root", dir, st.Mode&0o777, st.Uid, err)
	}
	if found := filesOnDisk(t, p.dataDir, fileMarker); len(found) > 0 {
		t.Errorf("the secret's value is on disk in %v", found)
	}
	// Nor the env's value: it is kept off the container's spec, which
	// containerd records in its metadata (meta.db, read raw here).
	if found := filesOnDisk(t, p.dataDir, envMarker); len(found) > 0 {
		t.Errorf("the value of the env from a secret is on disk in %v", found)
	}

	// A config update reaches the running container; the env stays the
	// snapshot taken at start.
	p.must("config", "update", "app", "--from-literal", "app.conf=level=two")
	p.must("secret", "update", "envsec", "--from-literal", "token=changed", "--from-literal", "user=env-user")
	p.eventually("the config update inside the instance", 30*time.Second, func() bool {
		return p.kanga("exec", "files", "cat", "/etc/app/app.conf").stdout == "level=two"
	})
	if r := p.kanga("exec", "files", "ls", "/etc/app"); r.stdout != "app.conf\n" {
		t.Errorf("after the update, /etc/app holds %q; want the removed key gone", r.stdout)
	}
	if got := exec(pid1Env + ` | grep '^PW='`); got != "PW="+envMarker+"\n" {
		t.Errorf("env after the secret's update: %q, want the value at start", got)
	}

	// kill -9 of kanga up: the instance and its files stay; the new
	// agent adopts them and follows updates again.
	p.crash()
	if got := mountsAt(t, dir); len(got) != 1 {
		t.Fatalf("after the crash, mounts at %s: %v", dir, got)
	}
	p.start()
	p.eventually("files to run after the restart", 60*time.Second, func() bool { return p.inspect("files").Status.Phase == api.PhaseRunning })
	p.must("config", "update", "app", "--from-literal", "app.conf=level=three")
	p.eventually("a config update after the restart", 30*time.Second, func() bool {
		return p.kanga("exec", "files", "cat", "/etc/app/app.conf").stdout == "level=three"
	})
	if got := mountsAt(t, dir); len(got) != 1 {
		t.Errorf("after the restart, mounts at %s: %v; want the same one tmpfs", dir, got)
	}

	// rm: no tmpfs left, no dir.
	p.must("rm", "-f", "files")
	p.eventually("files to be removed", 60*time.Second, func() bool { return !strings.Contains(p.summary(), "files ") })
	if got := mountsAt(t, dir); len(got) != 0 {
		t.Errorf("after rm, mounts at %s: %v", dir, got)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after rm, %s: %v", dir, err)
	}
	if b, err := os.ReadFile("/proc/self/mounts"); err != nil || strings.Contains(string(b), filepath.Join(p.dataDir, "agent", "sandboxes")) {
		t.Errorf("a mount under the sandboxes is left (%v)", err)
	}

	// Never logged.
	if log, err := os.ReadFile(p.logPath); err != nil || bytes.Contains(log, []byte(fileMarker)) || bytes.Contains(log, []byte(envMarker)) {
		t.Errorf("kanga up's log holds a secret's value (or cannot be read: %v)", err)
	}
}

// TestMultiHostSecretFiles is the same on a joined agent: it gets the
// files and the env from secrets of its instance over the host link
// (mTLS, answered only for instances placed on it), and follows a config
// update from there.
func TestMultiHostSecretFiles(t *testing.T) {
	p := startPool(t, map[string]string{"mh-f": "f"})
	p.importEverywhere()
	const marker = "mh-file-secret-4e0d"
	p.must("secret", "create", "db", "--from-literal", "password="+marker)
	p.must("config", "create", "app", "--from-literal", "app.conf=level=one")
	p.must("run", "-d", "--name", "mhfiles", "--secret", "db:/etc/db", "--config-mount", "app:/etc/app",
		"--env-from-secret", "db", "kanga.test/busybox", "sleep", "3600")
	p.eventually("mhfiles to run", 60*time.Second, func() bool { return p.inspect("mhfiles").Status.Phase == api.PhaseRunning })
	inst := p.inspect("mhfiles")
	if got := p.must("exec", "mhfiles", "sh", "-c", `cat /etc/db/password; echo; `+pid1Env+` | grep '^password='; cat /etc/app/app.conf`); got != marker+"\npassword="+marker+"\nlevel=one" {
		t.Errorf("files and env in the instance: %q", got)
	}
	dir := filesMount(p.agents["mh-f"].dataDir, inst)
	if got := mountsAt(t, dir); len(got) != 1 || got[0] != "tmpfs" {
		t.Fatalf("mounts at %s: %v, want one tmpfs", dir, got)
	}
	if found := filesOnDisk(t, p.dataDir, marker); len(found) > 0 {
		t.Errorf("the secret's value is on the server's disk in the clear: %v", found)
	}
	if found := filesOnDisk(t, p.agents["mh-f"].dataDir, marker); len(found) > 0 {
		t.Errorf("the secret's value is on the joined host's disk in the clear: %v", found)
	}
	p.must("config", "update", "app", "--from-literal", "app.conf=level=two")
	p.eventually("the config update inside the instance", 30*time.Second, func() bool {
		return p.kanga("exec", "mhfiles", "cat", "/etc/app/app.conf").stdout == "level=two"
	})
	p.must("rm", "-f", "mhfiles")
	p.eventually("mhfiles to be removed", 60*time.Second, func() bool { return !strings.Contains(p.summary(), "mhfiles ") })
	if got := mountsAt(t, dir); len(got) != 0 {
		t.Errorf("after rm, mounts at %s: %v", dir, got)
	}
}

// TestWarmSecretEnv: an instance with env from a secret starts in a warm
// container with the secret's value in its env (the claim asks the
// control plane as the files step does), also after a restart of its
// process; one with a config volume does not take a warm container (its
// mounts were fixed when the warm container started) and starts the usual
// way with its files.
func TestWarmSecretEnv(t *testing.T) {
	p := startWarmPlatform(t, "--warm-max", "1")
	p.importImages()
	const marker = "warm-env-secret-2f6b"
	p.must("secret", "create", "db", "--from-literal", "password="+marker)
	p.must("config", "create", "app", "--from-literal", "app.conf=level=one")
	p.must("run", "-d", "--name", "seed", "kanga.test/busybox", "sleep", "1000")
	p.running("seed")

	// A digest of the value in the log, never the value: the log is on
	// disk.
	c := busybox("sh", "-c", `echo pw=$(printf %s "$PW" | md5sum); sleep 1; exit 1`)
	c.Env = []api.EnvVar{{Name: "PW", ValueFrom: &api.EnvVarSource{SecretKeyRef: &api.KeySelector{Name: "db", Key: "password"}}}}
	p.warmRun("w", api.InstanceSpec{Containers: []api.ContainerSpec{c}, RestartPolicy: api.RestartAlways})
	p.eventually("w to restart", 60*time.Second, func() bool {
		return p.inspect("w").Status.Containers[0].RestartCount >= 1
	})
	sum := md5.Sum([]byte(marker))
	p.eventually("two runs of w in its log", 30*time.Second, func() bool {
		return strings.Count(p.kanga("logs", "w").stdout, "pw="+hex.EncodeToString(sum[:])+" -\n") >= 2
	})
	// The holder took the value over a FIFO, the restarts through the
	// launcher: containerd's metadata never had it.
	if found := filesOnDisk(t, p.dataDir, marker); len(found) > 0 {
		t.Errorf("the value of the env from a secret is on disk in %v", found)
	}

	p.eventually("a warm container ready", 60*time.Second, func() bool { return p.warmReady() > 0 })
	f := busybox("sleep", "1000")
	f.VolumeMounts = []api.VolumeMount{{Name: "app", MountPath: "/etc/app"}}
	p.runSpec(api.CreateInstanceRequest{Name: "f", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{f},
		Volumes: []api.Volume{{Name: "app", Config: &api.ObjectVolumeSource{Name: "app"}}}}})
	inst := p.running("f")
	if id := p.warmOf(inst.UID); id != "" {
		t.Errorf("f, with a config volume, claimed warm container %s", id)
	}
	if got := p.must("exec", "f", "cat", "/etc/app/app.conf"); got != "level=one" {
		t.Errorf("f's config file: %q", got)
	}
}

// TestMultiHostFilesAfterAgentCrash: an agent killed with SIGKILL leaves
// its instance's files tmpfs mounted; the instance is removed while the
// agent is down, and the agent, started again, takes the tmpfs off (as
// the teardown of a deletion it finds pending, or as an orphan's).
func TestMultiHostFilesAfterAgentCrash(t *testing.T) {
	p := startPool(t, map[string]string{"mh-g": "g"})
	p.importEverywhere()
	p.must("config", "create", "app", "--from-literal", "app.conf=level=one")
	p.must("run", "-d", "--name", "gone", "--config-mount", "app:/etc/app", "kanga.test/busybox", "sleep", "3600")
	p.eventually("gone to run", 60*time.Second, func() bool { return p.inspect("gone").Status.Phase == api.PhaseRunning })
	a := p.agents["mh-g"]
	dir := filesMount(a.dataDir, p.inspect("gone"))
	if got := mountsAt(t, dir); len(got) != 1 {
		t.Fatalf("mounts at %s: %v, want one tmpfs", dir, got)
	}
	p.crashAgent(a)
	if got := mountsAt(t, dir); len(got) != 1 {
		t.Fatalf("after the crash, mounts at %s: %v; the test needs the tmpfs left behind", dir, got)
	}
	// Removed while its host is down: the record goes now or when the
	// host is back; either way the host has a tmpfs of an instance it no
	// longer runs.
	if r := p.kanga("rm", "-f", "gone"); r.code != 0 {
		t.Logf("rm -f while the agent is down: %+v", r)
	}
	p.startAgent(a, "")
	p.waitReady(a.name)
	p.eventually("no instance left", 60*time.Second, func() bool { return !strings.Contains(p.summary(), "gone ") })
	p.eventually("the returning agent to take the files' tmpfs off", 60*time.Second, func() bool { return len(mountsAt(t, dir)) == 0 })
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s is still there: %v", dir, err)
	}
}

// TestSecretEnvNotOnDisk: env from a secret reaches the container's
// process in runc, crun (as root and as a non-root user) and gVisor, also
// in each run after a restart by the restart policy, while its value is
// nowhere on the host's disk: not in the data dir (containerd's
// metadata, meta.db, read raw; its state dir with the bundles and the
// runtimes' state; the agent's records and logs), not under
// /var/lib/containerd or /run/containerd, not in kanga up's log, nor in
// inspect or ps. The container's process has the argv of a start without
// the launcher, and the launcher's file is empty once it ran; an exec'd
// process and an exec probe have the env too.
func TestSecretEnvNotOnDisk(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	rnd := make([]byte, 8)
	_, _ = rand.Read(rnd)
	marker := "env-marker-" + hex.EncodeToString(rnd)
	sum := md5.Sum([]byte(marker))
	p.must("secret", "create", "envsec", "--from-literal", "token="+marker)
	// The process prints a digest of the value, never the value: its
	// output goes to a log file on disk.
	script := `printf %s "$PW" | md5sum; sleep 4; exit 1`
	uid := int64(1000)
	for _, tc := range []struct {
		name, class string
		user        *int64
	}{
		{name: "runc", class: "runc"},
		{name: "crun", class: "crun"},
		{name: "crun-nonroot", class: "crun", user: &uid},
		{name: "gvisor", class: "gvisor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !p.offered()[tc.class] {
				t.Skipf("no host offers runtime class %s (gvisor needs scripts/install-runsc.sh)", tc.class)
			}
			name := "env-" + tc.name
			c := busybox("sh", "-c", script)
			c.Env = []api.EnvVar{{Name: "PW", ValueFrom: &api.EnvVarSource{SecretKeyRef: &api.KeySelector{Name: "envsec", Key: "token"}}}}
			if tc.user != nil {
				c.SecurityContext = &api.SecurityContext{RunAsUser: tc.user}
			}
			p.runSpec(api.CreateInstanceRequest{Name: name, Spec: api.InstanceSpec{
				Runtime: tc.class, RestartPolicy: api.RestartAlways, Containers: []api.ContainerSpec{c},
			}})
			p.running(name)
			defer p.kanga("rm", "-f", name)
			// The value, read from the env of the container's process
			// (pid 1, the shell, or between runs of it, not yet).
			p.eventually("the secret in the env of "+name+"'s process", 30*time.Second, func() bool {
				r := p.kanga("exec", name, "sh", "-c", pid1Env+` | grep '^PW='`)
				return r.code == 0 && r.stdout == "PW="+marker+"\n"
			})
			// The exec'd process has the container's env (the launcher
			// reads pid 1's), its own -e over it.
			if got := p.must("exec", "-e", "EXTRA=x", name, "sh", "-c", `tr '\0' ' ' </proc/1/cmdline; echo; echo "[$PW] [$EXTRA]"; wc -c </.kanga/env; id -u`); got != "sh -c "+script+" \n["+marker+"] [x]\n0\n"+fmt.Sprint(ptrOr(tc.user, 0))+"\n" {
				t.Errorf("argv of pid 1, env of an exec'd process, size of the launcher's file, uid:\n%s", got)
			}
			// Every run, restarts included, has the value.
			want := hex.EncodeToString(sum[:]) + "  -\n"
			p.eventually("two runs of "+name+" with the value", 90*time.Second, func() bool {
				return strings.Count(p.kanga("logs", name).stdout, want) >= 2
			})
			if n := p.inspect(name).Status.Containers[0].RestartCount; n < 1 {
				t.Errorf("restart count %d after two runs", n)
			}
			if out := p.must("inspect", name); strings.Contains(out, marker) {
				t.Errorf("inspect shows the value:\n%s", out)
			}
			if out := p.must("ps"); strings.Contains(out, marker) {
				t.Errorf("ps shows the value:\n%s", out)
			}
		})
	}
	// An exec probe sees the env of the container too.
	pr := busybox("sleep", "3600")
	pr.Env = []api.EnvVar{{Name: "PW", ValueFrom: &api.EnvVarSource{SecretKeyRef: &api.KeySelector{Name: "envsec", Key: "token"}}}}
	pr.ReadinessProbe = &api.Probe{Exec: &api.ExecAction{Command: []string{"sh", "-c", `test -n "$PW"`}}, PeriodSeconds: 1}
	p.runSpec(api.CreateInstanceRequest{Name: "env-probe", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{pr}}})
	p.eventually("env-probe to be ready by a probe reading the env", 60*time.Second, func() bool {
		cs := p.inspect("env-probe").Status.Containers
		return len(cs) == 1 && cs[0].Ready
	})
	p.must("rm", "-f", "env-probe")
	for _, root := range []string{p.dataDir, "/var/lib/containerd", "/run/containerd"} {
		if _, err := os.Stat(root); err != nil {
			continue
		}
		if found := filesOnDisk(t, root, marker); len(found) > 0 {
			t.Errorf("the value of the env from a secret is on disk in %v", found)
		}
	}
	if log, err := os.ReadFile(p.logPath); err != nil || bytes.Contains(log, []byte(marker)) {
		t.Errorf("kanga up's log holds the value (or cannot be read: %v)", err)
	}
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
