package integration

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// TestTerminationMessage: a container's termination message comes from
// its file (also written by a non-root user), or from the end of its log
// with FallbackToLogsOnError; the file's tmpfs is small, so writing
// without end fails with ENOSPC instead of filling the host's disk; an
// instance that asks for no file gets none.
func TestTerminationMessage(t *testing.T) {
	p := startPlatform(t)
	p.importImages()

	uid := int64(1000)
	p.runSpec(api.CreateInstanceRequest{Name: "msgs", Spec: api.InstanceSpec{
		RestartPolicy: api.RestartNever,
		Containers: []api.ContainerSpec{
			{
				Name: "file", Image: "kanga.test/busybox", TerminationMessagePath: "/dev/termination-log",
				Command:         []string{"sh", "-c", "printf 'DONE: 42 items' > /dev/termination-log; exit 1"},
				SecurityContext: &api.SecurityContext{RunAsUser: &uid},
			},
			{
				Name: "custom", Image: "kanga.test/busybox", TerminationMessagePath: "/tmp/custom-log",
				TerminationMessagePolicy: api.TerminationMessageFallbackToLogsOnError,
				Command:                  []string{"sh", "-c", "echo not this; printf 'from the file' > /tmp/custom-log"},
			},
			{
				Name: "logs", Image: "kanga.test/busybox", TerminationMessagePath: "/dev/termination-log",
				TerminationMessagePolicy: api.TerminationMessageFallbackToLogsOnError,
				Command:                  []string{"sh", "-c", "echo first; echo last words; sleep 1; exit 2"},
			},
			{
				Name: "flood", Image: "kanga.test/busybox", TerminationMessagePath: "/dev/termination-log",
				Command: []string{"sh", "-c", "head -c 10000000 /dev/zero | tr '\\0' x > /dev/termination-log; echo write-exit=$?"},
			},
			{
				Name: "none", Image: "kanga.test/busybox",
				Command: []string{"sh", "-c", "test -e /dev/termination-log; echo exists=$?"},
			},
		},
	}})
	var inst api.Instance
	p.eventually("msgs to end", 90*time.Second, func() bool {
		inst = p.inspect("msgs")
		return inst.Status.Phase.Terminal()
	})
	dir := filepath.Join(p.dataDir, "agent", "sandboxes", inst.UID, "termination")
	if got := mountsAt(t, dir); len(got) != 1 || got[0] != "tmpfs" {
		t.Errorf("mounts at %s: %v, want one tmpfs", dir, got)
	}
	got := map[string]api.ContainerStatus{}
	for _, c := range inst.Status.Containers {
		got[c.Name] = c
	}
	if m := got["file"].Message; m != "DONE: 42 items" {
		t.Errorf("file: message %q, want the file's (written as uid 1000)", m)
	}
	if m := got["custom"].Message; m != "from the file" {
		t.Errorf("custom: message %q, want the file's (it exited 0, so no fallback)", m)
	}
	if m := got["logs"].Message; m != "first\nlast words\n" {
		t.Errorf("logs: message %q, want the end of its log", m)
	}
	if m := got["flood"].Message; len(m) != 4096 || strings.Trim(m, "x") != "" {
		t.Errorf("flood: message of %d bytes, want the file's first 4096", len(m))
	}
	if out := p.must("logs", "-c", "flood", "msgs"); !strings.Contains(out, "write-exit=1") {
		t.Errorf("flood's logs %q: the 10 MB write did not fail on the small tmpfs", out)
	}
	if out := p.must("logs", "-c", "none", "msgs"); !strings.Contains(out, "exists=1") || got["none"].Message != "" {
		t.Errorf("none: logs %q, message %q: want no file and no message", out, got["none"].Message)
	}
	r := p.kangaIn([]byte(`{"name":"evil","spec":{"containers":[{"image":"kanga.test/busybox","terminationMessagePath":"/proc/sys/kernel/core_pattern"}]}}`), "run", "-f", "-")
	if r.code == 0 || !strings.Contains(r.stderr, "spec.containers[0].terminationMessagePath") {
		t.Errorf("a message file under /proc: exit %d, %s; want a 400 naming the field", r.code, r.stderr)
	}
	p.must("rm", "-f", "msgs")
	p.eventually("the termination tmpfs to be gone", 30*time.Second, func() bool {
		return len(mountsAt(t, dir)) == 0
	})
}
