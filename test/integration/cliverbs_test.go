package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// TestCLIVerbs runs the docker-like verbs and flags of the built kanga
// binary against a real platform: wait, port, --env-file, exec's and
// Kanga's own exit codes, and instance references by UID prefix.
func TestCLIVerbs(t *testing.T) {
	p := startPlatform(t)
	p.importImages()

	t.Run("EnvFile", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "app.env")
		content := "# settings\nGREETING=hello world\n\n  QUOTED=\"kept\" $LITERAL\nFROM_CALLER\nOVERRIDDEN=file\n"
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := p.cli(2*time.Minute, []string{"FROM_CALLER=caller's"}, nil, "run", "--rm", "--env-file", file, "-e", "OVERRIDDEN=flag",
			"kanga.test/busybox", "sh", "-c", `echo "$GREETING|$QUOTED|$FROM_CALLER|$OVERRIDDEN"`)
		if err != nil {
			t.Fatal(err)
		}
		if want := "hello world|\"kept\" $LITERAL|caller's|flag\n"; r.code != 0 || r.stdout != want {
			t.Fatalf("run --env-file: exit %d, stdout %q, want %q\nstderr: %s", r.code, r.stdout, want, r.stderr)
		}
		// A bad file is Kanga's error: 125, naming the file and line.
		if err := os.WriteFile(file, []byte("OK=1\nBAD KEY=2\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r = p.kanga("run", "--rm", "--env-file", file, "kanga.test/busybox", "true")
		if r.code != 125 || !strings.Contains(r.stderr, file+" line 2") {
			t.Fatalf("run with a bad env file: exit %d, stderr %q; want 125 naming the line", r.code, r.stderr)
		}
	})

	t.Run("Wait", func(t *testing.T) {
		p.must("run", "-d", "--name", "w-three", "kanga.test/busybox", "sh", "-c", "sleep 1; exit 3")
		p.must("run", "-d", "--name", "w-zero", "kanga.test/busybox", "sh", "-c", "sleep 1")
		defer p.kanga("rm", "-f", "w-three", "w-zero")
		// Like docker wait: one exit code a line, in argument order; the
		// verb itself succeeds.
		if out := p.must("wait", "w-three", "w-zero"); out != "3\n0\n" {
			t.Fatalf("wait = %q, want \"3\\n0\\n\"", out)
		}
		r := p.kanga("wait", "w-zero", "ghost")
		if r.code != 125 || r.stdout != "0\n" || !strings.Contains(r.stderr, `"ghost" not found`) {
			t.Fatalf("wait with a missing instance: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		// A stopped instance's code is its signal's (SIGTERM, or SIGKILL
		// after the grace period).
		p.must("run", "-d", "--name", "w-stopped", "kanga.test/busybox", "sleep", "1000")
		defer p.kanga("rm", "-f", "w-stopped")
		p.must("stop", "-t", "1", "w-stopped")
		if out := p.must("wait", "w-stopped"); out != "143\n" && out != "137\n" {
			t.Fatalf("wait of a stopped sleep = %q, want 143 or 137", out)
		}
	})

	t.Run("Kill", func(t *testing.T) {
		p.must("run", "-d", "--name", "k-hup", "kanga.test/busybox", "sh", "-c", "trap 'echo got-hup' HUP; echo ready; while :; do sleep 0.1; done")
		defer p.kanga("rm", "-f", "k-hup")
		p.eventually("the trap to be set", 30*time.Second, func() bool { return strings.Contains(p.must("logs", "k-hup"), "ready") })
		// A caught signal leaves the container running.
		if out := p.must("kill", "-s", "hup", "k-hup"); out != "k-hup\n" {
			t.Errorf("kill printed %q", out)
		}
		p.eventually("the trap to run", 30*time.Second, func() bool { return strings.Contains(p.must("logs", "k-hup"), "got-hup") })
		if ph := p.inspect("k-hup").Status.Phase; ph != "Running" {
			t.Fatalf("after SIGHUP: %s, want Running", ph)
		}
		// The default is SIGKILL, docker's.
		p.must("kill", "k-hup")
		if out := p.must("wait", "k-hup"); out != "137\n" {
			t.Errorf("wait after kill = %q, want 137", out)
		}
		if r := p.kanga("kill", "k-hup"); r.code != 125 || !strings.Contains(r.stderr, "not Running") {
			t.Errorf("kill of an ended instance: exit %d, stderr %q", r.code, r.stderr)
		}

		// kill does not stop the restart policy: an Always instance's
		// killed container comes back.
		p.must("run", "-d", "--name", "k-always", "--restart", "always", "kanga.test/busybox", "sleep", "1000")
		defer p.kanga("rm", "-f", "k-always")
		p.must("kill", "-s", "9", "-c", "busybox", "k-always")
		p.eventually("the killed container to restart", 60*time.Second, func() bool {
			st := p.inspect("k-always").Status
			return st.Phase == "Running" && len(st.Containers) == 1 && st.Containers[0].RestartCount >= 1 && st.Containers[0].State == "Running"
		})
		for _, tt := range []struct {
			args []string
			msg  string
		}{
			{[]string{"kill", "-s", "NOPE", "k-always"}, "signal: \"NOPE\" is not a signal"},
			{[]string{"kill", "-s", "0", "k-always"}, "signal: 0 is not a signal number"},
			{[]string{"kill", "-c", "other", "k-always"}, `container: instance "k-always" has no container "other"`},
			{[]string{"kill", "ghost"}, `"ghost" not found`},
		} {
			if r := p.kanga(tt.args...); r.code != 125 || !strings.Contains(r.stderr, tt.msg) {
				t.Errorf("kanga %s: exit %d, stderr %q; want 125 and %q", strings.Join(tt.args, " "), r.code, r.stderr, tt.msg)
			}
		}
	})

	t.Run("DetachedRm", func(t *testing.T) {
		// The platform removes the instance when it ends on its own...
		p.must("run", "-d", "--rm", "--name", "rm-exits", "kanga.test/busybox", "sh", "-c", "sleep 1; exit 4")
		// ...and when it is stopped.
		p.must("run", "-d", "--rm", "--name", "rm-stopped", "kanga.test/busybox", "sleep", "1000")
		uid := p.inspect("rm-stopped").UID
		p.must("stop", "-t", "1", "rm-stopped")
		for _, name := range []string{"rm-exits", "rm-stopped"} {
			p.eventually(name+" to be removed", 60*time.Second, func() bool {
				r := p.kanga("inspect", name)
				return r.code == 125 && strings.Contains(r.stderr, "not found")
			})
		}
		if strings.Contains(p.ctr("containers", "ls", "-q"), uid) {
			t.Error("containerd still has the auto-removed instance's container")
		}
		r := p.kanga("run", "-d", "--rm", "--restart", "always", "kanga.test/busybox", "true")
		if r.code != 125 || !strings.Contains(r.stderr, "spec.autoRemove cannot be combined with spec.restartPolicy") {
			t.Errorf("run -d --rm --restart always: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("Port", func(t *testing.T) {
		port := harness.FreePort(t)
		p.must("run", "-d", "--name", "pweb", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), "kanga.test/httpd")
		defer p.kanga("rm", "-f", "pweb")
		if out, want := p.must("port", "pweb"), fmt.Sprintf("80/tcp -> 127.0.0.1:%d\n", port); out != want {
			t.Errorf("port = %q, want %q", out, want)
		}
		if out, want := p.must("port", "pweb", "80/tcp"), fmt.Sprintf("127.0.0.1:%d\n", port); out != want {
			t.Errorf("port 80/tcp = %q, want %q", out, want)
		}
		for _, tt := range []struct{ arg, msg string }{
			{"81", "no public port '81/tcp' published for pweb"},
			{"80/udp", "no public port '80/udp' published for pweb"},
			{"eighty", `invalid port "eighty"`},
		} {
			if r := p.kanga("port", "pweb", tt.arg); r.code != 125 || !strings.Contains(r.stderr, tt.msg) {
				t.Errorf("port pweb %s: exit %d, stderr %q; want 125 and %q", tt.arg, r.code, r.stderr, tt.msg)
			}
		}
	})

	t.Run("ExitCodes", func(t *testing.T) {
		p.must("run", "-d", "--name", "codes", "kanga.test/busybox", "sleep", "1000")
		defer p.kanga("rm", "-f", "codes")
		tests := []struct {
			args   []string
			code   int
			stderr string
		}{
			{args: []string{"exec", "codes", "no-such-program"}, code: 127, stderr: "no-such-program"},
			{args: []string{"exec", "codes", "/bin/no-such-program"}, code: 127, stderr: "no such file"},
			{args: []string{"exec", "codes", "/etc/passwd"}, code: 126, stderr: "permission denied"},
			{args: []string{"exec", "codes", "sh", "-c", "exit 1"}, code: 1},
			{args: []string{"exec", "ghost", "true"}, code: 125, stderr: `"ghost" not found`},
			{args: []string{"logs", "ghost"}, code: 125, stderr: `"ghost" not found`},
			{args: []string{"inspect", "ghost"}, code: 125, stderr: `"ghost" not found`},
			{args: []string{"stop", "ghost"}, code: 125, stderr: `"ghost" not found`},
			{args: []string{"rm", "ghost"}, code: 125, stderr: `"ghost" not found`},
			{args: []string{"rm", "codes"}, code: 125, stderr: "kanga rm -f"},
			{args: []string{"ps", "--no-such-flag"}, code: 125, stderr: "unknown flag"},
		}
		for _, tt := range tests {
			r := p.kanga(tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("kanga %s: exit %d, stderr %q; want %d and %q", strings.Join(tt.args, " "), r.code, r.stderr, tt.code, tt.stderr)
			}
		}
	})

	t.Run("UIDPrefix", func(t *testing.T) {
		p.must("run", "-d", "--name", "byuid", "kanga.test/busybox", "sh", "-c", "echo logged; sleep 1000")
		defer p.kanga("rm", "-f", "byuid")
		uid := p.inspect("byuid").UID
		if got := p.inspect(uid[:6]); got.Name != "byuid" || got.UID != uid {
			t.Fatalf("inspect %s found %s (%s)", uid[:6], got.Name, got.UID)
		}
		if got := p.inspect(uid); got.Name != "byuid" {
			t.Fatalf("inspect by the whole UID found %s", got.Name)
		}
		p.eventually("the log line", 30*time.Second, func() bool { return p.must("logs", uid[:8]) == "logged\n" })
		if out := p.must("exec", uid[:8], "hostname"); out != "byuid\n" {
			t.Errorf("exec by UID prefix: %q", out)
		}
		p.must("stop", "-t", "1", uid[:10])
		if out := p.must("wait", uid[:10]); out != "143\n" && out != "137\n" {
			t.Errorf("wait by UID prefix = %q, want a signal's code", out)
		}
		p.must("rm", uid[:7])
		if r := p.kanga("inspect", uid); r.code != 125 || !strings.Contains(r.stderr, "not found") {
			t.Fatalf("inspect of the removed instance's UID: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}
