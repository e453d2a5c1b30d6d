package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// writers are the package's three ways to write, each as Write's shape.
var writers = []struct {
	name  string
	write func(path string, data []byte, perm os.FileMode) error
}{
	{"Write", Write},
	{"WriteNoSync", WriteNoSync},
	{"WriteFunc", func(path string, data []byte, perm os.FileMode) error {
		return WriteFunc(path, perm, func(w io.Writer) error {
			_, err := w.Write(data)
			return err
		})
	}},
}

// names lists dir's entries, to prove no temporary file is left.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteModeAndContent(t *testing.T) {
	// A strict umask: the mode must still be the caller's.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	for _, w := range writers {
		for _, perm := range []os.FileMode{0o600, 0o640, 0o644} {
			t.Run(fmt.Sprintf("%s/%o", w.name, perm), func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "state.json")
				if err := w.write(path, []byte("new\n"), perm); err != nil {
					t.Fatal(err)
				}
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != perm {
					t.Errorf("mode %o, want %o", fi.Mode().Perm(), perm)
				}
				if b, _ := os.ReadFile(path); string(b) != "new\n" {
					t.Errorf("content %q", b)
				}
				if got := names(t, dir); len(got) != 1 || got[0] != "state.json" {
					t.Errorf("directory holds %q, want only state.json", got)
				}
			})
		}
	}
}

func TestWriteReplaces(t *testing.T) {
	for _, w := range writers {
		t.Run(w.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "config")
			if err := os.WriteFile(path, []byte("old content, longer than the new\n"), 0o666); err != nil {
				t.Fatal(err)
			}
			// A reader holding the old file keeps reading the old content:
			// the file is replaced, not rewritten in place.
			held, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			if err := w.write(path, []byte("new"), 0o600); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(path); string(b) != "new" {
				t.Errorf("content %q, want new", b)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %o, want the new 0600", fi.Mode().Perm())
			}
			if b, _ := io.ReadAll(held); !strings.HasPrefix(string(b), "old content") {
				t.Errorf("the open old file reads %q", b)
			}
			if got := names(t, dir); len(got) != 1 {
				t.Errorf("directory holds %q, want only config", got)
			}
		})
	}
}

func TestFailureLeavesNoTemporaryFile(t *testing.T) {
	t.Run("rename fails", func(t *testing.T) {
		for _, w := range writers {
			dir := t.TempDir()
			// A directory where the file should go: the rename fails after
			// the temporary file is written.
			path := filepath.Join(dir, "taken")
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
			err := w.write(path, []byte("x"), 0o644)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("%s: err = %v, want an error naming %s", w.name, err, path)
			}
			if got := names(t, dir); len(got) != 1 || got[0] != "taken" {
				t.Errorf("%s: directory holds %q after the failure, want only taken", w.name, got)
			}
		}
	})
	t.Run("write fails", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "image.tar")
		if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		err := WriteFunc(path, 0o644, func(w io.Writer) error {
			if _, err := io.WriteString(w, "half of it"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "old" {
			t.Errorf("content %q after a failed write, want old", b)
		}
		if got := names(t, dir); len(got) != 1 {
			t.Errorf("directory holds %q after the failure, want only image.tar", got)
		}
	})
	t.Run("no directory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "missing", "file")
		if err := Write(path, []byte("x"), 0o644); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v, want not exist", err)
		}
	})
}

// TestConcurrentWriters: writers of the same file do not share a
// temporary file, so each reader sees one writer's whole content.
func TestConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "status")
	contents := map[string]bool{}
	for i := range 8 {
		contents[strings.Repeat(fmt.Sprint(i), 4096)] = true
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8*20)
	for c := range contents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if err := WriteNoSync(path, []byte(c), 0o644); err != nil {
					errs <- err
				}
				b, err := os.ReadFile(path)
				if err != nil {
					errs <- err
				} else if !contents[string(b)] {
					errs <- fmt.Errorf("read a mix of %d bytes", len(b))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := names(t, dir); len(got) != 1 {
		t.Errorf("directory holds %q, want only status", got)
	}
}
