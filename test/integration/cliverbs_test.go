package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// TestCLIVerbs runs the docker-like verbs and flags of the built kanga
// binary against a real platform: wait, port, --env-file, exec's and
// Kanga's own exit codes, instance references by UID prefix, the output
// flags of every verb that prints objects, image inspect, and errors.
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
		if r.code != 1 || r.stdout != "0\n" || !strings.Contains(r.stderr, `"ghost" not found`) {
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
		} {
			if r := p.kanga(tt.args...); r.code != 125 || !strings.Contains(r.stderr, tt.msg) {
				t.Errorf("kanga %s: exit %d, stderr %q; want 125 and %q", strings.Join(tt.args, " "), r.code, r.stderr, tt.msg)
			}
		}
		// A missing instance is docker's "No such object": exit 1.
		if r := p.kanga("kill", "ghost"); r.code != 1 || !strings.Contains(r.stderr, `"ghost" not found`) {
			t.Errorf("kanga kill ghost: exit %d, stderr %q; want 1", r.code, r.stderr)
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
				return r.code == 1 && strings.Contains(r.stderr, "not found")
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
			// A missing object exits 1, as docker's "No such object".
			{args: []string{"exec", "ghost", "true"}, code: 1, stderr: `"ghost" not found`},
			{args: []string{"logs", "ghost"}, code: 1, stderr: `"ghost" not found`},
			{args: []string{"inspect", "ghost"}, code: 1, stderr: `"ghost" not found`},
			{args: []string{"stop", "ghost"}, code: 1, stderr: `"ghost" not found`},
			{args: []string{"rm", "ghost"}, code: 1, stderr: `"ghost" not found`},
			{args: []string{"image", "inspect", "kanga.test/ghost"}, code: 1, stderr: "image kanga.test/ghost:latest not found"},
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

	t.Run("Output", func(t *testing.T) {
		p.must("run", "-d", "--name", "out-web", "-l", "suite=output", "kanga.test/busybox", "sleep", "1000")
		defer p.kanga("rm", "-f", "out-web")
		inst := p.running("out-web")
		p.must("secret", "create", "out-secret", "--from-literal", "k=v")
		defer p.kanga("secret", "rm", "out-secret")
		p.must("config", "create", "out-config", "--from-literal", "k=v")
		defer p.kanga("config", "rm", "out-config")

		sel := []string{"-l", "suite=output"}
		for _, tt := range []struct {
			args []string
			want string
		}{
			{append([]string{"ps", "--format", "{{.Name}} {{.State}} {{.ID}}"}, sel...), "out-web Running " + inst.UID + "\n"},
			{append([]string{"ps", "--format", `table {{.Name}}\t{{.State}}`}, sel...), "NAME      STATE\nout-web   Running\n"},
			{append([]string{"ps", "-o", "name"}, sel...), "out-web\n"},
			{append([]string{"ps", "-q"}, sel...), "out-web\n"},
			{[]string{"inspect", "--format", "{{.UID}} {{.Status.IP}}", "out-web"}, inst.UID + " " + inst.Status.IP + "\n"},
			{[]string{"inspect", "-o", "name", inst.UID[:8]}, "out-web\n"},
			{[]string{"image", "inspect", "--format", "{{.Name}} {{len .Hosts}}", "kanga.test/busybox"}, "kanga.test/busybox:latest 1\n"},
			{[]string{"secret", "inspect", "--format", "{{.Name}}", "out-secret"}, "out-secret\n"},
		} {
			if r := p.kanga(tt.args...); r.code != 0 || r.stdout != tt.want {
				t.Errorf("kanga %s: exit %d, stdout %q, want %q\nstderr: %s", strings.Join(tt.args, " "), r.code, r.stdout, tt.want, r.stderr)
			}
		}

		// Every list verb prints the same names with -o json, -o yaml,
		// -o name, -q and --format.
		for _, verb := range [][]string{
			{"ps", "-a"}, {"host", "ls"}, {"image", "ls"}, {"images"}, {"tenant", "ls"}, {"types"}, {"runtimes"},
			{"secret", "ls"}, {"config", "ls"}, {"volume", "ls"},
		} {
			t.Run(strings.Join(verb, "_"), func(t *testing.T) {
				var fromJSON, fromYAML struct {
					Items []struct {
						Name string `json:"name"`
					} `json:"items"`
				}
				out := p.must(append(verb, "-o", "json")...)
				if err := json.Unmarshal([]byte(out), &fromJSON); err != nil {
					t.Fatalf("-o json: %v\n%s", err, out)
				}
				out = p.must(append(verb, "-o", "yaml")...)
				if err := yaml.Unmarshal([]byte(out), &fromYAML); err != nil {
					t.Fatalf("-o yaml: %v\n%s", err, out)
				}
				var names []string
				for _, it := range fromJSON.Items {
					names = append(names, it.Name)
				}
				if len(names) == 0 && verb[0] != "volume" {
					t.Fatalf("-o json lists nothing:\n%s", out)
				}
				want := ""
				for _, n := range names {
					want += n + "\n"
				}
				if !reflect.DeepEqual(fromJSON, fromYAML) {
					t.Errorf("-o yaml %+v differs from -o json %+v", fromYAML, fromJSON)
				}
				for _, flags := range [][]string{{"-o", "name"}, {"-q"}, {"--format", "{{.Name}}"}} {
					if got := p.must(append(verb, flags...)...); got != want {
						t.Errorf("%s: %q, want the names of -o json %q", strings.Join(flags, " "), got, want)
					}
				}
			})
		}

		// Single objects: -o json decodes as the API type, and the older
		// --json of stats and sla is -o json.
		var v struct {
			Client struct{ Version string } `json:"client"`
			Server *struct {
				Version, Tenant string
			} `json:"server"`
		}
		if out := p.must("version", "-o", "json"); json.Unmarshal([]byte(out), &v) != nil || v.Client.Version == "" || v.Server == nil || v.Server.Version == "" {
			t.Errorf("version -o json = %s", out)
		}
		if out := p.must("version", "--format", "{{.Server.Version}}"); out != v.Server.Version+"\n" {
			t.Errorf("version --format = %q, want %q", out, v.Server.Version)
		}
		for _, args := range [][]string{{"stats", "-o", "json"}, {"stats", "--json"}, {"sla", "-o", "json"}, {"sla", "--json"}} {
			var obj map[string]any
			out := p.must(append(args, "out-web")...)
			if err := json.Unmarshal([]byte(out), &obj); err != nil || len(obj) == 0 {
				t.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		var st api.InstanceStats
		if out := p.must("stats", "-o", "yaml", "out-web"); yaml.Unmarshal([]byte(out), &st) != nil || st.Pids == 0 {
			t.Errorf("stats -o yaml = %s", out)
		}
		var imgs []api.ImageDetail
		if out := p.must("image", "inspect", "kanga.test/busybox"); json.Unmarshal([]byte(out), &imgs) != nil || len(imgs) != 1 ||
			imgs[0].Digest == "" || len(imgs[0].Hosts) != 1 || imgs[0].Hosts[0].Digest != imgs[0].Digest {
			t.Errorf("image inspect = %s", out)
		}

		// Shell completion asks the server for names.
		if out := p.must("__complete", "inspect", "out-"); !strings.HasPrefix(out, "out-web\n") {
			t.Errorf("completion of an instance name: %q", out)
		}
		if out := p.must("__complete", "run", "kanga.test/bu"); !strings.HasPrefix(out, "kanga.test/busybox:latest\n") {
			t.Errorf("completion of an image name: %q", out)
		}

		// A bad output flag is refused before anything is asked: 125.
		for _, tt := range []struct {
			args []string
			msg  string
		}{
			{[]string{"ps", "-o", "xml"}, `invalid -o value "xml": expected one of json, yaml, wide, name`},
			{[]string{"host", "ls", "-q", "-o", "json"}, "-o, --format and -q each choose the output: give one"},
			{[]string{"stats", "--json", "-o", "yaml", "out-web"}, "--json and -o yaml: give one output format"},
			{[]string{"ps", "--format", "{{.Name"}, "--format: template"},
			{[]string{"ps", "--format", "{{.Nope}}", "-a"}, "can't evaluate field Nope"},
		} {
			if r := p.kanga(tt.args...); r.code != 125 || !strings.Contains(r.stderr, tt.msg) {
				t.Errorf("kanga %s: exit %d, stderr %q; want 125 and %q", strings.Join(tt.args, " "), r.code, r.stderr, tt.msg)
			}
		}
	})

	t.Run("Errors", func(t *testing.T) {
		p.must("run", "-d", "--name", "err-web", "kanga.test/busybox", "sleep", "1000")
		defer p.kanga("rm", "-f", "err-web")
		// Nothing found: nothing on stdout (not "[]"), the class said once.
		for _, args := range [][]string{
			{"inspect", "nosuch"}, {"volume", "inspect", "nosuch"}, {"secret", "inspect", "nosuch"},
			{"image", "inspect", "kanga.test/nosuch"}, {"stop", "nosuch"}, {"logs", "nosuch"},
		} {
			r := p.kanga(args...)
			if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "not found") || strings.Contains(r.stderr, "not found: not found") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("kanga %s: exit %d, stdout %q, stderr %q; want 1, nothing on stdout and one error line", strings.Join(args, " "), r.code, r.stdout, r.stderr)
			}
		}
		if r := p.kanga("inspect", "nosuch"); r.stderr != "Error: instance \"nosuch\" not found\n" {
			t.Errorf("inspect nosuch: stderr %q", r.stderr)
		}
		// What is found is printed, what is not reported: exit 1.
		r := p.kanga("inspect", "err-web", "nosuch")
		var insts []api.Instance
		if r.code != 1 || json.Unmarshal([]byte(r.stdout), &insts) != nil || len(insts) != 1 || insts[0].Name != "err-web" {
			t.Errorf("inspect err-web nosuch: exit %d, stdout %q", r.code, r.stdout)
		}
		// A refusal that is no missing object stays 125.
		if r := p.kanga("rm", "err-web", "nosuch"); r.code != 125 || !strings.Contains(r.stderr, "kanga rm -f") {
			t.Errorf("rm of a running and a missing instance: exit %d, stderr %q; want 125", r.code, r.stderr)
		}
	})

	t.Run("Top", func(t *testing.T) {
		p.must("run", "-d", "--name", "top-web", "-u", "1000:1000", "kanga.test/busybox", "sh", "-c", "sleep 1000 & sleep 2000 & wait")
		defer p.kanga("rm", "-f", "top-web")
		inst := p.running("top-web")
		container := inst.Spec.Containers[0].Name
		var (
			procs []api.Process
			cmds  map[string]api.Process
		)
		// The shell forks, then each child execs its sleep.
		p.eventually("the shell and its two sleeps", 30*time.Second, func() bool {
			var list api.ProcessList
			out := p.must("top", "-o", "json", "top-web")
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				t.Fatalf("top -o json: %v\n%s", err, out)
			}
			procs, cmds = list.Items, map[string]api.Process{}
			for _, pr := range procs {
				cmds[strings.Join(pr.Command, " ")] = pr
			}
			_, one := cmds["sleep 1000"]
			_, two := cmds["sleep 2000"]
			return len(procs) == 3 && one && two
		})
		for _, pr := range procs {
			// As the instance sees them: its user, its PID namespace.
			if pr.Container != container || pr.UID != 1000 || pr.PID < 1 || pr.PID > 100 || pr.State == "" {
				t.Errorf("process %+v: want container %s, uid 1000 and a PID of the instance's namespace", pr, container)
			}
		}
		sh, ok := cmds["sh -c sleep 1000 & sleep 2000 & wait"]
		if !ok || sh.PID != 1 || sh.PPID != 0 {
			t.Fatalf("top lacks the shell as PID 1 with parent 0: %+v", procs)
		}
		for _, c := range []string{"sleep 1000", "sleep 2000"} {
			if pr, ok := cmds[c]; !ok || pr.PPID != 1 || pr.RSSBytes == 0 {
				t.Errorf("top lacks %q, a child of PID 1 with memory: %+v", c, procs)
			}
		}
		if out := p.must("top", "top-web"); !strings.HasPrefix(out, "CONTAINER   PID") || !strings.Contains(out, "sleep 2000") {
			t.Errorf("top table:\n%s", out)
		}
		if out := p.must("top", "--format", "{{.PID}}:{{.PPID}}:{{index .Command 0}}", "top-web"); !strings.Contains(out, "1:0:sh\n") {
			t.Errorf("top --format = %q", out)
		}
		// A missing instance exits 1; one that does not run is Kanga's
		// refusal, 125.
		if r := p.kanga("top", "ghost"); r.code != 1 || !strings.Contains(r.stderr, `instance "ghost" not found`) {
			t.Errorf("top ghost: exit %d, stderr %q", r.code, r.stderr)
		}
		p.must("stop", "-t", "1", "top-web")
		if r := p.kanga("top", "top-web"); r.code != 125 || !strings.Contains(r.stderr, "not Running") {
			t.Errorf("top of a stopped instance: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("RestartingStatus", func(t *testing.T) {
		p.must("run", "-d", "--name", "crashy", "-l", "suite=crashy", "--restart", "always", "kanga.test/busybox", "sh", "-c", "sleep 1; exit 3")
		defer p.kanga("rm", "-f", "crashy")
		// Between an exit and its restart (a backoff of 1 s, then 2, 4,
		// ...), ps says so in docker's words.
		var last string
		p.eventually("ps to show the restart backoff", 90*time.Second, func() bool {
			last = p.must("ps", "-l", "suite=crashy", "--format", "{{.Status}}")
			return strings.HasPrefix(last, "Restarting (3) ") && strings.Contains(last, " ago")
		})
		t.Logf("ps: %s", last)
	})

	t.Run("ListPages", func(t *testing.T) {
		// Lists page as Kubernetes lists do; ps and the SDK's
		// ListInstances read whole lists through the pages.
		var names []string
		for i := range 5 {
			name := fmt.Sprintf("pg-%d", i)
			p.must("run", "-d", "--name", name, "-l", "suite=pages", "kanga.test/busybox", "sleep", "1000")
			defer p.kanga("rm", "-f", name)
			names = append(names, name)
		}
		c := sdkOf(t, p.config)
		var paged []string
		opts := client.ListOptions{LabelSelector: "suite=pages", Limit: 2}
		pages := 0
		for {
			page, err := c.ListInstancesPage(t.Context(), opts)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, inst := range page.Items {
				paged = append(paged, inst.Name)
			}
			if page.Continue == "" {
				break
			}
			opts.Continue = page.Continue
		}
		if pages != 3 || !reflect.DeepEqual(paged, names) {
			t.Fatalf("pages of 2: %d pages holding %v, want 3 holding %v", pages, paged, names)
		}
		// ps lists newest first.
		ps := strings.Fields(p.must("ps", "-a", "-l", "suite=pages", "--format", "{{.Name}}"))
		slices.Reverse(ps)
		if !reflect.DeepEqual(ps, names) {
			t.Fatalf("ps = %v, want %v newest first", ps, names)
		}
		r := p.kanga("ps", "-l", "suite=pages", "-q")
		if r.code != 0 || len(strings.Fields(r.stdout)) != 5 {
			t.Fatalf("ps -q: exit %d, stdout %q", r.code, r.stdout)
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
		if r := p.kanga("inspect", uid); r.code != 1 || !strings.Contains(r.stderr, "not found") {
			t.Fatalf("inspect of the removed instance's UID: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}
