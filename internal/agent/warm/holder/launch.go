package holder

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
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
