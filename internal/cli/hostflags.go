package cli

import (
	"github.com/spf13/pflag"

	"github.com/kanga-run/kanga/internal/agent"
	"github.com/kanga-run/kanga/internal/agent/fill"
	"github.com/kanga-run/kanga/internal/agent/warm"
	"github.com/kanga-run/kanga/internal/assembly/host"
)

// addHostFlags adds the flags of a host's settings; kanga up and kanga
// agent share them (the ports and security policy come from policyFlags).
func addHostFlags(f *pflag.FlagSet, o *host.Options) {
	f.StringVar(&o.HostName, "host-name", "", "name of this host (default: the hostname)")
	f.StringVar(&o.Bridge, "bridge", "", "bridge for instance networking (default kanga0)")
	f.StringVar(&o.Subnet, "subnet", "", "subnet for instance IPs (default 10.211.0.0/16)")
	f.StringArrayVar(&o.InsecureRegistries, "insecure-registry", nil, "a registry (HOST:PORT, or HOST) that pulls may reach although it is on a loopback, link-local, private or this host's own address, spoken to over HTTPS without verification or plain HTTP; repeat for more. Nothing is allowed by default")
	f.BoolVar(&o.Isolation, "network-isolation", true, "keep tenants' instances apart and away from the host's services, with ARP/IP anti-spoofing and the tenants' network policies (nftables); =false gives a plain bridge where every instance reaches every other and the host")
	f.IntVar(&o.Pool.Min, "pool-min", fill.DefaultMin, "network sandboxes kept ready even when idle")
	f.IntVar(&o.Pool.Max, "pool-max", fill.DefaultMax, "most network sandboxes kept ready; 0 turns the warm pool off")
	f.DurationVar(&o.Pool.Window, "pool-window", fill.DefaultWindow, "how far back the pool counts creates to size itself, and how long it waits idle before shrinking to --pool-min")
	f.IntVar(&o.Warm.Max, "warm-max", 0, "warm containers (created and started ahead, see bin/kanga-init) kept per tenant, image and runtime class; 0 turns them off")
	f.IntVar(&o.Warm.Min, "warm-min", warm.DefaultMin, "warm containers kept per tenant, image and class while it had creates within --pool-window")
	f.IntVar(&o.WarmTotal, "warm-total", warm.DefaultTotal, "most warm containers kept on the host")
	f.StringVar(&o.CgroupRoot, "cgroup-root", agent.DefaultCgroupRoot, "parent of the instances' cgroups in each cgroup v1 hierarchy (tenant cgroups below it); agents sharing one machine need one each")
	f.IntVar(&o.StartSlots, "start-slots", 0, "most instance starts the host runs at once; more wait their turn, Pending. The host reports it (kanga host ls) and the API admits creates up to the ready hosts' sum. 0: twice the host's cores")
	f.IntVar(&o.RootCPUShares, "instances-cpu-shares", agent.DefaultRootCPUShares, "cpu.shares of the instances' cgroup root (--cgroup-root): the weight of all instances together against each Kanga thread (1024), so that busy instances cannot starve the API, etcd and the lease keep-alives; idle CPU still goes to the instances. -1: the kernel's default (1024)")
	f.StringArrayVar(&o.CDISpecDirs, "cdi-spec-dir", nil, "a directory of Container Device Interface specs describing the devices this host offers to instances (--device); repeat for more. Default /etc/cdi and /var/run/cdi")
	f.BoolVar(&o.UserNS, "userns", false, "run crun containers in a user namespace: container root is an unprivileged host id (runc 1.1 cannot exec into them; see bench/sandbox-hardening.md)")
}
