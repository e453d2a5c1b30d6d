package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/assembly/cp"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/simhost"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// TestEtcdClusterFailover runs two control-plane replicas (API server,
// scheduler loop, failure detector; in-process) on a real three-member
// etcd cluster, with a simulated host "fake" whose agent only reports
// Running. Under a stream of create and delete requests it kills the
// leading replica (without resigning, as a crash) and the etcd leader.
// Every request must succeed or fail with an error; afterwards every
// instance that was created and not deleted exists and runs, none was
// placed twice, the host was never over-committed, and the surviving
// replica kept scheduling.
func TestEtcdClusterFailover(t *testing.T) {
	bin := k8sBinaries(t)
	dir := t.TempDir()
	endpoints, members := startEtcdCluster(t, filepath.Join(bin, "etcd"), dir)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	setup := openStore(t, endpoints)
	const token = "etcd-cluster-admin-token"
	if err := setup.PutAdminToken(ctx, token, tenant.Default); err != nil {
		t.Fatal(err)
	}

	// The simulated host: 8 cores, so that the load (up to 12 instances
	// of one core) must be refused some of the time.
	const hostCPUs = 8
	sim := startSimHost(t, endpoints, hostCPUs)

	r1 := startReplica(t, endpoints, "replica-1")
	r2 := startReplica(t, endpoints, "replica-2")
	replicas := []*replica{r1, r2}
	waitFor(t, "a leader among the replicas", 30*time.Second, func() bool { return r1.leading() || r2.leading() })

	// The request stream: two workers, each creating instances and
	// removing its oldest once it has six, alternating between replicas.
	var (
		mu       sync.Mutex
		live     = map[string]bool{} // created and not (successfully) deleted
		unsure   = map[string]bool{} // a request failed: it may or may not have happened
		requests int
		failures []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []string
			// Creates and deletes each alternate between the replicas.
			creates, deletes := w, w
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var rep *replica
				if len(mine) >= 6 {
					rep = replicas[deletes%2]
					deletes++
				} else {
					rep = replicas[creates%2]
					creates++
				}
				c, err := client.New(rep.url, token)
				if err != nil {
					t.Error(err)
					return
				}
				rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
				var reqErr error
				if len(mine) >= 6 {
					name := mine[0]
					err := c.DeleteInstance(rctx, name, true)
					reqErr = err
					mu.Lock()
					requests++
					// Not found: an earlier, failed request had removed it
					// (or a failed create never stored it).
					if err == nil || errors.Is(err, errdefs.ErrNotFound) {
						delete(live, name)
						delete(unsure, name)
						mine = mine[1:]
					} else {
						unsure[name] = true
						failures = append(failures, fmt.Sprintf("delete %s via %s: %v", name, rep.id, err))
					}
					mu.Unlock()
				} else {
					name := fmt.Sprintf("w%d-%d", w, n)
					_, err := c.CreateInstance(rctx, api.CreateInstanceRequest{Name: name, Spec: api.InstanceSpec{
						Containers: []api.ContainerSpec{{Name: "main", Image: "kanga.test/busybox"}},
						Resources:  api.Resources{CPU: "1"},
					}})
					reqErr = err
					mu.Lock()
					requests++
					if err == nil {
						live[name] = true
					} else {
						unsure[name] = true
						failures = append(failures, fmt.Sprintf("create %s via %s: %v", name, rep.id, err))
					}
					mu.Unlock()
					// A failed create may still have stored the instance:
					// remove it like any other, so the load stays bounded.
					mine = append(mine, name)
				}
				timedOut := errors.Is(rctx.Err(), context.DeadlineExceeded)
				rcancel()
				if timedOut {
					t.Errorf("a request ran into the 30 s deadline instead of failing or succeeding: %v", reqErr)
				}
				if reqErr != nil {
					// A dead replica refuses at once; do not spin on it.
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}

	time.Sleep(2 * time.Second)
	leader, survivor := r1, r2
	if r2.leading() {
		leader, survivor = r2, r1
	}
	t.Logf("killing the leading replica %s", leader.id)
	leader.crash()
	time.Sleep(time.Second)
	victim := etcdLeader(t, endpoints, members)
	t.Logf("killing etcd member %s (the etcd leader)", victim.name)
	_ = syscall.Kill(-victim.cmd.Process.Pid, syscall.SIGKILL)
	time.Sleep(4 * time.Second)
	close(stop)
	wg.Wait()

	// The survivor leads and keeps scheduling.
	waitFor(t, "the surviving replica to lead", 30*time.Second, survivor.leading)
	c, err := client.New(survivor.url, token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateInstance(ctx, api.CreateInstanceRequest{Name: "after", Spec: api.InstanceSpec{
		Containers: []api.ContainerSpec{{Name: "main", Image: "kanga.test/busybox"}}}}); err != nil {
		t.Fatalf("create after the failover: %v", err)
	}
	mu.Lock()
	live["after"] = true
	t.Logf("%d requests, %d failed cleanly:", requests, len(failures))
	// Counted by kind: the message with names and ports blanked.
	kinds := map[string]int{}
	blank := regexp.MustCompile(`w\d+-\d+|127\.0\.0\.1:\d+`)
	for _, f := range failures {
		kinds[blank.ReplaceAllString(f, "…")]++
	}
	for k, n := range kinds {
		t.Logf("  %4d × %s", n, k)
	}
	mu.Unlock()

	// Remove what may linger from failed requests, then wait for the
	// store and the host to agree: every instance placed on the host and
	// running there.
	check := tenant.WithName(ctx, tenant.Default)
	for name := range unsure {
		if live[name] {
			continue
		}
		if err := c.DeleteInstance(ctx, name, true); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("cleaning up %s: %v", name, err)
		}
	}
	var insts []api.Instance
	waitFor(t, "every instance to run on the host", 60*time.Second, func() bool {
		insts, err = survivor.store().ListInstances(check)
		if err != nil {
			return false
		}
		for _, in := range insts {
			if in.Status.Host != "fake" || in.Status.Phase != api.PhaseRunning {
				return false
			}
		}
		return true
	})
	got := map[string]bool{}
	for _, in := range insts {
		got[in.Name] = true
		scheduled := 0
		for _, ev := range in.Status.Events {
			if ev.Reason == "Scheduled" {
				scheduled++
			}
		}
		if scheduled != 1 {
			t.Errorf("%s was scheduled %d times: %+v", in.Name, scheduled, in.Status.Events)
		}
	}
	for name := range live {
		if !got[name] && !unsure[name] {
			t.Errorf("instance %s was created and never deleted, but is gone", name)
		}
	}
	for name := range got {
		if !live[name] {
			t.Errorf("instance %s exists, but its deletion succeeded or it was never created", name)
		}
	}
	if peak := sim.peak(); peak > hostCPUs {
		t.Errorf("the host ran %d one-core instances at once; it has %d cores", peak, hostCPUs)
	} else {
		t.Logf("peak load on the host: %d of %d cores; %d instances running at the end", peak, hostCPUs, len(insts))
	}
	if n := sim.placedAfter(leader.crashedAt); n == 0 {
		t.Error("nothing was placed after the leading replica died")
	}
}

// memberProc is one etcd member.
type memberProc struct {
	name, clientURL, peerURL string
	cmd                      *exec.Cmd
}

// startEtcdCluster starts three etcd members on 127.0.0.1 and returns
// their client URLs.
func startEtcdCluster(t *testing.T, etcd, dir string) ([]string, []memberProc) {
	t.Helper()
	var members []memberProc
	var cluster []string
	for i := range 3 {
		m := memberProc{
			name:      "m" + strconv.Itoa(i),
			clientURL: "http://127.0.0.1:" + strconv.Itoa(harness.FreePort(t)),
			peerURL:   "http://127.0.0.1:" + strconv.Itoa(harness.FreePort(t)),
		}
		members = append(members, m)
		cluster = append(cluster, m.name+"="+m.peerURL)
	}
	var endpoints []string
	for i := range members {
		m := &members[i]
		m.cmd = startDaemon(t, filepath.Join(dir, m.name+".log"), etcd,
			"--name", m.name,
			"--data-dir", filepath.Join(dir, m.name),
			"--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
			"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
			"--initial-cluster", strings.Join(cluster, ","),
			"--initial-cluster-state", "new", "--initial-cluster-token", "kanga-it",
			// Fast elections: the test kills the leader.
			"--heartbeat-interval", "50", "--election-timeout", "500",
			"--log-level", "error")
		endpoints = append(endpoints, m.clientURL)
	}
	return endpoints, members
}

// etcdLeader returns the member that leads the etcd cluster now.
func etcdLeader(t *testing.T, endpoints []string, members []memberProc) memberProc {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, m := range members {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cli.Status(ctx, m.clientURL)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return m
		}
	}
	t.Fatal("no etcd member says it leads")
	return memberProc{}
}

func openStore(t *testing.T, endpoints []string) *store.Store {
	t.Helper()
	var st *store.Store
	var err error
	// The members elect a leader within a second of starting.
	waitFor(t, "the etcd cluster to serve", 30*time.Second, func() bool {
		st, err = store.Open(context.Background(), store.Config{Endpoints: endpoints})
		return err == nil
	})
	t.Cleanup(func() { st.Close() })
	return st
}

// replica is one control-plane replica, assembled as a kanga server
// process's (cp.Open: its own store client, API server, scheduler loop and
// failure detector), its API in plain HTTP on loopback.
type replica struct {
	id        string
	url       string
	plane     *cp.Plane
	cancel    context.CancelFunc
	served    chan struct{}
	crashedAt time.Time
	once      sync.Once
}

func startReplica(t *testing.T, endpoints []string, id string) *replica {
	t.Helper()
	plane, err := cp.Open(context.Background(), cp.Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0", PlainAPI: true,
		EtcdEndpoints: endpoints, ReplicaName: id, Version: "it", LeaderTTL: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Hosts:  simhost.Directory{simhost.NewAPIHost(simHostConfig(8))}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{id: id, url: plane.ClientConfig().Addr, plane: plane, cancel: cancel, served: make(chan struct{})}
	plane.StartLoop()
	go func() { defer close(r.served); _ = plane.Serve(ctx) }()
	t.Cleanup(r.crash)
	return r
}

// leading reports whether the replica leads the control plane.
func (r *replica) leading() bool { return r.plane.Leading() }

// store is the replica's store client.
func (r *replica) store() *store.Store { return r.plane.Store() }

// crash stops the replica as a kill would: the API and then the store
// connection go first, so the leadership is not handed over but expires
// with its lease; then the loop ends.
func (r *replica) crash() {
	r.once.Do(func() {
		r.crashedAt = time.Now()
		r.cancel()
		<-r.served
		_ = r.plane.Store().Close()
		r.plane.Close()
	})
}

// simHost is the simulated host "fake" (package simhost): it keeps the
// host's lease, reports every instance placed on it Running and removes
// those whose deletion was requested. It tracks the one-core instances
// placed on it (placed, not terminal) to find the peak.
type simHost struct {
	mu     sync.Mutex
	onHost map[string]bool
	max    int
	placed []time.Time // when each placement was seen
}

// simHostConfig is the simulated host of cpus cores.
func simHostConfig(cpus int) simhost.Config {
	return simhost.Config{Name: "fake", CPUs: cpus, Memory: 64 << 30, Pods: 100, RuntimeClasses: []string{"runc"}}
}

func startSimHost(t *testing.T, endpoints []string, cpus int) *simHost {
	t.Helper()
	st := openStore(t, endpoints)
	ctx, cancel := context.WithCancel(context.Background())
	h := &simHost{onHost: map[string]bool{}}
	cfg := simHostConfig(cpus)
	cfg.Observe = h.observe
	sim, err := simhost.OnStore(ctx, st, cfg, 5*time.Second)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-sim.Done() })
	return h
}

// observe follows what is placed on the host, from the watch: a
// consistent sequence of the store's states.
func (h *simHost) observe(ev hostcontract.InstanceEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	key := ev.Tenant + "/" + ev.Name
	on := !ev.Deleted && ev.Instance.Status.Host == "fake" && !ev.Instance.Status.Phase.Terminal()
	if on && !h.onHost[key] {
		h.placed = append(h.placed, time.Now())
	}
	if on {
		h.onHost[key] = true
	} else {
		delete(h.onHost, key)
	}
	// Instances of the stream ask for one core; "after" for none.
	n := 0
	for k := range h.onHost {
		if !strings.HasSuffix(k, "/after") {
			n++
		}
	}
	h.max = max(h.max, n)
}

func (h *simHost) peak() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max
}

func (h *simHost) placedAfter(t time.Time) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, at := range h.placed {
		if at.After(t) {
			n++
		}
	}
	return n
}

// TestTwoUpsOnEtcdCluster: two kanga up processes (each an API, a
// control-plane replica and a real agent with its own containerd, data
// dir and subnet) share a real three-member etcd cluster. Killing the
// process that leads the control plane (SIGKILL) moves the leadership to
// the other, and the dead host's restartable instances are re-created and
// run on the surviving host once its lease expires. When the killed
// process comes back, its agent removes its copies of the moved instances
// (no duplicates) and its host is Ready again.
func TestTwoUpsOnEtcdCluster(t *testing.T) {
	bin := k8sBinaries(t)
	endpoints, _ := startEtcdCluster(t, filepath.Join(bin, "etcd"), t.TempDir())
	eps := strings.Join(endpoints, ",")
	suffix := strconv.Itoa(os.Getpid())
	pa := startPlatformWith(t, "--pool-max", "0", "--etcd-endpoints", eps, "--host-name", "it-a-"+suffix)
	pb := startPlatformWith(t, "--pool-max", "0", "--etcd-endpoints", eps, "--host-name", "it-b-"+suffix)
	pa.importImages()
	pb.importImages()

	names := []string{"r0", "r1", "r2", "r3"}
	for _, n := range names {
		pa.must("run", "-d", "--restart", "always", "--name", n, "kanga.test/busybox", "sleep", "1000")
	}
	before := map[string]api.Instance{}
	perHost := map[string]int{}
	for _, n := range names {
		in := pa.inspect(n)
		if in.Status.Phase != api.PhaseRunning {
			t.Fatalf("%s: %s", n, in.Status.Phase)
		}
		before[n] = in
		perHost[in.Status.Host]++
	}
	if perHost["it-a-"+suffix] != 2 || perHost["it-b-"+suffix] != 2 {
		t.Fatalf("one tenant's four instances per host: %v, want two on each", perHost)
	}

	// Kill the process that leads the control plane.
	leaderID := electionLeader(t, endpoints)
	victim, survivor := pa, pb
	if leaderID == "it-b-"+suffix {
		victim, survivor = pb, pa
	} else if leaderID != "it-a-"+suffix {
		t.Fatalf("control-plane leader %q is neither kanga up", leaderID)
	}
	victimHost := "it-a-" + suffix
	if victim == pb {
		victimHost = "it-b-" + suffix
	}
	t.Logf("killing %s, which leads the control plane", victimHost)
	killed := time.Now()
	victim.crash()

	survivorHost := survivor.inspect("r0").Status.Host
	if survivorHost == victimHost {
		survivorHost = map[bool]string{true: "it-a-" + suffix, false: "it-b-" + suffix}[victim == pb]
	}
	survivor.eventually("every instance to run on the surviving host", 60*time.Second, func() bool {
		for _, n := range names {
			in := survivor.inspect(n)
			if in.Status.Host != survivorHost || in.Status.Phase != api.PhaseRunning {
				return false
			}
		}
		return true
	})
	t.Logf("all instances running on %s %.1f s after the kill (lease TTL 5 s)", survivorHost, time.Since(killed).Seconds())
	var moved []api.Instance
	for _, n := range names {
		if before[n].Status.Host == victimHost {
			in := survivor.inspect(n)
			if in.UID == before[n].UID {
				t.Fatalf("%s moved from the dead host but kept its UID", n)
			}
			moved = append(moved, before[n])
		}
	}
	if len(moved) != 2 {
		t.Fatalf("%d instances moved, want 2", len(moved))
	}

	// The killed process comes back: its containers of the moved
	// instances are removed, nothing else of them runs there.
	victim.start()
	victim.eventually("the old copies to be gone from the returning host", 60*time.Second, func() bool {
		tasks := victim.ctr("tasks", "ls")
		for _, in := range moved {
			if strings.Contains(tasks, in.UID) || syscall.Kill(in.Status.Containers[0].PID, 0) == nil {
				return false
			}
		}
		return true
	})
	victim.eventually("the returning host to be Ready", 30*time.Second, func() bool {
		return strings.Contains(victim.must("host", "ls"), victimHost+"   Ready")
	})
	for _, n := range names {
		if in := survivor.inspect(n); in.Status.Host != survivorHost || in.Status.Phase != api.PhaseRunning {
			t.Fatalf("%s after the host came back: %s on %s", n, in.Status.Phase, in.Status.Host)
		}
	}
	// Each platform removes what runs on its own host: its API reaches
	// only its own agent for the teardown wait, and both agents act on
	// the shared store.
	for _, n := range names {
		survivor.must("rm", "-f", n)
	}
}

// electionLeader returns the ID of the control-plane leader: the value of
// the oldest key under the election prefix.
func electionLeader(t *testing.T, endpoints []string) string {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(t.Context(), "/kanga/election/controlplane/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("election keys: %+v, %v", resp, err)
	}
	return string(resp.Kvs[0].Value)
}
