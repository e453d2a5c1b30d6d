package volume

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/errdefs"
)

// TestValidation needs no kernel objects: every bad input is refused
// before anything is made, with ErrInvalidArgument naming the field.
func TestValidation(t *testing.T) {
	m, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := make([]byte, KeySize)
	for _, tc := range []struct {
		what, field string
		err         error
	}{
		{"empty name", "name", func() error { _, err := m.Create(ctx, "", 1<<30, false, nil); return err }()},
		{"dotdot name", "name", func() error { _, err := m.Create(ctx, "..", 1<<30, false, nil); return err }()},
		{"slash name", "name", func() error { _, err := m.Create(ctx, "a/b", 1<<30, false, nil); return err }()},
		{"upper-case name", "name", func() error { _, err := m.Create(ctx, "Data", 1<<30, false, nil); return err }()},
		{"long name", "name", func() error { _, err := m.Create(ctx, strings.Repeat("a", 64), 1<<30, false, nil); return err }()},
		{"tiny volume", "size", func() error { _, err := m.Create(ctx, "v", 1<<20, false, nil); return err }()},
		{"huge volume", "size", func() error { _, err := m.Create(ctx, "v", 17<<40, false, nil); return err }()},
		{"short key", "key", func() error { _, err := m.Create(ctx, "v", 1<<30, true, key[:32]); return err }()},
		{"key without encryption", "key", func() error { _, err := m.Create(ctx, "v", 1<<30, false, key); return err }()},
		{"mount without holder", "holder", m.Mount(ctx, "v", "/mnt/x", MountOptions{})},
		{"relative target", "target", m.Mount(ctx, "v", "mnt/x", MountOptions{Holder: "i"})},
		{"unclean target", "target", m.Mount(ctx, "v", "/mnt/../etc", MountOptions{Holder: "i"})},
		{"bad emptyDir name", "emptyDir", func() error { _, _, err := m.EmptyDir(ctx, "i", "../x", MediumDisk, 1<<30); return err }()},
		{"bad instance", "instance", func() error { _, _, err := m.EmptyDir(ctx, "../i", "x", MediumDisk, 1<<30); return err }()},
		{"bad medium", "medium", func() error { _, _, err := m.EmptyDir(ctx, "i", "x", "HugePages", 1<<30); return err }()},
		{"no sizeLimit", "sizeLimit", func() error { _, _, err := m.EmptyDir(ctx, "i", "x", MediumMemory, 0); return err }()},
		{"relative snapshot dir", "snapshot dir", func() error { _, err := m.WritableLayer(ctx, "i", "snap", 1<<30); return err }()},
		{"tiny disk", "disk", func() error { _, err := m.WritableLayer(ctx, "i", "/snap", 1<<10); return err }()},
	} {
		if !errors.Is(tc.err, errdefs.ErrInvalidArgument) || !strings.HasPrefix(tc.err.Error(), tc.field) {
			t.Errorf("%s: %v, want ErrInvalidArgument starting with %q", tc.what, tc.err, tc.field)
		}
	}
	if _, err := m.Get(ctx, "missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get of a missing volume: %v, want ErrNotFound", err)
	}
	if err := m.Remove(ctx, "missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Remove of a missing volume: %v, want ErrNotFound", err)
	}
}

func TestOverheadEstimate(t *testing.T) {
	for _, want := range []int64{4 << 20, 64 << 20, 1 << 30, 1 << 40} {
		for _, j := range []bool{false, true} {
			o := overheadEstimate(want, j)
			if o <= 0 || o > want/5+200<<20 {
				t.Errorf("overheadEstimate(%d, %v) = %d", want, j, o)
			}
		}
	}
}
