package agent

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// A container's termination message, as the kubelet's: a file the
// container may write before it ends (terminationMessagePath), read when
// it exits into its status, or, with FallbackToLogsOnError, the end of its
// log when the file is empty and it failed. The files live on a small
// tmpfs of the instance, so a container writing without end fills its
// tmpfs (ENOSPC), never the host's disk.
const (
	// maxTerminationMessage is how much of the file is read, the
	// kubelet's 4 KiB.
	maxTerminationMessage = 4 << 10
	// terminationFileRoom is the tmpfs room per container: the message
	// and what a container may write past it before ENOSPC.
	terminationFileRoom = 16 << 10
	// Fallback to the log: its last lines, at most so many bytes, as the
	// kubelet's.
	fallbackLogLines = 80
	fallbackLogBytes = 2 << 10
)

func (a *Agent) terminationDir(uid string) string {
	return filepath.Join(a.sandboxDir(uid), "termination")
}

func terminationFile(dir, container string) string { return filepath.Join(dir, container) }

// terminationContainers are the containers of spec with a termination
// message file.
func terminationContainers(spec *api.InstanceSpec) []string {
	var out []string
	for _, c := range model.AllContainers(spec) {
		if c.Spec.TerminationMessagePath != "" {
			out = append(out, c.Spec.Name)
		}
	}
	return out
}

// setupTermination mounts the instance's termination tmpfs at dir, unless
// it is there (an earlier agent's), and makes each container's file
// (startTask empties it for each run). It reports whether it mounted the
// tmpfs.
func setupTermination(dir string, containers []string) (bool, error) {
	if len(containers) == 0 {
		return false, nil
	}
	made := false
	if ok, err := mounted(dir); err != nil {
		return false, err
	} else if !ok {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, err
		}
		m := mount.Mount{Type: "tmpfs", Source: "kanga-termination", Options: []string{
			"mode=0755", "uid=0", "gid=0", "nodev", "nosuid", "noexec",
			fmt.Sprintf("size=%d", len(containers)*terminationFileRoom), fmt.Sprintf("nr_inodes=%d", len(containers)+8),
		}}
		if err := m.Mount(dir); err != nil {
			return false, fmt.Errorf("mounting the tmpfs of the termination messages: %w", err)
		}
		made = true
	}
	// A running container's message, after an agent restart, stays.
	for _, name := range containers {
		if err := openTerminationFile(dir, name, 0); err != nil {
			if made {
				_ = unmountFiles(dir)
			}
			return false, err
		}
	}
	return made, nil
}

// resetTerminationFile empties container's file for a new run. The file
// is writable by any user, as the kubelet makes it: the container may run
// as any user, or as root mapped to another in a user namespace.
func resetTerminationFile(dir, container string) error {
	return openTerminationFile(dir, container, os.O_TRUNC)
}

// openTerminationFile makes container's file, or opens it with flag.
func openTerminationFile(dir, container string, flag int) error {
	p := terminationFile(dir, container)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|unix.O_NOFOLLOW|flag, 0o666)
	if err != nil {
		return fmt.Errorf("making the termination message file of container %s: %w", container, err)
	}
	defer f.Close()
	return f.Chmod(0o666)
}

// terminationMount binds container c's termination file at its path.
func terminationMount(dir string, c *api.ContainerSpec) []specs.Mount {
	if c.TerminationMessagePath == "" {
		return nil
	}
	return []specs.Mount{{
		Destination: c.TerminationMessagePath, Type: "bind", Source: terminationFile(dir, c.Name),
		Options: []string{"rbind", "rw", "nosuid", "nodev", "noexec"},
	}}
}

// terminationMessage is the message of a run of container c of the
// instance uid that exited with code: its file's first 4 KiB, or, with
// FallbackToLogsOnError, a failed run and an empty file, the end of the
// run's log.
func (a *Agent) terminationMessage(uid string, c *api.ContainerSpec, code int) string {
	var msg string
	if c.TerminationMessagePath != "" {
		if f, err := os.OpenFile(terminationFile(a.terminationDir(uid), c.Name), os.O_RDONLY|unix.O_NOFOLLOW, 0); err == nil {
			b, _ := io.ReadAll(io.LimitReader(f, maxTerminationMessage))
			f.Close()
			msg = string(b)
		}
	}
	if msg == "" && code != 0 && c.TerminationMessagePolicy == api.TerminationMessageFallbackToLogsOnError {
		msg = a.logTail(a.logPath(uid, c.Name))
	}
	return msg
}

// logTail is the end of the current run of the log at path: its last
// fallbackLogLines lines, at most fallbackLogBytes.
func (a *Agent) logTail(path string) string {
	start := lastRunStart(path)
	end := a.logEnd(path)
	chain, err := a.openChain(path)
	if err != nil || chain == nil {
		return ""
	}
	defer chain.close()
	b, _ := io.ReadAll(chain.section(max(start, end-fallbackLogBytes), end))
	lines := bytes.SplitAfter(b, []byte("\n"))
	if n := len(lines); n > 0 && len(lines[n-1]) == 0 {
		lines = lines[:n-1]
	}
	if len(lines) > fallbackLogLines {
		lines = lines[len(lines)-fallbackLogLines:]
	}
	return string(bytes.Join(lines, nil))
}

// lastRunStart is where the current run begins in the log at path (0
// when the runs file cannot be read: the whole log's tail then).
func lastRunStart(path string) int64 {
	offsets, err := runOffsets(path)
	if err != nil {
		return 0
	}
	return offsets[len(offsets)-1]
}
