// Package holder is the init process of a warm container: containerd and
// the OCI runtime create and start the container around it ahead of
// demand, and it waits until the agent hands it the process of an
// instance, then becomes that process with execve. Like docker-init, it is
// bind-mounted into the container (at /.kanga/init, read-only) and is the
// container's pid 1 until it execs.
//
// The protocol runs over two FIFOs the agent made:
//
//   - the ack FIFO (/.kanga/ack in the container), which the holder opens
//     for writing with O_CLOEXEC. It writes Ready once it runs, Exec right
//     before execve, and after either the text of an error if something
//     fails (then it exits 127). Because the write end closes at a
//     successful execve, the agent reading "RX" then end of file knows the
//     instance's process is the one running: that is the moment of start.
//   - stdin, a FIFO the shim copies into the holder's fd 0. The agent
//     writes one JSON Process; the holder reads exactly one JSON value
//     (not to EOF: the runc shim holds a write end of the FIFO itself until
//     CloseIO, a round trip the start need not wait for), then puts
//     /dev/null on fd 0 as a container without stdin has.
//
// The holder changes nothing else: namespaces, cgroups, mounts, the root
// filesystem, capabilities, rlimits and no_new_privs are what the runtime
// set up for it, and execve applies the kernel's usual rules to them (a
// root process keeps the bounding set, a non-root one ends with no
// effective capabilities, exactly as when runc execs the process itself).
//
// It has no dependencies beyond the standard library, to stay small and
// static (CGO_ENABLED=0; Go's syscall.Setuid then changes every thread).
package holder

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Protocol bytes on the ack FIFO.
const (
	Ready = 'R'
	Exec  = 'X'
)

// Paths inside the container.
const (
	Dir     = "/.kanga"
	AckPath = Dir + "/ack"
	Path    = Dir + "/init"
)

// Process is what the agent hands the holder: the instance's process, as
// in the OCI spec's process section.
type Process struct {
	Args           []string `json:"args"`
	Env            []string `json:"env,omitempty"`
	Cwd            string   `json:"cwd,omitempty"`
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGids []uint32 `json:"additionalGids,omitempty"`
}

// System is what the holder does to the process it runs in; tests replace
// it.
type System interface {
	NullStdin() error
	Setgroups(gids []int) error
	Setgid(gid int) error
	Setuid(uid int) error
	Chdir(dir string) error
	Stat(path string) (os.FileInfo, error)
	Exec(path string, args, env []string) error
}

// Run is the holder: it reports ready on ack, reads the process from
// stdin, and execs it. It returns only on failure, after writing the
// error to ack.
func Run(ack io.Writer, stdin io.Reader, sys System) error {
	if _, err := ack.Write([]byte{Ready}); err != nil {
		return err
	}
	err := start(ack, stdin, sys)
	_, _ = io.WriteString(ack, err.Error())
	return err
}

func start(ack io.Writer, stdin io.Reader, sys System) error {
	var p Process
	if err := json.NewDecoder(stdin).Decode(&p); err != nil {
		return fmt.Errorf("kanga-init: reading the process (one JSON object): %w", err)
	}
	if len(p.Args) == 0 {
		return errors.New("kanga-init: the process has no args")
	}
	if err := sys.NullStdin(); err != nil {
		return fmt.Errorf("kanga-init: stdin: %w", err)
	}
	gids := make([]int, len(p.AdditionalGids))
	for i, g := range p.AdditionalGids {
		gids[i] = int(g)
	}
	if err := sys.Setgroups(gids); err != nil {
		return fmt.Errorf("kanga-init: setgroups %v: %w", gids, err)
	}
	if err := sys.Setgid(int(p.GID)); err != nil {
		return fmt.Errorf("kanga-init: setgid %d: %w", p.GID, err)
	}
	if err := sys.Setuid(int(p.UID)); err != nil {
		return fmt.Errorf("kanga-init: setuid %d: %w", p.UID, err)
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := sys.Chdir(cwd); err != nil {
		return fmt.Errorf("kanga-init: chdir to %s: %w", cwd, err)
	}
	path, err := LookPath(p.Args[0], p.Env, sys.Stat)
	if err != nil {
		return err
	}
	if _, err := ack.Write([]byte{Exec}); err != nil {
		return err
	}
	err = sys.Exec(path, p.Args, p.Env)
	return fmt.Errorf("kanga-init: exec %s: %w", path, err)
}

// LookPath resolves name as runc does: a name with a slash is used as it
// is; any other is searched in the PATH of the process's environment (not
// the holder's), the first executable regular file winning.
func LookPath(name string, env []string, stat func(string) (os.FileInfo, error)) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if fi, err := stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("kanga-init: exec: %q: executable file not found in $PATH (%s)", name, path)
}

// OS is the real System.
type OS struct{}

// NullStdin puts /dev/null on fd 0.
func (OS) NullStdin() error {
	f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0) // as runc gives a container without stdin
	if err != nil {
		return err
	}
	defer f.Close()
	return syscall.Dup3(int(f.Fd()), 0, 0)
}

func (OS) Setgroups(gids []int) error                 { return syscall.Setgroups(gids) }
func (OS) Setgid(gid int) error                       { return syscall.Setgid(gid) }
func (OS) Setuid(uid int) error                       { return syscall.Setuid(uid) }
func (OS) Chdir(dir string) error                     { return os.Chdir(dir) }
func (OS) Stat(path string) (os.FileInfo, error)      { return os.Stat(path) }
func (OS) Exec(path string, args, env []string) error { return syscall.Exec(path, args, env) }
