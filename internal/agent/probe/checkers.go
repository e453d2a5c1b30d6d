package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/threadns"
)

// maxOutput is how much of a failed check's output (an exec's, an HTTP
// body) goes into its message, as the kubelet keeps 10 KiB.
const maxOutput = 1 << 10

// DialFunc opens a connection to addr.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// NetnsDialer dials from a thread inside the network namespace at nsPath
// (a socket belongs to the namespace it was made in, and stays there
// after the thread returns to the agent's), and only ever to the
// instance's own ip: whatever address it is asked for, a probe cannot
// make the host connect anywhere else, nor from the host's namespace.
func NetnsDialer(nsPath, ip string) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		target := net.JoinHostPort(ip, port)
		type res struct {
			c   net.Conn
			err error
		}
		done := make(chan res, 1)
		go func() {
			runtime.LockOSThread()
			var c net.Conn
			err := threadns.Join(nsPath, unix.CLONE_NEWNET, func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, "tcp", target)
				return err
			})
			done <- res{c, err}
		}()
		r := <-done
		return r.c, r.err
	}
}

// TCPChecker opens a connection to Port; connecting is healthy.
type TCPChecker struct {
	Dial DialFunc
	Port int
}

func (c *TCPChecker) Check(ctx context.Context) error {
	conn, err := c.Dial(ctx, "tcp", net.JoinHostPort("instance", strconv.Itoa(c.Port)))
	if err != nil {
		return fmt.Errorf("dial tcp port %d: %w", c.Port, unwrapOp(err))
	}
	return conn.Close()
}

// HTTPChecker sends a GET; a status from 200 to 399 is healthy. A
// redirect is followed only to the same port of the instance, as the
// kubelet follows only redirects to the same host; another is healthy.
type HTTPChecker struct {
	Dial   DialFunc
	Action *api.HTTPGetAction
	// Host is the URL's host, and so the Host header unless the action
	// sets one ("instance" if empty; Dial decides where it connects).
	Host string
	// AnyStatus takes any response as success, as the kubelet does for a
	// lifecycle hook.
	AnyStatus bool

	once   sync.Once
	client *http.Client
	url    string
}

func (c *HTTPChecker) init() {
	a := c.Action
	scheme := strings.ToLower(a.Scheme)
	if scheme == "" {
		scheme = "http"
	}
	path := a.Path
	if path == "" {
		path = "/"
	}
	h := c.Host
	if h == "" {
		h = "instance"
	}
	host := net.JoinHostPort(h, strconv.Itoa(a.Port))
	c.url = scheme + "://" + host + path
	c.client = &http.Client{
		Transport: &http.Transport{
			DialContext: c.Dial,
			// The kubelet does not verify a probe's certificate either.
			TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
			DisableKeepAlives:  true,
			DisableCompression: true,
			Proxy:              nil,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != host || len(via) >= 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
}

func (c *HTTPChecker) Check(ctx context.Context) error {
	c.once.Do(c.init)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kanga-probe/1.0")
	req.Header.Set("Accept", "*/*")
	for _, h := range c.Action.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("GET %s on port %d: %w", c.Action.Path, c.Action.Port, unwrapOp(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxOutput))
	if !c.AnyStatus && (resp.StatusCode < 200 || resp.StatusCode >= 400) {
		return fmt.Errorf("HTTP probe failed with statuscode: %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// GRPCChecker calls grpc.health.v1.Health/Check without TLS; SERVING is
// healthy.
type GRPCChecker struct {
	Dial    DialFunc
	Port    int
	Service string
}

func (c *GRPCChecker) Check(ctx context.Context) error {
	addr := net.JoinHostPort("instance", strconv.Itoa(c.Port))
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return c.Dial(ctx, "tcp", a) }),
		grpc.WithUserAgent("kanga-probe/1.0"))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: c.Service})
	if err != nil {
		return fmt.Errorf("grpc health check on port %d: %w", c.Port, err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("grpc health check on port %d: service %q is %s", c.Port, c.Service, s)
	}
	return nil
}

// unwrapOp drops the addresses from a dial error: the message goes into
// the instance's events, and the probe's own address is noise there.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// ExecChecker runs Command in the container's task, as the container's
// process (user, environment, capabilities), without a terminal; exit
// status 0 is healthy. At the timeout the process is killed.
type ExecChecker struct {
	Task    containerd.Task
	Process *specs.Process
	Command []string
	// FIFODir is where the output's FIFOs are made.
	FIFODir string
}

var execSeq atomic.Uint64

func (c *ExecChecker) Check(ctx context.Context) error {
	pspec := *c.Process
	pspec.Args = c.Command
	pspec.Terminal = false
	pspec.ConsoleSize = nil
	out := &capBuffer{max: maxOutput}
	id := fmt.Sprintf("probe-%d-%d", time.Now().UnixNano(), execSeq.Add(1))
	proc, err := c.Task.Exec(ctx, id, &pspec, cio.NewCreator(cio.WithStreams(nil, out, out), cio.WithFIFODir(c.FIFODir)))
	if err != nil {
		return c.failed(ctx, err)
	}
	// The process record goes whatever happened, with a context of its
	// own: the probe's may be over.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = proc.Delete(dctx, containerd.WithProcessKill)
	}()
	statusC, err := proc.Wait(ctx)
	if err != nil {
		return c.failed(ctx, err)
	}
	if err := proc.Start(ctx); err != nil {
		return c.failed(ctx, err)
	}
	select {
	case st := <-statusC:
		if pio := proc.IO(); pio != nil {
			pio.Wait()
			pio.Close()
		}
		code, _, err := st.Result()
		if err != nil {
			return err
		}
		if code != 0 {
			msg := strings.TrimSpace(out.String())
			if msg == "" {
				return fmt.Errorf("command %v exited with code %d", c.Command, code)
			}
			return fmt.Errorf("command %v exited with code %d: %s", c.Command, code, msg)
		}
		return nil
	case <-ctx.Done():
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = proc.Kill(kctx, syscall.SIGKILL)
		return c.failed(ctx, ctx.Err())
	}
}

// failed is the error of a check that could not run the command or
// wait for it: at the timeout (which counts the exec's own setup, as
// the kubelet's does) it says so.
func (c *ExecChecker) failed(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("command %v timed out", c.Command)
	}
	return fmt.Errorf("exec %q: %w", c.Command[0], err)
}

// capBuffer keeps the first max bytes written to it.
type capBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.b.Len(); room > 0 {
		b.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *capBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
