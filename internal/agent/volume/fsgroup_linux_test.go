package volume

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSetGroupOwnership: every file and directory under the root gets the
// group and group read-write, directories the set-group-ID bit; a
// symbolic link is changed itself, never its target outside the volume.
func TestSetGroupOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another group")
	}
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(root, 0o777))
	must(os.MkdirAll(filepath.Join(root, "d", "e"), 0o700))
	must(os.WriteFile(filepath.Join(root, "d", "f"), []byte("x"), 0o600))
	must(os.WriteFile(filepath.Join(root, "exec"), nil, 0o755))
	must(os.Symlink(outside, filepath.Join(root, "link")))

	must(SetGroupOwnership(root, 4321))

	for path, want := range map[string]fs.FileMode{
		"":     0o777 | fs.ModeSetgid | fs.ModeDir,
		"d":    0o770 | fs.ModeSetgid | fs.ModeDir,
		"d/e":  0o770 | fs.ModeSetgid | fs.ModeDir,
		"d/f":  0o660,
		"exec": 0o775,
		"link": fs.ModeSymlink | 0o777,
	} {
		fi, err := os.Lstat(filepath.Join(root, path))
		must(err)
		if fi.Mode() != want {
			t.Errorf("%q: mode %v, want %v", path, fi.Mode(), want)
		}
		if gid := fi.Sys().(*syscall.Stat_t).Gid; gid != 4321 {
			t.Errorf("%q: group %d, want 4321", path, gid)
		}
	}
	fi, err := os.Stat(outside)
	must(err)
	if gid := fi.Sys().(*syscall.Stat_t).Gid; gid == 4321 || fi.Mode().Perm() != 0o600 {
		t.Errorf("the link's target outside the volume was changed: group %d, mode %v", gid, fi.Mode())
	}
}
