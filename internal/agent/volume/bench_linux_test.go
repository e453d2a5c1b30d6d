package volume

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkEmptyDir is the cost an emptyDir adds to an instance's start
// and removal: make and tear down one of 64 MiB. baseline-mkdir is a
// plain directory (an emptyDir with no limit), in the same run.
//
//	go test -run '^$' -bench . -count 5 ./internal/agent/volume/
func BenchmarkEmptyDir(b *testing.B) {
	m := newManager(b)
	ctx := context.Background()
	b.Run("baseline-mkdir", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			dir := filepath.Join(m.Root(), "empty", "bench", "plain", "dir")
			if err := os.MkdirAll(dir, 0o777); err != nil {
				b.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(m.Root(), "empty", "bench")); err != nil {
				b.Fatal(err)
			}
		}
	})
	// What a disk emptyDir would cost formatted afresh each time, without
	// the template copy: the alternative the templates replace.
	b.Run("disk-64Mi-mkfs-each", func(b *testing.B) {
		dir := filepath.Join(m.Root(), "empty", "bench-mkfs", "scratch")
		path := filepath.Join(dir, "dir")
		for i := 0; i < b.N; i++ {
			if err := os.MkdirAll(path, 0o700); err != nil {
				b.Fatal(err)
			}
			if err := format(ctx, filepath.Join(dir, "disk.img"), 64<<20, false); err != nil {
				b.Fatal(err)
			}
			if err := mountImage(filepath.Join(dir, "disk.img"), path); err != nil {
				b.Fatal(err)
			}
			if err := m.removeScratch(ctx, dir); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, medium := range []Medium{MediumDisk, MediumMemory} {
		name := "disk-64Mi"
		if medium == MediumMemory {
			name = "memory-64Mi"
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				_, teardown, err := m.EmptyDir(ctx, "bench", "scratch", medium, 64<<20)
				if err != nil {
					b.Fatal(err)
				}
				if err := teardown(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
		// The part on an instance's start path: making it, not the
		// teardown.
		b.Run(name+"-create-only", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				_, teardown, err := m.EmptyDir(ctx, "bench", "scratch", medium, 64<<20)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := teardown(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkVolume is a persistent volume's whole life (create, mount,
// unmount, remove) and, separately, what an instance start and stop
// adds for a volume that exists: mount and unmount.
func BenchmarkVolume(b *testing.B) {
	m := newManager(b)
	ctx := context.Background()
	target := filepath.Join(b.TempDir(), "target")
	for _, encrypted := range []bool{false, true} {
		var key []byte
		kind := "plain"
		if encrypted {
			key, _ = NewKey()
			kind = "encrypted"
		}
		b.Run(fmt.Sprintf("lifecycle-%s-64Mi", kind), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := m.Create(ctx, "bench", 64<<20, encrypted, key); err != nil {
					b.Fatal(err)
				}
				if err := m.Mount(ctx, "bench", target, MountOptions{Holder: "inst", Key: key}); err != nil {
					b.Fatal(err)
				}
				if err := m.Unmount(ctx, "bench", "inst"); err != nil {
					b.Fatal(err)
				}
				if err := m.Remove(ctx, "bench"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("mount-only-%s-64Mi", kind), func(b *testing.B) {
			if _, err := m.Create(ctx, "bench", 64<<20, encrypted, key); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := m.Mount(ctx, "bench", target, MountOptions{Holder: "inst", Key: key}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := m.Unmount(ctx, "bench", "inst"); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			if err := m.Remove(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
		})
		b.Run(fmt.Sprintf("mount-unmount-%s-64Mi", kind), func(b *testing.B) {
			if _, err := m.Create(ctx, "bench", 64<<20, encrypted, key); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := m.Mount(ctx, "bench", target, MountOptions{Holder: "inst", Key: key}); err != nil {
					b.Fatal(err)
				}
				if err := m.Unmount(ctx, "bench", "inst"); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if err := m.Remove(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
		})
	}
}
