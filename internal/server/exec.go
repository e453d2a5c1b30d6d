package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// exec upgrades the connection to the frame protocol of api/stream.go. All
// checks happen before the upgrade so that a bad request gets an ordinary
// JSON error with the right status.
func (s *Server) exec(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	if !strings.EqualFold(r.Header.Get("Upgrade"), api.StreamProtocol) {
		return fmt.Errorf("exec needs the headers 'Connection: Upgrade' and 'Upgrade: %s': %w", api.StreamProtocol, errdefs.ErrInvalidArgument)
	}
	cmd := q["cmd"]
	if len(cmd) == 0 || cmd[0] == "" {
		return fmt.Errorf("no command to run: pass it as cmd query parameters, e.g. cmd=sh&cmd=-c&cmd=date: %w", errdefs.ErrInvalidArgument)
	}
	tty, err := boolParam(r, "tty")
	if err != nil {
		return err
	}
	withStdin, err := boolParam(r, "stdin")
	if err != nil {
		return err
	}
	size, err := terminalSize(r)
	if err != nil {
		return err
	}
	inst, err := s.store.GetInstance(ctx, r.PathValue("name"))
	if err != nil {
		return err
	}
	container, err := pickContainer(inst, q.Get("container"))
	if err != nil {
		return err
	}
	if inst.Status.Phase != api.PhaseRunning {
		return fmt.Errorf("instance %q is %s, not Running: exec needs a running container: %w", inst.Name, inst.Status.Phase, errdefs.ErrFailedPrecondition)
	}
	host, err := s.hostOf(inst)
	if err != nil {
		return err
	}
	for _, e := range q["env"] {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("env %q is not KEY=VALUE: %w", e, errdefs.ErrInvalidArgument)
		}
	}

	setAuditDetail(ctx, fmt.Sprintf("container=%s program=%q tty=%t", container, cmd[0], tty))
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
	go readClientFrames(brw.Reader, stdinW, withStdin, resize)

	req := ExecRequest{
		Container: container,
		Cmd:       cmd,
		Env:       q["env"],
		WorkDir:   q.Get("workdir"),
		TTY:       tty,
		Size:      size,
		Stdin:     stdinR,
		Stdout:    out.StreamWriter(api.StreamStdout),
		Stderr:    out.StreamWriter(api.StreamStderr),
		Resize:    resize,
	}
	if !withStdin {
		req.Stdin = nil
	}
	code, err := host.Exec(ctx, inst, req)
	stdinR.Close()
	if err != nil {
		c := errdefs.Code(err)
		_ = out.WriteJSON(api.StreamError, api.Error{Code: c, Message: err.Error()})
		return nil
	}
	_ = out.WriteJSON(api.StreamExit, api.ExitStatus{ExitCode: code})
	return nil
}

// terminalSize reads the optional width and height query parameters.
func terminalSize(r *http.Request) (*api.TerminalSize, error) {
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

// readClientFrames feeds stdin and resize frames to the process until the
// client closes its side or the connection ends.
func readClientFrames(r *bufio.Reader, stdin *io.PipeWriter, withStdin bool, resize chan<- api.TerminalSize) {
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
