// Package atomicfile replaces files so that a reader, or the next start
// after a crash, finds the old content or the new one, never a mix.
//
// The new content goes to a temporary file in the same directory (a rename
// is atomic only within one file system), which is then renamed over the
// target. The temporary file is hidden (".<name>.tmp-<random>"), unique to
// the writer, and removed on any failure.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write replaces the file at path with data, mode perm (exactly, whatever
// the umask), atomically and durably: the data is fsynced before the
// rename and the directory after it, so once Write returns the new
// content survives a crash of the host. The directory must exist.
func Write(path string, data []byte, perm os.FileMode) error {
	return replace(path, perm, true, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteNoSync is Write without the fsyncs, for files written on a hot
// path (an instance's start) whose loss at a host crash costs nothing: they
// describe state that does not survive a reboot, or are written again
// soon. A crash may leave the old content; readers still never see a mix.
func WriteNoSync(path string, data []byte, perm os.FileMode) error {
	return replace(path, perm, false, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFunc is Write for content too large to hold in memory: write
// streams it into the temporary file. An error from write leaves the file
// at path as it was.
func WriteFunc(path string, perm os.FileMode, write func(io.Writer) error) error {
	return replace(path, perm, true, write)
}

func replace(path string, perm os.FileMode, durable bool, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			// Both are no-ops when already done (closed, renamed).
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("writing %s: %w", path, err)
		}
	}()
	// CreateTemp makes the file 0600 less the umask; the caller's mode is
	// set exactly so that the file is as readable as the caller says.
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := write(f); err != nil {
		return err
	}
	if durable {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if durable {
		// The rename is only durable once the directory entry is.
		return syncDir(dir)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
