package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	cerrdefs "github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/requestid"
)

// logPoll is how often a follower looks for new output.
const logPoll = 100 * time.Millisecond

// Logs implements hostcontract.Host. The agent copies each container's output
// into rotated files (logfile.go), so logs survive agent restarts; a
// reader reads the files in order and, with follow, goes on into the file
// that replaced the one it read when the log is rotated.
func (a *Agent) Logs(ctx context.Context, inst *api.Instance, container string, follow bool, w io.Writer) error {
	if err := checkTenant(ctx, inst); err != nil {
		return err
	}
	a.log.Debug("logs", "instance", inst.Name, "tenant", inst.Tenant, "container", container, "follow", follow, "request_id", requestid.From(ctx))
	fl := &logFollower{a: a, path: a.logPath(inst.UID, container), w: w}
	defer fl.close()
	for {
		r := a.runner(inst.UID)
		var (
			phase   api.Phase = inst.Status.Phase
			changed <-chan struct{}
		)
		if r != nil {
			phase, changed = r.currentPhase()
		}
		if _, err := fl.copy(); err != nil {
			return err
		}
		if !follow || r == nil {
			return nil
		}
		if phase.Terminal() {
			// The copier may still be writing the last output when the
			// exit is reported: read until the log has stopped growing
			// for a moment.
			return fl.drainSettled(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(logPoll):
		}
	}
}

// logFollower reads a container's log from its beginning, across
// rotations.
type logFollower struct {
	a    *Agent
	path string
	w    io.Writer
	cur  *os.File // the file read now; nil before the log exists
}

func (f *logFollower) close() {
	if f.cur != nil {
		f.cur.Close()
	}
}

// copy writes what was added to the log since the last copy.
func (f *logFollower) copy() (int64, error) {
	var n int64
	if f.cur == nil {
		chain, err := f.a.openChain(f.path)
		if err != nil || len(chain) == 0 {
			return 0, err
		}
		m, err := f.copyParts(chain)
		n += m
		if err != nil {
			return n, err
		}
	}
	for {
		m, err := io.Copy(f.w, f.cur)
		n += m
		if err != nil || !f.rotated() {
			return n, err
		}
		// The writer moved on to a new file: what it wrote to this one
		// before is read first, then the files after it.
		if m, err = io.Copy(f.w, f.cur); err != nil {
			return n + m, err
		}
		n += m
		chain, err := f.a.openChain(f.path)
		if err != nil {
			return n, err
		}
		i := 0
		for k, p := range chain {
			if sameFile(p.f, f.cur) {
				i = k + 1
			}
		}
		for _, p := range chain[:i] {
			p.f.Close()
		}
		f.cur.Close()
		f.cur = nil
		if i == len(chain) {
			return n, nil // nothing newer yet
		}
		m, err = f.copyParts(chain[i:])
		n += m
		if err != nil {
			return n, err
		}
	}
}

// copyParts writes every part but the last and makes the last the
// current file.
func (f *logFollower) copyParts(chain logChain) (int64, error) {
	var n int64
	last := len(chain) - 1
	for k, p := range chain[:last] {
		m, err := io.Copy(f.w, p.f)
		n += m
		p.f.Close()
		if err != nil {
			for _, q := range chain[k+1:] {
				q.f.Close()
			}
			return n, err
		}
	}
	f.cur = chain[last].f
	return n, nil
}

// rotated tells whether the file read now is no longer the log's current
// file.
func (f *logFollower) rotated() bool {
	fi, err := os.Stat(f.path)
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	cur, err := f.cur.Stat()
	return err == nil && !os.SameFile(fi, cur)
}

func sameFile(a, b *os.File) bool {
	ai, err1 := a.Stat()
	bi, err2 := b.Stat()
	return err1 == nil && err2 == nil && os.SameFile(ai, bi)
}

// drainSettled copies what still arrives until nothing has for logSettle,
// or a second has passed.
func (f *logFollower) drainSettled(ctx context.Context) error {
	const logSettle = 150 * time.Millisecond
	deadline := time.Now().Add(time.Second)
	quiet := time.Duration(0)
	for quiet < logSettle && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(50 * time.Millisecond):
		}
		n, err := f.copy()
		if err != nil {
			return err
		}
		if n > 0 {
			quiet = 0
		} else {
			quiet += 50 * time.Millisecond
		}
	}
	return nil
}

// Exec implements hostcontract.Host.
func (a *Agent) Exec(ctx context.Context, inst *api.Instance, req hostcontract.ExecRequest) (int, error) {
	if err := checkTenant(ctx, inst); err != nil {
		return 0, err
	}
	nctx := a.ns(ctx)
	c, err := a.cfg.Client.LoadContainer(nctx, a.ctrID(inst.UID, req.Container))
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return 0, fmt.Errorf("container %s of instance %q is not created yet: %w", req.Container, inst.Name, errdefs.ErrFailedPrecondition)
		}
		return 0, err
	}
	task, err := c.Task(nctx, nil)
	if err != nil {
		return 0, fmt.Errorf("container %s of instance %q is not running: %w", req.Container, inst.Name, errdefs.ErrFailedPrecondition)
	}
	spec, err := c.Spec(nctx)
	if err != nil {
		return 0, err
	}
	pspec := *spec.Process
	pspec.Args = req.Cmd
	pspec.Terminal = req.TTY
	pspec.Env = append(append([]string{}, pspec.Env...), req.Env...)
	if req.TTY && !hasEnv(pspec.Env, "TERM") {
		pspec.Env = append(pspec.Env, "TERM=xterm")
	}
	if req.WorkDir != "" {
		pspec.Cwd = req.WorkDir
	}
	if req.TTY && req.Size != nil {
		pspec.ConsoleSize = &specs.Box{Width: uint(req.Size.Width), Height: uint(req.Size.Height)}
	}
	if launcherSpec(spec.Process) {
		// The env from secrets is in the container's process only: the
		// launcher gives the command that env, this exec's own over it.
		pspec.Args = withExecEnv(req.Cmd, pspec.Env[len(spec.Process.Env):])
	}
	// The shim holds the process's stdin open until told otherwise, so
	// the end of the client's input must be passed on with CloseIO.
	procReady := make(chan containerd.Process, 1)
	var stdin io.Reader // nil: no stdin fifo, the process reads /dev/null
	if req.Stdin != nil {
		stdin = &eofNotifier{r: req.Stdin, fn: func() {
			select {
			case p := <-procReady:
				procReady <- p
				_ = p.CloseIO(nctx, containerd.WithStdinCloser)
			case <-ctx.Done():
			}
		}}
	}
	opts := []cio.Opt{cio.WithStreams(stdin, req.Stdout, req.Stderr), cio.WithFIFODir(a.fifoDir())}
	if req.TTY {
		opts = append(opts, cio.WithTerminal)
	}
	execID := fmt.Sprintf("exec-%d-%d", time.Now().UnixNano(), execSeq.Add(1))
	// The request ID ties this line to the API's log and audit record;
	// arguments and environment stay out of the log.
	a.log.Info("exec", "instance", inst.Name, "tenant", inst.Tenant, "container", req.Container,
		"program", req.Cmd[0], "tty", req.TTY, "exec_id", execID, "request_id", requestid.From(ctx))
	proc, err := task.Exec(nctx, execID, &pspec, cio.NewCreator(opts...))
	if err != nil {
		return 0, fmt.Errorf("exec in container %s: %w", req.Container, err)
	}
	// Deleting with a fresh context: the client may be gone, the process
	// record must still go.
	defer proc.Delete(a.ns(context.WithoutCancel(ctx)), containerd.WithProcessKill)
	statusC, err := proc.Wait(nctx)
	if err != nil {
		return 0, err
	}
	procReady <- proc
	if err := proc.Start(nctx); err != nil {
		// As a shell and docker do, a command that cannot be run is an
		// exit status (127 missing, 126 not executable) with the reason
		// on stderr, so that scripts can tell it from the command's own
		// failure and from the platform's.
		if code, ok := execStartExitCode(err); ok {
			w := req.Stderr
			if w == nil || req.TTY {
				w = req.Stdout
			}
			if w != nil {
				fmt.Fprintf(w, "kanga: exec %q in container %s: %v\n", req.Cmd[0], req.Container, err)
			}
			return code, nil
		}
		return 0, fmt.Errorf("exec in container %s: %w", req.Container, err)
	}
	if req.TTY && req.Size != nil {
		// Runtimes differ in honouring consoleSize for exec'd processes
		// (gVisor ignores it), and a resize that arrives before the
		// shim's console is set up is lost: repeat the initial size over
		// the first seconds of the process.
		go func(sz api.TerminalSize) {
			// Delays between attempts: the shim's console may come up late
			// on a loaded host.
			for _, d := range []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 150 * time.Millisecond,
				300 * time.Millisecond, 600 * time.Millisecond, 1200 * time.Millisecond} {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
				_ = proc.Resize(nctx, uint32(sz.Width), uint32(sz.Height))
			}
		}(*req.Size)
	}
	if req.TTY && req.Resize != nil {
		go func() {
			for sz := range req.Resize {
				_ = proc.Resize(nctx, uint32(sz.Width), uint32(sz.Height))
			}
		}()
	}
	select {
	case st := <-statusC:
		// Let the IO copiers drain what the process wrote before exiting.
		if pio := proc.IO(); pio != nil {
			pio.Wait()
			pio.Close()
		}
		code, _, err := st.Result()
		if err != nil {
			return 0, err
		}
		return int(code), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

var execSeq atomic.Uint64

func (a *Agent) fifoDir() string { return a.cfg.DataDir + "/fifo" }

func hasEnv(env []string, name string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, name+"=") {
			return true
		}
	}
	return false
}

// eofNotifier calls fn once, in the background, when r reaches EOF.
type eofNotifier struct {
	r    io.Reader
	once sync.Once
	fn   func()
}

func (e *eofNotifier) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.once.Do(func() { go e.fn() })
	}
	return n, err
}

// execStartExitCode maps a runtime's refusal to start an exec'd process
// to the exit status a shell gives: 127 when the program is missing, 126
// when it exists but cannot be executed; ok is false for other failures.
func execStartExitCode(err error) (code int, ok bool) {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "chdir to cwd"):
		// A missing working directory: the program may well exist.
		return 126, true
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		return 127, true
	case strings.Contains(msg, "permission denied"), strings.Contains(msg, "is a directory"), strings.Contains(msg, "exec format error"):
		return 126, true
	}
	return 0, false
}
