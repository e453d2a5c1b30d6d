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
	"github.com/kanga-run/kanga/internal/errdefs"
	"github.com/kanga-run/kanga/internal/requestid"
	"github.com/kanga-run/kanga/internal/server"
)

// logPoll is how often a follower looks for new output. The shim appends
// to the log file directly, so there is no event to wait on.
const logPoll = 100 * time.Millisecond

// Logs implements server.Host. The shim writes each container's stdout and
// stderr straight into a file, so logs survive agent restarts and cost the
// agent nothing while nobody reads them.
func (a *Agent) Logs(ctx context.Context, inst *api.Instance, container string, follow bool, w io.Writer) error {
	if err := checkTenant(ctx, inst); err != nil {
		return err
	}
	a.log.Debug("logs", "instance", inst.Name, "tenant", inst.Tenant, "container", container, "follow", follow, "request_id", requestid.From(ctx))
	f, err := os.Open(a.logPath(inst.UID, container))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if !follow {
			return nil // it has not started yet: no output
		}
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for {
		r := a.runner(inst.UID)
		var (
			phase   api.Phase = inst.Status.Phase
			changed <-chan struct{}
		)
		if r != nil {
			phase, changed = r.currentPhase()
		}
		if f == nil {
			f, _ = os.Open(a.logPath(inst.UID, container))
		}
		if f != nil {
			if _, err := io.Copy(w, f); err != nil {
				return err
			}
		}
		if !follow || r == nil {
			return nil
		}
		if phase.Terminal() {
			// The shim copies output to the file on its own and may report
			// the exit before the last bytes land: read until the file has
			// stopped growing for a moment.
			return drainSettled(ctx, f, w)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(logPoll):
		}
	}
}

// drainSettled copies what still arrives in f until nothing has for
// logSettle, or a second has passed.
func drainSettled(ctx context.Context, f *os.File, w io.Writer) error {
	if f == nil {
		return nil
	}
	const logSettle = 150 * time.Millisecond
	deadline := time.Now().Add(time.Second)
	quiet := time.Duration(0)
	for quiet < logSettle && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(50 * time.Millisecond):
		}
		n, err := io.Copy(w, f)
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

// Exec implements server.Host.
func (a *Agent) Exec(ctx context.Context, inst *api.Instance, req server.ExecRequest) (int, error) {
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
		msg := err.Error()
		if strings.Contains(msg, "executable file not found") || strings.Contains(msg, "no such file") {
			return 0, fmt.Errorf("exec %q in container %s: %s: %w", req.Cmd[0], req.Container, msg, errdefs.ErrInvalidArgument)
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
