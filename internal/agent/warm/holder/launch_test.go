package holder

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeLauncher is a fake Launcher: a file's bytes, and the exec it was
// asked for.
type fakeLauncher struct {
	files   fakeFS
	data    []byte
	takeErr error
	environ []byte
	envErr  error
	exec    string
}

func (l *fakeLauncher) ReadEnviron(string) ([]byte, error) { return l.environ, l.envErr }

func (l *fakeLauncher) Take(string) ([]byte, error)        { return l.data, l.takeErr }
func (l *fakeLauncher) Stat(p string) (os.FileInfo, error) { return l.files.stat(p) }
func (l *fakeLauncher) Exec(p string, args, env []string) error {
	l.exec = p + " " + strings.Join(args, " ") + " | " + strings.Join(env, " ")
	return errors.New("fake exec returned")
}

func TestLaunch(t *testing.T) {
	const secret = "s3cr3t-value"
	for _, tc := range []struct {
		name    string
		data    string
		takeErr error
		exec    string
		err     string
	}{
		{
			name: "execs args with the file's env, PATH from it",
			data: `{"args":["sleep","5"],"env":["PATH=/bin","PW=` + secret + `"],"uid":7}`,
			exec: "/bin/sleep sleep 5 | PATH=/bin PW=" + secret,
			err:  "kanga-init: exec /bin/sleep: fake exec returned",
		},
		{name: "empty file (a second launch, or the agent wrote none)", data: "", err: "holds no process (0 bytes)"},
		{name: "bad JSON names no byte of it", data: `{"env":["PW=` + secret + `"` + "\x00", err: "holds no process"},
		{name: "no args", data: `{"env":["PW=` + secret + `"]}`, err: "the process has no args"},
		{name: "not found", data: `{"args":["nope"],"env":["PATH=/bin"]}`, err: `"nope": executable file not found`},
		{name: "unreadable", takeErr: os.ErrPermission, err: "permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &fakeLauncher{files: fakeFS{"/bin/sleep": 0o755}, data: []byte(tc.data), takeErr: tc.takeErr}
			err := Launch(EnvPath, l)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Launch: %v, want an error with %q", err, tc.err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows the file's content: %v", err)
			}
			if l.exec != tc.exec {
				t.Errorf("exec = %q, want %q", l.exec, tc.exec)
			}
		})
	}
}

// TestTake reads a real file and leaves it empty.
func TestTake(t *testing.T) {
	p := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(p, []byte(`{"args":["x"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := OS{}.Take(p)
	if err != nil || string(b) != `{"args":["x"]}` {
		t.Fatalf("Take = %q, %v", b, err)
	}
	if st, err := os.Stat(p); err != nil || st.Size() != 0 {
		t.Fatalf("after Take: %v, %v; want an empty file", st, err)
	}
	if err := os.WriteFile(p, make([]byte, MaxLaunchBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (OS{}).Take(p); err == nil {
		t.Fatal("Take of a file past MaxLaunchBytes succeeded")
	}
}

func TestExecWithEnv(t *testing.T) {
	pid1 := []byte("PATH=/bin\x00PW=s3cr3t\x00HOSTNAME=i\x00")
	own := []string{"PATH=/usr/bin:/bin", "HOSTNAME=i"}
	for _, tc := range []struct {
		name   string
		args   []string
		envErr error
		exec   string
		err    string
	}{
		{name: "pid 1's env, the exec's additions over it", args: []string{"TERM=xterm", "PW=mine", "--", "sleep", "1"},
			exec: "/bin/sleep sleep 1 | PATH=/bin PW=mine HOSTNAME=i TERM=xterm", err: "fake exec returned"},
		{name: "no additions", args: []string{"--", "sleep"},
			exec: "/bin/sleep sleep | PATH=/bin PW=s3cr3t HOSTNAME=i", err: "fake exec returned"},
		{name: "pid 1 unreadable: the own env", args: []string{"--", "sleep"}, envErr: os.ErrPermission,
			exec: "/bin/sleep sleep | PATH=/usr/bin:/bin HOSTNAME=i", err: "fake exec returned"},
		{name: "no --", args: []string{"sleep"}, err: `"sleep" is not NAME=VALUE`},
		{name: "no command", args: []string{"A=b", "--"}, err: "no command after --"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &fakeLauncher{files: fakeFS{"/bin/sleep": 0o755}, environ: pid1, envErr: tc.envErr}
			err := ExecWithEnv(tc.args, own, l)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ExecWithEnv: %v, want an error with %q", err, tc.err)
			}
			if l.exec != tc.exec {
				t.Errorf("exec = %q, want %q", l.exec, tc.exec)
			}
		})
	}
}
