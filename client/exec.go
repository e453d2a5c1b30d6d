package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// ExecOptions describes a process to run in a running container.
type ExecOptions struct {
	// Container names the container; empty means the server's default.
	Container string
	// Cmd is the command and its arguments; required.
	Cmd []string
	// Env entries are "KEY=VALUE".
	Env     []string
	WorkDir string
	// TTY gives the process a terminal; its stdout and stderr then arrive
	// merged on Stdout.
	TTY bool
	// Stdin, if not nil, is copied to the process, which sees EOF when it
	// ends. A nil Stdin gives the process an empty stdin. Exec cannot
	// interrupt a Read of Stdin: the copying goroutine lives until that
	// Read returns.
	Stdin io.Reader
	// Stdout and Stderr receive the process's output; nil discards it.
	Stdout, Stderr io.Writer
	// Size, if not nil, is the terminal's size when the process starts.
	Size *api.TerminalSize
	// Resize, if not nil, carries terminal sizes to forward to the TTY. A
	// size already in the channel when Exec starts is sent before any
	// input.
	Resize <-chan api.TerminalSize
}

// Exec runs a process in a container of an instance and returns its exit
// code once it has exited and all its output was written. The error is
// non-nil when the process could not be run or the stream broke; the exit
// code is then -1.
func (c *Client) Exec(ctx context.Context, name string, opts ExecOptions) (int, error) {
	if len(opts.Cmd) == 0 {
		return -1, fmt.Errorf("exec in %s: no command given: %w", name, errdefs.ErrInvalidArgument)
	}
	q := url.Values{"cmd": opts.Cmd}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	if opts.TTY {
		q.Set("tty", "true")
	}
	if opts.Stdin != nil {
		q.Set("stdin", "true")
	}
	if opts.TTY && opts.Size != nil {
		q.Set("width", strconv.Itoa(int(opts.Size.Width)))
		q.Set("height", strconv.Itoa(int(opts.Size.Height)))
	}
	if len(opts.Env) > 0 {
		q["env"] = opts.Env
	}
	if opts.WorkDir != "" {
		q.Set("workdir", opts.WorkDir)
	}
	req, err := c.newRequest(ctx, http.MethodPost, instancePath(name, "exec"), q, nil)
	if err != nil {
		return -1, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", api.StreamProtocol)

	// net/http's client cannot hand over an upgraded connection for both
	// directions, so speak HTTP/1.1 on a connection of our own.
	conn, err := c.dial(ctx)
	if err != nil {
		return -1, c.transportError(ctx, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	if err := req.Write(conn); err != nil {
		return -1, c.streamError(ctx, name, err)
	}
	// br may hold the first frames already; keep reading frames from it.
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return -1, c.streamError(ctx, name, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return -1, decodeError(resp)
	}
	if up := resp.Header.Get("Upgrade"); !strings.EqualFold(up, api.StreamProtocol) {
		return -1, fmt.Errorf("exec in %s: server switched to protocol %q, want %q: %w", name, up, api.StreamProtocol, errdefs.ErrUnavailable)
	}

	fw := api.NewFrameWriter(conn)
	// A size already waiting goes first, so that the terminal has its
	// size before the process reads any input.
	if opts.Resize != nil {
		select {
		case size, ok := <-opts.Resize:
			if ok {
				if err := fw.WriteJSON(api.StreamResize, size); err != nil {
					return -1, c.streamError(ctx, name, err)
				}
			}
		default:
		}
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		if opts.Stdin != nil {
			// Errors surface in the read loop below, when the
			// connection breaks.
			if _, err := io.Copy(fw.StreamWriter(api.StreamStdin), opts.Stdin); err != nil {
				return
			}
		}
		_ = fw.WriteFrame(api.StreamStdinClose, nil)
	}()
	if opts.Resize != nil {
		go func() {
			for {
				select {
				case <-done:
					return
				case size, ok := <-opts.Resize:
					if !ok {
						return
					}
					_ = fw.WriteJSON(api.StreamResize, size)
				}
			}
		}()
	}

	stdout, stderr := opts.Stdout, opts.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	for {
		stream, payload, err := api.ReadFrame(br)
		if err != nil {
			return -1, c.streamError(ctx, name, err)
		}
		switch stream {
		case api.StreamStdout:
			if _, err := stdout.Write(payload); err != nil {
				return -1, fmt.Errorf("exec in %s: writing stdout: %w", name, err)
			}
		case api.StreamStderr:
			if _, err := stderr.Write(payload); err != nil {
				return -1, fmt.Errorf("exec in %s: writing stderr: %w", name, err)
			}
		case api.StreamExit:
			var st api.ExitStatus
			if err := json.Unmarshal(payload, &st); err != nil {
				return -1, fmt.Errorf("exec in %s: bad exit status %q: %w", name, payload, errdefs.ErrUnavailable)
			}
			return st.ExitCode, nil
		case api.StreamError:
			var e api.Error
			if err := json.Unmarshal(payload, &e); err != nil {
				return -1, fmt.Errorf("exec in %s: bad error frame %q: %w", name, payload, errdefs.ErrUnavailable)
			}
			return -1, fromAPI(e)
		default:
			// Unknown frames come from a newer server; skip them.
		}
	}
}

// streamError explains a broken exec connection.
func (c *Client) streamError(ctx context.Context, name string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("exec in %s: the server closed the connection before the exit status: %w", name, errdefs.ErrUnavailable)
	}
	return withClass(fmt.Errorf("exec in %s: %w", name, err), errdefs.ErrUnavailable)
}

// dial opens a connection to the server like the HTTP transport would.
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	if c.unixPath != "" {
		var d net.Dialer
		return d.DialContext(ctx, "unix", c.unixPath)
	}
	host := c.base.Host
	if c.base.Scheme == "https" {
		if c.base.Port() == "" {
			host = net.JoinHostPort(c.base.Hostname(), "443")
		}
		cfg := c.tlsConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = c.base.Hostname()
		}
		// Upgrades are HTTP/1.1 only.
		cfg.NextProtos = []string{"http/1.1"}
		d := tls.Dialer{Config: cfg}
		return d.DialContext(ctx, "tcp", host)
	}
	if c.base.Port() == "" {
		host = net.JoinHostPort(c.base.Hostname(), "80")
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", host)
}
