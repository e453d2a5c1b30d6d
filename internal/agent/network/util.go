package network

import (
	"context"
	"crypto/sha512"
	"fmt"
	"os/exec"
	"sync"

	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// idLocks serialises operations per instance ID without making unrelated
// instances wait on each other's CNI calls.
type idLocks struct {
	mu    sync.Mutex
	locks map[string]*idLock
}

type idLock struct {
	mu   sync.Mutex
	refs int
}

func (l *idLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*idLock{}
	}
	il := l.locks[id]
	if il == nil {
		il = &idLock{}
		l.locks[id] = il
	}
	il.refs++
	l.mu.Unlock()

	il.mu.Lock()
	return func() {
		il.mu.Unlock()
		l.mu.Lock()
		if il.refs--; il.refs == 0 {
			delete(l.locks, id)
		}
		l.mu.Unlock()
	}
}

// teardownIPMasq removes the per-instance masquerade chain the bridge plugin
// created at ADD with ipMasq: true, which agents before the subnet-wide
// masquerade (masq.go) configured. The plugin only does this itself when it can
// read the address from the interface inside the namespace; when the
// namespace is already gone the chain would leak. Names and rule shape
// follow containernetworking/plugins pkg/utils and pkg/ip.TeardownIPMasq.
func teardownIPMasq(ctx context.Context, netName, id string, res *types100.Result) error {
	chain := fmt.Sprintf("CNI-%x", sha512.Sum512([]byte(netName+id)))[:28]
	comment := fmt.Sprintf("name: %q id: %q", netName, id)
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() == nil {
			continue
		}
		for _, src := range []string{ipc.Address.IP.String(), ipc.Address.String()} {
			// Fails when the rule is absent, which is the common case.
			_ = iptables(ctx, "-t", "nat", "-D", "POSTROUTING", "-s", src, "-j", chain, "-m", "comment", "--comment", comment)
		}
	}
	if iptables(ctx, "-t", "nat", "-n", "-L", chain) != nil {
		return nil // no such chain
	}
	if err := iptables(ctx, "-t", "nat", "-F", chain); err != nil {
		return err
	}
	return iptables(ctx, "-t", "nat", "-X", chain)
}

func iptables(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %v: %w: %s", args, err, out)
	}
	return nil
}
