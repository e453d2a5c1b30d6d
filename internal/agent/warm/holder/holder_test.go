package holder

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeFS is a file tree of modes for LookPath.
type fakeFS map[string]fs.FileMode

type fakeInfo struct{ mode fs.FileMode }

func (i fakeInfo) Name() string       { return "" }
func (i fakeInfo) Size() int64        { return 0 }
func (i fakeInfo) Mode() fs.FileMode  { return i.mode }
func (i fakeInfo) ModTime() time.Time { return time.Time{} }
func (i fakeInfo) IsDir() bool        { return i.mode.IsDir() }
func (i fakeInfo) Sys() any           { return nil }

func (f fakeFS) stat(p string) (os.FileInfo, error) {
	m, ok := f[p]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return fakeInfo{m}, nil
}

func TestLookPath(t *testing.T) {
	files := fakeFS{
		"/usr/bin/sh":       0o755,
		"/bin/sh":           0o755,
		"/opt/app/data":     0o644, // not executable
		"/opt/app/dir":      fs.ModeDir | 0o755,
		"/usr/local/bin/ok": 0o700,
		"work/tool":         0o755,
	}
	for _, tc := range []struct {
		name, arg string
		env       []string
		want      string
		err       string
	}{
		{name: "first PATH entry wins", arg: "sh", env: []string{"PATH=/usr/bin:/bin"}, want: "/usr/bin/sh"},
		{name: "order of PATH", arg: "sh", env: []string{"PATH=/bin:/usr/bin"}, want: "/bin/sh"},
		{name: "slash is used as is", arg: "./missing", env: []string{"PATH=/bin"}, want: "./missing"},
		{name: "absolute", arg: "/opt/app/data", want: "/opt/app/data"},
		{name: "not executable is skipped", arg: "data", env: []string{"PATH=/opt/app"}, err: "executable file not found"},
		{name: "directory is skipped", arg: "dir", env: []string{"PATH=/opt/app"}, err: "executable file not found"},
		{name: "spec env, last PATH wins", arg: "ok", env: []string{"PATH=/bin", "PATH=/usr/local/bin"}, want: "/usr/local/bin/ok"},
		{name: "no PATH", arg: "sh", env: []string{"HOME=/"}, err: `"sh": executable file not found`},
		{name: "relative PATH entry", arg: "tool", env: []string{"PATH=work"}, want: "work/tool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LookPath(tc.arg, tc.env, files.stat)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("LookPath(%q) = %q, %v; want error with %q", tc.arg, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("LookPath(%q) = %q, %v; want %q", tc.arg, got, err, tc.want)
			}
		})
	}
}

// fakeSys records what the holder does and fails where told.
type fakeSys struct {
	files   fakeFS
	calls   []string
	failOn  string
	execErr error
}

func (s *fakeSys) do(call string) error {
	s.calls = append(s.calls, call)
	if s.failOn != "" && strings.HasPrefix(call, s.failOn) {
		return errors.New("operation not permitted")
	}
	return nil
}

func (s *fakeSys) NullStdin() error                   { return s.do("nullstdin") }
func (s *fakeSys) Setgroups(g []int) error            { return s.do("setgroups " + fmtInts(g)) }
func (s *fakeSys) Setgid(g int) error                 { return s.do("setgid " + itoa(g)) }
func (s *fakeSys) Setuid(u int) error                 { return s.do("setuid " + itoa(u)) }
func (s *fakeSys) Chdir(d string) error               { return s.do("chdir " + d) }
func (s *fakeSys) Stat(p string) (os.FileInfo, error) { return s.files.stat(p) }
func (s *fakeSys) Exec(p string, args, env []string) error {
	s.calls = append(s.calls, "exec "+p+" "+strings.Join(args, " "))
	if s.execErr != nil {
		return s.execErr
	}
	return errors.New("fake exec returned")
}

func itoa(i int) string { return strconv.Itoa(i) }

func fmtInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func TestRun(t *testing.T) {
	files := fakeFS{"/bin/sleep": 0o755}
	for _, tc := range []struct {
		name    string
		stdin   string
		failOn  string
		execErr error
		ack     string // what the agent reads on the ack FIFO
		calls   []string
	}{
		{
			name:  "execs the process as its user",
			stdin: `{"args":["sleep","5"],"env":["PATH=/bin"],"cwd":"/tmp","uid":7,"gid":8,"additionalGids":[3]}`,
			ack:   "RXkanga-init: exec /bin/sleep: fake exec returned",
			calls: []string{"nullstdin", "setgroups 3", "setgid 8", "setuid 7", "chdir /tmp", "exec /bin/sleep sleep 5"},
		},
		{
			name:    "exec failure is reported",
			stdin:   `{"args":["sleep"],"env":["PATH=/bin"]}`,
			execErr: errors.New("exec format error"),
			ack:     "RXkanga-init: exec /bin/sleep: exec format error",
			calls:   []string{"nullstdin", "setgroups ", "setgid 0", "setuid 0", "chdir /", "exec /bin/sleep sleep"},
		},
		{
			name:  "bad JSON",
			stdin: `{"args":["sleep"`,
			ack:   "Rkanga-init: reading the process (one JSON object): unexpected EOF",
		},
		{
			name:  "empty stdin (the agent went away)",
			stdin: ``,
			ack:   "Rkanga-init: reading the process (one JSON object): EOF",
		},
		{
			name:  "no args",
			stdin: `{"env":["PATH=/bin"]}`,
			ack:   "Rkanga-init: the process has no args",
		},
		{
			name:  "not found in PATH",
			stdin: `{"args":["nope"],"env":["PATH=/bin:/usr/bin"]}`,
			ack:   `Rkanga-init: exec: "nope": executable file not found in $PATH (/bin:/usr/bin)`,
			calls: []string{"nullstdin", "setgroups ", "setgid 0", "setuid 0", "chdir /"},
		},
		{
			name:   "setuid refused",
			stdin:  `{"args":["sleep"],"env":["PATH=/bin"],"uid":1000}`,
			failOn: "setuid",
			ack:    "Rkanga-init: setuid 1000: operation not permitted",
			calls:  []string{"nullstdin", "setgroups ", "setgid 0", "setuid 1000"},
		},
		{
			name:  "a second value on stdin is not read",
			stdin: `{"args":["/bin/sleep","1"]}{"args":["other"]}`,
			ack:   "RXkanga-init: exec /bin/sleep: fake exec returned",
			calls: []string{"nullstdin", "setgroups ", "setgid 0", "setuid 0", "chdir /", "exec /bin/sleep /bin/sleep 1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := &fakeSys{files: files, failOn: tc.failOn, execErr: tc.execErr}
			var ack bytes.Buffer
			err := Run(&ack, strings.NewReader(tc.stdin), sys)
			if err == nil {
				t.Fatal("Run returned no error; it returns only on failure")
			}
			if ack.String() != tc.ack {
				t.Errorf("ack = %q, want %q", ack.String(), tc.ack)
			}
			if strings.Join(sys.calls, "|") != strings.Join(tc.calls, "|") {
				t.Errorf("calls = %q, want %q", sys.calls, tc.calls)
			}
		})
	}
}
