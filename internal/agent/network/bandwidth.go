package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	types100 "github.com/containernetworking/cni/pkg/types/100"

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

// Stats reads the counters of instance id's interface and shapers.
func (m *Manager) Stats(ctx context.Context, id string) (Stats, error) {
	if err := checkID(id); err != nil {
		return Stats{}, err
	}
	unlock := m.mu.lock(id)
	defer unlock()
	r, err := m.cni.GetNetworkListCachedResult(m.list, m.runtimeConf(id, m.NetNSPath(id), nil, Limits{}))
	if err != nil {
		return Stats{}, fmt.Errorf("network: stats of %s: %w", id, err)
	}
	if r == nil {
		return Stats{}, fmt.Errorf("network: %s has no attachment: %w", id, errdefs.ErrNotFound)
	}
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return Stats{}, fmt.Errorf("network: stats of %s: convert CNI result: %w", id, err)
	}
	veth, ifb := hostLinks(res, m.cfg.Bridge)
	if veth == "" {
		return Stats{}, fmt.Errorf("network: CNI result of %s names no host veth: %w", id, errdefs.ErrNotFound)
	}
	var st Stats
	// The host end sends what the instance receives and vice versa.
	if st.RxBytes, err = linkCounter(veth, "tx_bytes"); err != nil {
		return Stats{}, err
	}
	if st.TxBytes, err = linkCounter(veth, "rx_bytes"); err != nil {
		return Stats{}, err
	}
	if st.IngressOverlimits, err = tbfOverlimits(ctx, veth); err != nil {
		return Stats{}, err
	}
	if ifb != "" {
		if st.EgressOverlimits, err = tbfOverlimits(ctx, ifb); err != nil {
			return Stats{}, err
		}
	}
	return st, nil
}

func linkCounter(link, name string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join("/sys/class/net", link, "statistics", name))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("network: interface %s: %w", link, errdefs.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("network: read %s counter of %s: %w", name, link, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("network: parse %s counter of %s: %w", name, link, err)
	}
	return n, nil
}

// tbfOverlimits sums the overlimits of the token-bucket qdiscs on link;
// a link without one has 0.
func tbfOverlimits(ctx context.Context, link string) (uint64, error) {
	out, err := exec.CommandContext(ctx, "tc", "-s", "-j", "qdisc", "show", "dev", link).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return 0, fmt.Errorf("network: tc qdisc show dev %s: %w: %s", link, err, ee.Stderr)
		}
		return 0, fmt.Errorf("network: tc qdisc show dev %s: %w", link, err)
	}
	return parseTBFOverlimits(out)
}

func parseTBFOverlimits(tcJSON []byte) (uint64, error) {
	var qdiscs []struct {
		Kind       string `json:"kind"`
		Overlimits uint64 `json:"overlimits"`
	}
	if err := json.Unmarshal(tcJSON, &qdiscs); err != nil {
		return 0, fmt.Errorf("network: parse tc output: %w", err)
	}
	var n uint64
	for _, q := range qdiscs {
		if q.Kind == "tbf" && n <= math.MaxUint64-q.Overlimits {
			n += q.Overlimits
		}
	}
	return n, nil
}
