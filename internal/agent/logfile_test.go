package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/tenant"
)

// diskUse sums the sizes of the log's files.
func diskUse(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(e.Name(), ".log") && !strings.HasSuffix(e.Name(), ".base") && !strings.HasSuffix(e.Name(), ".runs") {
			n += fi.Size()
		}
	}
	return n
}

func TestLogRotation(t *testing.T) {
	for _, files := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("%d files", files), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "app.log")
			lim := logLimits{size: 1000, files: files}
			w := openLogWriter(path, lim)
			var all bytes.Buffer
			for i := range 500 {
				line := fmt.Sprintf("line %04d %s\n", i, strings.Repeat("x", i%37))
				all.WriteString(line)
				if _, err := w.Write([]byte(line)); err != nil {
					t.Fatal(err)
				}
				if use := diskUse(t, dir); use > lim.size*int64(files) {
					t.Fatalf("after %d lines the log takes %d bytes, more than %d x %d", i, use, lim.size, files)
				}
			}
			w.close()
			if w.end() != int64(all.Len()) {
				t.Fatalf("logical end %d, want %d written", w.end(), all.Len())
			}
			// What is kept is the tail of what was written, in order.
			a := &Agent{}
			var got bytes.Buffer
			fl := &logFollower{a: a, path: path, w: &got}
			if _, err := fl.copy(); err != nil {
				t.Fatal(err)
			}
			fl.close()
			if !bytes.HasSuffix(all.Bytes(), got.Bytes()) || got.Len() < int(lim.size)*(files-1) {
				t.Fatalf("read %d bytes that are not the tail of what was written (%d)", got.Len(), all.Len())
			}
			// A new writer (agent restart) goes on at the same logical end.
			if w2 := openLogWriter(path, lim); w2.end() != int64(all.Len()) {
				t.Fatalf("a reopened log ends at %d, want %d", w2.end(), all.Len())
			}
		})
	}
}

// A follower sees every byte once, in order, while the writer rotates
// under it, as long as it keeps up with the files kept.
func TestLogFollowAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	a := &Agent{}
	w := a.logWriterFor(path, logLimits{size: 4096, files: 3})
	var want, got bytes.Buffer
	fl := &logFollower{a: a, path: path, w: &got}
	defer fl.close()
	for i := range 2000 {
		line := fmt.Sprintf("%05d %s\n", i, strings.Repeat("y", i%50))
		want.WriteString(line)
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			if _, err := fl.copy(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := fl.copy(); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Fatalf("followed %d bytes, want the %d written, in order", got.Len(), want.Len())
	}
}

// Concurrent writers (stdout and stderr) never lose bytes or pass the cap.
func TestLogConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	w := openLogWriter(path, logLimits{size: 10000, files: 2})
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				_, _ = w.Write([]byte(fmt.Sprintf("writer %d\n", g)))
			}
		}()
	}
	wg.Wait()
	if w.end() != 2*1000*9 {
		t.Fatalf("logical end %d, want %d", w.end(), 2*1000*9)
	}
	if use := diskUse(t, dir); use > 20000 {
		t.Fatalf("log takes %d bytes, cap 20000", use)
	}
}

// kanga logs -p serves the run before the last restart from the rotated
// files too.
func TestPreviousLogsAcrossRotation(t *testing.T) {
	a := &Agent{cfg: Config{DataDir: t.TempDir()}}
	inst := &api.Instance{Name: "web", UID: "u1", Tenant: "acme"}
	ctx := tenant.WithName(context.Background(), "acme")
	path := a.logPath(inst.UID, "app")
	w := a.logWriterFor(path, logLimits{size: 100, files: 5})
	first := strings.Repeat("first run\n", 15) // 150 bytes: rotates once
	if _, err := w.Write([]byte(first)); err != nil {
		t.Fatal(err)
	}
	if err := markRun(path, a.logEnd(path)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(strings.Repeat("second\n", 20))); err != nil {
		t.Fatal(err)
	}
	rc, err := a.PreviousLogs(ctx, inst, "app")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != first {
		t.Fatalf("previous run across rotation = %q, want %q", b, first)
	}
}

// A claimed warm container's log moves to the instance's name, with the
// instance's caps, and the writer goes on there.
func TestMoveLog(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{}
	from, to := filepath.Join(dir, "warm-1", "warm.log"), filepath.Join(dir, "u1", "app.log")
	w := a.logWriterFor(from, logLimits{size: 10, files: 2})
	_, _ = w.Write([]byte("0123456789abc"))
	if err := a.moveLog(from, to, logLimits{size: 100, files: 2}); err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("def"))
	var got bytes.Buffer
	fl := &logFollower{a: a, path: to, w: &got}
	if _, err := fl.copy(); err != nil {
		t.Fatal(err)
	}
	fl.close()
	if got.String() != "0123456789abcdef" {
		t.Fatalf("moved log reads %q", got.String())
	}
	if _, err := os.Stat(from); !os.IsNotExist(err) {
		t.Fatalf("the warm log is left behind: %v", err)
	}
}

// A chunk that fills the current file exactly but ends inside a line (a
// pipe read of a chatty container under load does: 64 KiB reads, and a
// cap that is a multiple of 64 KiB) must not leave the line's rest to
// begin the next file: every kept file starts at a line's start.
func TestLogRotationChunkFillsFileMidLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	lim := logLimits{size: 64, files: 3}
	w := openLogWriter(path, lim)
	line := "0123456789abcdef\n" // 17 bytes: 64 is not a multiple
	stream := strings.Repeat(line, 40)
	for chunk := []byte(stream); len(chunk) > 0; {
		n := min(32, len(chunk)) // two chunks fill a file to the byte
		if _, err := w.Write(chunk[:n]); err != nil {
			t.Fatal(err)
		}
		chunk = chunk[n:]
	}
	w.close()
	for _, p := range []string{path, rotatedPath(path, 1), rotatedPath(path, 2)} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 0 && !strings.HasPrefix(line, string(b[:min(len(b), len(line))])) {
			t.Errorf("%s starts with %q, not at a line's start", filepath.Base(p), b[:min(len(b), len(line))])
		}
		if len(b) > 0 && b[len(b)-1] != '\n' && p != path {
			t.Errorf("rotated %s ends inside a line: %q", filepath.Base(p), b[max(0, len(b)-10):])
		}
	}
}
