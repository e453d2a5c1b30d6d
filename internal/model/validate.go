// Package model holds the rules about instances that do not depend on any
// I/O: defaults, validation and lifecycle derivation. The server validates
// with it before anything is stored; the agent derives phases with it.
package model

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path"
	"regexp"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// MinMemory is the smallest memory limit runc can start a container in.
const MinMemory = 6 << 20

// Per-instance caps. They keep one spec from costing a host more than an
// instance should (a container is a shim, a cgroup and a snapshot) and
// keep what reaches execve(2) well under its limits: the kernel refuses a
// single argument or variable over 128 KiB (MAX_ARG_STRLEN) and all of
// them over ARG_MAX (2 MiB here) with "argument list too long", after the
// instance was accepted. For comparison: Alibaba ECI allows 20 containers
// per instance, an ECS task definition (Fargate) 10.
const (
	MaxContainers = 20
	// MaxEnvVars, MaxEnvValue and MaxEnvBytes cap each container's
	// environment: the number of variables, one value, and all of
	// NAME=VALUE together.
	MaxEnvVars  = 256
	MaxEnvValue = 32 << 10
	MaxEnvBytes = 64 << 10
	// MaxArg and MaxArgBytes cap each container's command and args: one
	// argument, and all of them together.
	MaxArg      = 32 << 10
	MaxArgBytes = 64 << 10
	MaxArgs     = 1024
	// MaxImageRef, MaxPath: an image reference, a working directory.
	MaxImageRef = 1024
	MaxPath     = 4096
	// MaxPorts is the most host ports one instance publishes.
	MaxPorts = 64
	// MaxSelectorTerms, MaxLabelKey and MaxLabelValue cap a host
	// selector, with Kubernetes' label lengths.
	MaxSelectorTerms = 32
	MaxLabelKey      = 253
	MaxLabelValue    = 63
	// MaxLogSize and MaxLogFiles cap what a container's log may take on
	// its host (logSize x logFiles); MinLogSize keeps rotation sane.
	MaxLogSize  = 100 << 20
	MinLogSize  = 64 << 10
	MaxLogFiles = 5
)

var (
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	envName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}

// ValidateName checks an instance or container name.
func ValidateName(field, name string) error {
	if len(name) > 63 || !dnsLabel.MatchString(name) {
		return invalid("%s %q is not valid: use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit", field, name)
	}
	return nil
}

// GenerateName returns a fresh instance name derived from the first image,
// the way docker names containers the user did not name.
func GenerateName(image string) string {
	base := path.Base(image)
	if i := strings.IndexAny(base, ":@"); i >= 0 {
		base = base[:i]
	}
	base = strings.Trim(strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '-'
	}, base), "-")
	if base == "" {
		base = "instance"
	}
	if len(base) > 50 {
		base = base[:50]
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return base + "-" + hex.EncodeToString(b)
}

// NewUID returns a random identifier for an instance, used to name its
// containers, sandbox and cgroups on the host.
func NewUID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ContainerNameFromImage is the default container name for an image.
func ContainerNameFromImage(image string) string {
	n := GenerateName(image)
	return n[:strings.LastIndex(n, "-")]
}

// Defaults fills in what the user may leave out.
func Defaults(spec *api.InstanceSpec, defaultRuntime string) {
	applyInstanceType(spec)
	if spec.RestartPolicy == "" {
		spec.RestartPolicy = api.RestartNever
	}
	if spec.Runtime == "" {
		spec.Runtime = defaultRuntime
	}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if c.Name == "" {
			c.Name = ContainerNameFromImage(c.Image)
			if len(spec.Containers) > 1 {
				c.Name = fmt.Sprintf("%s-%d", c.Name, i)
			}
		}
	}
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		if c.Name == "" {
			c.Name = fmt.Sprintf("init-%d", i)
		}
	}
	DefaultProbes(spec)
	defaultDevices(spec)
	for i := range spec.Ports {
		if spec.Ports[i].Protocol == "" {
			spec.Ports[i].Protocol = "tcp"
		}
	}
}

// Validate checks a spec after Defaults. Every problem is reported, each
// naming its field. Whether a host can run the spec's runtime class is a
// question for placement, not validation.
func Validate(spec *api.InstanceSpec) error {
	var errs []error
	if len(spec.Containers) == 0 {
		errs = append(errs, invalid("spec.containers is empty: an instance needs at least one container with an image"))
	}
	if n := len(spec.Containers); n > MaxContainers {
		// One error, not one per container: the rest would drown it.
		return invalid("spec.containers has %d containers, at most %d: split the work over several instances", n, MaxContainers)
	}
	if err := checkInitCount(spec); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, sc := range AllContainers(spec) {
		f, c := sc.Field, *sc.Spec
		if err := ValidateName(f+".name", c.Name); err != nil {
			errs = append(errs, err)
		} else if seen[c.Name] {
			errs = append(errs, invalid("%s.name %q is used by another container of this instance: container names must be unique across initContainers and containers", f, c.Name))
		}
		seen[c.Name] = true
		if strings.TrimSpace(c.Image) == "" {
			errs = append(errs, invalid("%s.image is empty: name an image such as kanga.test/busybox:latest (see kanga image ls)", f))
		} else if len(c.Image) > MaxImageRef {
			errs = append(errs, invalid("%s.image: %d bytes, at most %d", f, len(c.Image), MaxImageRef))
		}
		errs = append(errs, validateEnv(f, c.Env)...)
		errs = append(errs, validateArgs(f, c.Command, c.Args)...)
		if c.WorkingDir != "" && !path.IsAbs(c.WorkingDir) {
			errs = append(errs, invalid("%s.workingDir %q must be an absolute path", f, c.WorkingDir))
		} else if len(c.WorkingDir) > MaxPath {
			errs = append(errs, invalid("%s.workingDir: %d bytes, at most %d", f, len(c.WorkingDir), MaxPath))
		}
		errs = append(errs, validateSecurityContext(f, c.SecurityContext)...)
		errs = append(errs, validateTermination(f, &c)...)
		if c.RestartPolicy != "" {
			errs = append(errs, containerRestartPolicy(sc))
		}
		if sc.Init {
			// As in Kubernetes: an init container runs to completion, so
			// nothing would act on its probes.
			for _, k := range probeKinds(sc.Spec) {
				if k.p != nil {
					errs = append(errs, invalid("%s.%s: init containers may not have probes", f, k.field))
				}
			}
			if c.Lifecycle != nil {
				errs = append(errs, invalid("%s.lifecycle: init containers may not have lifecycle hooks", f))
			}
		} else {
			errs = append(errs, validateProbes(f, sc.Spec)...)
			errs = append(errs, validateLifecycle(f, c.Lifecycle)...)
		}
	}
	errs = append(errs, validateVolumes(spec)...)
	errs = append(errs, validateInstanceSecurity(spec.SecurityContext)...)
	errs = append(errs, validateDevices(spec)...)
	if err := checkInstanceType(spec.InstanceType); err != nil {
		errs = append(errs, err)
	}
	res := &spec.Resources
	parsed, parseErrs, bad := parseResources(*res)
	errs = append(errs, parseErrs...)
	errs = append(errs, validateLimits(res, parsed, bad)...)
	if res.CPUPolicy == CPUPolicyDedicated && res.CPU == "" {
		errs = append(errs, invalid("spec.resources.cpu %q: a dedicated cpu policy needs a whole number of cores, e.g. --cpu 1", res.CPU))
	}
	if res.Pids < 0 || (res.Pids > 0 && res.Pids < 4) {
		errs = append(errs, invalid("spec.resources.pids %d: give at least 4 processes (or 0 for no limit)", res.Pids))
	}
	for _, f := range []struct {
		name, v string
		b       int64
	}{{"diskReadBps", res.DiskReadBPS, parsed.DiskReadBPS}, {"diskWriteBps", res.DiskWriteBPS, parsed.DiskWriteBPS}} {
		if f.v != "" && !bad[f.name] && f.b < 4096 {
			errs = append(errs, invalid("spec.resources.%s %q is below 4Ki per second", f.name, f.v))
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"diskReadIops", res.DiskReadIOPS}, {"diskWriteIops", res.DiskWriteIOPS}} {
		if f.v < 0 || (f.v > 0 && f.v < 10) {
			errs = append(errs, invalid("spec.resources.%s %d: give at least 10 operations per second (or 0 for no limit)", f.name, f.v))
		}
	}
	if res.Memory != "" && !bad["memory"] && parsed.Memory < MinMemory {
		errs = append(errs, invalid("spec.resources.memory %q is below the minimum of 6Mi", res.Memory))
	}
	switch spec.RestartPolicy {
	case api.RestartNever, api.RestartOnFailure, api.RestartAlways:
	default:
		errs = append(errs, invalid("spec.restartPolicy %q is not one of Never, OnFailure, Always", spec.RestartPolicy))
	}
	if spec.AutoRemove && spec.RestartPolicy != api.RestartNever {
		// As docker refuses --rm with --restart: a restarted instance
		// never ends on its own, and removing it on a stop is rm's job.
		errs = append(errs, invalid("spec.autoRemove cannot be combined with spec.restartPolicy %q: it needs Never", spec.RestartPolicy))
	}
	errs = append(errs, validateDNS(spec)...)
	if d := spec.ActiveDeadlineSeconds; d != nil && *d < 1 {
		errs = append(errs, invalid("spec.activeDeadlineSeconds %d: give at least 1 second, or leave it out for no deadline", *d))
	}
	if g := spec.TerminationGracePeriodSeconds; g != nil && (*g < 0 || *g > MaxStopGrace) {
		errs = append(errs, invalid("spec.terminationGracePeriodSeconds %d is out of range 0-%d", *g, MaxStopGrace))
	}
	switch spec.SchedulingPolicy {
	case "", "binpack", "spread":
	default:
		errs = append(errs, invalid("spec.schedulingPolicy %q is not binpack or spread", spec.SchedulingPolicy))
	}
	if n := len(spec.HostSelector); n > MaxSelectorTerms {
		errs = append(errs, invalid("spec.hostSelector has %d labels, at most %d", n, MaxSelectorTerms))
	}
	for k, v := range spec.HostSelector {
		switch {
		case k == "":
			errs = append(errs, invalid("spec.hostSelector has an empty label name: give label=value pairs such as zone=a"))
		case len(k) > MaxLabelKey:
			errs = append(errs, invalid("spec.hostSelector: label name of %d bytes, at most %d", len(k), MaxLabelKey))
		case len(v) > MaxLabelValue:
			errs = append(errs, invalid("spec.hostSelector[%q]: value of %d bytes, at most %d", k, len(v), MaxLabelValue))
		}
	}
	if _, ok := LookupRuntimeClass(spec.Runtime); !ok {
		errs = append(errs, invalid("spec.runtime %q is not a runtime class: choose one of %s (see kanga runtimes)", spec.Runtime, strings.Join(RuntimeClassNames(), ", ")))
	}
	if n := len(spec.Ports); n > MaxPorts {
		errs = append(errs, invalid("spec.ports has %d ports, at most %d", n, MaxPorts))
	}
	for i, p := range spec.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if p.HostPort < 1 || p.HostPort > 65535 {
			errs = append(errs, invalid("%s.hostPort %d is out of range 1-65535", f, p.HostPort))
		}
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			errs = append(errs, invalid("%s.containerPort %d is out of range 1-65535", f, p.ContainerPort))
		}
		if p.Protocol != "tcp" && p.Protocol != "udp" {
			errs = append(errs, invalid("%s.protocol %q is not tcp or udp", f, p.Protocol))
		}
		if ip := net.ParseIP(p.HostIP); p.HostIP != "" && ip == nil {
			errs = append(errs, invalid("%s.hostIP %q is not an IP address", f, p.HostIP))
		} else if p.HostIP != "" && ip.To4() == nil {
			errs = append(errs, invalid("%s.hostIP %s is not an IPv4 address: ports are published on IPv4 only", f, p.HostIP))
		}
		for _, q := range spec.Ports[:i] {
			if PortsConflict(p, q) {
				errs = append(errs, invalid("%s publishes host port %d/%s twice", f, p.HostPort, p.Protocol))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// validateEnv checks a container's environment against the caps: values
// are reported one by one, with their size, as the 400 names the field.
func validateEnv(f string, env []api.EnvVar) []error {
	var errs []error
	if len(env) > MaxEnvVars {
		return []error{invalid("%s.env has %d variables, at most %d", f, len(env), MaxEnvVars)}
	}
	total := 0
	for j, e := range env {
		if !envName.MatchString(e.Name) {
			errs = append(errs, invalid("%s.env[%d].name %q is not a valid variable name: use letters, digits and '_', not starting with a digit", f, j, truncate(e.Name)))
		} else if len(e.Name) > MaxEnvValue {
			errs = append(errs, invalid("%s.env[%d].name: %d bytes, at most %d", f, j, len(e.Name), MaxEnvValue))
		}
		if len(e.Value) > MaxEnvValue {
			errs = append(errs, invalid("%s.env[%d].value: %d bytes, at most %d: pass large data in a file or an image instead", f, j, len(e.Value), MaxEnvValue))
		}
		total += len(e.Name) + len(e.Value) + 2 // '=' and the NUL execve counts
	}
	if total > MaxEnvBytes && len(errs) == 0 {
		errs = append(errs, invalid("%s.env: %d bytes in all, at most %d", f, total, MaxEnvBytes))
	}
	return errs
}

// validateArgs checks a container's command and args against the caps.
func validateArgs(f string, command, args []string) []error {
	var errs []error
	if n := len(command) + len(args); n > MaxArgs {
		return []error{invalid("%s: %d command and args entries, at most %d", f, n, MaxArgs)}
	}
	total := 0
	for _, l := range []struct {
		field string
		vals  []string
	}{{"command", command}, {"args", args}} {
		for j, a := range l.vals {
			if len(a) > MaxArg {
				errs = append(errs, invalid("%s.%s[%d]: %d bytes, at most %d", f, l.field, j, len(a), MaxArg))
			}
			total += len(a) + 1
		}
	}
	if total > MaxArgBytes && len(errs) == 0 {
		errs = append(errs, invalid("%s: command and args take %d bytes in all, at most %d", f, total, MaxArgBytes))
	}
	return errs
}

// validateLimits checks the CPU cap and log caps of res, parsed; bad
// names the fields that did not parse.
func validateLimits(res *api.Resources, parsed Resources, bad map[string]bool) []error {
	var errs []error
	if res.CPULimit != "" && !bad["cpuLimit"] {
		switch {
		case res.CPUPolicy == CPUPolicyDedicated:
			errs = append(errs, invalid("spec.resources.cpuLimit %q: a dedicated instance has its cores to itself; leave cpuLimit out", res.CPULimit))
		case res.CPU != "" && !bad["cpu"] && parsed.MilliCPULimit < parsed.MilliCPU:
			errs = append(errs, invalid("spec.resources.cpuLimit %q is below spec.resources.cpu %q: the cap must be at least what the instance reserves", res.CPULimit, res.CPU))
		}
	}
	if res.LogSize != "" && !bad["logSize"] && (parsed.LogSize < MinLogSize || parsed.LogSize > MaxLogSize) {
		errs = append(errs, invalid("spec.resources.logSize %q is not between 64Ki and 100Mi", res.LogSize))
	}
	if res.Disk != "" && !bad["disk"] && (parsed.Disk < MinScratchSize || parsed.Disk > MaxScratchSize) {
		errs = append(errs, invalid("spec.resources.disk %q is not between 4Mi and 16Ti", res.Disk))
	}
	if res.LogFiles < 0 || res.LogFiles > MaxLogFiles {
		errs = append(errs, invalid("spec.resources.logFiles %d is not between 1 and %d (0 for the default of %d)", res.LogFiles, MaxLogFiles, DefaultLogFiles))
	}
	return errs
}

// truncate shortens a user's string quoted in an error.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
