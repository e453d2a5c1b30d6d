package volume

import (
	"io/fs"
	"os"
	"path/filepath"
)

// SetGroupOwnership gives everything under dir (dir included) to group
// gid, as the kubelet does for a pod's fsGroup: each file gets the group
// and read-write for it (0660 added), each directory also search and the
// set-group-ID bit (02110 added), so that what the containers create
// there later belongs to the group too. Symbolic links get the group
// themselves and are never followed. The walk stays on what dir holds:
// dir is a volume's own filesystem, which nothing else is mounted in
// while its instance starts.
func SetGroupOwnership(dir string, gid int) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(path, -1, gid); err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode()
		want := mode | 0o660
		if d.IsDir() {
			want |= 0o110 | fs.ModeSetgid
		}
		if want == mode {
			return nil
		}
		// chmod takes the permission and setgid/setuid/sticky bits.
		return os.Chmod(path, want&(fs.ModePerm|fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky))
	})
}
