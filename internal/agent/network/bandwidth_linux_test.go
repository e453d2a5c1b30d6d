package network

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	cnins "github.com/containernetworking/plugins/pkg/ns"
)

// measureFor is how long each transfer runs; long enough that the
// shaper's burst is a small part of what a limited transfer carries.
const measureFor = 3500 * time.Millisecond

// inNetNS runs fn with the calling goroutine's OS thread in the namespace
// at nsPath (host namespace when nsPath is ""). Sockets keep the namespace
// they were made in, so the listener or connection fn returns can be used
// from any goroutine.
func inNetNS[T any](nsPath string, fn func() (T, error)) (T, error) {
	if nsPath == "" {
		return fn()
	}
	var v T
	err := cnins.WithNetNSPath(nsPath, func(cnins.NetNS) error {
		var err error
		v, err = fn()
		return err
	})
	return v, err
}

// transfer streams zeros from a connection dialled in fromNS to a listener
// on host (an address of toNS) for measureFor, and returns the bytes received and
// the rate the receiver saw, in bits/s, counted from when it accepted the
// connection (so a shaper's initial burst counts against the rate, as a
// user of the instance would see it).
func transfer(t *testing.T, fromNS, toNS, host string) (int64, float64) {
	t.Helper()
	l, err := inNetNS(toNS, func() (net.Listener, error) { return net.Listen("tcp", net.JoinHostPort(host, "0")) })
	if err != nil {
		t.Fatalf("listen on %s: %v", host, err)
	}
	defer l.Close()

	type result struct {
		n       int64
		elapsed time.Duration
		err     error
	}
	done := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		start := time.Now()
		// Bounds the test if the sender stalls; not part of the measurement.
		c.SetDeadline(start.Add(measureFor + 30*time.Second))
		buf := make([]byte, 256<<10)
		var n int64
		for time.Since(start) < measureFor {
			k, err := c.Read(buf)
			n += int64(k)
			if err != nil {
				done <- result{n, time.Since(start), err}
				return
			}
		}
		done <- result{n, time.Since(start), nil}
	}()

	addr := l.Addr().String()
	c, err := inNetNS(fromNS, func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) })
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	go func() {
		defer c.Close()
		buf := make([]byte, 64<<10)
		c.SetDeadline(time.Now().Add(measureFor + 30*time.Second))
		for {
			// Fails once the receiver closes: the end of the transfer.
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("receive from %s: %v after %d bytes", addr, r.err, r.n)
	}
	return r.n, float64(r.n) * 8 / r.elapsed.Seconds()
}

func withinTolerance(got, want, tol float64) bool {
	return got >= want*(1-tol) && got <= want*(1+tol)
}

// links lists the host's interface names.
func links(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("ip link: %v", err)
	}
	return string(out)
}

func cachedHostLinks(t *testing.T, m *Manager, id string) (veth, ifb string) {
	t.Helper()
	r, err := m.cni.GetNetworkListCachedResult(m.list, m.runtimeConf(id, m.NetNSPath(id), nil, Limits{}))
	if err != nil || r == nil {
		t.Fatalf("cached result of %s: %v, %v", id, r, err)
	}
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return hostLinks(res, testBridge)
}

// TestBandwidthShaping measures the kernel's enforcement of the bandwidth
// plugin's shapers: one instance limited to 8 Mbit/s out of it, one limited
// to 8 Mbit/s into it. Each limited direction must measure within 15% of 8
// Mbit/s, and each instance's other, unlimited direction at least 5x that,
// which also shows that the plugin's ingress/egress map onto "into" and
// "out of" the instance as Limits says.
func TestBandwidthShaping(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	cfg := testConfig(t)
	m := newTestManager(t, cfg)

	const rate = 8_000_000
	const tolerance = 0.15
	outID := fmt.Sprintf("kt-%d-bwout", os.Getpid())
	inID := fmt.Sprintf("kt-%d-bwin", os.Getpid())
	outAtt, err := m.Setup(ctx, outID, nil, Limits{EgressBPS: rate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, outID, nil) })
	inAtt, err := m.Setup(ctx, inID, nil, Limits{IngressBPS: rate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, inID, nil) })

	// Out of an instance: the instance sends to a listener on the host's
	// bridge address. Into it: the host sends to a listener in the instance.
	out := func(att *Attachment) (int64, float64) {
		return transfer(t, att.NetNS, "", att.Gateway)
	}
	into := func(att *Attachment) (int64, float64) {
		return transfer(t, "", att.NetNS, att.IP)
	}
	outLimitedN, outLimited := out(outAtt)
	outFreeN, outFree := out(inAtt)
	inLimitedN, inLimited := into(inAtt)
	inFreeN, inFree := into(outAtt)
	t.Logf("out of instance: limited %.2f Mbit/s (%d bytes), unlimited %.1f Mbit/s (%d bytes)",
		outLimited/1e6, outLimitedN, outFree/1e6, outFreeN)
	t.Logf("into instance:   limited %.2f Mbit/s (%d bytes), unlimited %.1f Mbit/s (%d bytes)",
		inLimited/1e6, inLimitedN, inFree/1e6, inFreeN)

	for _, c := range []struct {
		dir           string
		limited, free float64
	}{{"out of", outLimited, outFree}, {"into", inLimited, inFree}} {
		if !withinTolerance(c.limited, rate, tolerance) {
			t.Errorf("%s an instance limited to 8 Mbit/s: measured %.2f Mbit/s, want within %.0f%%", c.dir, c.limited/1e6, tolerance*100)
		}
		if c.free < 5*c.limited {
			t.Errorf("%s an unlimited instance: %.2f Mbit/s, want at least 5x the limited %.2f Mbit/s", c.dir, c.free/1e6, c.limited/1e6)
		}
	}

	// Stats sees the transfers from the instance's side, and the shaper
	// of the limited direction only.
	outStats, err := m.Stats(ctx, outID)
	if err != nil {
		t.Fatal(err)
	}
	inStats, err := m.Stats(ctx, inID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats: egress-limited %+v; ingress-limited %+v", outStats, inStats)
	if outStats.TxBytes < uint64(outLimitedN) || outStats.RxBytes < uint64(inFreeN) {
		t.Errorf("egress-limited instance stats %+v, want tx >= %d, rx >= %d", outStats, outLimitedN, inFreeN)
	}
	if inStats.RxBytes < uint64(inLimitedN) || inStats.TxBytes < uint64(outFreeN) {
		t.Errorf("ingress-limited instance stats %+v, want rx >= %d, tx >= %d", inStats, inLimitedN, outFreeN)
	}
	if outStats.EgressOverlimits == 0 || outStats.IngressOverlimits != 0 {
		t.Errorf("egress-limited instance overlimits %+v, want egress only", outStats)
	}
	if inStats.IngressOverlimits == 0 || inStats.EgressOverlimits != 0 {
		t.Errorf("ingress-limited instance overlimits %+v, want ingress only", inStats)
	}
	if _, err := m.Stats(ctx, "kt-unknown"); err == nil {
		t.Error("Stats of an unknown instance succeeded")
	}
}

// Teardown removes the shaper's ifb and the host veth that carried the
// qdiscs, also when a restarted agent tears down from libcni's cache.
func TestBandwidthTeardown(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	cfg := testConfig(t)
	m := newTestManager(t, cfg)
	limits := Limits{IngressBPS: 8_000_000, EgressBPS: 8_000_000}

	for _, restart := range []bool{false, true} {
		id := fmt.Sprintf("kt-%d-bwtd-%t", os.Getpid(), restart)
		att, err := m.Setup(ctx, id, nil, limits)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Teardown(ctx, id, nil) })
		veth, ifb := cachedHostLinks(t, m, id)
		if veth == "" || ifb == "" {
			t.Fatalf("CNI result names veth %q, ifb %q", veth, ifb)
		}
		// Without ports the attachment has no use for portmap.
		conf, _, err := m.cni.GetNetworkListCachedConfig(m.list, m.runtimeConf(id, att.NetNS, nil, Limits{}))
		if err != nil || !strings.Contains(string(conf), `"bandwidth"`) || strings.Contains(string(conf), `"portmap"`) {
			t.Errorf("cached config of a limits-only attachment (err %v):\n%s", err, conf)
		}
		ls := links(t)
		if !strings.Contains(ls, " "+veth+"@") || !strings.Contains(ls, " "+ifb+":") {
			t.Fatalf("veth %s or ifb %s missing after Setup:\n%s", veth, ifb, ls)
		}
		for dev, kind := range map[string]string{veth: "qdisc tbf", ifb: "qdisc tbf"} {
			out, _ := exec.Command("tc", "qdisc", "show", "dev", dev).Output()
			if !strings.Contains(string(out), kind) {
				t.Errorf("no %s on %s: %s", kind, dev, out)
			}
		}

		td := m
		if restart {
			if td, err = New(cfg); err != nil {
				t.Fatal(err)
			}
		}
		if err := td.Teardown(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
		assertReleased(t, td, id, att)
		ls = links(t)
		for _, l := range []string{veth, ifb} {
			if strings.Contains(ls, " "+l+"@") || strings.Contains(ls, " "+l+":") {
				t.Errorf("restart=%t: link %s left after Teardown", restart, l)
			}
		}
	}
}

func TestSetupRejectsBadLimits(t *testing.T) {
	m := &Manager{}
	if _, err := m.Setup(context.Background(), "kt-x", nil, Limits{EgressBPS: -5}); err == nil {
		t.Error("Setup accepted a negative limit")
	}
}
