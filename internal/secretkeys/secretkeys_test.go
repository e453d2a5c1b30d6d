package secretkeys

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kanga-run/kanga/errdefs"
)

func TestLoadCreatesPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", FileName)
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if again.Active() != r.Active() {
		t.Errorf("reloaded active key %s, want %s", again.Active(), r.Active())
	}
	id, sealed, err := r.Seal([]byte("hello"), []byte("a/b"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := again.Open(id, sealed, []byte("a/b"))
	if err != nil || string(got) != "hello" {
		t.Fatalf("Open after reload = %q, %v", got, err)
	}
}

func TestSealOpen(t *testing.T) {
	r, err := Load(filepath.Join(t.TempDir(), FileName))
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("MARKER-plaintext")
	id, sealed, err := r.Seal(plain, []byte("t/n"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plain) {
		t.Fatal("sealed value contains the plaintext")
	}
	_, sealed2, _ := r.Seal(plain, []byte("t/n"))
	if bytes.Equal(sealed, sealed2) {
		t.Error("two seals of one value are equal: the nonce is not fresh")
	}
	tests := []struct {
		name   string
		id     string
		sealed []byte
		aad    string
	}{
		{"other record", id, sealed, "t/other"},
		{"unknown key", "nope", sealed, "t/n"},
		{"short", id, sealed[:3], "t/n"},
		{"tampered", id, append(append([]byte(nil), sealed[:len(sealed)-1]...), sealed[len(sealed)-1]^1), "t/n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := r.Open(tc.id, tc.sealed, []byte(tc.aad)); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("Open = %v, want FailedPrecondition", err)
			}
		})
	}
}

func TestRotateAndRetire(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	oldID := r.Active()
	_, sealed, _ := r.Seal([]byte("v"), nil)
	newID, err := r.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if newID == oldID || r.Active() != newID {
		t.Fatalf("after Rotate active %s (old %s, returned %s)", r.Active(), oldID, newID)
	}
	// The old key still opens what it sealed, in this ring and after a
	// reload (a crash in the middle of a rotation).
	if _, err := r.Open(oldID, sealed, nil); err != nil {
		t.Fatalf("old key after rotate: %v", err)
	}
	re, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if re.Active() != newID || len(re.IDs()) != 2 {
		t.Fatalf("reloaded ring: active %s, keys %v", re.Active(), re.IDs())
	}
	dropped, err := r.Retire([]string{oldID, newID})
	if err != nil {
		t.Fatal(err)
	}
	if len(dropped) != 1 || dropped[0] != oldID {
		t.Errorf("Retire dropped %v, want only %s (never the active key)", dropped, oldID)
	}
	if _, err := r.Open(oldID, sealed, nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("retired key still opens: %v", err)
	}
	re, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if ids := re.IDs(); len(ids) != 1 || ids[0] != newID {
		t.Errorf("reloaded ring after Retire holds %v, want [%s]", ids, newID)
	}
}

func TestLoadRefusesBadFile(t *testing.T) {
	for name, content := range map[string]string{
		"not json":       "garbage",
		"missing active": `{"active":"x","keys":[]}`,
		"short key":      `{"active":"a","keys":[{"id":"a","key":"AAAA"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(path); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("Load = %v, want FailedPrecondition", err)
			}
		})
	}
}
