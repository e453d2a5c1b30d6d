package agent

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/errdefs"
)

// TestBindSubPath binds sub-paths of a real directory standing for a
// volume in which a container planted symlinks pointing out of it: what
// the bind shows is always inside the volume, never the host's /etc.
func TestBindSubPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind mount")
	}
	vol := t.TempDir()
	mk := func(p, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(vol, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vol, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(p, to string) {
		t.Helper()
		if err := os.Symlink(to, filepath.Join(vol, p)); err != nil {
			t.Fatal(err)
		}
	}
	mk("conf/app.conf", "volume's app.conf")
	mk("etc/hostname", "the volume's own etc")
	link("abs", "/etc")                 // absolute: resolved against the volume
	link("up", "../../../../../../etc") // dot-dots stop at the volume's root
	link("inner", "conf")
	link("abs-file", "/etc/passwd")
	if err := os.Mkdir(filepath.Join(vol, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	link("dir/escape", "/")

	targets := t.TempDir()
	tests := []struct {
		name, sub string
		create    bool
		file      string // a file the bind must show, relative to it
		want      string // its content
		err       error
	}{
		{"plain directory", "conf", false, "app.conf", "volume's app.conf", nil},
		{"file", "conf/app.conf", false, "", "volume's app.conf", nil},
		{"symlink inside", "inner", false, "app.conf", "volume's app.conf", nil},
		{"absolute symlink to /etc", "abs", false, "hostname", "the volume's own etc", nil},
		{"dot-dot symlink to /etc", "up", false, "hostname", "the volume's own etc", nil},
		{"absolute symlink to a host file", "abs-file", true, "", "", errdefs.ErrInvalidArgument},
		{"symlink to / then down", "dir/escape/etc", false, "hostname", "the volume's own etc", nil},
		{"missing, made", "new/deep/dir", true, "", "", nil},
		{"missing through an escaping link, made inside", "dir/escape/made", true, "", "", nil},
		{"missing, not made in a secret volume", "nope", false, "", "", errdefs.ErrInvalidArgument},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := filepath.Join(targets, "c", string(rune('a'+i)))
			err := bindSubPath(vol, tt.sub, target, tt.create)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
			if tt.want != "" {
				b, err := os.ReadFile(filepath.Join(target, tt.file))
				if err != nil || string(b) != tt.want {
					t.Errorf("%s: %q, %v; want %q", tt.file, b, err, tt.want)
				}
			}
			if _, err := os.Stat(filepath.Join(target, "passwd")); err == nil {
				t.Errorf("the bind of %q shows the host's /etc", tt.sub)
			}
		})
	}
	// Made inside the volume, not on the host.
	if st, err := os.Stat(filepath.Join(vol, "made")); err != nil || !st.IsDir() {
		t.Errorf("dir/escape/made was not made at the volume's root: %v", err)
	}
	if _, err := os.Stat("/made"); err == nil {
		t.Errorf("a directory was made on the host's /")
	}
	if st, err := os.Stat(filepath.Join(vol, "new/deep/dir")); err != nil || !st.IsDir() {
		t.Errorf("new/deep/dir: %v", err)
	}
}
