package runtime

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kanga-run/kanga/internal/atomicfile"
)

// adoptedPollInterval is how often we look at a containerd we did not start:
// it is not our child, so there is no Wait to block on.
const adoptedPollInterval = 500 * time.Millisecond

// process is one containerd process, either our child or adopted from a
// previous run of Kanga.
type process struct {
	pid     int
	started time.Time
	// exited is closed when a child has been reaped; nil for adopted ones.
	exited  chan struct{}
	waitErr error // set before exited is closed
}

func (p *process) adopted() bool { return p.exited == nil }

// gone reports whether the process has exited.
func (p *process) gone() bool {
	if p.adopted() {
		return !alive(p.pid)
	}
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// wait blocks until the process has exited or ctx is done.
func (p *process) wait(ctx context.Context) error {
	if !p.adopted() {
		select {
		case <-p.exited:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	t := time.NewTicker(adoptedPollInterval)
	defer t.Stop()
	for !p.gone() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (p *process) signal(sig syscall.Signal) error {
	err := syscall.Kill(p.pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// alive reports whether pid names a running process. A zombie counts as
// dead: an adopted containerd was re-parented, and whoever reaps it (pid 1
// here is not always a real init) may take its time.
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain spaces or parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	state := stat[i+2]
	return state != 'Z' && state != 'X'
}

// runsConfig reports whether pid is a containerd started with configPath,
// which is unique to one data dir. It guards adoption against a recycled pid.
func runsConfig(pid int, configPath string) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--config" && args[i+1] == configPath {
			return true
		}
	}
	return false
}

func readPidFile(path string) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0
	}
	return pid
}

// writePidFile records pid; not fsynced, since no pid outlives a reboot.
func writePidFile(path string, pid int) error {
	return atomicfile.WriteNoSync(path, []byte(strconv.Itoa(pid)+"\n"), 0o644)
}

// logTail returns the last lines of a log file, for error messages.
func logTail(path string, max int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const chunk = 4096
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := st.Size() - chunk
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	n, _ := f.ReadAt(buf, off)
	lines := strings.Split(strings.TrimSpace(string(buf[:n])), "\n")
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	return strings.Join(lines, "\n")
}
