package agent

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd/cio"
)

// A task's stdout and stderr go into two FIFOs the shim writes to (the
// runc shim's "fifo" IO, as containerd's own clients use) and the agent
// copies them into the container's rotated log (logfile.go). The FIFOs
// live under <data dir>/logfifo/<owner>/, owner being the instance's uid,
// or the warm container's id, which the shim knows them by for the task's
// whole life.
//
// The agent opens the read end without blocking, and a write end of its
// own until the task is created: the shim opens its end while it creates
// the task, and from then on the read end sees the end of the file
// exactly when the shim closes its end, after the process exited and its
// output was copied. No open ever blocks, also not when an agent attaches
// again after a restart to a task whose shim has closed its ends already.
//
// While the agent is down the shim keeps the FIFOs open: the container's
// output waits in the pipes (64 KiB each, then the container's writes
// block) until the next agent attaches and copies it.

func (a *Agent) logFIFODir(owner string) string {
	return filepath.Join(a.cfg.DataDir, "logfifo", owner)
}

var logFIFOSeq atomic.Uint64

// logIO is a task's IO: the FIFOs and their copiers into a log.
type logIO struct {
	cfg   cio.Config
	dir   string // removed at Close; "" when the FIFOs are not the agent's to remove
	mu    sync.Mutex
	reads []*os.File
	// The agent's own write ends, until the task exists.
	writer, writer2 *os.File
	wg              sync.WaitGroup
}

// newLogIO makes the FIFOs of a new task of owner's container name in
// their own directory and starts copying them into w. stdin, if not
// empty, is passed to the shim as it is.
func (a *Agent) newLogIO(owner, name string, w io.Writer, stdin string) (*logIO, error) {
	dir := filepath.Join(a.logFIFODir(owner), fmt.Sprintf("%s-%d", name, logFIFOSeq.Add(1)))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	l := &logIO{dir: dir, cfg: cio.Config{Stdin: stdin, Stdout: filepath.Join(dir, "stdout"), Stderr: filepath.Join(dir, "stderr")}}
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
	for _, p := range []string{l.cfg.Stdout, l.cfg.Stderr} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			return nil, fmt.Errorf("mkfifo %s: %w", p, err)
		}
	}
	if err := l.openReads(l.cfg.Stdout, l.cfg.Stderr); err != nil {
		return nil, err
	}
	// Until the shim has opened its ends, the agent's own write ends keep
	// the readers from seeing an end of file; they must exist before the
	// first read.
	wr, err := os.OpenFile(l.cfg.Stdout, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	wr2, err := os.OpenFile(l.cfg.Stderr, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		wr.Close()
		return nil, err
	}
	l.writer, l.writer2 = wr, wr2
	l.copyTo(w)
	ok = true
	return l, nil
}

// attachLogIO copies the FIFOs of a task an earlier agent created into w.
// A task made with a file log (by an agent before logs were rotated) has
// no FIFOs: its shim writes the file on its own, and nothing is attached.
func (a *Agent) attachLogIO(fifos *cio.FIFOSet, w io.Writer) (cio.IO, error) {
	l := &logIO{cfg: fifos.Config}
	if strings.Contains(fifos.Stdout, "://") || fifos.Stdout == "" {
		return l, nil
	}
	if dir := filepath.Dir(fifos.Stdout); strings.HasPrefix(dir, filepath.Join(a.cfg.DataDir, "logfifo")+string(filepath.Separator)) {
		l.dir = dir
	}
	if err := l.openReads(fifos.Stdout, fifos.Stderr); err != nil {
		l.Close()
		return nil, err
	}
	l.copyTo(w)
	return l, nil
}

// removeWhenDone removes the FIFOs once both copiers saw the end: the
// shim has closed its ends for good then (the task is gone), and a task
// that is restarted gets new ones. Nothing else may be left to do it: a
// task deleted through another handle (teardown, a restart) never calls
// this IO's Close.
func (l *logIO) removeWhenDone() {
	go func() {
		l.wg.Wait()
		if l.dir != "" {
			_ = os.RemoveAll(l.dir)
		}
	}()
}

// openReads opens the read ends of the FIFOs at paths, without blocking.
func (l *logIO) openReads(paths ...string) error {
	for _, p := range paths {
		if p == "" {
			continue
		}
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.reads = append(l.reads, f)
		l.mu.Unlock()
	}
	return nil
}

// copyTo copies every read end into w until its end of file, then removes
// the FIFOs (removeWhenDone).
func (l *logIO) copyTo(w io.Writer) {
	l.mu.Lock()
	reads := append([]*os.File(nil), l.reads...)
	l.mu.Unlock()
	for _, f := range reads {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer f.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := f.Read(buf)
				if n > 0 {
					// A failing disk loses output rather than blocking the
					// container on a full pipe.
					_, _ = w.Write(buf[:n])
				}
				if err != nil {
					return
				}
			}
		}()
	}
	l.removeWhenDone()
}

// created drops the agent's own write ends once the shim holds its own.
func (l *logIO) created() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range []*os.File{l.writer, l.writer2} {
		if f != nil {
			f.Close()
		}
	}
	l.writer, l.writer2 = nil, nil
}

// Config implements cio.IO.
func (l *logIO) Config() cio.Config { return l.cfg }

// Cancel implements cio.IO: nothing waits to be opened.
func (l *logIO) Cancel() {}

// logDrainTimeout bounds Wait: the shim closes its ends once the process
// exited and its output is copied; one that does not must not hold up a
// task's deletion for ever.
const logDrainTimeout = 10 * time.Second

// Wait implements cio.IO: it returns when all output is copied.
func (l *logIO) Wait() {
	l.created() // a task that never started
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(logDrainTimeout):
		l.closeReads()
	}
}

func (l *logIO) closeReads() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.reads {
		f.Close()
	}
	l.reads = nil
}

// Close implements cio.IO: it stops the copiers and removes the FIFOs.
func (l *logIO) Close() error {
	l.created()
	l.closeReads()
	if l.dir != "" {
		return os.RemoveAll(l.dir)
	}
	return nil
}

var _ cio.IO = (*logIO)(nil)

// logCreator returns a cio.Creator for a new task of owner's container
// name logging into w, and a function to call once the task is created.
func (a *Agent) logCreator(owner, name string, w io.Writer, stdin string) (cio.Creator, func()) {
	var made *logIO
	creator := func(string) (cio.IO, error) {
		l, err := a.newLogIO(owner, name, w, stdin)
		if err != nil {
			return nil, err
		}
		made = l
		return l, nil
	}
	return creator, func() {
		if made != nil {
			made.created()
		}
	}
}
