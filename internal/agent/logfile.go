package agent

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/kanga-run/kanga/internal/atomicfile"
	"github.com/kanga-run/kanga/internal/model"
)

// Container logs are capped and rotated so that a chatty instance cannot
// fill the host's disk: a container's output goes to <container>.log until
// it reaches the instance's logSize, then that file becomes .log.1 (.1
// becomes .2, ...) and a new .log begins; logFiles files are kept in all,
// so a container's log takes at most logSize x logFiles. The agent writes
// the files itself, from FIFOs the shim copies the container's output
// into (logio.go), and is the only writer; readers (kanga logs, -f,
// --previous) read the files in order and follow a rotation.
//
// Offsets in the log (the run boundaries of logruns.go) are logical: the
// bytes written to the container's log since it began, across rotations.
// <container>.log.base holds the logical offset of the current file's
// first byte; a rotated file starts where the next one begins minus its
// own size.

// logLimits are a container's log caps.
type logLimits struct {
	size  int64
	files int
}

// logLimitsOf returns the log caps of r, with the platform's default
// for what it leaves out: every log is capped, also that of an instance
// created without a type, or before logs were capped.
func logLimitsOf(r model.Resources) logLimits {
	l := logLimits{size: r.LogSize, files: r.LogFiles}
	if l.size <= 0 {
		l.size, _ = model.ParseMemory(model.DefaultLogSize)
	}
	if l.files <= 0 {
		l.files = model.DefaultLogFiles
	}
	return l
}

func rotatedPath(path string, k int) string { return path + "." + strconv.Itoa(k) }
func basePath(path string) string           { return path + ".base" }

// readBase reads the logical offset of the current file of the log at
// path; 0 when it was never rotated.
func readBase(path string) int64 {
	b, err := os.ReadFile(basePath(path))
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return max(v, 0)
}

// logWriter is the one writer of a container's log files. Its methods are
// safe for concurrent use: stdout and stderr are copied in at once.
type logWriter struct {
	mu     sync.Mutex
	path   string
	lim    logLimits
	f      *os.File // nil until the first write or after an error
	size   int64    // of the current file
	base   int64    // logical offset of the current file's first byte
	closed bool     // the container is gone: late output is dropped
}

// openLogWriter continues the log at path as it is on disk (an agent
// restart keeps it).
func openLogWriter(path string, lim logLimits) *logWriter {
	w := &logWriter{path: path, lim: lim, base: readBase(path)}
	if fi, err := os.Stat(path); err == nil {
		w.size = fi.Size()
	}
	return w
}

// Write appends p, rotating first whenever the current file would pass
// the size cap: no file grows past it.
func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	written := 0
	for len(p) > 0 {
		if w.size >= w.lim.size {
			if err := w.rotate(); err != nil {
				return written, err
			}
		}
		if w.f == nil {
			if w.closed {
				return written, os.ErrClosed
			}
			if err := os.MkdirAll(filepath.Dir(w.path), 0o755); err != nil {
				return written, err
			}
			f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
			if err != nil {
				return written, err
			}
			w.f = f
		}
		n := len(p)
		// A chunk that fills the file to the byte but ends inside a line
		// is cut too: the next Write would otherwise rotate at once and
		// begin the next file with the line's rest.
		if room := w.lim.size - w.size; int64(n) > room || (int64(n) == room && p[n-1] != '\n') {
			// Rotate at a line's end: a line is split over two files only
			// when it is longer than a file.
			n = bytes.LastIndexByte(p[:room], '\n') + 1
			if n == 0 {
				if w.size > 0 {
					// Start the line in a new file.
					if err := w.rotate(); err != nil {
						return written, err
					}
					continue
				}
				n = int(room)
			}
		}
		m, err := w.f.Write(p[:n])
		written += m
		w.size += int64(m)
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// rotate shifts the files one place, dropping the oldest, and starts an
// empty current file. Called with mu held.
func (w *logWriter) rotate() error {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	// Files past the cap (the cap may have shrunk at a warm claim) go.
	for k := model.MaxLogFiles; k >= w.lim.files; k-- {
		if k > 0 {
			_ = os.Remove(rotatedPath(w.path, k))
		}
	}
	for k := w.lim.files - 2; k >= 1; k-- {
		if err := os.Rename(rotatedPath(w.path, k), rotatedPath(w.path, k+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if w.lim.files > 1 {
		if err := os.Rename(w.path, rotatedPath(w.path, 1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	} else if err := os.Remove(w.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	w.base += w.size
	w.size = 0
	return atomicfile.WriteNoSync(basePath(w.path), []byte(strconv.FormatInt(w.base, 10)+"\n"), 0o640)
}

// end is the logical offset where the next byte will go.
func (w *logWriter) end() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.base + w.size
}

// moveTo renames the log's files to path and goes on writing there under
// lim: a claimed warm container's log becomes the instance's.
func (w *logWriter) moveTo(path string, lim logLimits) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	for _, p := range w.files() {
		to := path + strings.TrimPrefix(p, w.path)
		if err := os.Rename(p, to); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	w.path, w.lim = path, lim
	return nil
}

// files lists the log's files that exist, the current one included, and
// its base record.
func (w *logWriter) files() []string {
	out := []string{w.path, basePath(w.path)}
	for k := 1; k <= model.MaxLogFiles; k++ {
		out = append(out, rotatedPath(w.path, k))
	}
	return out
}

func (w *logWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
}

// logPart is one open file of a log, with the logical offset of its first
// byte.
type logPart struct {
	f     *os.File
	start int64
}

// logChain is a log's files open for reading, oldest first; the last one
// is the current file.
type logChain []logPart

func (c logChain) close() {
	for _, p := range c {
		p.f.Close()
	}
}

// openChain opens the files of the log at path, oldest first, under the
// writer's lock when a writer exists, so that no rotation happens in
// between. The current file may not exist yet (nothing written): the
// chain is then empty.
func (a *Agent) openChain(path string) (logChain, error) {
	if w := a.logWriterAt(path); w != nil {
		w.mu.Lock()
		defer w.mu.Unlock()
	}
	cur, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	base := readBase(path)
	chain := logChain{{f: cur, start: base}}
	start := base
	for k := 1; k <= model.MaxLogFiles; k++ {
		f, err := os.Open(rotatedPath(path, k))
		if err != nil {
			break
		}
		rfi, err := f.Stat()
		if err != nil {
			f.Close()
			break
		}
		start -= rfi.Size()
		chain = append(logChain{{f: f, start: start}}, chain...)
	}
	return chain, nil
}

// section returns a reader of the logical range [from, to) of the chain,
// clipped to what it still holds.
func (c logChain) section(from, to int64) io.Reader {
	var rs []io.Reader
	for i, p := range c {
		end := to
		if i+1 < len(c) {
			end = min(to, c[i+1].start)
		}
		lo := max(from, p.start)
		if lo >= end {
			continue
		}
		rs = append(rs, io.NewSectionReader(p.f, lo-p.start, end-lo))
	}
	return io.MultiReader(rs...)
}

// logWriterAt returns the writer of the log at path, if the agent has one.
func (a *Agent) logWriterAt(path string) *logWriter {
	a.logsMu.Lock()
	defer a.logsMu.Unlock()
	return a.logs[path]
}

// logWriterFor returns the writer of the log at path, made on first use
// with lim (an existing one takes lim too: the caps of the instance that
// now owns it).
func (a *Agent) logWriterFor(path string, lim logLimits) *logWriter {
	a.logsMu.Lock()
	defer a.logsMu.Unlock()
	if a.logs == nil {
		a.logs = map[string]*logWriter{}
	}
	w, ok := a.logs[path]
	if !ok {
		w = openLogWriter(path, lim)
		a.logs[path] = w
	} else {
		w.mu.Lock()
		w.lim = lim
		w.mu.Unlock()
	}
	return w
}

// moveLog makes the log at from the log at to, with lim.
func (a *Agent) moveLog(from, to string, lim logLimits) error {
	a.logsMu.Lock()
	defer a.logsMu.Unlock()
	w, ok := a.logs[from]
	if !ok {
		w = openLogWriter(from, lim)
	}
	if err := w.moveTo(to, lim); err != nil {
		return err
	}
	delete(a.logs, from)
	if a.logs == nil {
		a.logs = map[string]*logWriter{}
	}
	a.logs[to] = w
	return nil
}

// forgetLogs closes and drops the writers of the logs under dir.
func (a *Agent) forgetLogs(dir string) {
	a.logsMu.Lock()
	defer a.logsMu.Unlock()
	for p, w := range a.logs {
		if strings.HasPrefix(p, dir+string(filepath.Separator)) {
			w.close()
			delete(a.logs, p)
		}
	}
}

// logEnd is the logical end of the log at path: where the next run's
// output begins.
func (a *Agent) logEnd(path string) int64 {
	if w := a.logWriterAt(path); w != nil {
		return w.end()
	}
	end := readBase(path)
	if fi, err := os.Stat(path); err == nil {
		end += fi.Size()
	}
	return end
}
