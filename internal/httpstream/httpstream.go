// Package httpstream is the HTTP plumbing of the streams that the public
// API and the host API both serve from a host's functions (package
// hostcontract): the exec upgrade and its frames (api/stream.go), image
// progress streams, and the query parameters they share. Keeping it in
// one place keeps the two APIs' wire formats the same, so that the SDK is
// the client of both.
package httpstream

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
)

// Progress writes newline-delimited api.Progress documents. The
// status line waits for the first progress held back for HoldBack, so
// that an operation failing at once (a file that is no archive, a
// registry that cannot be reached) gets an ordinary error response with
// its status; a failure after that is the stream's last line.
type Progress struct {
	w  http.ResponseWriter
	fw io.Writer

	mu      sync.Mutex
	started bool
	held    []api.Progress
	timer   *time.Timer
}

// HoldBack is how long the status line waits for the first progress.
const HoldBack = 250 * time.Millisecond

// NewProgress starts a stream on w whose lines go through fw, a writer
// that flushes w (FlushWriter, or the caller's own with its deadlines).
func NewProgress(w http.ResponseWriter, fw io.Writer) *Progress {
	p := &Progress{w: w, fw: fw}
	p.timer = time.AfterFunc(HoldBack, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.held) > 0 {
			p.startLocked()
		}
	})
	return p
}

func (p *Progress) startLocked() {
	if !p.started {
		p.started = true
		p.w.Header().Set("Content-Type", "application/x-ndjson")
		p.w.WriteHeader(http.StatusOK)
	}
	enc := json.NewEncoder(p.fw)
	for _, h := range p.held {
		_ = enc.Encode(h)
	}
	p.held = nil
}

// Send adds a line.
func (p *Progress) Send(pr api.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = append(p.held, pr)
	if p.started {
		p.startLocked()
	}
}

// Done ends the stream with its last line.
func (p *Progress) Done(pr api.Progress) {
	p.timer.Stop()
	p.Send(pr)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.startLocked()
}

// Fail ends the stream with err. It returns err, for the handler to
// answer with, while no status line was sent; nil once the failure is
// the stream's last line.
func (p *Progress) Fail(err error) error {
	p.timer.Stop()
	p.mu.Lock()
	started := p.started
	p.held = nil
	p.mu.Unlock()
	if !started {
		return err
	}
	code := errdefs.Code(err)
	p.Done(api.Progress{Error: &api.Error{Code: code, Message: errdefs.Message(err)}})
	return nil
}

// PickContainer resolves the container a request names, defaulting to the
// only app container, or the first, as kubectl does; an init container is
// picked only by name.
func PickContainer(inst *api.Instance, name string) (string, error) {
	if name == "" {
		return inst.Spec.Containers[0].Name, nil
	}
	all := model.AllContainers(&inst.Spec)
	for _, c := range all {
		if c.Spec.Name == name {
			return name, nil
		}
	}
	names := make([]string, 0, len(all))
	for _, c := range all {
		names = append(names, c.Spec.Name)
	}
	return "", fmt.Errorf("instance %q has no container %q: it has %v: %w", inst.Name, name, names, errdefs.ErrNotFound)
}

// CheckExec refuses an exec into container of inst unless it runs: the
// instance is Running, or it is still running the container as an init
// container (kubectl exec reaches a running init container too).
func CheckExec(inst *api.Instance, container string) error {
	if inst.Status.Phase == api.PhaseRunning {
		return nil
	}
	for _, c := range inst.Status.InitContainers {
		if c.Name == container && c.State == api.ContainerRunning && !inst.Status.Phase.Terminal() {
			return nil
		}
	}
	return fmt.Errorf("instance %q is %s, not Running: exec needs a running container: %w", inst.Name, inst.Status.Phase, errdefs.ErrFailedPrecondition)
}

// BoolParam reads an optional boolean query parameter.
func BoolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("query parameter %s=%q is not a boolean: use true or false: %w", name, v, errdefs.ErrInvalidArgument)
	}
	return b, nil
}

// TerminalSize reads the optional width and height query parameters.
func TerminalSize(r *http.Request) (*api.TerminalSize, error) {
	q := r.URL.Query()
	w, h := q.Get("width"), q.Get("height")
	if w == "" && h == "" {
		return nil, nil
	}
	wn, werr := strconv.ParseUint(w, 10, 16)
	hn, herr := strconv.ParseUint(h, 10, 16)
	if werr != nil || herr != nil || wn == 0 || hn == 0 {
		return nil, fmt.Errorf("terminal size width=%q height=%q: both must be numbers from 1 to 65535: %w", w, h, errdefs.ErrInvalidArgument)
	}
	return &api.TerminalSize{Width: uint16(wn), Height: uint16(hn)}, nil
}

// ReadClientFrames feeds stdin and resize frames to the process until the
// client closes its side or the connection ends.
func ReadClientFrames(r *bufio.Reader, stdin *io.PipeWriter, withStdin bool, resize chan<- api.TerminalSize) {
	defer close(resize)
	// Without stdin nobody reads the pipe: drop such frames rather than
	// block the reader and with it terminal resizes.
	stdinOpen := withStdin
	if !withStdin {
		stdin.Close()
	}
	closeStdin := func(err error) {
		if stdinOpen {
			stdin.CloseWithError(err)
			stdinOpen = false
		}
	}
	for {
		stream, p, err := api.ReadFrame(r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			closeStdin(err)
			return
		}
		switch stream {
		case api.StreamStdin:
			if stdinOpen {
				if _, err := stdin.Write(p); err != nil {
					stdinOpen = false
				}
			}
		case api.StreamStdinClose:
			closeStdin(nil)
		case api.StreamResize:
			var sz api.TerminalSize
			if json.Unmarshal(p, &sz) == nil {
				select {
				case resize <- sz:
				default: // a newer size will follow; never block the reader
				}
			}
		}
	}
}

// Exec is an exec request as read from its query, before the upgrade.
type Exec struct {
	// Container is the name the request gives (empty: the default one).
	Container string
	// Stdin: the client sends input.
	Stdin bool
	// Req has the command, environment, working directory, TTY and size;
	// ServeExec fills in the container and the streams.
	Req hostcontract.ExecRequest
}

// ParseExec checks an exec request before anything else happens, so that
// a bad one gets an ordinary JSON error with the right status.
func ParseExec(r *http.Request) (Exec, error) {
	q := r.URL.Query()
	if !strings.EqualFold(r.Header.Get("Upgrade"), api.StreamProtocol) {
		return Exec{}, fmt.Errorf("exec needs the headers 'Connection: Upgrade' and 'Upgrade: %s': %w", api.StreamProtocol, errdefs.ErrInvalidArgument)
	}
	cmd := q["cmd"]
	if len(cmd) == 0 || cmd[0] == "" {
		return Exec{}, fmt.Errorf("no command to run: pass it as cmd query parameters, e.g. cmd=sh&cmd=-c&cmd=date: %w", errdefs.ErrInvalidArgument)
	}
	tty, err := BoolParam(r, "tty")
	if err != nil {
		return Exec{}, err
	}
	withStdin, err := BoolParam(r, "stdin")
	if err != nil {
		return Exec{}, err
	}
	size, err := TerminalSize(r)
	if err != nil {
		return Exec{}, err
	}
	for _, e := range q["env"] {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return Exec{}, fmt.Errorf("env %q is not KEY=VALUE: %w", e, errdefs.ErrInvalidArgument)
		}
	}
	return Exec{Container: q.Get("container"), Stdin: withStdin,
		Req: hostcontract.ExecRequest{Cmd: cmd, Env: q["env"], WorkDir: q.Get("workdir"), TTY: tty, Size: size}}, nil
}

// ServeExec takes over the connection, upgrades it to the frame protocol
// and runs the process with run, whose exit code (or error) is the
// session's last frame. container is the resolved container's name.
func ServeExec(w http.ResponseWriter, e Exec, container string, run func(hostcontract.ExecRequest) (int, error)) error {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return fmt.Errorf("cannot take over the connection for exec: %w", err)
	}
	defer conn.Close()
	// The connection is the session's now: stdin may be quiet for as long
	// as the user likes, and the session ends with the process or ctx.
	_ = conn.SetDeadline(time.Time{})
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", api.StreamProtocol)
	if err := brw.Flush(); err != nil {
		return nil
	}
	out := api.NewFrameWriter(conn)

	stdinR, stdinW := io.Pipe()
	resize := make(chan api.TerminalSize, 4)
	go ReadClientFrames(brw.Reader, stdinW, e.Stdin, resize)

	req := e.Req
	req.Container = container
	req.Stdin, req.Resize = stdinR, resize
	req.Stdout, req.Stderr = out.StreamWriter(api.StreamStdout), out.StreamWriter(api.StreamStderr)
	if !e.Stdin {
		req.Stdin = nil
	}
	code, err := run(req)
	stdinR.Close()
	if err != nil {
		c := errdefs.Code(err)
		_ = out.WriteJSON(api.StreamError, api.Error{Code: c, Message: errdefs.Message(err)})
		return nil
	}
	_ = out.WriteJSON(api.StreamExit, api.ExitStatus{ExitCode: code})
	return nil
}

// FlushWriter writes through to w and flushes after every write, for
// streams (logs, progress) a client reads as they come.
type FlushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

// NewFlushWriter returns a FlushWriter on w.
func NewFlushWriter(w http.ResponseWriter) *FlushWriter {
	return &FlushWriter{w: w, rc: http.NewResponseController(w)}
}

func (f *FlushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// NotDone passes a host's progress on without its final event: a remote
// host reports Done when its own part is over, and a client that saw it
// would hang up (and so cancel the rest) before the other hosts have the
// image. The handler sends the one Done when every host is through.
func NotDone(progress func(api.Progress)) func(api.Progress) {
	return func(p api.Progress) {
		if p.Done {
			return
		}
		progress(p)
	}
}
