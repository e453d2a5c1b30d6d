package volume

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPruneTemplates(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	for i := 0; i < maxTemplates+3; i++ {
		p := filepath.Join(dir, fmt.Sprintf("scratch-%d.img", i))
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		// 0, 1 and 2 are the least recently used.
		mod := old.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	pruneTemplates(dir)
	ents, _ := os.ReadDir(dir)
	if len(ents) != maxTemplates {
		t.Errorf("%d templates after pruning, want %d", len(ents), maxTemplates)
	}
	for i := 0; i < maxTemplates+3; i++ {
		_, err := os.Stat(filepath.Join(dir, fmt.Sprintf("scratch-%d.img", i)))
		if gone := err != nil; gone != (i < 3) {
			t.Errorf("template %d: gone=%v", i, gone)
		}
	}
}

func TestCopySparse(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	if err := makeSparse(src, 16<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 10 << 20, 16<<20 - 5} {
		if _, err := f.WriteAt([]byte("data!"), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if err := copySparse(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if string(a) != string(b) {
		t.Fatal("copy differs from the source")
	}
	if got := allocated(t, dst); got > 1<<20 {
		t.Errorf("copy of a sparse 16 MiB file allocates %d bytes", got)
	}
	if err := copySparse(src, dst); err == nil {
		t.Error("copySparse over an existing file succeeded")
	}
}
