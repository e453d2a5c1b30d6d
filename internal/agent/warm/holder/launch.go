package holder

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
)

// The launcher: the same binary started as a container's process by the
// runtime, to keep the values of env from secrets out of the container's
// OCI spec. containerd records a container's spec in its metadata
// database (bolt, on the host's disk, whose freed pages keep old bytes)
// and the runtimes copy it into their state directories; so the spec
// names the launcher, with LaunchArg, and the instance's process (args
// and env) waits in a file on a tmpfs of the host, bound read-write at
// EnvPath. The launcher reads it, empties it, and execs the process: its
// pid, and the argv and env the process sees, are those of a start
// without it. The runtime has already applied the user, capabilities,
// cwd, rlimits, no_new_privs and seccomp; the launcher changes none of
// them.
const (
	LaunchArg = "--launch"
	EnvPath   = Dir + "/env"
)

// MaxLaunchBytes bounds the launcher's file: the kernel refuses an execve
// whose args and env pass a quarter of the stack limit (2 MiB by
// default), so more is never of use.
const MaxLaunchBytes = 4 << 20

// Launch reads the process (one JSON Process; only Args and Env count)
// from the file at path through sys, empties the file, and execs the
// process. It returns only on failure.
func Launch(path string, sys Launcher) error {
	b, err := sys.Take(path)
	if err != nil {
		return fmt.Errorf("kanga-init: reading the process from %s: %w", path, err)
	}
	var p Process
	if err := json.Unmarshal(b, &p); err != nil {
		// The error names no byte of the file: it holds secrets.
		var se *json.SyntaxError
		if errors.As(err, &se) || len(b) == 0 {
			return fmt.Errorf("kanga-init: %s holds no process (%d bytes)", path, len(b))
		}
		return fmt.Errorf("kanga-init: %s holds no process: %w", path, err)
	}
	if len(p.Args) == 0 {
		return errors.New("kanga-init: the process has no args")
	}
	exe, err := LookPath(p.Args[0], p.Env, sys.Stat)
	if err != nil {
		return err
	}
	err = sys.Exec(exe, p.Args, p.Env)
	return fmt.Errorf("kanga-init: exec %s: %w", exe, err)
}

// Launcher is what Launch does to the process it runs in; tests replace
// it.
type Launcher interface {
	// Take reads the file at path and truncates it to nothing.
	Take(path string) ([]byte, error)
	// ReadEnviron reads a process's environ file.
	ReadEnviron(path string) ([]byte, error)
	Stat(path string) (os.FileInfo, error)
	Exec(path string, args, env []string) error
}

// Take reads the file at path and empties it, so that nothing else in the
// container reads the process's env there once it runs.
func (OS) Take(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxLaunchBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxLaunchBytes {
		return nil, fmt.Errorf("more than %d bytes", MaxLaunchBytes)
	}
	if err := syscall.Ftruncate(int(f.Fd()), 0); err != nil {
		return nil, fmt.Errorf("emptying it: %w", err)
	}
	return b, nil
}

// ExecArg starts the launcher in exec mode: /.kanga/init --exec
// [NAME=VALUE...] -- ARGS... runs ARGS (a kanga exec, an exec probe or
// hook) with the env of the container's process, read from
// /proc/1/environ (the container has its own pid namespace; pid 1 is the
// process the launcher started), the NAME=VALUE pairs (what the exec adds)
// over it. The exec's own spec then needs no value from a secret: it
// passes through containerd's state directory, on disk. Where pid 1's env
// cannot be read (a process of another user, or one made non-dumpable),
// the exec's own env is used.
const ExecArg = "--exec"

// pid1Environ is where the env of the container's process is read.
const pid1Environ = "/proc/1/environ"

// ExecWithEnv is the launcher in exec mode: args are what follows ExecArg,
// env the launcher's own environment. It returns only on failure.
func ExecWithEnv(args, env []string, sys Launcher) error {
	var extra []string
	for len(args) > 0 && args[0] != "--" {
		if !strings.Contains(args[0], "=") {
			return fmt.Errorf("kanga-init: %s: %q is not NAME=VALUE (or -- before the command)", ExecArg, args[0])
		}
		extra = append(extra, args[0])
		args = args[1:]
	}
	if len(args) < 2 {
		return fmt.Errorf("kanga-init: %s: no command after --", ExecArg)
	}
	args = args[1:]
	base := env
	if b, err := sys.ReadEnviron(pid1Environ); err == nil {
		base = nil
		for _, kv := range strings.Split(string(b), "\x00") {
			if kv != "" {
				base = append(base, kv)
			}
		}
	}
	env = mergeEnv(base, extra)
	exe, err := LookPath(args[0], env, sys.Stat)
	if err != nil {
		return err
	}
	err = sys.Exec(exe, args, env)
	return fmt.Errorf("kanga-init: exec %s: %w", exe, err)
}

// mergeEnv is base with each NAME=VALUE of over replacing base's NAME or
// added at the end, as runc and containerd merge env.
func mergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range over {
		name, _, _ := strings.Cut(kv, "=")
		i := slices.IndexFunc(out, func(e string) bool { n, _, _ := strings.Cut(e, "="); return n == name })
		if i >= 0 {
			out[i] = kv
		} else {
			out = append(out, kv)
		}
	}
	return out
}

// ReadEnviron reads a process's environ file.
func (OS) ReadEnviron(path string) ([]byte, error) {
	return os.ReadFile(path)
}
