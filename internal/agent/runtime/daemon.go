// Package runtime runs and supervises the containerd daemon that Kanga owns
// on a host, and describes the runtime classes (runc, crun, gvisor)
// containers can use.
//
// Kanga starts its own containerd with all state under one data dir instead
// of sharing the system one: nothing else on the host sees or garbage
// collects Kanga's images and containers, and two agents (two data dirs) can
// share one machine in tests.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/atomicfile"
)

const (
	// startTimeout bounds the wait for a fresh containerd's socket.
	startTimeout = 30 * time.Second
	// stopTimeout is how long containerd gets to exit after SIGTERM.
	stopTimeout = 10 * time.Second

	minRestartDelay = 200 * time.Millisecond
	maxRestartDelay = 10 * time.Second
	// stableUptime resets the restart backoff: a containerd that ran this
	// long did not crash-loop.
	stableUptime = 30 * time.Second
)

// DaemonConfig configures a Daemon.
type DaemonConfig struct {
	// DataDir holds everything: containerd's root, state, config, pidfile,
	// log and (if the path is short enough) its socket.
	DataDir string
	// Binary is the containerd executable; "containerd" from PATH if empty.
	Binary string
	Logger *slog.Logger
}

// Daemon supervises one containerd. Start either adopts a containerd left
// running by a previous Kanga on the same data dir or starts one, and then
// restarts it whenever it dies. Containers survive containerd restarts and
// Stop: their shims are separate processes that containerd reconnects to.
type Daemon struct {
	cfg   DaemonConfig
	paths paths
	log   *slog.Logger

	mu       sync.Mutex
	lock     *os.File // flock on the data dir while we supervise it
	proc     *process
	client   *containerd.Client
	restarts int
	cancel   context.CancelFunc // ends supervision
	done     chan struct{}      // closed when supervision has ended
}

// NewDaemon returns a Daemon; nothing runs until Start.
func NewDaemon(cfg DaemonConfig) *Daemon {
	if cfg.Binary == "" {
		cfg.Binary = "containerd"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DataDir != "" {
		if abs, err := filepath.Abs(cfg.DataDir); err == nil {
			cfg.DataDir = abs
		}
	}
	return &Daemon{
		cfg:   cfg,
		paths: newPaths(cfg.DataDir),
		log:   cfg.Logger.With("component", "containerd"),
	}
}

// Address is containerd's gRPC socket: <DataDir>/containerd.sock, or
// /run/kanga/<hash of DataDir>/containerd.sock when that path would not fit
// in a unix socket address.
func (d *Daemon) Address() string { return d.paths.socket }

// Client returns the long-lived client, with namespace "kanga" as its
// default. It is nil before Start and after Stop. The same client keeps
// working across containerd restarts: gRPC reconnects, and the supervisor
// resets its backoff and checks the connection before it reports a restart.
func (d *Daemon) Client() *containerd.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.client
}

// PID is the pid of the containerd currently supervised, or 0.
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return 0
	}
	return d.proc.pid
}

// Restarts counts the restarts since Start.
func (d *Daemon) Restarts() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.restarts
}

// Start adopts or starts containerd, connects the client and begins
// supervision. It returns once containerd answers on its socket.
func (d *Daemon) Start(ctx context.Context) (retErr error) {
	if d.cfg.DataDir == "" {
		return fmt.Errorf("containerd daemon: no data dir configured: %w", errdefs.ErrInvalidArgument)
	}
	d.mu.Lock()
	running := d.cancel != nil
	d.mu.Unlock()
	if running {
		return fmt.Errorf("containerd daemon for %s: already started: %w", d.cfg.DataDir, errdefs.ErrFailedPrecondition)
	}
	bin, err := exec.LookPath(d.cfg.Binary)
	if err != nil {
		return fmt.Errorf("containerd binary %q not found; install containerd (scripts/install-deps.sh): %w", d.cfg.Binary, errdefs.ErrFailedPrecondition)
	}
	d.cfg.Binary = bin

	for _, dir := range []string{filepath.Dir(d.paths.config), d.paths.root, d.paths.state, d.paths.opt, filepath.Dir(d.paths.socket)} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return fmt.Errorf("containerd daemon: create %s: %w", dir, err)
		}
	}
	lock, err := lockDataDir(filepath.Join(filepath.Dir(d.paths.config), "lock"))
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			lock.Close()
		}
	}()
	// Not fsynced: written again at every start.
	if err := atomicfile.WriteNoSync(d.paths.config, []byte(d.paths.configTOML()), 0o644); err != nil {
		return fmt.Errorf("containerd daemon: write config: %w", err)
	}

	p := d.adopt(ctx)
	if p == nil {
		if p, err = d.spawn(ctx); err != nil {
			return err
		}
	}
	client, err := containerd.New(d.paths.socket, containerd.WithDefaultNamespace(Namespace))
	if err != nil {
		return fmt.Errorf("containerd daemon: connect to %s: %w: %w", d.paths.socket, errdefs.ErrUnavailable, err)
	}

	sctx, cancel := context.WithCancel(context.Background())
	d.mu.Lock()
	d.lock, d.proc, d.client, d.restarts = lock, p, client, 0
	d.cancel, d.done = cancel, make(chan struct{})
	d.mu.Unlock()
	go d.supervise(sctx, p)
	return nil
}

// Stop ends supervision and stops containerd: SIGTERM, then SIGKILL after
// 10 seconds. Shims, and so containers, keep running by design.
func (d *Daemon) Stop(ctx context.Context) error {
	p, ok := d.detach()
	if !ok {
		return nil
	}
	defer os.Remove(d.paths.pidFile)
	if p.gone() {
		return nil
	}
	d.log.Info("stopping containerd", "pid", p.pid)
	if err := p.signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("containerd daemon: signal pid %d: %w", p.pid, err)
	}
	wctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	if p.wait(wctx) == nil {
		return nil
	}
	d.log.Warn("containerd did not exit after SIGTERM; killing it", "pid", p.pid, "timeout", stopTimeout)
	if err := p.signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("containerd daemon: kill pid %d: %w", p.pid, err)
	}
	kctx, kcancel := context.WithTimeout(context.Background(), stopTimeout)
	defer kcancel()
	if err := p.wait(kctx); err != nil {
		return fmt.Errorf("containerd daemon: pid %d survived SIGKILL: %w", p.pid, errdefs.ErrUnavailable)
	}
	return nil
}

// Close ends supervision and closes the client but leaves containerd
// running, for the next Kanga on this data dir to adopt.
func (d *Daemon) Close() error {
	d.detach()
	return nil
}

// Kill sends SIGKILL to containerd, to simulate a crash in tests. The
// supervisor restarts it.
func (d *Daemon) Kill() {
	d.mu.Lock()
	p := d.proc
	d.mu.Unlock()
	if p != nil {
		_ = p.signal(syscall.SIGKILL)
	}
}

// detach ends supervision, closes the client and releases the data dir. It
// returns the last supervised process, and false if nothing was running.
func (d *Daemon) detach() (*process, bool) {
	d.mu.Lock()
	cancel, done := d.cancel, d.done
	d.mu.Unlock()
	if cancel == nil {
		return nil, false
	}
	cancel()
	<-done

	d.mu.Lock()
	defer d.mu.Unlock()
	p, client, lock := d.proc, d.client, d.lock
	d.proc, d.client, d.lock, d.cancel, d.done = nil, nil, nil, nil, nil
	if client != nil {
		client.Close()
	}
	if lock != nil {
		lock.Close()
	}
	return p, true
}

// adopt returns the containerd a previous run left on this data dir, if it
// is alive, really ours, and answers.
func (d *Daemon) adopt(ctx context.Context) *process {
	pid := readPidFile(d.paths.pidFile)
	if pid == 0 {
		return nil
	}
	if !alive(pid) || !runsConfig(pid, d.paths.config) {
		os.Remove(d.paths.pidFile)
		return nil
	}
	p := &process{pid: pid, started: time.Now()}
	// It may still be starting up (or be wedged): give it the usual window.
	if err := d.waitReady(ctx, p); err != nil {
		d.log.Warn("containerd from a previous run does not answer; killing it", "pid", pid, "err", err)
		_ = p.signal(syscall.SIGKILL)
		wctx, cancel := context.WithTimeout(ctx, stopTimeout)
		defer cancel()
		_ = p.wait(wctx)
		return nil
	}
	d.log.Info("adopted running containerd", "pid", pid, "address", d.paths.socket)
	return p
}

// spawn starts containerd and waits until it answers.
func (d *Daemon) spawn(ctx context.Context) (*process, error) {
	logf, err := os.OpenFile(d.paths.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("containerd daemon: open log: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(d.cfg.Binary, "--config", d.paths.config)
	cmd.Dir = d.cfg.DataDir
	cmd.Stdout, cmd.Stderr = logf, logf
	// A process group of its own: a Ctrl-C meant for kanga must not take
	// containerd down. No Pdeathsig either: it outlives us for adoption.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("containerd daemon: start %s: %w", d.cfg.Binary, err)
	}
	p := &process{pid: cmd.Process.Pid, started: time.Now(), exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	if err := writePidFile(d.paths.pidFile, p.pid); err != nil {
		_ = p.signal(syscall.SIGKILL)
		<-p.exited
		return nil, fmt.Errorf("containerd daemon: write pidfile: %w", err)
	}
	if err := d.waitReady(ctx, p); err != nil {
		_ = p.signal(syscall.SIGKILL)
		<-p.exited
		return nil, err
	}
	d.log.Info("started containerd", "pid", p.pid, "address", d.paths.socket, "log", d.paths.logFile)
	return p, nil
}

// waitReady polls containerd's Version endpoint with throwaway clients until
// it answers, the process dies, or the start timeout passes.
func (d *Daemon) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var lastErr error
	for {
		if p.gone() {
			return fmt.Errorf("containerd (pid %d) exited during startup; its log %s ends with:\n%s: %w",
				p.pid, d.paths.logFile, logTail(d.paths.logFile, 5), errdefs.ErrUnavailable)
		}
		if lastErr = ping(ctx, d.paths.socket); lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("containerd (pid %d) did not answer on %s: %w: %w", p.pid, d.paths.socket, errdefs.ErrUnavailable, lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func ping(ctx context.Context, address string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := containerd.New(address, containerd.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Version(ctx)
	return err
}

// supervise restarts containerd whenever it dies, with backoff, until ctx
// is cancelled by Stop or Close.
func (d *Daemon) supervise(ctx context.Context, p *process) {
	defer close(d.done)
	delay := minRestartDelay
	for {
		if p.wait(ctx) != nil {
			return
		}
		uptime := time.Since(p.started)
		d.log.Warn("containerd exited; restarting", "pid", p.pid, "uptime", uptime.Round(time.Millisecond), "err", p.waitErr, "log", d.paths.logFile)
		if uptime > stableUptime {
			delay = minRestartDelay
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(delay*2, maxRestartDelay)
			np, err := d.spawn(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				d.log.Error("restarting containerd failed", "err", err, "retry_in", delay)
				continue
			}
			p = np
			break
		}
		d.reconnect(ctx)
		d.mu.Lock()
		d.proc = p
		d.restarts++
		n := d.restarts
		d.mu.Unlock()
		d.log.Info("containerd restarted", "pid", p.pid, "restarts", n)
	}
}

// reconnect makes the long-lived client usable again right away. gRPC
// reconnects by itself, but after a failed attempt it backs off for up to
// 3s (containerd's client setting); resetting the backoff skips that wait.
func (d *Daemon) reconnect(ctx context.Context) {
	d.mu.Lock()
	client := d.client
	d.mu.Unlock()
	if client == nil {
		return
	}
	var err error
	for i := 0; i < 20 && ctx.Err() == nil; i++ {
		client.Conn().ResetConnectBackoff()
		vctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = client.Version(vctx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Should not happen; a fresh connection is the last resort.
	d.log.Warn("client did not reconnect to restarted containerd; redialing", "err", err)
	if err := client.Reconnect(); err != nil {
		d.log.Error("redialing containerd failed", "err", err)
	}
}

func lockDataDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("containerd daemon: open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another kanga agent: %w", filepath.Dir(filepath.Dir(path)), errdefs.ErrConflict)
		}
		return nil, fmt.Errorf("containerd daemon: lock %s: %w", path, err)
	}
	return f, nil
}
