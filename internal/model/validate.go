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
	"github.com/kanga-run/kanga/internal/errdefs"
)

// MinMemory is the smallest memory limit runc can start a container in.
const MinMemory = 6 << 20

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
	seen := map[string]bool{}
	for i, c := range spec.Containers {
		f := fmt.Sprintf("spec.containers[%d]", i)
		if err := ValidateName(f+".name", c.Name); err != nil {
			errs = append(errs, err)
		} else if seen[c.Name] {
			errs = append(errs, invalid("%s.name %q is used by another container of this instance: container names must be unique", f, c.Name))
		}
		seen[c.Name] = true
		if strings.TrimSpace(c.Image) == "" {
			errs = append(errs, invalid("%s.image is empty: name an image such as kanga.test/busybox:latest (see kanga image ls)", f))
		}
		for j, e := range c.Env {
			if !envName.MatchString(e.Name) {
				errs = append(errs, invalid("%s.env[%d].name %q is not a valid variable name: use letters, digits and '_', not starting with a digit", f, j, e.Name))
			}
		}
		if c.WorkingDir != "" && !path.IsAbs(c.WorkingDir) {
			errs = append(errs, invalid("%s.workingDir %q must be an absolute path", f, c.WorkingDir))
		}
	}
	if err := checkInstanceType(spec.InstanceType); err != nil {
		errs = append(errs, err)
	}
	res := &spec.Resources
	if res.CPU != "" {
		if _, err := ParseCPU(res.CPU); err != nil {
			errs = append(errs, fmt.Errorf("spec.resources.cpu: %w", err))
		}
	}
	switch res.CPUPolicy {
	case "", "shared":
	case "dedicated":
		if m, err := ParseCPU(res.CPU); res.CPU == "" || (err == nil && m%1000 != 0) {
			errs = append(errs, invalid("spec.resources.cpu %q: a dedicated cpu policy needs a whole number of cores, e.g. --cpu 1", res.CPU))
		}
	default:
		errs = append(errs, invalid("spec.resources.cpuPolicy %q is not shared or dedicated", res.CPUPolicy))
	}
	if res.Pids < 0 || (res.Pids > 0 && res.Pids < 4) {
		errs = append(errs, invalid("spec.resources.pids %d: give at least 4 processes (or 0 for no limit)", res.Pids))
	}
	for _, f := range []struct{ name, v string }{{"diskReadBps", res.DiskReadBPS}, {"diskWriteBps", res.DiskWriteBPS}} {
		if f.v == "" {
			continue
		}
		if b, err := ParseMemory(f.v); err != nil {
			errs = append(errs, fmt.Errorf("spec.resources.%s: %w", f.name, err))
		} else if b < 4096 {
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
	for _, f := range []struct{ name, v string }{{"ingressBandwidth", res.IngressBandwidth}, {"egressBandwidth", res.EgressBandwidth}} {
		if f.v == "" {
			continue
		}
		if _, err := ParseBandwidth(f.v); err != nil {
			errs = append(errs, fmt.Errorf("spec.resources.%s: %w", f.name, err))
		}
	}
	if spec.Resources.Memory != "" {
		if m, err := ParseMemory(spec.Resources.Memory); err != nil {
			errs = append(errs, fmt.Errorf("spec.resources.memory: %w", err))
		} else if m < MinMemory {
			errs = append(errs, invalid("spec.resources.memory %q is below the minimum of 6Mi", spec.Resources.Memory))
		}
	}
	switch spec.RestartPolicy {
	case api.RestartNever, api.RestartOnFailure, api.RestartAlways:
	default:
		errs = append(errs, invalid("spec.restartPolicy %q is not one of Never, OnFailure, Always", spec.RestartPolicy))
	}
	switch spec.SchedulingPolicy {
	case "", "binpack", "spread":
	default:
		errs = append(errs, invalid("spec.schedulingPolicy %q is not binpack or spread", spec.SchedulingPolicy))
	}
	for k := range spec.HostSelector {
		if k == "" {
			errs = append(errs, invalid("spec.hostSelector has an empty label name: give label=value pairs such as zone=a"))
		}
	}
	if _, ok := LookupRuntimeClass(spec.Runtime); !ok {
		errs = append(errs, invalid("spec.runtime %q is not a runtime class: choose one of %s (see kanga runtimes)", spec.Runtime, strings.Join(RuntimeClassNames(), ", ")))
	}
	hostPorts := map[string]bool{}
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
		if p.HostIP != "" && net.ParseIP(p.HostIP) == nil {
			errs = append(errs, invalid("%s.hostIP %q is not an IP address", f, p.HostIP))
		}
		k := fmt.Sprintf("%s/%d/%s", p.HostIP, p.HostPort, p.Protocol)
		if hostPorts[k] {
			errs = append(errs, invalid("%s publishes host port %d/%s twice", f, p.HostPort, p.Protocol))
		}
		hostPorts[k] = true
	}
	return errors.Join(errs...)
}
