package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Process is one kanga daemon under test (up, server, agent,
// virtual-node): in a process group of its own, its output appended to
// a log file, stopped with SIGTERM or killed outright. A nil *Process is
// one that never ran.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// StartProcess starts bin with args, appending its output to logPath;
// env nil is the caller's environment.
func StartProcess(bin, logPath string, env []string, args ...string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	// The child has its own copy of the descriptor.
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Done is closed once the process has ended (nil for one that never ran).
func (p *Process) Done() <-chan struct{} {
	if p == nil {
		return nil
	}
	return p.done
}

// Running reports whether the process runs: started and not ended.
func (p *Process) Running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Pid is the process's pid (0 for one that never ran).
func (p *Process) Pid() int {
	if p == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Stop ends the process with SIGTERM, and SIGKILL if it has not ended
// 30 s later, and waits for it.
func (p *Process) Stop() {
	if !p.Running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill kills the process with SIGKILL, as a power cut of it would, and
// waits for it.
func (p *Process) Kill() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// ContainerdPID reads the pid of the containerd that the agent with data
// dir dataDir supervises (0: none runs).
func ContainerdPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "containerd", "containerd", "containerd.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// KillContainerd kills the containerd that the agent with data dir
// dataDir supervised, which outlives the agent for adoption.
func KillContainerd(dataDir string) {
	if pid := ContainerdPID(dataDir); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// RemoveHostLeftovers removes what a host (kanga up or kanga agent) with
// data dir dataDir on bridge and subnet may have left once it is stopped:
// mounts under the data dir, its cgroups, NAT and isolation rules, the
// bridge and its netns directory. The data dir itself stays.
func RemoveHostLeftovers(t testing.TB, dataDir, bridge, subnet string) {
	// Snapshots are unmounted by containerd on delete; anything left
	// mounted under the data dir would make RemoveAll fail loudly.
	UnmountUnder(dataDir)
	RemoveCgroupTree(CgroupRootFor(dataDir))
	DropMasquerade(t, bridge, subnet)
	_ = exec.CommandContext(context.Background(), "ip", "link", "del", bridge).Run()
	// The netns directory of this data dir outlives its last namespace;
	// remove it if empty (Remove fails otherwise). Its name is derived
	// from the network state dir, as the agent does.
	_ = os.Remove(NetnsDir(dataDir))
}

// NetnsDir is where the agent with data dir dataDir keeps its instances'
// network namespaces.
func NetnsDir(dataDir string) string {
	sum := sha256.Sum256([]byte(filepath.Join(dataDir, "network")))
	return filepath.Join("/run/kanga/netns", hex.EncodeToString(sum[:])[:12])
}
