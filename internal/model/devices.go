package model

import (
	"fmt"

	"tags.cncf.io/container-device-interface/pkg/parser"

	"github.com/kanga-run/kanga/api"
)

// Device request caps: a spec asks for a few kinds of device, a few of
// each; more is a mistake or an attempt to make the scheduler's and the
// agent's work grow.
const (
	MaxDeviceRequests = 16
	MaxDeviceCount    = 64
)

// ShareableAnnotation marks a device in its CDI spec (device or spec
// annotations) as usable by any number of instances at once.
const ShareableAnnotation = "kanga.run/shareable"

// defaultDevices fills in a named request's kind.
func defaultDevices(spec *api.InstanceSpec) {
	for i := range spec.Devices {
		d := &spec.Devices[i]
		if d.Name != "" && d.Kind == "" {
			if vendor, class, _, err := parser.ParseQualifiedName(d.Name); err == nil {
				d.Kind = vendor + "/" + class
			}
		}
	}
}

// validateDevices checks spec.devices (after defaultDevices).
func validateDevices(spec *api.InstanceSpec) []error {
	if len(spec.Devices) == 0 {
		return nil
	}
	var errs []error
	if len(spec.Devices) > MaxDeviceRequests {
		return []error{invalid("spec.devices has %d requests, at most %d", len(spec.Devices), MaxDeviceRequests)}
	}
	if spec.Runtime == "gvisor" {
		errs = append(errs, invalid("spec.devices: runtime class gvisor cannot use host devices (its user-space kernel does not pass them through); use runc or crun"))
	}
	named := map[string]bool{}
	for i, d := range spec.Devices {
		f := fmt.Sprintf("spec.devices[%d]", i)
		if d.Name != "" {
			vendor, class, _, err := parser.ParseQualifiedName(d.Name)
			switch {
			case err != nil:
				errs = append(errs, invalid("%s.name %q is not a qualified CDI device name (vendor.com/class=name): %v", f, d.Name, err))
			case d.Kind != vendor+"/"+class:
				errs = append(errs, invalid("%s.kind %q is not the kind of device %q", f, d.Kind, d.Name))
			case d.Count > 1:
				errs = append(errs, invalid("%s.count %d: a named device is one device; leave count out", f, d.Count))
			case named[d.Name]:
				errs = append(errs, invalid("%s.name %q is asked for twice", f, d.Name))
			}
			named[d.Name] = true
			continue
		}
		if err := validateKind(d.Kind); err != nil {
			errs = append(errs, invalid("%s.kind %q is not a CDI kind (vendor.com/class): %v", f, d.Kind, err))
		}
		if d.Count < 1 || d.Count > MaxDeviceCount {
			errs = append(errs, invalid("%s.count %d is not between 1 and %d", f, d.Count, MaxDeviceCount))
		}
	}
	return errs
}

// validateKind checks a CDI kind, vendor.com/class.
func validateKind(kind string) error {
	vendor, class := parser.ParseQualifier(kind)
	if vendor == "" {
		return fmt.Errorf("no vendor")
	}
	if err := parser.ValidateVendorName(vendor); err != nil {
		return err
	}
	return parser.ValidateClassName(class)
}

// DeviceCount is how many devices of kind a request takes: its count, or
// one for a named device.
func DeviceCount(d api.DeviceRequest) int {
	if d.Name != "" {
		return 1
	}
	return d.Count
}
