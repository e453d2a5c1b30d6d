package integration

import (
	"context"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

// cutLease takes host's lease away in the etcd of dataDir (embedded, on
// its unix socket) each time the host takes one, for d: the host's lease
// lapses again and again, as when etcd is starved, while the host and its
// link run on. It returns how many leases it revoked.
func cutLease(t *testing.T, dataDir, host string, d time.Duration) int {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(dataDir, "etcd.sock")}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	cuts := 0
	for ctx.Err() == nil {
		resp, err := cli.Get(ctx, "/kanga/hostleases/"+host)
		if err == nil && len(resp.Kvs) > 0 && resp.Kvs[0].Lease != 0 {
			if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err == nil {
				cuts++
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return cuts
}

// sdkOf returns an API client from a client config file.
func sdkOf(t *testing.T, config string) *client.Client {
	t.Helper()
	cfg, err := client.LoadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cfg.Options()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg.Addr, cfg.Token, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// lapse cuts host's lease for 10 s while it records the host conditions
// the API shows meanwhile.
func lapse(t *testing.T, dataDir, config, host string) (cuts int, conditions []string) {
	t.Helper()
	sdk := sdkOf(t, config)
	var done atomic.Bool
	seen := make(chan []string, 1)
	go func() {
		var conds []string
		for !done.Load() {
			if hs, err := sdk.ListHosts(t.Context()); err == nil {
				for _, h := range hs {
					if h.Name == host && h.Status.Condition != "" && !slices.Contains(conds, h.Status.Condition) {
						conds = append(conds, h.Status.Condition)
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		seen <- conds
	}()
	cuts = cutLease(t, dataDir, host, 10*time.Second)
	done.Store(true)
	return cuts, <-seen
}

// TestUpLeaseLapseKeepsInstances: kanga up's own host loses its lease
// again and again for 10 s (revoked in its etcd, as when etcd starves):
// its instance keeps its UID and process, and the host shows LeaseLapsed.
// With the safeguards off the same cut re-creates the instance, which is
// what the safeguards prevent.
func TestUpLeaseLapseKeepsInstances(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		kept bool
	}{
		{"safeguards", nil, true},
		{"no-safeguards", []string{"--failure-safeguards=false"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startPlatformWith(t, append([]string{"--pool-max", "0", "--host-name", "lapse-" + tc.name}, tc.args...)...)
			p.importImages()
			p.must("run", "-d", "--name", "web", "--restart", "always", "kanga.test/busybox", "sleep", "1000")
			before := p.inspect("web")
			if before.Status.Phase != api.PhaseRunning || before.Status.Containers[0].PID == 0 {
				t.Fatalf("web before the cut: %s pid %d", before.Status.Phase, before.Status.Containers[0].PID)
			}
			host := before.Status.Host
			cuts, conds := lapse(t, p.dataDir, p.config, host)
			t.Logf("revoked %d leases of %s in 10 s; conditions seen: %v", cuts, host, conds)
			if cuts == 0 {
				t.Fatal("no lease was cut")
			}
			p.eventually("the host to be Ready again", 60*time.Second, func() bool {
				hs, err := sdkOf(t, p.config).ListHosts(t.Context())
				return err == nil && len(hs) == 1 && hs[0].Status.Phase == api.HostReady
			})
			if !tc.kept {
				p.eventually("web to be re-created", 60*time.Second, func() bool { return p.inspect("web").UID != before.UID })
				return
			}
			if !slices.Contains(conds, api.HostLeaseLapsed) {
				t.Fatalf("the host never showed %s while its lease was cut (saw %v)", api.HostLeaseLapsed, conds)
			}
			after := p.inspect("web")
			if after.UID != before.UID || after.Status.Phase != api.PhaseRunning || after.Status.Containers[0].PID != before.Status.Containers[0].PID {
				t.Fatalf("web after the cut: uid %s %s pid %d; before: uid %s pid %d", after.UID, after.Status.Phase,
					after.Status.Containers[0].PID, before.UID, before.Status.Containers[0].PID)
			}
			for _, ev := range after.Status.Events {
				if ev.Reason == "Lost" {
					t.Fatalf("web has a Lost event: %+v", ev)
				}
			}
		})
	}
}

// TestMultiHostLeaseLapsedLinkUp: an agent's lease lapses again and again
// for 10 s (revoked in the server's etcd) while its link stays up: its
// instances keep their UIDs and processes, and the host shows
// LeaseLapsed. With the safeguards off, the same cut re-creates them.
func TestMultiHostLeaseLapsedLinkUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		kept bool
	}{
		{"safeguards", nil, true},
		{"no-safeguards", []string{"--failure-safeguards=false"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startPoolWith(t, map[string]string{"mh-a": "a", "mh-b": "b"}, tc.args, nil)
			p.importEverywhere()
			// Both instances start on mh-a (mh-b cordoned), and could move.
			p.must("host", "cordon", "mh-b")
			names := []string{"web1", "web2"}
			before := map[string]api.Instance{}
			for _, n := range names {
				p.must("run", "-d", "--name", n, "--restart", "always", "kanga.test/busybox", "sleep", "1000")
				p.eventually(n+" to run", 60*time.Second, func() bool { return p.get(n).Status.Phase == api.PhaseRunning })
				before[n] = p.get(n)
				if before[n].Status.Host != "mh-a" {
					t.Fatalf("%s runs on %q with mh-b cordoned", n, before[n].Status.Host)
				}
			}
			p.must("host", "uncordon", "mh-b")

			cuts, conds := lapse(t, p.dataDir, p.config, "mh-a")
			t.Logf("revoked %d leases of mh-a in 10 s; conditions seen: %v", cuts, conds)
			if cuts == 0 {
				t.Fatal("no lease was cut")
			}
			p.waitReady("mh-a")
			if !tc.kept {
				p.eventually("web1 to be re-created", 60*time.Second, func() bool { return p.get("web1").UID != before["web1"].UID })
				return
			}
			if !slices.Contains(conds, api.HostLeaseLapsed) {
				t.Fatalf("mh-a never showed %s while its lease was cut (saw %v)", api.HostLeaseLapsed, conds)
			}
			for _, n := range names {
				a, b := p.get(n), before[n]
				if a.UID != b.UID || a.Status.Host != "mh-a" || a.Status.Phase != api.PhaseRunning ||
					a.Status.Containers[0].PID != b.Status.Containers[0].PID {
					t.Errorf("%s after the cut: uid %s on %s %s pid %d; before: uid %s pid %d", n, a.UID, a.Status.Host,
						a.Status.Phase, a.Status.Containers[0].PID, b.UID, b.Status.Containers[0].PID)
				}
			}
		})
	}
}
