package model

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/kanga-run/kanga/api"
)

// Limits of an instance's name resolution, Kubernetes' where it has them.
const (
	MaxHostAliases   = 64
	MaxNameservers   = 3
	MaxSearches      = 32
	MaxSearchesChars = 2048
	MaxDNSOptions    = 16
)

var dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func validSubdomain(s string) bool { return len(s) <= 253 && dnsSubdomain.MatchString(s) }

// validateDNS checks the hostname, /etc/hosts and resolver fields of spec.
func validateDNS(spec *api.InstanceSpec) []error {
	var errs []error
	if spec.Hostname != "" {
		if err := ValidateName("spec.hostname", spec.Hostname); err != nil {
			errs = append(errs, err)
		}
	}
	if n := len(spec.HostAliases); n > MaxHostAliases {
		errs = append(errs, invalid("spec.hostAliases has %d entries, at most %d", n, MaxHostAliases))
	}
	for i, a := range spec.HostAliases {
		f := fmt.Sprintf("spec.hostAliases[%d]", i)
		if _, err := netip.ParseAddr(a.IP); err != nil {
			errs = append(errs, invalid("%s.ip %q is not an IP address", f, truncate(a.IP)))
		}
		if len(a.Hostnames) == 0 {
			errs = append(errs, invalid("%s.hostnames is empty: give at least one name", f))
		}
		for j, h := range a.Hostnames {
			if !validSubdomain(h) {
				errs = append(errs, invalid("%s.hostnames[%d] %q is not a valid host name (lower-case DNS subdomain)", f, j, truncate(h)))
			}
		}
	}
	switch spec.DNSPolicy {
	case "", api.DNSDefault:
	case api.DNSNone:
		if spec.DNSConfig == nil || len(spec.DNSConfig.Nameservers) == 0 {
			errs = append(errs, invalid("spec.dnsPolicy None needs spec.dnsConfig.nameservers: the instance would have no resolver"))
		}
	default:
		errs = append(errs, invalid("spec.dnsPolicy %q is not Default or None", truncate(spec.DNSPolicy)))
	}
	c := spec.DNSConfig
	if c == nil {
		return errs
	}
	if n := len(c.Nameservers); n > MaxNameservers {
		errs = append(errs, invalid("spec.dnsConfig.nameservers has %d entries, at most %d", n, MaxNameservers))
	}
	for i, ns := range c.Nameservers {
		if _, err := netip.ParseAddr(ns); err != nil {
			errs = append(errs, invalid("spec.dnsConfig.nameservers[%d] %q is not an IP address", i, truncate(ns)))
		}
	}
	if n := len(c.Searches); n > MaxSearches {
		errs = append(errs, invalid("spec.dnsConfig.searches has %d entries, at most %d", n, MaxSearches))
	}
	if n := len(strings.Join(c.Searches, " ")); n > MaxSearchesChars {
		errs = append(errs, invalid("spec.dnsConfig.searches take %d characters, at most %d", n, MaxSearchesChars))
	}
	for i, s := range c.Searches {
		if !validSubdomain(strings.TrimSuffix(s, ".")) {
			errs = append(errs, invalid("spec.dnsConfig.searches[%d] %q is not a valid domain", i, truncate(s)))
		}
	}
	if n := len(c.Options); n > MaxDNSOptions {
		errs = append(errs, invalid("spec.dnsConfig.options has %d entries, at most %d", n, MaxDNSOptions))
	}
	for i, o := range c.Options {
		if o.Name == "" || strings.ContainsAny(o.Name, " \t\n:") {
			errs = append(errs, invalid("spec.dnsConfig.options[%d].name %q is not a resolver option name", i, truncate(o.Name)))
		}
		if o.Value != nil && strings.ContainsAny(*o.Value, " \t\n") {
			errs = append(errs, invalid("spec.dnsConfig.options[%d].value %q has white space", i, truncate(*o.Value)))
		}
	}
	return errs
}
