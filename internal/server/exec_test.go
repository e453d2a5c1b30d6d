package server

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
)

func TestExec(t *testing.T) {
	e := newEnv(t, 0)
	r := e.do(t, "POST", "/v1/instances", e.a.token,
		`{"name":"web","spec":{"containers":[{"name":"app","image":"`+imgBusybox+`"},{"name":"side","image":"`+imgBusybox+`"}]}}`)
	wantStatus(t, r, http.StatusCreated)
	e.setPhase(t, e.a, "web", api.PhaseRunning)
	c := e.client(e.a)

	tests := []struct {
		name       string
		opts       client.ExecOptions
		exitCode   int
		wantStdout string
		wantStderr string
		want       ExecRequest // what the host must see, streams aside
	}{
		{
			name:       "stdin echoed, exit code propagated",
			opts:       client.ExecOptions{Cmd: []string{"cat"}, Stdin: strings.NewReader("hello\nworld\n")},
			exitCode:   3,
			wantStdout: "hello\nworld\n",
			wantStderr: "ran [cat] in app\n",
			want:       ExecRequest{Container: "app", Cmd: []string{"cat"}},
		},
		{
			name:       "no stdin",
			opts:       client.ExecOptions{Cmd: []string{"sh", "-c", "date; exit 0"}},
			wantStderr: "ran [sh -c date; exit 0] in app\n",
			want:       ExecRequest{Container: "app", Cmd: []string{"sh", "-c", "date; exit 0"}, Env: []string{"FAKE_NO_STDIN=1"}},
		},
		{
			name: "container, env, workdir and tty pass through",
			opts: client.ExecOptions{Container: "side", Cmd: []string{"env"}, Env: []string{"A=1", "B=x=y"}, WorkDir: "/tmp", TTY: true,
				Stdin: strings.NewReader("")},
			exitCode:   127,
			wantStderr: "ran [env] in side\n",
			want:       ExecRequest{Container: "side", Cmd: []string{"env"}, Env: []string{"A=1", "B=x=y"}, WorkDir: "/tmp", TTY: true},
		},
		{
			name:       "large stdin",
			opts:       client.ExecOptions{Cmd: []string{"cat"}, Stdin: strings.NewReader(strings.Repeat("x", 3<<20))},
			wantStdout: strings.Repeat("x", 3<<20),
			wantStderr: "ran [cat] in app\n",
			want:       ExecRequest{Container: "app", Cmd: []string{"cat"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.host.setExitCode(tt.exitCode)
			var stdout, stderr strings.Builder
			tt.opts.Stdout, tt.opts.Stderr = &stdout, &stderr
			code, err := c.Exec(t.Context(), "web", tt.opts)
			if err != nil {
				t.Fatalf("Exec: %v", err)
			}
			if code != tt.exitCode {
				t.Errorf("exit code = %d, want %d", code, tt.exitCode)
			}
			if stdout.String() != tt.wantStdout {
				t.Errorf("stdout = %.80q (%d bytes), want %.80q (%d bytes)", stdout.String(), stdout.Len(), tt.wantStdout, len(tt.wantStdout))
			}
			if stderr.String() != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", stderr.String(), tt.wantStderr)
			}
			got := e.host.lastExecRequest()
			if got == nil || got.Container != tt.want.Container || !slices.Equal(got.Cmd, tt.want.Cmd) ||
				!slices.Equal(got.Env, tt.want.Env) || got.WorkDir != tt.want.WorkDir || got.TTY != tt.want.TTY {
				t.Errorf("host saw %+v, want %+v", got, tt.want)
			}
		})
	}

	t.Run("host error arrives as an error frame", func(t *testing.T) {
		code, err := c.Exec(t.Context(), "web", client.ExecOptions{Cmd: []string{"fail"}})
		if code != -1 || !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "executable file not found") {
			t.Errorf("Exec = %d, %v; want -1 and the host's NotFound error", code, err)
		}
	})

	t.Run("terminal size", func(t *testing.T) {
		r := e.do(t, "POST", "/v1/instances/web/exec?cmd=sh&tty=true&width=0&height=10", e.a.token, "",
			"Connection", "Upgrade", "Upgrade", api.StreamProtocol)
		wantError(t, r, http.StatusBadRequest, "InvalidArgument", "width", "height")
	})
}

func TestExecRejected(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "web")
	e.mustCreate(t, e.a, "pending")
	e.setPhase(t, e.a, "web", api.PhaseRunning)
	e.mustCreate(t, e.a, "done")
	e.setPhase(t, e.a, "done", api.PhaseSucceeded)

	upgrade := []string{"Connection", "Upgrade", "Upgrade", api.StreamProtocol}
	tests := []struct {
		name   string
		path   string
		hdr    []string
		status int
		code   string
		msgs   []string
	}{
		{"no upgrade", "/v1/instances/web/exec?cmd=sh", nil,
			400, "InvalidArgument", []string{"Upgrade: " + api.StreamProtocol}},
		{"other protocol", "/v1/instances/web/exec?cmd=sh", []string{"Connection", "Upgrade", "Upgrade", "websocket"},
			400, "InvalidArgument", []string{"Upgrade"}},
		{"no cmd", "/v1/instances/web/exec", upgrade,
			400, "InvalidArgument", []string{"no command", "cmd="}},
		{"empty cmd", "/v1/instances/web/exec?cmd=", upgrade,
			400, "InvalidArgument", []string{"no command"}},
		{"bad tty", "/v1/instances/web/exec?cmd=sh&tty=sometimes", upgrade,
			400, "InvalidArgument", []string{"tty"}},
		{"bad env", "/v1/instances/web/exec?cmd=sh&env=NOVALUE", upgrade,
			400, "InvalidArgument", []string{"NOVALUE", "KEY=VALUE"}},
		{"unknown instance", "/v1/instances/nope/exec?cmd=sh", upgrade,
			404, "NotFound", []string{`"nope"`}},
		{"unknown container", "/v1/instances/web/exec?cmd=sh&container=db", upgrade,
			404, "NotFound", []string{`no container "db"`}},
		{"pending", "/v1/instances/pending/exec?cmd=sh", upgrade,
			409, "FailedPrecondition", []string{"Pending", "not Running"}},
		{"terminal", "/v1/instances/done/exec?cmd=sh", upgrade,
			409, "FailedPrecondition", []string{"Succeeded", "not Running"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, "POST", tt.path, e.a.token, "", tt.hdr...)
			wantError(t, r, tt.status, tt.code, tt.msgs...)
		})
	}
	if e.host.lastExecRequest() != nil {
		t.Error("the host was asked to exec for a rejected request")
	}

	// The SDK reports the refusal before the upgrade as an APIError with
	// the status.
	_, err := e.client(e.a).Exec(t.Context(), "pending", client.ExecOptions{Cmd: []string{"sh"}})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict || !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Exec(pending) = %v, want a 409 FailedPrecondition APIError", err)
	}
	_, err = e.client(e.b).Exec(t.Context(), "web", client.ExecOptions{Cmd: []string{"sh"}})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Exec in another tenant's instance = %v, want NotFound", err)
	}
}
