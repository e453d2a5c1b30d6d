package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/assembly/cp"
	"github.com/kanga-run/kanga/internal/hostlink/agentside"
	"github.com/kanga-run/kanga/internal/hostlink/join"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/simhost"
	"github.com/kanga-run/kanga/internal/store"
)

// ScheduleConfig sizes `kanga bench schedule`.
type ScheduleConfig struct {
	Hosts     int
	HostCPUs  int // cores each simulated host offers
	Instances int
	CPU       int // cores each instance asks for
	// Concurrency is the number of API clients creating instances.
	Concurrency int
	// LeaseTTL of the simulated hosts (their heartbeats keep it).
	LeaseTTL time.Duration
	DataDir  string // for the embedded etcd; a temp dir if empty
	Logger   *slog.Logger
	Progress func(format string, args ...any)
}

// ScheduleReport is what one run measured.
type ScheduleReport struct {
	Hosts, Instances, Cores int
	Setup                   time.Duration // store, control plane, hosts joined and Ready
	CreateDone              time.Duration // last create call answered
	PlacedDone              time.Duration // last instance placed on a host
	RunningDone             time.Duration // last instance reported Running by its host
	CreateP50, CreateP99    time.Duration
	Unplaced                int
}

// Schedule measures the whole control plane with simulated hosts: the
// public API (real HTTP), the store (embedded etcd), the scheduler loop
// with its fenced apply, and the agents' link (mutual TLS, HTTP/2,
// heartbeat, per-host stream, status writes). Only the hosts' runtime is
// simulated: a host reports an instance Running as soon as it sees it
// placed on it. The hosts connect over in-memory pipes instead of TCP so
// that ten thousand of them fit in one process's file descriptors.
func Schedule(ctx context.Context, cfg ScheduleConfig) (ScheduleReport, error) {
	rep := ScheduleReport{Hosts: cfg.Hosts, Instances: cfg.Instances, Cores: cfg.Instances * cfg.CPU}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	say := cfg.Progress
	if say == nil {
		say = func(string, ...any) {}
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 30 * time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	dir := cfg.DataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "kanga-bench-schedule-")
		if err != nil {
			return rep, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The control plane as kanga server assembles it, its link on an
	// in-memory listener; its API on TCP as users reach it, whose host
	// for image checks is a stand-in (no host here has images).
	pl := newPipeListener()
	plane, err := servePlane(ctx, cp.Options{DataDir: dir, Logger: log, AgentListener: pl, HostLeaseTTL: cfg.LeaseTTL,
		ReplicaName: "bench", Hosts: simhost.Directory{simhost.NewAPIHost(simhost.Config{Name: "bench"})},
		// Creates answer at once: placement is measured on the store.
		ScheduleWait: -1})
	if err != nil {
		return rep, err
	}
	defer plane.stop()
	st, ca := plane.Store(), plane.CA()

	// Hosts: credentials minted directly (a join per host would measure
	// 10,000 key generations, not the control plane).
	say("joining %d simulated hosts", cfg.Hosts)
	hosts := make([]*simhost.Host, cfg.Hosts)
	running := func() int64 {
		var n int64
		for _, h := range hosts {
			n += h.Running()
		}
		return n
	}
	for i := range hosts {
		name := fmt.Sprintf("sim-%05d", i)
		csr, key, err := pki.NewCSR(name, nil)
		if err != nil {
			return rep, err
		}
		certPEM, err := ca.SignAgentCSR(csr, name)
		if err != nil {
			return rep, err
		}
		cert, err := tls.X509KeyPair(certPEM, key)
		if err != nil {
			return rep, err
		}
		creds := &join.Credentials{Cert: cert, CA: ca.Cert}
		l := agentside.NewLink("https://127.0.0.1", name, creds, log, agentside.WithDialer(pl.Dial))
		// Running in one write: what this benchmark has always measured.
		hosts[i] = simhost.OnLink(ctx, l, simhost.Config{Name: name, CPUs: cfg.HostCPUs, Memory: int64(cfg.HostCPUs) * 4 << 30,
			Labels: map[string]string{"zone": "z" + strconv.Itoa(i%3)}, SkipCreating: true})
	}
	if err := waitReady(ctx, st, cfg.Hosts, say); err != nil {
		return rep, err
	}
	rep.Setup = time.Since(start)
	say("setup done in %s; creating %d instances of %d cores", rep.Setup.Round(time.Millisecond), cfg.Instances, cfg.CPU)

	// Placement and Running are observed on the store.
	_, rev, err := st.ListAllInstances(ctx)
	if err != nil {
		return rep, err
	}
	events := st.WatchAllInstances(ctx, rev)
	t0 := time.Now()
	var (
		placedAt, runningAt time.Duration
		placed              = map[string]bool{}
		run                 = map[string]bool{}
		obsDone             = make(chan struct{})
	)
	go func() {
		defer close(obsDone)
		for ev := range events {
			if ev.Instance == nil || ev.Deleted {
				continue
			}
			if ev.Instance.Status.Host != "" && !placed[ev.Name] {
				placed[ev.Name] = true
				placedAt = time.Since(t0)
			}
			if ev.Instance.Status.Phase == api.PhaseRunning && !run[ev.Name] {
				run[ev.Name] = true
				runningAt = time.Since(t0)
				if len(run) == cfg.Instances {
					return
				}
			}
		}
	}()

	cc := plane.ClientConfig()
	c, err := client.New(cc.Addr, cc.Token, client.WithHTTPClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency}}))
	if err != nil {
		return rep, err
	}
	var (
		next    atomic.Int64
		mu      sync.Mutex
		lat     []time.Duration
		firstEr error
		wg      sync.WaitGroup
	)
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.Instances || ctx.Err() != nil {
					return
				}
				t := time.Now()
				_, err := c.CreateInstance(ctx, api.CreateInstanceRequest{Name: fmt.Sprintf("b%07d", i), Spec: api.InstanceSpec{
					Containers: []api.ContainerSpec{{Name: "main", Image: "bench", Command: []string{"sleep", "3600"}}},
					Resources:  api.Resources{CPU: strconv.Itoa(cfg.CPU), Memory: "64Mi"},
				}})
				d := time.Since(t)
				mu.Lock()
				lat = append(lat, d)
				if err != nil && firstEr == nil {
					firstEr = err
				}
				mu.Unlock()
				if i > 0 && i%10000 == 0 {
					say("%d created (%s), %d running", i, time.Since(t0).Round(time.Millisecond), running())
				}
			}
		}()
	}
	wg.Wait()
	rep.CreateDone = time.Since(t0)
	if firstEr != nil {
		return rep, fmt.Errorf("creating instances: %w", firstEr)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	rep.CreateP50 = lat[len(lat)/2]
	rep.CreateP99 = lat[len(lat)*99/100]
	say("all created in %s; waiting for Running", rep.CreateDone.Round(time.Millisecond))
	stall := time.NewTicker(5 * time.Second)
	defer stall.Stop()
	last := int64(-1)
	for {
		select {
		case <-obsDone:
			rep.PlacedDone, rep.RunningDone = placedAt, runningAt
			return rep, nil
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-stall.C:
			n := running()
			say("%d running (%s)", n, time.Since(t0).Round(time.Millisecond))
			if n == last {
				rep.Unplaced = cfg.Instances - int(n)
				return rep, fmt.Errorf("stalled at %d of %d instances Running", n, cfg.Instances)
			}
			last = n
		}
	}
}

func waitReady(ctx context.Context, st *store.Store, n int, say func(string, ...any)) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for hs := range st.WatchHosts(wctx) {
		ready := 0
		for _, h := range hs {
			if h.Status.Phase == api.HostReady {
				ready++
			}
		}
		if ready == n {
			return nil
		}
	}
	return errors.Join(errors.New("hosts did not all become Ready"), ctx.Err())
}

// pipeListener is a net.Listener of in-memory connections.
type pipeListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (p *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.ch:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

func (p *pipeListener) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

func (p *pipeListener) Addr() net.Addr { return pipeAddr{} }

// Dial connects to the listener.
func (p *pipeListener) Dial(ctx context.Context, _, _ string) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case p.ch <- b:
		return a, nil
	case <-p.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
