package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

// readVolume reads a volume as a container sees it, through the
// top-level links: path -> content and mode.
func readVolume(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		err := filepath.Walk(filepath.Join(dir, e.Name())+"/", func(p string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			out[rel] = fi.Mode().Perm().String() + " " + string(b)
			return nil
		})
		if err != nil {
			// A file at the top: the link resolves to a file.
			fi, serr := os.Stat(filepath.Join(dir, e.Name()))
			if serr != nil {
				t.Fatalf("%s: %v", e.Name(), serr)
			}
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			out[e.Name()] = fi.Mode().Perm().String() + " " + string(b)
		}
	}
	return out
}

// versions lists the "..<time>" version directories of a volume.
func versions(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, "..") && n != dataLink {
			out = append(out, n)
		}
	}
	return out
}

func TestWriteVolume(t *testing.T) {
	f := func(p string, mode uint32, data string) hostcontract.File {
		return hostcontract.File{Path: p, Mode: mode, Data: []byte(data)}
	}
	for _, tc := range []struct {
		name        string
		before      []hostcontract.File // written first (nil: nothing)
		crashed     bool                // a version dir an agent killed mid-write left
		files       []hostcontract.File
		wantChanged bool
		want        map[string]string
	}{
		{"fresh", nil, false,
			[]hostcontract.File{f("a.conf", 0o644, "one"), f("sub/dir/pw", 0o400, "secret")}, true,
			map[string]string{"a.conf": "-rw-r--r-- one", "sub/dir/pw": "-r-------- secret"}},
		{"same again", []hostcontract.File{f("a.conf", 0o644, "one")}, false,
			[]hostcontract.File{f("a.conf", 0o644, "one")}, false,
			map[string]string{"a.conf": "-rw-r--r-- one"}},
		{"content changed", []hostcontract.File{f("a.conf", 0o644, "one")}, false,
			[]hostcontract.File{f("a.conf", 0o644, "two")}, true,
			map[string]string{"a.conf": "-rw-r--r-- two"}},
		{"mode changed", []hostcontract.File{f("a.conf", 0o644, "one")}, false,
			[]hostcontract.File{f("a.conf", 0o440, "one")}, true,
			map[string]string{"a.conf": "-r--r----- one"}},
		{"key removed, key added", []hostcontract.File{f("a", 0o644, "1"), f("b", 0o644, "2")}, false,
			[]hostcontract.File{f("b", 0o644, "2"), f("c", 0o600, "3")}, true,
			map[string]string{"b": "-rw-r--r-- 2", "c": "-rw------- 3"}},
		{"empty", []hostcontract.File{f("a", 0o644, "1")}, false,
			nil, true, map[string]string{}},
		{"leftover of a crash", []hostcontract.File{f("a", 0o644, "1")}, true,
			[]hostcontract.File{f("a", 0o644, "2")}, true,
			map[string]string{"a": "-rw-r--r-- 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "vol")
			var old string
			if tc.before != nil {
				if changed, err := writeVolume(dir, tc.before, fileOwner{uid: -1, gid: -1}); err != nil || !changed {
					t.Fatalf("first write: changed %v, %v", changed, err)
				}
				old, _ = os.Readlink(filepath.Join(dir, dataLink))
			}
			if tc.crashed {
				if err := os.MkdirAll(filepath.Join(dir, "..2020_01_01_00_00_00.1", "a"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			changed, err := writeVolume(dir, tc.files, fileOwner{uid: -1, gid: -1})
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tc.wantChanged)
			}
			if got := readVolume(t, dir); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("volume = %v, want %v", got, tc.want)
			}
			cur, err := os.Readlink(filepath.Join(dir, dataLink))
			if err != nil || !strings.HasPrefix(cur, "..") || strings.Contains(cur, "/") {
				t.Fatalf("..data -> %q, %v; want a version in the volume's dir", cur, err)
			}
			if (cur != old) != tc.wantChanged {
				t.Errorf("..data went from %q to %q; changed = %v", old, cur, tc.wantChanged)
			}
			// Only the current version is left.
			if vs := versions(t, dir); !reflect.DeepEqual(vs, []string{cur}) {
				t.Errorf("versions = %v, want only %s", vs, cur)
			}
			// The top-level entries are links into ..data, never files.
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), "..") {
					continue
				}
				if target, err := os.Readlink(filepath.Join(dir, e.Name())); err != nil || target != dataLink+"/"+e.Name() {
					t.Errorf("%s -> %q, %v; want a link to %s/%s", e.Name(), target, err, dataLink, e.Name())
				}
			}
		})
	}
}

func TestWriteVolumeRefusesPathsOutside(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	for _, p := range []string{"../escape", "/etc/passwd", "a/../../b"} {
		if _, err := writeVolume(dir, []hostcontract.File{{Path: p, Mode: 0o644, Data: []byte("x")}}, fileOwner{uid: -1, gid: -1}); err == nil {
			t.Errorf("path %q: written, want an error", p)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); err == nil {
		t.Error("a file was written outside the volume")
	}
}

func TestObjectMounts(t *testing.T) {
	spec := &api.InstanceSpec{Volumes: []api.Volume{
		{Name: "s", Secret: &api.ObjectVolumeSource{Name: "db"}},
		{Name: "c", Config: &api.ObjectVolumeSource{Name: "app"}},
		{Name: "other"}, // another kind of volume: not this code's
	}}
	c := &api.ContainerSpec{VolumeMounts: []api.VolumeMount{
		{Name: "s", MountPath: "/etc/db/"}, {Name: "c", MountPath: "/etc/app"}, {Name: "other", MountPath: "/scratch"},
	}}
	got := objectMounts("/d/files", spec, c)
	ro := []string{"rbind", "ro", "nosuid", "nodev"}
	want := []specs.Mount{
		{Destination: "/etc/db", Type: "bind", Source: "/d/files/s", Options: ro},
		{Destination: "/etc/app", Type: "bind", Source: "/d/files/c", Options: ro},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("objectMounts = %+v\nwant %+v", got, want)
	}
}

// TestFilesTmpfs mounts the tmpfs of an instance's files for real: mode
// 0700, owned by root, size-limited; unmountFiles leaves no mount and no
// dir, and is a no-op the second time.
func TestFilesTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := filepath.Join(t.TempDir(), "files")
	t.Cleanup(func() { _ = unmountFiles(dir) })
	made, err := mountFiles(dir, 2)
	if err != nil || !made {
		t.Fatalf("mountFiles = %v, %v", made, err)
	}
	if again, err := mountFiles(dir, 2); err != nil || again {
		t.Fatalf("mountFiles again = %v, %v; want it left as it is", again, err)
	}
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil || len(infos) != 1 {
		t.Fatalf("mounts at %s: %v, %v", dir, infos, err)
	}
	if infos[0].FSType != "tmpfs" || !strings.Contains(infos[0].VFSOptions, "size=") || !strings.Contains(infos[0].VFSOptions, "mode=700") {
		t.Errorf("mount = %s %s, want a size-limited tmpfs of mode 700", infos[0].FSType, infos[0].VFSOptions)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("mode of %s = %v, %v; want 0700", dir, fi.Mode(), err)
	}
	if _, err := writeVolume(filepath.Join(dir, "v"), []hostcontract.File{{Path: "k", Mode: 0o400, Data: []byte("x")}}, fileOwner{uid: -1, gid: -1}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := unmountFiles(dir); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := mountinfo.Mounted(dir); ok {
		t.Error("still mounted")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s is still there: %v", dir, err)
	}
}

// TestRemoveSandboxDirUnmountsFiles: the removal of a sandbox dir, on
// teardown or as an orphan a restarted agent finds, takes the files'
// tmpfs off first, so that neither the mount nor the dir is left.
func TestRemoveSandboxDirUnmountsFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	a := New(Config{HostName: "h", DataDir: t.TempDir()})
	dir := a.filesDir("u1")
	t.Cleanup(func() { _ = unmountFiles(dir) })
	if _, err := mountFiles(dir, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := writeVolume(filepath.Join(dir, "v"), []hostcontract.File{{Path: "k", Mode: 0o400, Data: []byte("x")}}, fileOwner{uid: -1, gid: -1}); err != nil {
		t.Fatal(err)
	}
	a.removeSandboxDir("u1")
	if ok, _ := mountinfo.Mounted(dir); ok {
		t.Error("the files' tmpfs is still mounted")
	}
	if _, err := os.Stat(a.sandboxDir("u1")); !os.IsNotExist(err) {
		t.Errorf("the sandbox dir is still there: %v", err)
	}
}

// TestWriteVolumeFSGroup: with an fsGroup the files belong to the group,
// which may read them whatever their mode (defaultMode 0400 included), as
// the kubelet does; writing the same files again changes nothing.
func TestWriteVolumeFSGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another group")
	}
	dir := filepath.Join(t.TempDir(), "v")
	o := fileOwner{uid: -1, gid: 4321, fsGroup: true}
	files := []hostcontract.File{{Path: "k", Mode: 0o400, Data: []byte("x")}, {Path: "d/j", Mode: 0o600, Data: []byte("y")}}
	if changed, err := writeVolume(dir, o.files(files), o); err != nil || !changed {
		t.Fatalf("first write: %v, %v", changed, err)
	}
	for p, want := range map[string]os.FileMode{"k": 0o440, "d/j": 0o640} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want || fi.Sys().(*syscall.Stat_t).Gid != 4321 {
			t.Errorf("%s: mode %v group %d, want %v and 4321", p, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid, want)
		}
	}
	if changed, err := writeVolume(dir, o.files(files), o); err != nil || changed {
		t.Errorf("the same files again: changed %v, %v", changed, err)
	}
	if files[0].Mode != 0o400 {
		t.Errorf("the caller's files were changed: mode %o", files[0].Mode)
	}
}
