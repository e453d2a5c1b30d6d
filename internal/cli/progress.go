package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"

	"github.com/kanga-run/kanga/api"
)

// progressPrinter shows the progress of a long operation on stderr. On a
// terminal each update redraws one line; elsewhere (logs, CI) it prints a
// line when the step changes and at most every 5 seconds within a step.
type progressPrinter struct {
	w   io.Writer
	tty bool
	now func() time.Time

	mu       sync.Mutex
	width    int    // length of the line drawn last, on a terminal
	lastKey  string // step of the last printed line, off a terminal
	lastAt   time.Time
	finished map[string]bool
}

func newProgressPrinter(w io.Writer, now func() time.Time) *progressPrinter {
	p := &progressPrinter{w: w, now: now, finished: map[string]bool{}}
	if f, ok := w.(*os.File); ok {
		p.tty = term.IsTerminal(int(f.Fd()))
	}
	return p
}

// update shows line as the state of step key.
func (p *progressPrinter) update(key, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished[key] {
		return
	}
	if p.tty {
		p.redraw(line)
		return
	}
	t := p.now()
	if key == p.lastKey && t.Sub(p.lastAt) < 5*time.Second {
		return
	}
	fmt.Fprintln(p.w, line)
	p.lastKey, p.lastAt = key, t
}

// finish shows the last line of step key; later updates of it are ignored.
func (p *progressPrinter) finish(key, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finished[key] = true
	if p.tty {
		p.redraw(line)
		fmt.Fprintln(p.w)
		p.width = 0
		return
	}
	fmt.Fprintln(p.w, line)
	p.lastKey = ""
}

// end terminates a partly drawn line, before an error or a result.
func (p *progressPrinter) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.width > 0 {
		fmt.Fprintln(p.w)
		p.width = 0
	}
}

func (p *progressPrinter) redraw(line string) {
	pad := ""
	if n := p.width - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprintf(p.w, "\r%s%s", line, pad)
	p.width = len(line)
}

// progressLine renders one server progress message.
func progressLine(pr api.Progress) string {
	s := pr.Status
	switch {
	case pr.Total > 0:
		s += fmt.Sprintf(" %s/%s (%d%%)", humanSize(pr.Current), humanSize(pr.Total), pr.Current*100/pr.Total)
	case pr.Current > 0:
		s += " " + humanSize(pr.Current)
	}
	return s
}

// uploadLine renders the progress of an upload of total bytes (-1:
// unknown).
func uploadLine(verb string, n, total int64) string {
	if total > 0 {
		return fmt.Sprintf("%s %s/%s (%d%%)", verb, humanSize(n), humanSize(total), n*100/total)
	}
	return fmt.Sprintf("%s %s", verb, humanSize(n))
}

// countingReader counts the bytes read through it and reports EOF once.
type countingReader struct {
	r     io.Reader
	n     atomic.Int64
	once  sync.Once
	onEOF func(n int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	total := c.n.Add(int64(n))
	if err == io.EOF && c.onEOF != nil {
		c.once.Do(func() { c.onEOF(total) })
	}
	return n, err
}
