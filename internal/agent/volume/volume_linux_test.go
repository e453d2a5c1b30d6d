package volume

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/mount"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/errdefs"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// needKernel skips a test that makes loop devices and mounts unless it
// runs as root on a host that has them.
func needKernel(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: makes loop devices and mounts")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		tb.Skip("no loop devices: ", err)
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		tb.Skip("no mkfs.ext4 (e2fsprogs)")
	}
}

// newManager returns a Manager on a fresh root that the test's cleanup
// empties (Cleanup with no live instance), and then checks that no loop
// device or mount of it is left.
func newManager(tb testing.TB) *Manager {
	tb.Helper()
	needKernel(tb)
	root := tb.TempDir()
	m, err := New(root, quiet)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := m.Cleanup(context.Background(), nil); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		assertNothingLeft(tb, root)
	})
	return m
}

// assertNothingLeft fails if a loop device is backed by a file under root
// or anything is mounted under it.
func assertNothingLeft(tb testing.TB, root string, also ...string) {
	tb.Helper()
	devs, err := loopsBackedUnder(root)
	if err != nil {
		tb.Fatal(err)
	}
	if len(devs) > 0 {
		tb.Errorf("loop devices left backed under %s: %v", root, devs)
	}
	for _, dir := range append([]string{root}, also...) {
		ms, err := mountsUnder(dir)
		if err != nil {
			tb.Fatal(err)
		}
		if len(ms) > 0 {
			tb.Errorf("mounts left under %s: %v", dir, ms)
		}
	}
}

// fill writes into a new file under dir until the filesystem refuses, and
// returns the bytes written and the error that stopped it.
func fill(t *testing.T, dir string) (int64, error) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	_, _ = rand.Read(buf) // not zeros: nothing may compress or skip them
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if err != nil {
			return n, err
		}
		if n > 64<<30 {
			t.Fatal("wrote 64 GiB without an error")
		}
	}
}

// assertENOSPCNear checks that filling dir stopped with ENOSPC within 5%
// of limit bytes.
func assertENOSPCNear(t *testing.T, dir string, limit int64) {
	t.Helper()
	n, err := fill(t, dir)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing past the limit: %v after %d bytes, want ENOSPC", err, n)
	}
	ratio := float64(n) / float64(limit)
	t.Logf("ENOSPC after %d bytes of a %d-byte limit (%.2f%%)", n, limit, 100*ratio)
	if ratio < 0.95 || ratio > 1.05 {
		t.Errorf("wrote %d bytes before ENOSPC, want %d ±5%%", n, limit)
	}
}

// allocated is the host disk space a file takes (its blocks, not its
// sparse length).
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestFormatSizes(t *testing.T) {
	needKernel(t)
	dir := t.TempDir()
	for _, want := range []int64{16 << 20, 64 << 20, 100 << 20, 1 << 30, 10 << 30, 100 << 30} {
		for _, journal := range []bool{false, true} {
			img := filepath.Join(dir, "x.img")
			if err := format(context.Background(), img, want, journal); err != nil {
				t.Fatal(err)
			}
			avail, err := ext4Avail(img)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(img)
			t.Logf("want %d journal=%v: file %d (+%.2f%%), avail %d (+%.2f%%), allocated %d", want, journal,
				st.Size(), 100*float64(st.Size()-want)/float64(want), avail, 100*float64(avail-want)/float64(want), allocated(t, img))
			if avail < want || float64(avail) > 1.02*float64(want) {
				t.Errorf("want %d journal=%v: available %d, want within [want, want+2%%]", want, journal, avail)
			}
		}
	}
}

// TestFormatAvailMatchesStatfs checks the superblock reading that sizes
// filesystems against what the kernel tells a writer once mounted.
func TestFormatAvailMatchesStatfs(t *testing.T) {
	needKernel(t)
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "x.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, journal := range []bool{false, true} {
		if err := format(context.Background(), img, 100<<20, journal); err != nil {
			t.Fatal(err)
		}
		want, err := ext4Avail(img)
		if err != nil {
			t.Fatal(err)
		}
		if err := mountImage(img, mnt); err != nil {
			t.Fatal(err)
		}
		var st unix.Statfs_t
		err = unix.Statfs(mnt, &st)
		if uerr := unmountAll(mnt, false); uerr != nil {
			t.Fatal(uerr)
		}
		if err != nil {
			t.Fatal(err)
		}
		got := int64(st.Bavail) * st.Bsize
		if got != want {
			t.Errorf("journal=%v: statfs available %d, superblock says %d", journal, got, want)
		}
	}
	assertNothingLeft(t, dir)
}

func TestEmptyDirDiskENOSPC(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	const limit = 64 << 20
	path, teardown, err := m.EmptyDir(ctx, "inst-a", "scratch", MediumDisk, limit)
	if err != nil {
		t.Fatal(err)
	}
	assertENOSPCNear(t, path, limit)
	// The host gives the emptyDir its limit and little more.
	img := filepath.Join(filepath.Dir(path), "disk.img")
	if a := allocated(t, img); float64(a) > 1.1*limit {
		t.Errorf("backing file takes %d bytes of host disk for a %d-byte emptyDir", a, limit)
	}
	// Asking again while it is mounted hands back the same directory.
	again, _, err := m.EmptyDir(ctx, "inst-a", "scratch", MediumDisk, limit)
	if err != nil || again != path {
		t.Fatalf("EmptyDir again = %q, %v; want %q", again, err, path)
	}
	if _, err := os.Stat(filepath.Join(path, "fill")); err != nil {
		t.Errorf("EmptyDir again lost the data: %v", err)
	}
	if err := teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("emptyDir dir after teardown: %v", err)
	}
	assertNothingLeft(t, m.Root())

	// The next emptyDir of that size is a copy of the formatted template:
	// empty, and as large.
	path, teardown, err = m.EmptyDir(ctx, "inst-b", "scratch", MediumDisk, limit)
	if err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(path); err != nil || len(ents) != 0 {
		t.Errorf("second emptyDir holds %v, %v; want nothing", ents, err)
	}
	assertENOSPCNear(t, path, limit)
	if err := teardown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestEmptyDirMemoryENOSPC(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	const limit = 64 << 20
	path, teardown, err := m.EmptyDir(ctx, "inst-a", "shm", MediumMemory, limit)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		t.Errorf("memory emptyDir is filesystem type %#x, want tmpfs", st.Type)
	}
	assertENOSPCNear(t, path, limit)
	if u, err := UsageOf(path); err != nil || u.Used != limit || u.Available != 0 {
		t.Errorf("full memory emptyDir usage %+v, %v; want %d used, 0 available", u, err, int64(limit))
	}
	if err := teardown(ctx); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, m.Root())
}

func TestVolumeENOSPC(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	const size = 100 << 20
	if _, err := m.Create(ctx, "data", size, false, nil); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "data")
	if err := m.Mount(ctx, "data", target, MountOptions{Holder: "inst-a"}); err != nil {
		t.Fatal(err)
	}
	u0, err := UsageOf(target)
	if err != nil {
		t.Fatal(err)
	}
	if u0.Used > 1<<20 || u0.Available < size {
		t.Errorf("fresh volume usage %+v, want little used and %d available", u0, int64(size))
	}
	assertENOSPCNear(t, target, size)
	u, err := UsageOf(target)
	if err != nil {
		t.Fatal(err)
	}
	if u.Available > 1<<20 || float64(u.Used) < 0.95*size || float64(u.Used) > 1.05*size {
		t.Errorf("full volume usage %+v, want about %d used and nothing available", u, int64(size))
	}
	if err := m.Unmount(ctx, "data", "inst-a"); err != nil {
		t.Fatal(err)
	}
	// The host's disk gave the volume its size and the filesystem's
	// overhead, and nothing beyond.
	if a := allocated(t, m.image("data")); float64(a) > 1.1*size {
		t.Errorf("a full %d-byte volume takes %d bytes of host disk", int64(size), a)
	}
	if err := m.Remove(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, m.Root(), target)
}

// containsMarker scans a file for marker without reading it whole.
func containsMarker(t *testing.T, path string, marker []byte) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	var carry []byte
	for {
		n, err := f.Read(buf)
		chunk := append(carry, buf[:n]...)
		if bytes.Contains(chunk, marker) {
			return true
		}
		if len(chunk) >= len(marker) {
			carry = append([]byte(nil), chunk[len(chunk)-len(marker)+1:]...)
		}
		if err == io.EOF {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestVolumeEncryptedAtRest(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	tag := make([]byte, 8)
	_, _ = rand.Read(tag)
	marker := []byte("KANGA-PLAINTEXT-MARKER-" + hex.EncodeToString(tag))
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		encrypted bool
		key       []byte
	}{
		{"secret", true, key},
		{"control", false, nil},
	} {
		if _, err := m.Create(ctx, tc.name, 32<<20, tc.encrypted, tc.key); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(t.TempDir(), tc.name)
		if err := m.Mount(ctx, tc.name, target, MountOptions{Holder: "inst-" + tc.name, Key: tc.key}); err != nil {
			t.Fatal(err)
		}
		// The marker in a file's contents and in its name.
		if err := os.WriteFile(filepath.Join(target, string(marker)), bytes.Repeat(append(marker, '\n'), 1000), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := m.Unmount(ctx, tc.name, "inst-"+tc.name); err != nil {
			t.Fatal(err)
		}
		found := containsMarker(t, m.image(tc.name), marker)
		if found == tc.encrypted {
			t.Errorf("%s (encrypted=%v): marker in the backing file = %v", tc.name, tc.encrypted, found)
		}
	}

	// The encrypted volume opens with its key only.
	target := filepath.Join(t.TempDir(), "again")
	wrong, _ := NewKey()
	if err := m.Mount(ctx, "secret", target, MountOptions{Holder: "inst-b", Key: wrong}); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("Mount with the wrong key: %v, want ErrPermissionDenied", err)
	}
	if err := m.Mount(ctx, "secret", target, MountOptions{Holder: "inst-b"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Mount without a key: %v, want ErrInvalidArgument", err)
	}
	if v, _ := m.Get(ctx, "secret"); v.Holder != nil {
		t.Errorf("failed mounts left a holder: %+v", v.Holder)
	}
	if err := m.Mount(ctx, "secret", target, MountOptions{Holder: "inst-b", Key: key}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(target, string(marker)))
	if err != nil || !bytes.HasPrefix(got, marker) {
		t.Errorf("encrypted volume reads back %q..., %v", got[:min(len(got), 40)], err)
	}
	if id, err := policyKey(target); err != nil || id == "" {
		t.Errorf("data dir encryption policy: %q, %v", id, err)
	}
	if err := m.Unmount(ctx, "secret", "inst-b"); err != nil {
		t.Fatal(err)
	}
}

func TestVolumeSurvivesRemountAndRestart(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	key, _ := NewKey()
	if _, err := m.Create(ctx, "db", 32<<20, true, key); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "db")
	put := func(holder, file string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(target, file), []byte(holder), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	check := func(file, want string) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(target, file))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", file, got, err, want)
		}
	}
	if err := m.Mount(ctx, "db", target, MountOptions{Holder: "inst-a", Key: key}); err != nil {
		t.Fatal(err)
	}
	put("inst-a", "a")
	if err := m.Unmount(ctx, "db", "inst-a"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := mounted(target); ok {
		t.Fatal("target still mounted after Unmount")
	}

	// A new instance on the same volume reads what the first wrote.
	if err := m.Mount(ctx, "db", target, MountOptions{Holder: "inst-b", Key: key}); err != nil {
		t.Fatal(err)
	}
	check("a", "inst-a")
	put("inst-b", "b")

	// Agent restart: the mounts stay, a new Manager's Restore is a no-op.
	keyFor := func(name string) ([]byte, error) {
		if name != "db" {
			t.Errorf("key asked for %q", name)
		}
		return key, nil
	}
	m2, err := New(m.Root(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := m2.Restore(ctx, keyFor); err != nil {
			t.Fatal(err)
		}
	}
	check("b", "inst-b")
	if ms, _ := mountsUnder(target); len(ms) != 1 {
		t.Errorf("after Restore, mounts at the target: %v, want one", ms)
	}

	// Host reboot: every mount is gone, the records are not.
	if err := unmountAll(target, false); err != nil {
		t.Fatal(err)
	}
	if err := unmountAll(m.fsDir("db"), false); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, m.Root(), target)
	m3, err := New(m.Root(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := m3.Restore(ctx, keyFor); err != nil {
		t.Fatal(err)
	}
	check("a", "inst-a")
	check("b", "inst-b")
	v, err := m3.Get(ctx, "db")
	if err != nil || v.Holder == nil || v.Holder.ID != "inst-b" {
		t.Errorf("after Restore: %+v, %v; want held by inst-b", v, err)
	}
	if err := m3.Unmount(ctx, "db", "inst-b"); err != nil {
		t.Fatal(err)
	}
}

func TestVolumeOneHolder(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, "shared", 16<<20, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, "shared", 16<<20, false, nil); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second Create: %v, want ErrAlreadyExists", err)
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := m.Mount(ctx, "shared", a, MountOptions{Holder: "inst-a"}); err != nil {
		t.Fatal(err)
	}
	// Same holder, same target: a retry, fine.
	if err := m.Mount(ctx, "shared", a, MountOptions{Holder: "inst-a"}); err != nil {
		t.Errorf("Mount retried by its holder: %v", err)
	}
	for _, tc := range []struct {
		what string
		err  error
	}{
		{"Mount by another holder", m.Mount(ctx, "shared", b, MountOptions{Holder: "inst-b"})},
		{"Mount by the holder elsewhere", m.Mount(ctx, "shared", b, MountOptions{Holder: "inst-a"})},
		{"Unmount by another holder", m.Unmount(ctx, "shared", "inst-b")},
		{"Remove while held", m.Remove(ctx, "shared")},
	} {
		if !errors.Is(tc.err, errdefs.ErrConflict) || !strings.Contains(tc.err.Error(), `"inst-a"`) {
			t.Errorf("%s: %v, want ErrConflict naming inst-a", tc.what, tc.err)
		}
	}
	if ok, _ := mounted(b); ok {
		t.Error("a refused Mount mounted its target")
	}
	vs, err := m.List(ctx)
	if err != nil || len(vs) != 1 || vs[0].Holder == nil || vs[0].Holder.ID != "inst-a" {
		t.Errorf("List = %+v, %v; want shared held by inst-a", vs, err)
	}
	// A container of inst-a still holds the filesystem (a mount in its
	// namespace, played by a second bind here) when inst-a's claim is
	// released: the next holder must wait, not mount it twice.
	held := filepath.Join(dir, "container-view")
	if err := os.Mkdir(held, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := bindMount(a, held, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(ctx, "shared", "inst-a"); err != nil {
		t.Fatal(err)
	}
	if err := m.Mount(ctx, "shared", b, MountOptions{Holder: "inst-b"}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Mount while the filesystem is still mounted elsewhere: %v, want ErrConflict", err)
	}
	if err := unmountAll(held, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Mount(ctx, "shared", b, MountOptions{Holder: "inst-b", ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b, "x"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write to a read-only mount: %v, want EROFS", err)
	}
	if err := m.Unmount(ctx, "shared", "inst-b"); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(ctx, "shared"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get after Remove: %v, want ErrNotFound", err)
	}
	assertNothingLeft(t, m.Root(), dir)
}

// TestWritableLayerENOSPC is the --disk mechanism: containerd's overlay
// snapshot dir (fs = upperdir, work = workdir) with a sized filesystem
// mounted over it; writes into the container's root stop at the size.
func TestWritableLayerENOSPC(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	dir := t.TempDir()
	snap, lower, merged := filepath.Join(dir, "snapshots", "7"), filepath.Join(dir, "lower"), filepath.Join(dir, "merged")
	for _, d := range []string{filepath.Join(snap, "fs"), filepath.Join(snap, "work"), lower, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "image-file"), []byte("from the image"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A user-namespaced container's root owns its upperdir.
	if err := os.Chown(filepath.Join(snap, "fs"), 100000, 100000); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(snap, "fs", "used"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const limit = 200 << 20
	if _, err := m.WritableLayer(ctx, "inst-a", snap, limit); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("WritableLayer over a used layer: %v, want ErrFailedPrecondition", err)
	}
	if err := os.Remove(filepath.Join(snap, "fs", "used")); err != nil {
		t.Fatal(err)
	}
	teardown, err := m.WritableLayer(ctx, "inst-a", snap, limit)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(snap, "fs"), &st); err != nil || st.Uid != 100000 || st.Gid != 100000 || st.Mode&0o777 != 0o755 {
		t.Errorf("upperdir on the sized filesystem: uid %d gid %d mode %o, %v; want 100000 100000 755", st.Uid, st.Gid, st.Mode&0o777, err)
	}
	ovl := mount.Mount{Type: "overlay", Source: "overlay", Options: []string{
		"lowerdir=" + lower, "upperdir=" + filepath.Join(snap, "fs"), "workdir=" + filepath.Join(snap, "work")}}
	if err := ovl.Mount(merged); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unmountAll(merged, true) }()
	if b, err := os.ReadFile(filepath.Join(merged, "image-file")); err != nil || string(b) != "from the image" {
		t.Fatalf("image file through the overlay: %q, %v", b, err)
	}
	assertENOSPCNear(t, merged, limit)
	if a := allocated(t, filepath.Join(m.Root(), "empty", "inst-a", ".disk", "disk.img")); float64(a) > 1.1*limit {
		t.Errorf("a full %d-byte writable layer takes %d bytes of host disk", int64(limit), a)
	}
	if err := unmountAll(merged, false); err != nil {
		t.Fatal(err)
	}
	if err := teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := mounted(snap); ok {
		t.Error("the snapshot dir is still bound after the teardown")
	}
	// The disk goes with the instance's emptyDirs.
	if err := m.RemoveEmptyDirs(ctx, "inst-a"); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, m.Root(), dir)
}

// TestInstanceDiskShared is --disk as one promise: the writable layers of
// two containers and a disk emptyDir are directories of one filesystem of
// the instance's disk, so that together they stop at the limit with
// ENOSPC; removing one container's layer frees its space and leaves the
// other's in place.
func TestInstanceDiskShared(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	dir := t.TempDir()
	const limit = 64 << 20
	if _, err := m.InstanceDisk(ctx, "inst-s", limit); err != nil {
		t.Fatal(err)
	}
	var merged []string
	for _, c := range []string{"a", "b"} {
		snap, lower, mnt := filepath.Join(dir, "snapshots", c), filepath.Join(dir, "lower-"+c), filepath.Join(dir, "merged-"+c)
		for _, d := range []string{filepath.Join(snap, "fs"), filepath.Join(snap, "work"), lower, mnt} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := m.ContainerWritableLayer(ctx, "inst-s", c, snap, limit); err != nil {
			t.Fatal(err)
		}
		ovl := mount.Mount{Type: "overlay", Source: "overlay", Options: []string{
			"lowerdir=" + lower, "upperdir=" + filepath.Join(snap, "fs"), "workdir=" + filepath.Join(snap, "work")}}
		if err := ovl.Mount(mnt); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = unmountAll(mnt, true) }()
		merged = append(merged, mnt)
	}
	scratch, _, err := m.DiskEmptyDir(ctx, "inst-s", "scratch", limit)
	if err != nil {
		t.Fatal(err)
	}
	// The instance's log dir, bound from the disk: a log is on it.
	logs := filepath.Join(dir, "logs", "inst-s")
	if err := m.DiskLogs(ctx, "inst-s", logs); err != nil {
		t.Fatal(err)
	}
	if err := m.DiskLogs(ctx, "inst-s", logs); err != nil {
		t.Fatalf("DiskLogs again: %v", err)
	}
	if err := os.WriteFile(filepath.Join(logs, "a.log"), []byte("line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(m.DiskPath("inst-s"), "logs", "a.log")); err != nil || string(b) != "line\n" {
		t.Errorf("the log on the disk: %q, %v", b, err)
	}
	used := filepath.Join(dir, "logs", "used")
	if err := os.MkdirAll(used, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(used, "old.log"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.DiskLogs(ctx, "inst-s", used); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("DiskLogs over a log dir with files: %v, want ErrFailedPrecondition", err)
	}
	// A third of the limit each, the rest until ENOSPC into the emptyDir.
	var total int64
	for _, d := range merged {
		f, err := os.Create(filepath.Join(d, "third"))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		for range limit / 3 >> 20 {
			if _, err := f.Write(buf); err != nil {
				t.Fatal(err)
			}
			total += int64(len(buf))
		}
		if err := errors.Join(f.Sync(), f.Close()); err != nil {
			t.Fatal(err)
		}
	}
	n, err := fill(t, scratch)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing past the limit: %v after %d bytes, want ENOSPC", err, n)
	}
	total += n
	t.Logf("two layers and an emptyDir: ENOSPC after %d bytes of a %d-byte disk (%.2f%%)", total, int64(limit), 100*float64(total)/limit)
	if r := float64(total) / limit; r < 0.95 || r > 1.05 {
		t.Errorf("wrote %d bytes in all before ENOSPC, want %d ±5%%", total, int64(limit))
	}
	// Container a goes: its layer's bind and files with it (found from
	// the mount table, as after an agent restart); b's stays.
	if err := unmountAll(merged[0], false); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveWritableLayer(ctx, "inst-s", "a"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := mounted(filepath.Join(dir, "snapshots", "a")); ok {
		t.Error("a's snapshot dir is still bound")
	}
	if ok, _ := mounted(filepath.Join(dir, "snapshots", "b")); !ok {
		t.Error("b's snapshot dir lost its bind")
	}
	if _, err := os.Stat(filepath.Join(m.DiskPath("inst-s"), "layers", "a")); !os.IsNotExist(err) {
		t.Errorf("a's layer is still on the disk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(merged[1], "third")); err != nil {
		t.Errorf("b's file: %v", err)
	}
	if err := unmountAll(merged[1], false); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveEmptyDirs(ctx, "inst-s"); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, m.Root(), dir)
}

// TestCleanupAfterCrash plays an agent killed with everything set up: its
// Manager is dropped without a teardown, and a new one's Cleanup at start
// must leave no loop device, mount or tmpfs of the gone instances, keep a
// live instance's, and keep the volumes' data.
func TestCleanupAfterCrash(t *testing.T) {
	needKernel(t)
	ctx := context.Background()
	root := t.TempDir()
	outside := t.TempDir() // targets and snapshot dirs live outside the root
	m, err := New(root, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever the test did, leave the host clean.
		if m, err := New(root, quiet); err == nil {
			_ = m.Cleanup(ctx, nil)
		}
	})

	disk, _, err := m.EmptyDir(ctx, "gone", "scratch", MediumDisk, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	shm, _, err := m.EmptyDir(ctx, "gone", "shm", MediumMemory, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	liveDir, _, err := m.EmptyDir(ctx, "alive", "scratch", MediumDisk, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(outside, "snapshots", "1")
	if err := os.MkdirAll(filepath.Join(snap, "fs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WritableLayer(ctx, "gone", snap, 16<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, "keep", 16<<20, false, nil); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(outside, "keep")
	if err := m.Mount(ctx, "keep", target, MountOptions{Holder: "gone"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A volume whose Create died half-way, and a loop device attached and
	// never mounted (a crash between attach and mount in a tool without
	// autoclear).
	half := filepath.Join(root, "volumes", "half")
	if err := os.MkdirAll(half, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := makeSparse(filepath.Join(half, "disk.img"), 16<<20); err != nil {
		t.Fatal(err)
	}
	orphan, err := mount.AttachLoopDevice(filepath.Join(half, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("set up: %s %s %s %s %s; orphan loop %s", disk, shm, liveDir, snap, target, orphan)

	m = nil // the kill: no teardown runs, the in-memory state is gone

	m2, err := New(root, quiet)
	if err != nil {
		t.Fatal(err)
	}
	live := func(id string) bool { return id == "alive" }
	if err := m2.Cleanup(ctx, live); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{disk, shm, snap, target} {
		if ok, _ := mounted(p); ok {
			t.Errorf("%s still mounted after Cleanup", p)
		}
	}
	for _, p := range []string{filepath.Dir(disk), half} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Cleanup: %v, want gone", p, err)
		}
	}
	if ok, _ := mounted(liveDir); !ok {
		t.Errorf("the live instance's emptyDir %s was unmounted", liveDir)
	}
	v, err := m2.Get(ctx, "keep")
	if err != nil || v.Holder != nil {
		t.Errorf("volume of the gone holder: %+v, %v; want free", v, err)
	}

	// Now the live instance goes too: nothing of the root is left.
	if err := m2.Cleanup(ctx, nil); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, root, outside)

	// The volume's data outlived it all.
	if err := m2.Mount(ctx, "keep", target, MountOptions{Holder: "next"}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "kept" {
		t.Errorf("volume data after the crash: %q, %v", b, err)
	}
	if err := m2.Unmount(ctx, "keep", "next"); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, root, outside)
}

// crashRootEnv makes the test binary the victim of TestCleanupAfterKill:
// it sets up under that root, says so and waits to be killed.
const crashRootEnv = "KANGA_VOLUME_CRASH_ROOT"

func TestMain(m *testing.M) {
	if root := os.Getenv(crashRootEnv); root != "" {
		os.Exit(crashVictim(root))
	}
	os.Exit(m.Run())
}

func crashVictim(root string) int {
	ctx := context.Background()
	m, err := New(root, quiet)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	if _, _, err := m.EmptyDir(ctx, "victim", "scratch", MediumDisk, 16<<20); err != nil {
		fmt.Println(err)
		return 1
	}
	if _, _, err := m.EmptyDir(ctx, "victim", "shm", MediumMemory, 16<<20); err != nil {
		fmt.Println(err)
		return 1
	}
	key, _ := NewKey()
	if _, err := m.Create(ctx, "vol", 16<<20, true, key); err != nil {
		fmt.Println(err)
		return 1
	}
	if err := m.Mount(ctx, "vol", filepath.Join(root, "target"), MountOptions{Holder: "victim", Key: key}); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("ready")
	select {} // until SIGKILL
}

// TestCleanupAfterKill is the same as TestCleanupAfterCrash with a real
// kill -9: another process sets everything up and is killed; this one's
// Cleanup removes what it left.
func TestCleanupAfterKill(t *testing.T) {
	needKernel(t)
	root := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashRootEnv+"="+root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	m, err := New(root, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if line != "ready\n" {
		_ = m.Cleanup(context.Background(), nil)
		t.Fatalf("victim: %q", line)
	}
	// Everything is there to begin with, so its absence later means
	// something.
	before, err := mountsUnder(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 4 {
		t.Errorf("mounts after the kill: %v, want 4 (disk, tmpfs, volume fs, target)", before)
	}
	if err := m.Cleanup(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, root)
	if v, err := m.Get(context.Background(), "vol"); err != nil || v.Holder != nil {
		t.Errorf("volume after Cleanup: %+v, %v; want kept and free", v, err)
	}
}

// TestEmptyDirParallel starts instances at once: they race to make the
// template of a size, and each gets a filesystem of its own.
func TestEmptyDirParallel(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	const n = 4
	paths := make([]string, n)
	errs := make([]error, n)
	done := make(chan int)
	for i := 0; i < n; i++ {
		go func() {
			paths[i], _, errs[i] = m.EmptyDir(ctx, fmt.Sprintf("inst-%d", i), "scratch", MediumDisk, 8<<20)
			done <- i
		}()
	}
	for i := 0; i < n; i++ {
		<-done
	}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("instance %d: %v", i, errs[i])
		}
		if err := os.WriteFile(filepath.Join(paths[i], "who"), []byte(fmt.Sprint(i)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	devs, _ := loopsBackedUnder(m.Root())
	if len(devs) != n {
		t.Errorf("%d loop devices for %d emptyDirs", len(devs), n)
	}
	for i := 0; i < n; i++ {
		if b, err := os.ReadFile(filepath.Join(paths[i], "who")); err != nil || string(b) != fmt.Sprint(i) {
			t.Errorf("emptyDir %d reads %q, %v", i, b, err)
		}
		if err := m.RemoveEmptyDirs(ctx, fmt.Sprintf("inst-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	assertNothingLeft(t, m.Root())
}
