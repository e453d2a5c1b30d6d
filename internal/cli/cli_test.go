package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

const fakeToken = "tok"

// fakeAPI is an in-memory stand-in for the server. Instances run as soon as
// they are created (image "missing" fails to start), and end when their logs
// are followed or they are waited for, with the exit code of their EXIT
// environment variable.
type fakeAPI struct {
	t  *testing.T
	mu sync.Mutex
	// instances by name, with creation order for generated names
	instances map[string]*api.Instance
	seq       int
	deleted   []string
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{t: t, instances: map[string]*api.Instance{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, api.Version{Version: "fake-1", Tenant: "acme"})
	})
	mux.HandleFunc("POST /v1/instances", f.create)
	mux.HandleFunc("GET /v1/instances", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		list := api.InstanceList{Items: []api.Instance{}}
		for _, inst := range f.instances {
			list.Items = append(list.Items, *inst)
		}
		writeTestJSON(w, 200, list)
	})
	mux.HandleFunc("GET /v1/instances/{name}", f.withInstance(func(w http.ResponseWriter, r *http.Request, inst *api.Instance) {
		writeTestJSON(w, 200, inst)
	}))
	mux.HandleFunc("GET /v1/instances/{name}/wait", f.withInstance(func(w http.ResponseWriter, r *http.Request, inst *api.Instance) {
		if r.URL.Query().Get("condition") == "terminal" {
			f.finish(inst)
		}
		writeTestJSON(w, 200, inst)
	}))
	mux.HandleFunc("GET /v1/instances/{name}/logs", f.withInstance(func(w http.ResponseWriter, r *http.Request, inst *api.Instance) {
		for _, c := range inst.Spec.Containers {
			if ct := r.URL.Query().Get("container"); ct == "" || ct == c.Name {
				fmt.Fprintf(w, "hello from %s/%s\n", inst.Name, c.Name)
			}
		}
		if r.URL.Query().Get("follow") == "true" {
			f.finish(inst)
		}
	}))
	mux.HandleFunc("POST /v1/instances/{name}/stop", f.withInstance(func(w http.ResponseWriter, r *http.Request, inst *api.Instance) {
		inst.StopRequested = true
		f.finish(inst)
		writeTestJSON(w, 200, inst)
	}))
	mux.HandleFunc("DELETE /v1/instances/{name}", f.withInstance(func(w http.ResponseWriter, r *http.Request, inst *api.Instance) {
		if !inst.Status.Phase.Terminal() && r.URL.Query().Get("force") != "true" {
			writeTestError(w, 409, "Conflict", fmt.Sprintf("instance %q is running: stop it first or use force", inst.Name))
			return
		}
		delete(f.instances, inst.Name)
		f.deleted = append(f.deleted, inst.Name)
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /v1/instances/{name}/exec", f.withInstance(f.exec))
	mux.HandleFunc("POST /v1/images/import", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		enc := json.NewEncoder(w)
		enc.Encode(api.Progress{Status: "unpacking", Current: n, Total: n})
		enc.Encode(api.Progress{Status: "imported", Done: true, Images: []api.Image{{Name: "busybox:latest"}}})
	})
	mux.HandleFunc("GET /v1/images", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, api.ImageList{Items: []api.Image{{Name: "kanga.test/busybox:latest"}, {Name: "other.test/app:v1"}}})
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+fakeToken {
			writeTestError(w, 401, "Unauthenticated", "bad token")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("KANGA_ADDR", srv.URL)
	t.Setenv("KANGA_TOKEN", fakeToken)
	t.Setenv("KANGA_CONFIG", filepath.Join(t.TempDir(), "none.json"))
	return f
}

func (f *fakeAPI) create(w http.ResponseWriter, r *http.Request) {
	var req api.CreateInstanceRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeTestError(w, 400, "InvalidArgument", err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	if req.Name == "" {
		req.Name = fmt.Sprintf("inst-%d", f.seq)
	}
	if _, ok := f.instances[req.Name]; ok {
		writeTestError(w, 409, "AlreadyExists", fmt.Sprintf("instance %q already exists", req.Name))
		return
	}
	now := time.Now()
	inst := &api.Instance{Name: req.Name, Tenant: "acme", CreatedAt: now, Spec: req.Spec}
	if req.Spec.Containers[0].Image == "missing" {
		inst.Status = api.InstanceStatus{Phase: api.PhaseFailed, Reason: "ImageNotFound", Message: `image "missing" is not known: import or pull it`}
	} else {
		inst.Status = api.InstanceStatus{Phase: api.PhaseRunning, IP: fmt.Sprintf("10.88.0.%d", f.seq), StartedAt: &now}
	}
	f.instances[req.Name] = inst
	writeTestJSON(w, http.StatusCreated, inst)
}

func (f *fakeAPI) withInstance(h func(http.ResponseWriter, *http.Request, *api.Instance)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		inst, ok := f.instances[r.PathValue("name")]
		if !ok {
			writeTestError(w, 404, "NotFound", fmt.Sprintf("instance %q not found", r.PathValue("name")))
			return
		}
		h(w, r, inst)
	}
}

// finish ends a running instance; f.mu is held.
func (f *fakeAPI) finish(inst *api.Instance) {
	if inst.Status.Phase != api.PhaseRunning {
		return
	}
	code := 0
	for _, e := range inst.Spec.Containers[0].Env {
		if e.Name == "EXIT" {
			fmt.Sscan(e.Value, &code)
		}
	}
	now := time.Now()
	inst.Status.Phase = api.PhaseSucceeded
	if code != 0 {
		inst.Status.Phase = api.PhaseFailed
	}
	inst.Status.FinishedAt = &now
	for _, c := range inst.Spec.Containers {
		inst.Status.Containers = append(inst.Status.Containers, api.ContainerStatus{Name: c.Name, State: api.ContainerTerminated, ExitCode: &code})
	}
}

// exec echoes stdin and the command line, and exits with len(cmd).
func (f *fakeAPI) exec(w http.ResponseWriter, r *http.Request, inst *api.Instance) {
	cmd := r.URL.Query()["cmd"]
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		f.t.Error(err)
		return
	}
	defer conn.Close()
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", api.StreamProtocol)
	rw.Flush()
	var stdin []byte
	for {
		stream, p, err := api.ReadFrame(rw.Reader)
		if err != nil {
			f.t.Errorf("fake exec: %v", err)
			return
		}
		if stream == api.StreamStdinClose {
			break
		}
		if stream == api.StreamStdin {
			stdin = append(stdin, p...)
		}
	}
	fw := api.NewFrameWriter(rw)
	fw.WriteFrame(api.StreamStdout, []byte(strings.Join(cmd, " ")+"\n"))
	fw.WriteFrame(api.StreamStderr, stdin)
	fw.WriteJSON(api.StreamExit, api.ExitStatus{ExitCode: len(cmd)})
	rw.Flush()
}

func writeTestJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeTestError(w http.ResponseWriter, status int, code, msg string) {
	writeTestJSON(w, status, api.ErrorResponse{Error: api.Error{Code: code, Message: msg}})
}

type result struct {
	stdout, stderr string
	code           int
}

// kanga runs the CLI in-process, as main does.
func kanga(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut strings.Builder
	root := newRootCommand(&options{now: time.Now})
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(context.Background())
	code := ExitCode(&errOut, err)
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

func TestRunDetachedPsRm(t *testing.T) {
	newFakeAPI(t)

	r := kanga(t, "", "run", "-d", "--name", "web", "-p", "8080:80", "busybox", "httpd", "-f")
	if r.code != 0 || r.stdout != "web\n" {
		t.Fatalf("run -d = %+v", r)
	}
	r = kanga(t, "", "run", "-d", "busybox", "sleep", "1")
	if r.code != 0 || r.stdout != "inst-2\n" {
		t.Fatalf("run -d without a name = %+v", r)
	}

	r = kanga(t, "", "ps")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("ps = %+v", r)
	}
	if !strings.Contains(r.stdout, "0.0.0.0:8080->80/tcp") || !strings.Contains(r.stdout, "Up ") {
		t.Errorf("ps lacks the port or the status:\n%s", r.stdout)
	}

	r = kanga(t, "", "ps", "-q")
	if r.stdout != "inst-2\nweb\n" && r.stdout != "web\ninst-2\n" {
		t.Errorf("ps -q = %q", r.stdout)
	}

	r = kanga(t, "", "ps", "-o", "json")
	var list api.InstanceList
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Items) != 2 {
		t.Errorf("ps -o json = %q (%v)", r.stdout, err)
	}

	r = kanga(t, "", "inspect", "web", "nope")
	var insts []api.Instance
	if err := json.Unmarshal([]byte(r.stdout), &insts); err != nil || len(insts) != 1 || insts[0].Name != "web" {
		t.Errorf("inspect stdout = %q (%v)", r.stdout, err)
	}
	if r.code != 1 || !strings.Contains(r.stderr, `Error: instance "nope" not found`) {
		t.Errorf("inspect of a missing instance = %+v", r)
	}

	r = kanga(t, "", "rm", "web")
	if r.code != 125 || !strings.Contains(r.stderr, "stop it first or use force") {
		t.Errorf("rm of a running instance = %+v", r)
	}
	r = kanga(t, "", "stop", "-t", "1", "inst-2")
	if r.code != 0 || r.stdout != "inst-2\n" {
		t.Errorf("stop = %+v", r)
	}
	r = kanga(t, "", "rm", "-f", "web", "inst-2", "ghost")
	if r.code != 1 || r.stdout != "web\ninst-2\n" || !strings.Contains(r.stderr, `instance "ghost" not found`) {
		t.Errorf("rm -f = %+v", r)
	}

	r = kanga(t, "", "ps", "-a")
	if r.code != 0 || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("ps -a after rm = %+v", r)
	}
}

func TestRunAttached(t *testing.T) {
	f := newFakeAPI(t)

	r := kanga(t, "", "run", "--rm", "--name", "job", "-e", "EXIT=3", "busybox", "sh", "-c", "exit 3")
	if r.code != 3 || r.stdout != "hello from job/busybox\n" || r.stderr != "" {
		t.Fatalf("run = %+v; want the logs and exit code 3", r)
	}
	if len(f.deleted) != 1 || f.deleted[0] != "job" {
		t.Errorf("--rm deleted %v", f.deleted)
	}

	r = kanga(t, "", "run", "--name", "ok", "busybox", "true")
	if r.code != 0 || r.stdout != "hello from ok/busybox\n" {
		t.Errorf("run of a succeeding instance = %+v", r)
	}

	spec := `{"name":"pair","spec":{"containers":[{"name":"a","image":"busybox"},{"name":"b","image":"busybox"}]}}`
	r = kanga(t, spec, "run", "-f", "-")
	if r.code != 0 || !strings.Contains(r.stdout, "a | hello from pair/a\n") || !strings.Contains(r.stdout, "b | hello from pair/b\n") {
		t.Errorf("run -f of two containers = %+v", r)
	}
}

func TestRunFailures(t *testing.T) {
	newFakeAPI(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"image problem attached", []string{"run", "missing"}, `failed: ImageNotFound: image "missing" is not known`},
		{"image problem detached", []string{"run", "-d", "missing"}, "ImageNotFound"},
		{"bad port", []string{"run", "-p", "80", "busybox"}, "expected [IP:]HOSTPORT:PORT"},
		{"bad env", []string{"run", "-e", "=1", "busybox"}, "expected KEY=VALUE"},
		{"unknown flag", []string{"run", "--bogus", "busybox"}, "unknown flag: --bogus"},
		{"duplicate name", []string{"run", "-d", "--name", "inst-1", "busybox"}, `instance "inst-1" already exists`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := kanga(t, "", tt.args...)
			if r.code != runExitCode || !strings.Contains(r.stderr, tt.want) || !strings.HasPrefix(r.stderr, "Error: ") {
				t.Errorf("kanga %v = %+v; want exit 125 and %q", tt.args, r, tt.want)
			}
		})
	}
}

func TestExecLogsImageVersion(t *testing.T) {
	newFakeAPI(t)
	if r := kanga(t, "", "run", "-d", "--name", "web", "busybox"); r.code != 0 {
		t.Fatalf("run -d = %+v", r)
	}

	// Flags after NAME belong to the command.
	r := kanga(t, "some input", "exec", "-i", "web", "sh", "-c", "cat -n")
	if r.code != 3 || r.stdout != "sh -c cat -n\n" || r.stderr != "some input" {
		t.Errorf("exec -i = %+v; want the command echoed, stdin on stderr and exit code 3", r)
	}
	r = kanga(t, "ignored", "exec", "web", "true")
	if r.code != 1 || r.stderr != "" {
		t.Errorf("exec without -i = %+v; want no stdin forwarded and exit code 1", r)
	}
	r = kanga(t, "", "exec", "ghost", "true")
	if r.code != 1 || !strings.Contains(r.stderr, `instance "ghost" not found`) {
		t.Errorf("exec in a missing instance = %+v", r)
	}

	r = kanga(t, "", "logs", "web")
	if r.code != 0 || r.stdout != "hello from web/busybox\n" {
		t.Errorf("logs = %+v", r)
	}

	archive := filepath.Join(t.TempDir(), "img.tar")
	if err := os.WriteFile(archive, []byte(strings.Repeat("x", 5000)), 0o600); err != nil {
		t.Fatal(err)
	}
	r = kanga(t, "", "image", "import", archive)
	if r.code != 0 || r.stdout != "busybox:latest\n" || !strings.Contains(r.stderr, "Uploaded 5kB/5kB (100%)") || !strings.Contains(r.stderr, "unpacking 5kB/5kB (100%)") {
		t.Errorf("image import = %+v", r)
	}

	r = kanga(t, "", "version")
	if r.code != 0 || !strings.Contains(r.stdout, "Version:     dev") || !strings.Contains(r.stdout, "Version:     fake-1") {
		t.Errorf("version = %+v", r)
	}

	t.Setenv("KANGA_TOKEN", "wrong")
	r = kanga(t, "", "ps")
	if r.code != 125 || !strings.Contains(r.stderr, "Error: bad token") {
		t.Errorf("ps with a wrong token = %+v", r)
	}
}

// TestRunDetachedRm checks that -d --rm leaves the removal to the
// platform (spec.autoRemove) and that --rm alone does not.
func TestRunDetachedRm(t *testing.T) {
	f := newFakeAPI(t)
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"run", "-d", "--rm", "--name", "gone-later", "busybox"}, true},
		{[]string{"run", "-d", "--name", "kept", "busybox"}, false},
	} {
		r := kanga(t, "", tt.args...)
		if r.code != 0 {
			t.Fatalf("kanga %v = %+v", tt.args, r)
		}
		name := strings.TrimSpace(r.stdout)
		f.mu.Lock()
		inst, ok := f.instances[name]
		f.mu.Unlock()
		if !ok || inst.Spec.AutoRemove != tt.want {
			t.Errorf("kanga %v: instance %q recorded %v, autoRemove want %v", tt.args, name, ok, tt.want)
		}
	}
}
