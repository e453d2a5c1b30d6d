package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
)

// TestPersistentVolumes drives persistent volumes through the CLI of a
// real kanga up, on real loop devices, ext4 and fscrypt: data outlives
// its instance and a SIGKILL of kanga up, one instance at a time holds a
// volume, the size is the kernel's ENOSPC, an encrypted volume's backing
// file holds no plaintext, and nothing stays mounted or attached once
// everything is removed.
func TestPersistentVolumes(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	const (
		marker    = "it-volume-marker-7c2f"
		encMarker = "it-encrypted-marker-91ad"
		plainMark = "it-plain-marker-3e60"
	)

	// Bad input: 400s naming the field.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"volume", "create", "data", "--size", "1Mi"}, "size"},
		{[]string{"volume", "create", "data", "--size", "2Ti"}, "size"},
		{[]string{"volume", "create", "Bad_Name", "--size", "100Mi"}, "name"},
		{[]string{"volume", "create", "data", "--size", "100Mi", "--host", "no-such-host"}, "host"},
		{[]string{"run", "--rm", "-v", "missing:/data", "kanga.test/busybox", "true"}, "spec.volumes[0].persistentVolume.name"},
		{[]string{"run", "--rm", "-v", "x:/proc/x", "kanga.test/busybox", "true"}, "mountPath"},
	} {
		r := p.kanga(tt.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("kanga %s: exit %d, stderr %q; want a failure naming %s", strings.Join(tt.args, " "), r.code, r.stderr, tt.want)
		}
	}

	p.must("volume", "create", "data", "--size", "100Mi")
	if r := p.kanga("volume", "create", "data", "--size", "100Mi"); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("second create of data: exit %d, %q; want a 409", r.code, r.stderr)
	}
	v := p.volume("data")
	if v.Size != 100<<20 || v.Status.Phase != api.VolumeAvailable || v.Host == "" || v.Encrypted {
		t.Fatalf("volume data: %+v", v)
	}

	// Written by one instance, read by the next after the first is gone.
	p.must("run", "--name", "writer", "-v", "data:/data", "kanga.test/busybox", "sh", "-c", "echo "+marker+" > /data/m")
	if v := p.volume("data"); v.Status.Holder != "writer" || v.Status.Phase != api.VolumeInUse {
		t.Errorf("after writer: phase %s holder %q, want InUse by writer", v.Status.Phase, v.Status.Holder)
	}
	p.must("rm", "writer")
	if v := p.volume("data"); v.Status.Holder != "" || v.Status.Phase != api.VolumeAvailable {
		t.Errorf("after rm writer: phase %s holder %q, want Available", v.Status.Phase, v.Status.Holder)
	}
	if out := p.must("run", "--rm", "-v", "data:/data:ro", "kanga.test/busybox", "cat", "/data/m"); out != marker+"\n" {
		t.Fatalf("second instance read %q, want the marker", out)
	}
	// Read-only means read-only.
	if r := p.kanga("run", "--rm", "-v", "data:/data:ro", "kanga.test/busybox", "touch", "/data/x"); r.code == 0 {
		t.Error("touch on a read-only volume mount succeeded")
	}

	// One writer at a time: a second instance and rm are 409s naming the
	// holder.
	p.must("run", "-d", "--name", "holder", "-v", "data:/data", "kanga.test/busybox", "sleep", "1000")
	r := p.kanga("run", "--name", "second", "-v", "data:/data", "kanga.test/busybox", "true")
	if r.code == 0 || !strings.Contains(r.stderr, `in use by instance "holder"`) {
		t.Errorf("second instance on a held volume: exit %d, %q; want a 409 naming holder", r.code, r.stderr)
	}
	if r := p.kanga("inspect", "second"); r.code == 0 {
		t.Error("the refused instance was stored")
	}
	r = p.kanga("volume", "rm", "data")
	if r.code == 0 || !strings.Contains(r.stderr, `in use by instance "holder"`) {
		t.Errorf("volume rm of a held volume: exit %d, %q; want a 409 naming holder", r.code, r.stderr)
	}

	// The size is the kernel's: dd stops with ENOSPC at 100Mi (within 5%).
	r = p.kanga("exec", "holder", "sh", "-c", "dd if=/dev/zero of=/data/big bs=1M count=200 2>&1; stat -c %s /data/big")
	if !strings.Contains(r.stdout, "No space left on device") {
		t.Errorf("dd past the size: %q, want ENOSPC", r.stdout)
	}
	lines := strings.Fields(strings.TrimSpace(r.stdout))
	got, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if err != nil {
		t.Fatalf("dd output %q: %v", r.stdout, err)
	}
	if ratio := float64(got) / float64(100<<20); ratio < 0.95 || ratio > 1.05 {
		t.Errorf("wrote %d bytes before ENOSPC, %.3f of 100Mi; want within 5%%", got, ratio)
	}
	t.Logf("ENOSPC after %d bytes (%.4f of 100Mi)", got, float64(got)/float64(100<<20))
	p.must("exec", "holder", "rm", "/data/big")

	// Encrypted at rest: the marker is not in the backing file; in an
	// unencrypted control's it is.
	p.must("volume", "create", "sec", "--size", "32Mi", "--encrypted")
	p.must("volume", "create", "plain", "--size", "32Mi")
	p.must("run", "--rm", "-v", "sec:/data", "kanga.test/busybox", "sh", "-c", "echo "+encMarker+" > /data/m; sync")
	p.must("run", "--rm", "-v", "plain:/data", "kanga.test/busybox", "sh", "-c", "echo "+plainMark+" > /data/m; sync")
	imgs := p.volumeImages()
	if len(imgs) != 3 {
		t.Fatalf("%d disk.img under the data dir, want 3 (data, sec, plain)", len(imgs))
	}
	sawPlain := false
	for _, img := range imgs {
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(encMarker)) {
			t.Errorf("%s holds the encrypted volume's marker in the clear", img)
		}
		sawPlain = sawPlain || bytes.Contains(b, []byte(plainMark))
	}
	if !sawPlain {
		t.Error("no backing file holds the unencrypted control's marker: the grep proves nothing")
	}
	if out := p.must("run", "--rm", "-v", "sec:/data", "kanga.test/busybox", "cat", "/data/m"); out != encMarker+"\n" {
		t.Errorf("encrypted volume read back %q", out)
	}

	// SIGKILL of kanga up: the holder keeps its volume, and new instances
	// (the encrypted volume's key fetched again) read what was written.
	p.crash()
	p.start()
	if out := p.must("exec", "holder", "cat", "/data/m"); out != marker+"\n" {
		t.Errorf("holder after restart read %q", out)
	}
	p.must("rm", "-f", "holder")
	if out := p.must("run", "--rm", "-v", "data:/data", "kanga.test/busybox", "cat", "/data/m"); out != marker+"\n" {
		t.Errorf("after restart, a new instance read %q", out)
	}
	if out := p.must("run", "--rm", "-v", "sec:/data", "kanga.test/busybox", "cat", "/data/m"); out != encMarker+"\n" {
		t.Errorf("after restart, the encrypted volume read %q", out)
	}

	// The volume's host cordoned: an instance on the volume waits, and
	// the reason names the host.
	p.must("host", "cordon", "it-host")
	p.kanga("run", "-d", "--name", "waiting", "-v", "data:/data", "kanga.test/busybox", "true")
	if w := p.inspect("waiting"); w.Status.Phase != api.PhasePending || !strings.Contains(w.Status.Message, "volumes are on host it-host") ||
		!strings.Contains(w.Status.Message, "cordoned") {
		t.Errorf("instance on a cordoned volume host: %s %s %q", w.Status.Phase, w.Status.Reason, w.Status.Message)
	}
	p.must("rm", "-f", "waiting")
	p.must("host", "uncordon", "it-host")

	// Removal leaves no mount and no loop device behind.
	for _, n := range []string{"data", "sec", "plain"} {
		p.must("volume", "rm", n)
	}
	if out := p.must("volume", "ls", "-o", "json"); strings.Contains(out, `"name"`) {
		t.Errorf("volume ls after rm: %s", out)
	}
	if imgs := p.volumeImages(); len(imgs) != 0 {
		t.Errorf("backing files left: %v", imgs)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, p.dataDir) && (strings.Contains(l, "/volumes/") || strings.Contains(l, "/pvmounts/")) {
			t.Errorf("mount left: %s", l)
		}
	}
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range loops {
		if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(string(b), p.dataDir) {
			t.Errorf("loop device left: %s -> %s", f, strings.TrimSpace(string(b)))
		}
	}
}

func (p *platform) volume(name string) api.PersistentVolume {
	p.t.Helper()
	out := p.must("volume", "inspect", name)
	var vs []api.PersistentVolume
	if err := json.Unmarshal([]byte(out), &vs); err != nil || len(vs) != 1 {
		p.t.Fatalf("volume inspect %s: %v\n%s", name, err, out)
	}
	return vs[0]
}

// volumeImages are the persistent volumes' backing files on the host
// (the agent's data dir is <data-dir>/agent).
func (p *platform) volumeImages() []string {
	imgs, err := filepath.Glob(filepath.Join(p.dataDir, "agent", "volumes", "volumes", "*", "disk.img"))
	if err != nil {
		p.t.Fatal(err)
	}
	return imgs
}
