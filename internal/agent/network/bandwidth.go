package network

import (
	"context"
	"fmt"
	"strings"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/kanga-run/kanga/errdefs"
)

// Limits caps an instance's bandwidth, in bits per second; 0 is unlimited.
// Directions are the instance's: Ingress is traffic into the instance,
// Egress traffic out of it.
type Limits struct {
	IngressBPS int64
	EgressBPS  int64
}

// Stats are an instance's network counters, cumulative since its
// attachment was set up, seen from the instance: RxBytes were received by
// the instance, TxBytes sent by it. Both are read on the host end of the
// veth, so TxBytes includes what the egress shaper then dropped (and TCP
// sent again), and RxBytes excludes what the ingress shaper dropped.
type Stats struct {
	RxBytes uint64
	TxBytes uint64
	// IngressOverlimits and EgressOverlimits count the times the shaper
	// of that direction held a packet back because the instance had used
	// up its rate: non-zero means the instance wanted more than its limit.
	// They stay 0 in an unlimited direction.
	IngressOverlimits uint64
	EgressOverlimits  uint64
}

// The bandwidth plugin turns a rate and a burst into a token bucket (tbf)
// with a bucket of burst bytes and a queue of rate*25ms + burst bytes.
//
// The burst is what a sender gets for free after idling, so it inflates
// any measurement of the rate and must stay small next to what a few
// seconds at the rate carry: 50ms at the rate adds under 2% to a 3-second
// transfer, yet keeps the queue long enough that TCP through it keeps the
// link busy (measured: 7.76 Mbit/s of TCP payload through an 8 Mbit/s
// limit, in both directions; the rest is header overhead). The bucket
// must also hold a whole packet or tbf drops it, hence minBurstBytes for
// low rates where 50ms is less than a few full-size frames.
const (
	burstWindowMillis = 50
	minBurstBytes     = 16 << 10
)

// burstBits is the burst, in bits, the plugin gets for rate bits/s.
func burstBits(rate int64) uint64 {
	b := uint64(rate) * burstWindowMillis / 1000
	if b < minBurstBytes*8 {
		b = minBurstBytes * 8
	}
	return b
}

// maxRate keeps the plugin's arithmetic in range: it converts the burst to
// bytes and then to a uint32 number of scheduler ticks.
const maxRate = 100_000_000_000 // 100 Gbit/s

func (l Limits) validate() error {
	for _, r := range []struct {
		name string
		bps  int64
	}{{"ingress", l.IngressBPS}, {"egress", l.EgressBPS}} {
		if r.bps < 0 || r.bps > maxRate {
			return fmt.Errorf("network: %s bandwidth %d bit/s out of range 0-%d: %w", r.name, r.bps, int64(maxRate), errdefs.ErrInvalidArgument)
		}
		if r.bps > 0 && r.bps < minRate {
			return fmt.Errorf("network: %s bandwidth %d bit/s is below the minimum of %d bit/s: %w", r.name, r.bps, minRate, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// minRate is the slowest rate tbf handles sensibly: below it the minimum
// burst would be seconds of traffic.
const minRate = 8_000 // 8 kbit/s

// bandwidthArgs is the "bandwidth" capability argument for the plugin, or
// nil when both directions are unlimited. The plugin's own naming matches
// Kanga's: its ingress is shaped on the host end of the veth (traffic into
// the instance), its egress on an ifb device fed from that end's ingress
// (traffic out of the instance).
func (l Limits) bandwidthArgs() map[string]any {
	if l.IngressBPS == 0 && l.EgressBPS == 0 {
		return nil
	}
	args := map[string]any{}
	if l.IngressBPS > 0 {
		args["ingressRate"] = l.IngressBPS
		args["ingressBurst"] = burstBits(l.IngressBPS)
	}
	if l.EgressBPS > 0 {
		args["egressRate"] = l.EgressBPS
		args["egressBurst"] = burstBits(l.EgressBPS)
	}
	return args
}

// ifbPrefix names the bandwidth plugin's ifb devices.
const ifbPrefix = "bwp"

// hostLinks finds, in a CNI result, the host end of the instance's veth and
// the ifb device that shapes its egress ("" when egress is unlimited). The
// bridge plugin reports the bridge, the host veth and the instance's
// interface; the bandwidth plugin appends its ifb. Only the instance's
// interface has a sandbox.
func hostLinks(res *types100.Result, bridge string) (veth, ifb string) {
	for _, iface := range res.Interfaces {
		switch {
		case iface.Sandbox != "" || iface.Name == bridge:
		case strings.HasPrefix(iface.Name, ifbPrefix):
			ifb = iface.Name
		case veth == "":
			veth = iface.Name
		}
	}
	return veth, ifb
}

// Counters is one reading of every interface and token-bucket shaper on
// the host, taken with two netlink dumps. The kernel has no way to ask for
// one device's qdiscs (a qdisc dump walks every device; `tc qdisc show dev`
// filters afterwards), so reading instances one by one costs O(n) each and
// O(n²) a round. Sampling reads the counters once per round and looks each
// instance up in them (issue 22: per-instance `tc` processes were the
// largest CPU cost of a host with a few hundred instances).
type Counters struct {
	// At is when the reading was taken.
	At    time.Time
	links map[string]linkCounters
	// tbf sums the overlimits of the tbf qdiscs on each interface, by
	// interface index.
	tbf map[int]uint64
}

type linkCounters struct {
	index   int
	rx, tx  uint64
	present bool
}

// ReadCounters reads the counters of every interface and shaper.
func (m *Manager) ReadCounters() (*Counters, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("network: list interfaces: %w", err)
	}
	qdiscs, err := netlink.QdiscList(nil)
	if err != nil {
		return nil, fmt.Errorf("network: list qdiscs: %w", err)
	}
	c := &Counters{At: time.Now(), links: make(map[string]linkCounters, len(links)), tbf: map[int]uint64{}}
	for _, l := range links {
		a := l.Attrs()
		lc := linkCounters{index: a.Index, present: true}
		if st := a.Statistics; st != nil {
			lc.rx, lc.tx = st.RxBytes, st.TxBytes
		}
		c.links[a.Name] = lc
	}
	for _, q := range qdiscs {
		a := q.Attrs()
		if q.Type() != "tbf" || a.Statistics == nil || a.Statistics.Queue == nil {
			continue
		}
		c.tbf[a.LinkIndex] += uint64(a.Statistics.Queue.Overlimits)
	}
	return c, nil
}

// Stats reads the counters of instance id's interface and shapers.
func (m *Manager) Stats(ctx context.Context, id string) (Stats, error) {
	c, err := m.ReadCounters()
	if err != nil {
		return Stats{}, err
	}
	return m.StatsFrom(c, id)
}

// StatsFrom looks instance id's interface and shapers up in c.
func (m *Manager) StatsFrom(c *Counters, id string) (Stats, error) {
	veth, ifb, err := m.hostLinksOf(id)
	if err != nil {
		return Stats{}, err
	}
	v := c.links[veth]
	if !v.present {
		return Stats{}, fmt.Errorf("network: interface %s of %s: %w", veth, id, errdefs.ErrNotFound)
	}
	// The host end sends what the instance receives and vice versa.
	st := Stats{RxBytes: v.tx, TxBytes: v.rx, IngressOverlimits: c.tbf[v.index]}
	if ifb != "" {
		if i := c.links[ifb]; i.present {
			st.EgressOverlimits = c.tbf[i.index]
		}
	}
	return st, nil
}

// hostLinksOf returns the host-side interfaces of attachment id: its veth
// and, with an egress limit, its ifb. They are read from libcni's cache
// once and remembered until the attachment is set up again or torn down.
func (m *Manager) hostLinksOf(id string) (veth, ifb string, err error) {
	if err := checkID(id); err != nil {
		return "", "", err
	}
	m.linksMu.Lock()
	hl, ok := m.links[id]
	m.linksMu.Unlock()
	if ok {
		return hl[0], hl[1], nil
	}
	unlock := m.mu.lock(id)
	defer unlock()
	r, err := m.cni.GetNetworkListCachedResult(m.list, m.runtimeConf(id, m.NetNSPath(id), nil, Limits{}))
	if err != nil {
		return "", "", fmt.Errorf("network: stats of %s: %w", id, err)
	}
	if r == nil {
		return "", "", fmt.Errorf("network: %s has no attachment: %w", id, errdefs.ErrNotFound)
	}
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return "", "", fmt.Errorf("network: stats of %s: convert CNI result: %w", id, err)
	}
	veth, ifb = hostLinks(res, m.cfg.Bridge)
	if veth == "" {
		return "", "", fmt.Errorf("network: CNI result of %s names no host veth: %w", id, errdefs.ErrNotFound)
	}
	m.linksMu.Lock()
	if m.links == nil {
		m.links = map[string][2]string{}
	}
	m.links[id] = [2]string{veth, ifb}
	m.linksMu.Unlock()
	return veth, ifb, nil
}

// forgetLinks drops what hostLinksOf remembers of id; the caller holds
// id's lock.
func (m *Manager) forgetLinks(id string) {
	m.linksMu.Lock()
	delete(m.links, id)
	m.linksMu.Unlock()
}
