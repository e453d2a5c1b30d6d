package integration

import (
	"bufio"
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
)

// TestEmptyDirsAndDiskLimit runs instances with a memory and a disk
// emptyDir shared by two containers, and one with its writable layer
// capped by --disk, on a real kanga up: the containers share what they
// write, the kernel stops a writer at each limit with ENOSPC, and `kanga
// rm` leaves no mount or loop device behind.
func TestEmptyDirsAndDiskLimit(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	const mib = 1 << 20

	req := api.CreateInstanceRequest{Name: "shared", Spec: api.InstanceSpec{
		Resources: api.Resources{Memory: "256Mi"},
		Volumes: []api.Volume{
			{Name: "mem", EmptyDir: &api.EmptyDirVolumeSource{Medium: api.MediumMemory, SizeLimit: "64Mi"}},
			{Name: "disk", EmptyDir: &api.EmptyDirVolumeSource{SizeLimit: "64Mi"}},
		},
		Containers: []api.ContainerSpec{
			{Name: "writer", Image: "kanga.test/busybox", Command: []string{"sleep", "3600"},
				VolumeMounts: []api.VolumeMount{{Name: "mem", MountPath: "/mem"}, {Name: "disk", MountPath: "/disk"}}},
			{Name: "reader", Image: "kanga.test/busybox", Command: []string{"sleep", "3600"},
				VolumeMounts: []api.VolumeMount{{Name: "mem", MountPath: "/mem", ReadOnly: true}, {Name: "disk", MountPath: "/data/disk", ReadOnly: true}}},
		},
	}}
	p.runSpec(req)
	p.running("shared")

	// One writes, the other reads; the reader's mounts are read-only.
	for _, dir := range []string{"mem", "disk"} {
		p.must("exec", "-c", "writer", "shared", "sh", "-c", "echo shared-"+dir+" > /"+dir+"/hello")
	}
	if out := p.must("exec", "-c", "reader", "shared", "cat", "/mem/hello", "/data/disk/hello"); out != "shared-mem\nshared-disk\n" {
		t.Fatalf("the reader reads %q, want what the writer wrote", out)
	}
	if r := p.kanga("exec", "-c", "reader", "shared", "sh", "-c", "echo x > /data/disk/x"); r.code == 0 || !strings.Contains(r.stdout+r.stderr, "Read-only file system") {
		t.Fatalf("writing into a read-only mount: exit %d, %s%s", r.code, r.stdout, r.stderr)
	}

	// dd past each limit: ENOSPC, with the limit written (±5%).
	for _, dir := range []string{"mem", "disk"} {
		written := fillUntilFull(t, p, "shared", "writer", "/"+dir+"/fill", 100)
		t.Logf("emptyDir %s (64Mi): ENOSPC after %d bytes (%.2f%% of the limit)", dir, written, 100*float64(written)/(64*mib))
		within(t, "bytes written into the 64Mi "+dir+" emptyDir", float64(written), 64*mib, 0.05)
	}

	// kanga stats reports each filesystem with its limit and use; kanga
	// sla finds the kernel's sizes are the promised ones.
	var st api.InstanceStats
	if err := json.Unmarshal([]byte(p.must("stats", "shared", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Storage) != 2 {
		t.Fatalf("stats storage = %+v, want the two emptyDirs", st.Storage)
	}
	for _, s := range st.Storage {
		if s.Kind != api.StorageEmptyDir || s.Limit != 64*mib || s.Used < 60*mib {
			t.Errorf("stats of emptyDir %s = %+v, want a full 64Mi", s.Name, s)
		}
	}
	var rep api.SLAReport
	if err := json.Unmarshal([]byte(p.must("sla", "shared", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, it := range rep.Items {
		if it.Resource == "emptyDir" {
			n++
			if !it.Kept {
				t.Errorf("sla: %+v", it)
			}
		}
	}
	if n != 2 {
		t.Errorf("sla has %d emptyDir items, want 2: %+v", n, rep.Items)
	}

	// --disk caps the root filesystem's writes; --tmpfs adds a memory
	// emptyDir from the command line.
	p.must("run", "-d", "--name", "rootcap", "--disk", "200Mi", "--tmpfs", "/scratch:size=16Mi",
		"kanga.test/busybox", "sleep", "3600")
	p.running("rootcap")
	if out := p.must("exec", "rootcap", "cat", "/proc/mounts"); !strings.Contains(out, " /scratch tmpfs ") {
		t.Fatalf("no tmpfs at /scratch in the container:\n%s", out)
	}
	written := fillUntilFull(t, p, "rootcap", "", "/fill", 300)
	t.Logf("writable layer (--disk 200Mi): ENOSPC after %d bytes (%.2f%% of the limit)", written, 100*float64(written)/(200*mib))
	within(t, "bytes written into the root fs with --disk 200Mi", float64(written), 200*mib, 0.05)
	written = fillUntilFull(t, p, "rootcap", "", "/scratch/fill", 50)
	within(t, "bytes written into --tmpfs /scratch:size=16Mi", float64(written), 16*mib, 0.05)
	st = api.InstanceStats{}
	if err := json.Unmarshal([]byte(p.must("stats", "rootcap", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range st.Storage {
		if s.Kind == api.StorageDisk {
			found = true
			if s.Limit != 200*mib || s.Used < 190*mib {
				t.Errorf("stats of the instance's disk = %+v, want a full 200Mi", s)
			}
		}
	}
	if !found {
		t.Errorf("stats storage = %+v: no disk", st.Storage)
	}
	t.Logf("kanga stats rootcap:\n%s", p.must("stats", "rootcap"))

	// While they run, their filesystems are there; after rm, nothing is.
	if n := len(storageMounts(t, p.dataDir)); n == 0 {
		t.Fatal("no mount under the data dir's volumes while instances with emptyDirs run")
	}
	p.must("rm", "-f", "shared", "rootcap")
	assertNoStorageLeft(t, p.dataDir)
}

// TestStorageCleanupAfterCrash kills kanga up with SIGKILL while an
// instance with emptyDirs and a capped writable layer runs, starts it
// again, removes the instance and checks that no mount, tmpfs or loop
// device of it remains.
func TestStorageCleanupAfterCrash(t *testing.T) {
	p := startPlatform(t)
	p.importImages()

	// A start that fails after the volumes step (the runtime cannot mount
	// a directory over busybox's /bin/sh, a file) undoes it: the tasks,
	// the containers with their writable-layer filesystems, the emptyDirs.
	r := p.kanga("run", "-d", "--name", "doomed", "--tmpfs", "/bin/sh/x:size=8Mi", "--tmpfs", "/ok:size=8Mi", "--disk", "32Mi",
		"kanga.test/busybox", "sleep", "3600")
	if r.code == 0 || !strings.Contains(r.stderr, "tasks: container busybox") {
		t.Fatalf("run with a mount over a file: exit %d, %s, want a failure of the tasks step", r.code, r.stderr)
	}
	p.eventually("doomed to fail", 60*time.Second, func() bool { return p.inspect("doomed").Status.Phase == api.PhaseFailed })
	if m := storageMounts(t, p.dataDir); len(m) > 0 {
		t.Errorf("mounts left by a failed start: %v", m)
	}
	if l := storageLoops(t, p.dataDir); len(l) > 0 {
		t.Errorf("loop devices left by a failed start: %v", l)
	}
	p.must("rm", "-f", "doomed")
	assertNoStorageLeft(t, p.dataDir)

	spec := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(spec, []byte(`{"name": "crashy", "spec": {
		"volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "32Mi"}}],
		"containers": [{"name": "app", "image": "kanga.test/busybox", "command": ["sleep", "3600"],
			"volumeMounts": [{"name": "scratch", "mountPath": "/sub", "subPath": "deep/dir"}]}]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	p.must("run", "-d", "-f", spec, "-v", "scratch:/scratch", "--tmpfs", "/mem:size=8Mi", "--disk", "64Mi")
	p.running("crashy")
	p.must("exec", "crashy", "sh", "-c", "echo before > /scratch/f && echo before > /mem/f && echo before > /f && echo sub > /sub/g")
	if out := p.must("exec", "crashy", "cat", "/scratch/deep/dir/g"); out != "sub\n" {
		t.Fatalf("the subPath mount wrote %q into its emptyDir's deep/dir", out)
	}
	if n := len(storageMounts(t, p.dataDir)); n < 4 {
		t.Fatalf("%d mounts under the volumes dir, want the two emptyDirs, the writable layer and the sub-path bind", n)
	}

	p.crash()
	p.start()
	p.running("crashy")
	// Adopted as it was: the files are still there.
	if out := p.must("exec", "crashy", "cat", "/scratch/f", "/mem/f", "/f", "/sub/g"); out != "before\nbefore\nbefore\nsub\n" {
		t.Fatalf("after the restart the instance reads %q", out)
	}
	p.must("rm", "-f", "crashy")
	assertNoStorageLeft(t, p.dataDir)
}

// TestDiskOnePromise: --disk 200Mi caps an instance's ephemeral storage
// as one: two containers' writable layers, a disk emptyDir without a
// sizeLimit and the instance's logs share one filesystem, and a writer gets ENOSPC when together
// they reach the limit (±5%); kanga stats and kanga sla report the one
// disk; after kill -9 of kanga up the instance is adopted with its files,
// and its removal leaves no mount or loop device.
func TestDiskOnePromise(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	const mib = 1 << 20
	mounts := []api.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
	p.runSpec(api.CreateInstanceRequest{Name: "onedisk", Spec: api.InstanceSpec{
		Resources: api.Resources{Disk: "200Mi"},
		Volumes:   []api.Volume{{Name: "scratch", EmptyDir: &api.EmptyDirVolumeSource{}}},
		Containers: []api.ContainerSpec{
			{Name: "a", Image: "kanga.test/busybox", Command: []string{"sh", "-c", "echo hello-log; exec sleep 3600"}, VolumeMounts: mounts},
			{Name: "b", Image: "kanga.test/busybox", Command: []string{"sleep", "3600"}, VolumeMounts: mounts},
		},
	}})
	inst := p.running("onedisk")
	// The logs are on the disk too.
	p.eventually("a's log line", 30*time.Second, func() bool {
		return strings.Contains(p.kanga("logs", "-c", "a", "onedisk").stdout, "hello-log")
	})
	var logSt, diskSt syscall.Stat_t
	if err := syscall.Stat(filepath.Join(p.dataDir, "agent", "logs", inst.UID, "a.log"), &logSt); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join(volumeRoot(p.dataDir), "empty", inst.UID, ".disk", "fs"), &diskSt); err != nil {
		t.Fatal(err)
	}
	if logSt.Dev != diskSt.Dev {
		t.Errorf("a's log is on device %d, the instance's disk is %d", logSt.Dev, diskSt.Dev)
	}
	for _, c := range []string{"a", "b"} {
		p.must("exec", "-c", c, "onedisk", "dd", "if=/dev/zero", "of=/layer", "bs=1M", "count=60", "conv=fsync")
	}
	n := fillUntilFull(t, p, "onedisk", "a", "/scratch/fill", 300)
	total := 120*mib + n
	t.Logf("--disk 200Mi: 60Mi in each writable layer, then ENOSPC after %d bytes in the emptyDir: %d in all (%.2f%%)", n, total, 100*float64(total)/(200*mib))
	within(t, "bytes written into two writable layers and an emptyDir with --disk 200Mi", float64(total), 200*mib, 0.05)
	// Full for every container now.
	if r := p.kanga("exec", "-c", "b", "onedisk", "sh", "-c", "dd if=/dev/zero of=/more bs=1M count=8 conv=fsync"); r.code == 0 || !strings.Contains(r.stdout+r.stderr, "No space left on device") {
		t.Errorf("b writing into a full disk: exit %d, %s%s", r.code, r.stdout, r.stderr)
	}

	var st api.InstanceStats
	if err := json.Unmarshal([]byte(p.must("stats", "onedisk", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Storage) != 1 || st.Storage[0].Kind != api.StorageDisk || st.Storage[0].Limit != 200*mib || st.Storage[0].Used < 190*mib {
		t.Errorf("stats storage = %+v, want the one full 200Mi disk", st.Storage)
	}
	var rep api.SLAReport
	if err := json.Unmarshal([]byte(p.must("sla", "onedisk", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	disk := 0
	for _, it := range rep.Items {
		if it.Resource == "disk" {
			disk++
			if !it.Kept || !strings.Contains(it.Promised, "200.0Mi of ephemeral storage") {
				t.Errorf("sla: %+v", it)
			}
		}
	}
	if disk != 1 {
		t.Errorf("sla has %d disk items, want 1: %+v", disk, rep.Items)
	}

	p.crash()
	p.start()
	p.running("onedisk")
	if out := p.must("exec", "-c", "b", "onedisk", "sh", "-c", "stat -c %s /layer /scratch/fill"); out != fmt.Sprintf("%d\n%d\n", 60*mib, n) {
		t.Errorf("after kill -9 and restart, b sees sizes %q", out)
	}
	p.must("rm", "-f", "onedisk")
	assertNoStorageLeft(t, p.dataDir)
}

// TestSubPathEscape: an init container plants symlinks to the host's /etc
// in an emptyDir; the app container's subPath mounts through them resolve
// inside the volume: a link to a directory the volume does not have
// fails the start naming the subPath, one whose target the volume has
// shows the volume's own content, never the host's.
func TestSubPathEscape(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	run := func(name, sub string) result {
		spec := filepath.Join(t.TempDir(), name+".json")
		if err := os.WriteFile(spec, []byte(`{"name": "`+name+`", "spec": {"restartPolicy": "Never",
			"volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "32Mi"}}],
			"initContainers": [{"name": "plant", "image": "kanga.test/busybox", "command": ["sh", "-c",
				"mkdir -p /scratch/own/etc && echo own > /scratch/own/etc/marker && ln -s /etc /scratch/escape && ln -s /etc/passwd /scratch/pw && ln -s ../../../../../.. /scratch/own/up"],
				"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
			"containers": [{"name": "app", "image": "kanga.test/busybox", "command": ["sleep", "3600"],
				"volumeMounts": [{"name": "scratch", "mountPath": "/sub", "subPath": "`+sub+`"}]}]}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		return p.kanga("run", "-d", "-f", spec)
	}
	for _, sub := range []string{"escape", "pw"} {
		name := "esc-" + sub
		r := run(name, sub)
		if want := `container app: volumeMounts[0] scratch subPath "` + sub + `": no such file or directory in the volume`; r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Errorf("subPath %s: exit %d, %q; want a failed start saying %q", sub, r.code, r.stderr, want)
		}
		p.must("rm", "-f", name)
	}
	// "own/up" is ../../../../../.. of own/: the volume's root, whose own
	// etc is not the host's.
	if r := run("esc-up", "own/up/own/etc"); r.code != 0 {
		t.Fatalf("subPath own/up/own/etc: %+v", r)
	}
	p.running("esc-up")
	if out := p.must("exec", "esc-up", "sh", "-c", "cat /sub/marker; ls /sub"); out != "own\nmarker\n" {
		t.Errorf("subPath through a link up and out: %q, want the volume's own/etc", out)
	}
	p.must("rm", "-f", "esc-up")
	assertNoStorageLeft(t, p.dataDir)
}

// fillUntilFull writes zeros into path in container ctr of inst (the
// first container when ctr is empty), at most maxMiB MiB, expects dd to
// fail with "No space left on device", and returns the size of the file
// written.
func fillUntilFull(t *testing.T, p *platform, inst, ctr, path string, maxMiB int) int64 {
	t.Helper()
	args := []string{"exec"}
	if ctr != "" {
		args = append(args, "-c", ctr)
	}
	args = append(args, inst, "sh", "-c", "dd if=/dev/zero of="+path+" bs=1M count="+strconv.Itoa(maxMiB)+" conv=fsync; sync; stat -c SIZE=%s "+path)
	r := p.kanga(args...)
	out := r.stdout + r.stderr
	if !strings.Contains(out, "No space left on device") {
		t.Fatalf("dd of %d MiB into %s of %s: no ENOSPC (exit %d):\n%s", maxMiB, path, inst, r.code, out)
	}
	i := strings.LastIndex(out, "SIZE=")
	if i < 0 {
		t.Fatalf("no size of %s:\n%s", path, out)
	}
	n, err := strconv.ParseInt(strings.Fields(out[i+len("SIZE="):])[0], 10, 64)
	if err != nil {
		t.Fatalf("size of %s: %v\n%s", path, err, out)
	}
	return n
}

// storageMounts lists the mounts of the host whose source or target is
// under the data dir's volume storage: emptyDir filesystems and tmpfs,
// and the writable-layer filesystems over containerd's snapshot dirs.
func storageMounts(t *testing.T, dataDir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	loops := storageLoops(t, dataDir)
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		target := fields[4]
		sep := 6
		for sep < len(fields) && fields[sep] != "-" {
			sep++
		}
		if sep+2 >= len(fields) {
			continue
		}
		source := fields[sep+2]
		if strings.HasPrefix(target, volumeRoot(dataDir)+"/") || loops[source] {
			out = append(out, source+" on "+target)
		}
	}
	return out
}

// storageLoops is the set of loop devices backed by files under the data
// dir, from losetup.
func storageLoops(t *testing.T, dataDir string) map[string]bool {
	t.Helper()
	out, err := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").CombinedOutput()
	if err != nil {
		// Older losetup: -a alone ("/dev/loop0: [..]:.. (/path)").
		out, err = exec.Command("losetup", "-a").CombinedOutput()
		if err != nil {
			t.Fatalf("losetup -a: %v: %s", err, out)
		}
	}
	loops := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, dataDir) {
			loops[strings.TrimSuffix(strings.Fields(l)[0], ":")] = true
		}
	}
	return loops
}

// assertNoStorageLeft fails the test if a mount or loop device of the
// data dir's volume storage remains.
func assertNoStorageLeft(t *testing.T, dataDir string) {
	t.Helper()
	if m := storageMounts(t, dataDir); len(m) > 0 {
		t.Errorf("mounts left after rm: %v", m)
	}
	if l := storageLoops(t, dataDir); len(l) > 0 {
		t.Errorf("loop devices left after rm: %v", l)
	}
	empty := filepath.Join(volumeRoot(dataDir), "empty")
	ents, err := os.ReadDir(empty)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		t.Errorf("emptyDirs left in %s after rm: %d", empty, len(ents))
	}
}

// volumeRoot is where the agent of kanga up keeps volumes and emptyDirs.
func volumeRoot(dataDir string) string { return filepath.Join(dataDir, "agent", "volumes") }

// TestStorageRuntimes runs an instance of two containers with --disk and
// a shared disk emptyDir, in crun and gVisor: the emptyDir is shared, the
// disk holds both containers' writable layers and stops them together at
// the limit, and nothing is left after rm.
func TestStorageRuntimes(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	const mib = 1 << 20
	for _, class := range []string{"crun", "gvisor"} {
		t.Run(class, func(t *testing.T) {
			if !p.offered()[class] {
				t.Skipf("no host offers runtime class %s (gvisor needs scripts/install-runsc.sh)", class)
			}
			name := "st-" + class
			p.runSpec(api.CreateInstanceRequest{Name: name, Spec: api.InstanceSpec{
				Runtime:   class,
				Resources: api.Resources{Disk: "64Mi"},
				Volumes:   []api.Volume{{Name: "shared", EmptyDir: &api.EmptyDirVolumeSource{SizeLimit: "16Mi"}}},
				Containers: []api.ContainerSpec{
					{Name: "a", Image: "kanga.test/busybox", Command: []string{"sleep", "3600"},
						VolumeMounts: []api.VolumeMount{{Name: "shared", MountPath: "/shared"}}},
					{Name: "b", Image: "kanga.test/busybox", Command: []string{"sleep", "3600"},
						VolumeMounts: []api.VolumeMount{{Name: "shared", MountPath: "/shared"}}},
				},
			}})
			p.running(name)
			defer p.kanga("rm", "-f", name)
			p.must("exec", "-c", "a", name, "sh", "-c", "echo from-a > /shared/x")
			if out := p.must("exec", "-c", "b", name, "cat", "/shared/x"); out != "from-a\n" {
				t.Fatalf("container b reads %q from the shared emptyDir", out)
			}
			a := fillUntilFull(t, p, name, "a", "/fill", 100)
			b := fillUntilFull(t, p, name, "b", "/fill", 100)
			t.Logf("%s, --disk 64Mi: ENOSPC after %d bytes from a, then %d from b (%.2f%% in all)", class, a, b, 100*float64(a+b)/(64*mib))
			within(t, class+": bytes written into the root filesystems of a and b with disk 64Mi", float64(a+b), 64*mib, 0.05)
			p.must("rm", "-f", name)
			assertNoStorageLeft(t, p.dataDir)
		})
	}
}
