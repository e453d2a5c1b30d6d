package agent

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/tenant"
)

// appendLog appends s to the log as the shim would.
func appendLog(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestPreviousRun(t *testing.T) {
	tests := []struct {
		name string
		runs []string // the output of each run, in order
		want string   // the previous run's output
		ok   bool
	}{
		{"never restarted", []string{"first\n"}, "", false},
		{"one restart", []string{"first\n", "second\n"}, "first\n", true},
		{"three runs", []string{"a\n", "b\nb\n", "c\n"}, "b\nb\n", true},
		{"silent previous run", []string{"a\n", "", "c\n"}, "", true},
		{"current run silent so far", []string{"a\n", "b\n", ""}, "b\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.log")
			for i, out := range tt.runs {
				if i > 0 {
					// What restartTask does around starting the task.
					if err := markRun(path, (&Agent{}).logEnd(path)); err != nil {
						t.Fatal(err)
					}
				}
				appendLog(t, path, out)
			}
			start, end, ok, err := previousRun(path)
			if err != nil || ok != tt.ok {
				t.Fatalf("previousRun = %d, %d, %v, %v; want ok=%v", start, end, ok, err, tt.ok)
			}
			if !ok {
				return
			}
			b, _ := os.ReadFile(path)
			if got := string(b[start:end]); got != tt.want {
				t.Errorf("previous run = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPreviousRunCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendLog(t, path, "out\n")
	if err := os.WriteFile(runsPath(path), []byte("4\n2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := previousRun(path); err == nil {
		t.Fatal("offsets going backwards were accepted")
	}
}

func TestPreviousLogs(t *testing.T) {
	a := &Agent{cfg: Config{DataDir: t.TempDir()}}
	inst := &api.Instance{Name: "web", UID: "u1", Tenant: "acme"}
	ctx := tenant.WithName(context.Background(), "acme")
	path := a.logPath(inst.UID, "app")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	appendLog(t, path, "first\n")

	if _, err := a.PreviousLogs(ctx, inst, "app"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("PreviousLogs before a restart: %v, want not found", err)
	}
	if err := markRun(path, (&Agent{}).logEnd(path)); err != nil {
		t.Fatal(err)
	}
	appendLog(t, path, "second\n")
	rc, err := a.PreviousLogs(ctx, inst, "app")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "first\n" {
		t.Errorf("PreviousLogs = %q, want %q", b, "first\n")
	}
	other := tenant.WithName(context.Background(), "other")
	if _, err := a.PreviousLogs(other, inst, "app"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("another tenant read the logs: %v", err)
	}
}
