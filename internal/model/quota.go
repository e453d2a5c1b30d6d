package model

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// DefaultQuota is the platform's default quota for new tenants (kanga up
// and kanga server --default-quota): no tenant can reserve more than half
// of the pool's CPU or memory, so one tenant alone never leaves another's
// smallest instance waiting; 100 instances and 20 published ports bound
// what a tenant keeps in the store and on the hosts' port space. The
// `default` tenant of kanga up, the operator's own, has no quota unless
// one is set.
const DefaultQuota = "instances=100,cpu=50%,memory=50%,ports=20"

// QuotaCharge is what an instance counts against its tenant's quota from
// its creation until its removal: one instance, the CPU and memory it
// reserves (a CPU cap alone reserves nothing), its published ports.
// Volumes and devices count once instances can have them.
func QuotaCharge(spec *api.InstanceSpec) api.QuotaAmounts {
	// A field that does not parse (no validated spec has one) charges 0.
	r, _ := ParseResources(spec.Resources)
	return ChargeOf(r, len(spec.Ports))
}

// ChargeOf is QuotaCharge of an instance whose resources are already
// parsed (r) and which publishes ports host ports.
func ChargeOf(r Resources, ports int) api.QuotaAmounts {
	return api.QuotaAmounts{Instances: 1, Ports: int64(ports), MilliCPU: r.MilliCPU, MemoryBytes: r.Memory, DiskBytes: r.Disk}
}

// Add returns a+b field by field.
func Add(a, b api.QuotaAmounts) api.QuotaAmounts {
	return api.QuotaAmounts{
		Instances: a.Instances + b.Instances, MilliCPU: a.MilliCPU + b.MilliCPU, MemoryBytes: a.MemoryBytes + b.MemoryBytes,
		Ports: a.Ports + b.Ports, Volumes: a.Volumes + b.Volumes, Devices: a.Devices + b.Devices,
		DiskBytes: a.DiskBytes + b.DiskBytes,
	}
}

// Sub returns a-b field by field.
func Sub(a, b api.QuotaAmounts) api.QuotaAmounts {
	return Add(a, api.QuotaAmounts{
		Instances: -b.Instances, MilliCPU: -b.MilliCPU, MemoryBytes: -b.MemoryBytes,
		Ports: -b.Ports, Volumes: -b.Volumes, Devices: -b.Devices, DiskBytes: -b.DiskBytes,
	})
}

// NoLimits are limits that allow everything.
var NoLimits = api.QuotaAmounts{
	Instances: api.Unlimited, MilliCPU: api.Unlimited, MemoryBytes: api.Unlimited,
	Ports: api.Unlimited, Volumes: api.Unlimited, Devices: api.Unlimited, DiskBytes: api.Unlimited,
}

// Share reports whether a quota amount is a share of the pool ("50%") and
// returns the share as a fraction.
func Share(s string) (float64, bool, error) {
	v, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return 0, false, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 100 {
		return 0, true, fmt.Errorf("%q is not a share between 0%% and 100%%: %w", s, errdefs.ErrInvalidArgument)
	}
	return f / 100, true, nil
}

// quotaAmount resolves a quota's amount (parsed by parse) or share of a
// pool of total; "" is no limit.
func quotaAmount(s string, total int64, parse func(string) (int64, error)) (int64, error) {
	if s == "" {
		return api.Unlimited, nil
	}
	if f, ok, err := Share(s); ok || err != nil {
		return int64(f * float64(total)), err
	}
	if strings.TrimSpace(s) == "0" {
		return 0, nil
	}
	return parse(s)
}

func count(p *int64) int64 {
	if p == nil {
		return api.Unlimited
	}
	return *p
}

// ValidateQuota checks every field of q, naming it.
func ValidateQuota(q *api.Quota) error {
	if q == nil {
		return nil
	}
	var errs []error
	if _, err := quotaAmount(q.CPU, 1000, ParseCPU); err != nil {
		errs = append(errs, fmt.Errorf("quota.cpu: %w", err))
	}
	if _, err := quotaAmount(q.Memory, 1<<30, ParseMemory); err != nil {
		errs = append(errs, fmt.Errorf("quota.memory: %w", err))
	}
	if _, share, _ := Share(q.Disk); share {
		errs = append(errs, invalid("quota.disk %q: give an amount (\"100Gi\"), not a share of the pool", truncate(q.Disk)))
	} else if _, err := quotaAmount(q.Disk, 0, ParseMemory); err != nil {
		errs = append(errs, fmt.Errorf("quota.disk: %w", err))
	}
	for _, f := range []struct {
		name string
		v    *int64
	}{{"instances", q.Instances}, {"ports", q.Ports}, {"volumes", q.Volumes}, {"devices", q.Devices}} {
		if f.v != nil && *f.v < 0 {
			errs = append(errs, invalid("quota.%s %d is negative: give a count, or leave it out for no limit", f.name, *f.v))
		}
	}
	return errors.Join(errs...)
}

// ResolveQuota turns q into limits: shares of the pool become amounts of
// the pool's capacity (poolMilliCPU millicores, poolMemory bytes), and
// what q leaves out is api.Unlimited. A nil quota limits nothing.
func ResolveQuota(q *api.Quota, poolMilliCPU, poolMemory int64) (api.QuotaAmounts, error) {
	if q == nil {
		return NoLimits, nil
	}
	if err := ValidateQuota(q); err != nil {
		return api.QuotaAmounts{}, err
	}
	cpu, _ := quotaAmount(q.CPU, poolMilliCPU, ParseCPU)
	mem, _ := quotaAmount(q.Memory, poolMemory, ParseMemory)
	disk, _ := quotaAmount(q.Disk, 0, ParseMemory)
	return api.QuotaAmounts{
		Instances: count(q.Instances), MilliCPU: cpu, MemoryBytes: mem,
		Ports: count(q.Ports), Volumes: count(q.Volumes), Devices: count(q.Devices), DiskBytes: disk,
	}, nil
}

// MergeQuota returns base with the fields set in over replacing its own.
func MergeQuota(base, over *api.Quota) *api.Quota {
	if base == nil && over == nil {
		return nil
	}
	var out api.Quota
	for _, q := range []*api.Quota{base, over} {
		if q == nil {
			continue
		}
		if q.Instances != nil {
			out.Instances = q.Instances
		}
		if q.CPU != "" {
			out.CPU = q.CPU
		}
		if q.Memory != "" {
			out.Memory = q.Memory
		}
		if q.Ports != nil {
			out.Ports = q.Ports
		}
		if q.Volumes != nil {
			out.Volumes = q.Volumes
		}
		if q.Devices != nil {
			out.Devices = q.Devices
		}
		if q.Disk != "" {
			out.Disk = q.Disk
		}
	}
	return &out
}

// ParseQuota parses the operator's notation of a quota,
// "instances=100,cpu=50%,memory=16Gi,ports=20,volumes=N,devices=N,disk=100Gi";
// "none" or "" is no quota (nil).
func ParseQuota(s string) (*api.Quota, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return nil, nil
	}
	var q api.Quota
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return nil, invalid("quota %q: %q is not NAME=VALUE (names: instances, cpu, memory, ports, volumes, devices, disk)", s, kv)
		}
		n := func() (*int64, error) {
			i, err := strconv.ParseInt(v, 10, 64)
			if err != nil || i < 0 {
				return nil, invalid("quota %q: %s=%q is not a count", s, k, v)
			}
			return &i, nil
		}
		var err error
		switch k {
		case "instances":
			q.Instances, err = n()
		case "ports":
			q.Ports, err = n()
		case "volumes":
			q.Volumes, err = n()
		case "devices":
			q.Devices, err = n()
		case "cpu":
			q.CPU = v
		case "memory":
			q.Memory = v
		case "disk":
			q.Disk = v
		default:
			err = invalid("quota %q: unknown resource %q (names: instances, cpu, memory, ports, volumes, devices, disk)", s, k)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := ValidateQuota(&q); err != nil {
		return nil, err
	}
	return &q, nil
}

// CheckQuota fails when adding charge to used would take tenant past
// limits, naming the first such resource, its use and what to do.
func CheckQuota(tenant string, used, charge, limits api.QuotaAmounts) error {
	for _, r := range []struct {
		name, flag        string
		used, want, limit int64
		format            func(int64) string
	}{
		{"instances", "--instances N", used.Instances, charge.Instances, limits.Instances, formatCount},
		{"cpu", "--cpu N", used.MilliCPU, charge.MilliCPU, limits.MilliCPU, FormatMilliCPU},
		{"memory", "--memory N", used.MemoryBytes, charge.MemoryBytes, limits.MemoryBytes, FormatBytes},
		{"ports", "--ports N", used.Ports, charge.Ports, limits.Ports, formatCount},
		{"volumes", "--volumes N", used.Volumes, charge.Volumes, limits.Volumes, formatCount},
		{"devices", "--devices N", used.Devices, charge.Devices, limits.Devices, formatCount},
		{"disk", "--disk N", used.DiskBytes, charge.DiskBytes, limits.DiskBytes, FormatBytes},
	} {
		if r.limit == api.Unlimited || r.want <= 0 || r.used+r.want <= r.limit {
			continue
		}
		asks := ""
		if r.name != "instances" {
			asks = fmt.Sprintf(", this instance asks for %s", r.format(r.want))
		}
		return fmt.Errorf("tenant %s: quota %s %s/%s in use%s; remove instances you no longer need (finished ones count until removed: kanga ps -a), or an administrator can raise it with kanga tenant quota %s %s: %w",
			tenant, r.name, r.format(r.used), r.format(r.limit), asks, tenant, r.flag, errdefs.ErrPermissionDenied)
	}
	return nil
}

func formatCount(n int64) string { return strconv.FormatInt(n, 10) }

// FormatMilliCPU writes millicores as cores: 1500 is "1.5".
func FormatMilliCPU(m int64) string {
	return strconv.FormatFloat(float64(m)/1000, 'f', -1, 64)
}

// FormatBytes writes bytes in binary units with at most two decimals:
// "256Mi", "1.5Gi", "1000".
func FormatBytes(b int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if b >= u.mult {
			v := strconv.FormatFloat(float64(b)/float64(u.mult), 'f', 2, 64)
			return strings.TrimSuffix(strings.TrimRight(v, "0"), ".") + u.suffix
		}
	}
	return strconv.FormatInt(b, 10)
}
